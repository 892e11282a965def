//! The embedded SQLite store: one file, one node, zero set-up.
//!
//! SQLite admits one writer at a time. Writes therefore go through a pool of exactly one
//! connection, so concurrent writers of this process queue fairly on the pool (bounded by
//! [`ACQUIRE_TIMEOUT`]) instead of spinning in SQLite's busy handler; each write transaction starts
//! with `BEGIN IMMEDIATE`, so it holds the write lock from its first statement and never fails to
//! upgrade a read snapshot. Reads use a separate pool and, in WAL mode, never wait for the writer.
//! The busy timeout still covers other processes opening the same file and WAL checkpoints.
//!
//! Durability: WAL with `synchronous = NORMAL`. A committed transaction survives the process
//! being killed at any point; an interrupted one is rolled back on the next open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::common::{self as c, map_err};
use crate::{StoreError, ACQUIRE_TIMEOUT};

/// How long a statement waits for another connection's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections (WAL readers run concurrently with the writer).
const MAX_READERS: u32 = 4;
/// The file name [`SqliteStore::open_in`] uses.
const DEFAULT_FILE_NAME: &str = "callrelay.sqlite3";

/// The SQLite-backed [`LinkStore`](crate::LinkStore).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating the parent directory and the file if missing) the database at `path`, in
    /// WAL mode, and applies the pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Normal);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(|e| open_error(path, e))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(c::map_migrate_err)?;

        // The writer created the file and switched it to WAL (a persistent setting).
        let reader = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base)
            .await
            .map_err(|e| open_error(path, e))?;

        Ok(SqliteStore {
            writer,
            reader,
            path: path.to_owned(),
        })
    }

    /// Opens `dir/callrelay.sqlite3` (see [`SqliteStore::open`]).
    pub async fn open_in(dir: &Path) -> Result<Self, StoreError> {
        Self::open(&dir.join(DEFAULT_FILE_NAME)).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (checkpointing the WAL into the main file). Calls after this
    /// answer [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// A connection or migration failure while opening, with the file named.
fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    let context = |m: String| format!("cannot open {}: {m}", path.display());
    match map_err(e) {
        StoreError::Unavailable(m) => StoreError::Unavailable(context(m)),
        StoreError::Database(m) => StoreError::Database(context(m)),
        other => other,
    }
}

crate::common::link_store_impl!(
    SqliteStore,
    "sqlite",
    read: reader,
    write: writer,
    begin: begin_with("BEGIN IMMEDIATE")
);
