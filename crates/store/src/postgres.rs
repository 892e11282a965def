//! The PostgreSQL store: several nodes sharing state.
//!
//! Every method is one statement or one transaction at PostgreSQL's default isolation (read
//! committed). `record_join`'s conditional `UPDATE` takes the link's row lock and re-checks its
//! condition against the latest committed row, so concurrent joins (and a revocation racing a
//! join) serialise on the row and no update is lost.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::common::{self as c, map_err};
use crate::{StoreError, ACQUIRE_TIMEOUT};

/// Connections per node.
const MAX_CONNECTIONS: u32 = 16;

/// The PostgreSQL-backed [`LinkStore`](crate::LinkStore).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and applies the pending
    /// migrations. Several nodes may start at once: the migrator holds an advisory lock while it
    /// runs, so each migration is applied exactly once.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?
            .application_name("callrelay");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(c::map_migrate_err)?;
        Ok(PostgresStore { pool })
    }

    /// Closes every connection. Calls after this answer [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

crate::common::link_store_impl!(PostgresStore, "postgres", read: pool, write: pool, begin: begin());
