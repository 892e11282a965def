//! One suite, run against both backends.
//!
//! Every test body takes a [`TestDb`] (a fresh database and a store open on it) and is generated
//! twice by [`suite!`]: once in `mod sqlite` (a new file in a temporary directory) and once in
//! `mod postgres` (a new database on the server named by `CALLRELAY_TEST_DATABASE_URL`, an admin
//! URL to the `postgres` database; start one with `eval "$(scripts/pg start)"`).
//!
//! Without `CALLRELAY_TEST_DATABASE_URL` the PostgreSQL half is skipped with a loud message, unless
//! `CI` is set: then it fails.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use callrelay_links::{Link, LinkId, LinkKind, NewLink, Revocation, UserId};
use callrelay_store::{
    CallLogEntry, DueReminder, JoinOutcome, LinkStore, LinkUpdate, LoginAttempt, NewWebhook,
    OutboxCounts, PostgresStore, Reminder, Role, Session, SharedStore, SqliteStore, StoreError,
    WebhookOutcome,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const TTL: Duration = Duration::from_secs(3600);
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// The suite's clock: `at(ms)` is a fixed instant (with a millisecond part) plus `ms`.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_764_100_000_123 + ms).expect("in range")
}

fn user(s: &str) -> UserId {
    UserId::parse(s).expect("valid user id")
}

fn new_link(creator: &UserId, created_ms: i64) -> Link {
    let new = NewLink {
        creator: creator.clone(),
        kind: LinkKind::Video,
        title: None,
        scheduled_at: None,
        duration: None,
        require_approval: false,
    };
    Link::create(LinkId::random(), new, at(created_ms), TTL)
}

/// `link` as a successful join at `now` leaves it.
fn renewed(link: &Link, now: DateTime<Utc>, ttl: Duration) -> Link {
    let mut l = link.clone();
    l.renew(now, ttl);
    l
}

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

/// A fresh database and a store open on it.
struct TestDb {
    backend: Backend,
    store: SharedStore,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.sqlite3");
        let store = SqliteStore::open(&path).await.expect("open SQLite store");
        TestDb {
            backend: Backend::Sqlite { _dir: dir, path },
            store: Arc::new(store),
        }
    }

    /// `None` (after saying so on stderr) when no PostgreSQL server is configured outside CI.
    async fn postgres(test: &str) -> Option<TestDb> {
        let url = pg_admin_url(test)?;
        let (name, db_url) = create_pg_database(&url).await;
        let store = PostgresStore::connect(&db_url)
            .await
            .expect("connect the PostgreSQL store");
        Some(TestDb {
            backend: Backend::Postgres {
                admin_url: url,
                name,
                url: db_url,
            },
            store: Arc::new(store),
        })
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// A new, separate store on the same database (another node, or the same one restarted).
    async fn open_another(&self) -> SharedStore {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                Arc::new(SqliteStore::open(path).await.expect("reopen"))
            }
            Backend::Postgres { url, .. } => {
                Arc::new(PostgresStore::connect(url).await.expect("reconnect"))
            }
        }
    }

    /// Drops the store (as a killed process would, without closing anything) and opens a new
    /// one on the same database.
    async fn restart(&mut self) {
        let fresh = self.open_another().await;
        self.store = fresh;
    }

    /// Counts a table's rows behind the store's back.
    async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .expect("raw SQLite connection");
                let n = sqlx::query_scalar(&sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count");
                conn.close().await.expect("close");
                n
            }
            Backend::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("raw PostgreSQL connection");
                let n = sqlx::query_scalar(&sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count");
                conn.close().await.expect("close");
                n
            }
        }
    }

    /// Removes the database (the SQLite directory goes with the `TempDir`).
    async fn cleanup(self) {
        let TestDb { backend, store } = self;
        drop(store);
        if let Backend::Postgres {
            admin_url, name, ..
        } = backend
        {
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("admin connection");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .expect("drop the test database");
            conn.close().await.expect("close");
        }
    }
}

/// The admin URL, or `None` when the PostgreSQL half is to be skipped.
fn pg_admin_url(test: &str) -> Option<String> {
    match std::env::var("CALLRELAY_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CALLRELAY_TEST_DATABASE_URL is not set, and CI is: the PostgreSQL half of the store \
             suite must run in CI. Start a server with `eval \"$(scripts/pg start)\"`."
        ),
        _ => {
            // Straight to the process's stderr, past the test harness's output capture, so the
            // skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL half of `{test}`: set CALLRELAY_TEST_DATABASE_URL \
                 (scripts/pg start)"
            );
            None
        }
    }
}

/// Creates `cr_test_<random hex>`; returns its name and URL.
async fn create_pg_database(admin_url: &str) -> (String, String) {
    let name = format!("cr_test_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to CALLRELAY_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.expect("close");
    let url = with_database(admin_url, &name);
    (name, url)
}

/// `url` with its database (the path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Generates each test twice: `sqlite::name` and `postgres::name`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut db = super::TestDb::sqlite().await;
                    super::$name(&mut db).await;
                    db.cleanup().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(mut db) = super::TestDb::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&mut db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

suite!(
    ping_answers,
    create_and_get_roundtrip,
    duplicate_id_is_a_conflict,
    get_unknown_is_none,
    record_join_renews_and_writes_the_call_log,
    record_join_refusals_change_nothing,
    revoke_is_idempotent,
    blocks,
    call_log_order_limit_and_current_state,
    purge_removes_only_links_past_grace,
    fifty_concurrent_joins,
    state_survives_a_restart,
    two_stores_share_one_database,
    sessions_expire_and_sign_out_deletes_them,
    a_login_is_taken_once_and_only_before_it_expires,
    reminders_fire_once_with_their_messages_even_when_two_nodes_race,
    an_update_rewrites_the_schedule_and_replaces_reminders,
    an_expired_link_is_announced_once,
    the_outbox_leases_retries_gives_up_and_purges,
);

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

async fn ping_answers(db: &mut TestDb) {
    db.store.ping().await.expect("ping");
    assert_eq!(db.store.backend(), db.backend_name());
}

async fn create_and_get_roundtrip(db: &mut TestDb) {
    let store = &db.store;
    let alice = user("alice@example.org");

    let full = Link::create(
        LinkId::random(),
        NewLink {
            creator: alice.clone(),
            kind: LinkKind::Voice,
            title: Some("Weekly sync — ünïcödé, 'quotes' \"and\" ; semicolons".into()),
            scheduled_at: Some(at(2 * 24 * HOUR_MS + 999)),
            duration: Some(Duration::from_secs(45 * 60)),
            require_approval: true,
        },
        at(0),
        TTL,
    );
    store.create_link(&full).await.expect("create");
    assert_eq!(store.get_link(&full.id).await.unwrap(), Some(full.clone()));

    let plain = new_link(&user("bob"), 1);
    store.create_link(&plain).await.expect("create");
    let got = store.get_link(&plain.id).await.unwrap().expect("stored");
    assert_eq!(got, plain);
    assert_eq!(got.title, None);
    assert_eq!(got.scheduled_at, None);
    assert_eq!(got.duration, None);
    assert_eq!(got.created_at, at(1), "millisecond precision");

    // A link stored already revoked keeps its revocation.
    let mut revoked = new_link(&alice, 2);
    revoked.revoked = Some(Revocation {
        at: at(3),
        reason: "imported revoked".into(),
    });
    store.create_link(&revoked).await.expect("create");
    assert_eq!(
        store.get_link(&revoked.id).await.unwrap(),
        Some(revoked.clone())
    );

    // Creating a link writes its creator's call-log entry.
    let log = store.call_log(&alice, 10).await.unwrap();
    assert_eq!(
        log,
        vec![
            CallLogEntry {
                link: revoked,
                role: Role::Creator,
                last_joined_at: None,
                last_activity_at: at(2),
            },
            CallLogEntry {
                link: full,
                role: Role::Creator,
                last_joined_at: None,
                last_activity_at: at(0),
            },
        ]
    );
}

async fn duplicate_id_is_a_conflict(db: &mut TestDb) {
    let store = &db.store;
    let first = new_link(&user("alice"), 0);
    store.create_link(&first).await.expect("create");

    let mut second = new_link(&user("mallory"), 5);
    second.id = first.id;
    second.kind = LinkKind::Voice;
    let err = store.create_link(&second).await.expect_err("same id");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.kind(), "conflict");

    assert_eq!(store.get_link(&first.id).await.unwrap(), Some(first));
    assert!(store
        .call_log(&user("mallory"), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn get_unknown_is_none(db: &mut TestDb) {
    assert_eq!(db.store.get_link(&LinkId::random()).await.unwrap(), None);
}

async fn record_join_renews_and_writes_the_call_log(db: &mut TestDb) {
    let store = &db.store;
    let (alice, bob) = (user("alice"), user("bob"));
    let link = new_link(&alice, 0);
    store.create_link(&link).await.unwrap();

    // Bob joins half an hour later, with a longer TTL in force.
    let ttl = 2 * TTL;
    let t1 = at(30 * MINUTE_MS + 7);
    let expected = renewed(&link, t1, ttl);
    assert_eq!(
        store.record_join(&link.id, &bob, t1, ttl).await.unwrap(),
        JoinOutcome::Renewed(expected.clone())
    );
    assert_eq!(expected.last_used_at, t1);
    assert_eq!(expected.expires_at, at(30 * MINUTE_MS + 7 + 2 * HOUR_MS));
    assert_eq!(
        store.get_link(&link.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.call_log(&bob, 10).await.unwrap(),
        vec![CallLogEntry {
            link: expected,
            role: Role::Participant,
            last_joined_at: Some(t1),
            last_activity_at: t1,
        }]
    );

    // The creator joins: their entry keeps the role creator.
    let t2 = at(40 * MINUTE_MS);
    let expected = renewed(&link, t2, TTL);
    assert_eq!(
        store.record_join(&link.id, &alice, t2, TTL).await.unwrap(),
        JoinOutcome::Renewed(expected.clone())
    );
    assert_eq!(
        store.call_log(&alice, 10).await.unwrap(),
        vec![CallLogEntry {
            link: expected,
            role: Role::Creator,
            last_joined_at: Some(t2),
            last_activity_at: t2,
        }]
    );

    // Bob joins again: his entry moves on.
    let t3 = at(50 * MINUTE_MS);
    let expected = renewed(&link, t3, TTL);
    assert_eq!(
        store.record_join(&link.id, &bob, t3, TTL).await.unwrap(),
        JoinOutcome::Renewed(expected.clone())
    );
    let log = store.call_log(&bob, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].role, Role::Participant);
    assert_eq!(log[0].last_joined_at, Some(t3));
    assert_eq!(log[0].last_activity_at, t3);

    // A join that reaches the store late (an older `now`) moves nothing backwards.
    let late = at(45 * MINUTE_MS);
    assert_eq!(
        store.record_join(&link.id, &bob, late, TTL).await.unwrap(),
        JoinOutcome::Renewed(expected.clone())
    );
    assert_eq!(store.get_link(&link.id).await.unwrap(), Some(expected));
    let log = store.call_log(&bob, 10).await.unwrap();
    assert_eq!(log[0].last_joined_at, Some(t3));
    assert_eq!(log[0].last_activity_at, t3);
}

async fn record_join_refusals_change_nothing(db: &mut TestDb) {
    let store = &db.store;
    let (alice, bob) = (user("alice"), user("bob"));

    let revoked = new_link(&alice, 0);
    store.create_link(&revoked).await.unwrap();
    let revoked = store
        .revoke_link(&revoked.id, "spam", at(MINUTE_MS))
        .await
        .unwrap()
        .expect("exists");
    let expired = new_link(&alice, 0);
    store.create_link(&expired).await.unwrap();
    let both = new_link(&alice, 0);
    store.create_link(&both).await.unwrap();
    let both = store
        .revoke_link(&both.id, "", at(MINUTE_MS))
        .await
        .unwrap()
        .expect("exists");

    assert_eq!(
        store
            .record_join(&revoked.id, &bob, at(2 * MINUTE_MS), TTL)
            .await
            .unwrap(),
        JoinOutcome::Revoked
    );
    // Expired from the instant now == expires_at.
    assert_eq!(
        store
            .record_join(&expired.id, &bob, expired.expires_at, TTL)
            .await
            .unwrap(),
        JoinOutcome::Expired
    );
    assert_eq!(
        store
            .record_join(&expired.id, &bob, at(5 * HOUR_MS), TTL)
            .await
            .unwrap(),
        JoinOutcome::Expired
    );
    // Revocation takes precedence over expiry.
    assert_eq!(
        store
            .record_join(&both.id, &bob, at(5 * HOUR_MS), TTL)
            .await
            .unwrap(),
        JoinOutcome::Revoked
    );
    assert_eq!(
        store
            .record_join(&LinkId::random(), &bob, at(0), TTL)
            .await
            .unwrap(),
        JoinOutcome::NotFound
    );

    // Nothing changed.
    assert_eq!(
        store.get_link(&revoked.id).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(
        store.get_link(&expired.id).await.unwrap(),
        Some(expired.clone())
    );
    assert_eq!(store.get_link(&both.id).await.unwrap(), Some(both));
    assert!(store.call_log(&bob, 10).await.unwrap().is_empty());
    for entry in store.call_log(&alice, 10).await.unwrap() {
        assert_eq!(entry.last_joined_at, None);
    }
    assert_eq!(db.count_rows("call_log").await, 3);

    // One millisecond before expiry the link is still joinable.
    let just_before = expired.expires_at - chrono::Duration::milliseconds(1);
    assert_eq!(
        store
            .record_join(&expired.id, &bob, just_before, TTL)
            .await
            .unwrap(),
        JoinOutcome::Renewed(renewed(&expired, just_before, TTL))
    );
}

async fn revoke_is_idempotent(db: &mut TestDb) {
    let store = &db.store;
    let link = new_link(&user("alice"), 0);
    store.create_link(&link).await.unwrap();

    let mut expected = link.clone();
    expected.revoked = Some(Revocation {
        at: at(10 * MINUTE_MS + 1),
        reason: "abuse reported".into(),
    });
    assert_eq!(
        store
            .revoke_link(&link.id, "abuse reported", at(10 * MINUTE_MS + 1))
            .await
            .unwrap(),
        Some(expected.clone())
    );
    // A second revocation keeps the first one's time and reason.
    assert_eq!(
        store
            .revoke_link(&link.id, "changed my mind", at(20 * MINUTE_MS))
            .await
            .unwrap(),
        Some(expected.clone())
    );
    assert_eq!(store.get_link(&link.id).await.unwrap(), Some(expected));

    // An empty reason is a reason.
    let other = new_link(&user("alice"), 0);
    store.create_link(&other).await.unwrap();
    let stored = store
        .revoke_link(&other.id, "", at(1))
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(
        stored.revoked,
        Some(Revocation {
            at: at(1),
            reason: String::new(),
        })
    );

    assert_eq!(
        store
            .revoke_link(&LinkId::random(), "x", at(0))
            .await
            .unwrap(),
        None
    );
}

async fn blocks(db: &mut TestDb) {
    let store = &db.store;
    let (alice, bob, carol, zed) = (user("alice"), user("bob"), user("carol"), user("Zed"));

    assert!(!store.is_blocked(&alice, &bob).await.unwrap());
    store.block(&alice, &bob, at(0)).await.unwrap();
    store.block(&alice, &bob, at(1)).await.expect("idempotent");
    store.block(&alice, &carol, at(2)).await.unwrap();
    store.block(&alice, &zed, at(3)).await.unwrap();
    store.block(&bob, &alice, at(4)).await.unwrap();

    assert!(store.is_blocked(&alice, &bob).await.unwrap());
    assert!(store.is_blocked(&bob, &alice).await.unwrap());
    assert!(!store.is_blocked(&bob, &carol).await.unwrap());
    assert!(!store.is_blocked(&carol, &alice).await.unwrap());

    // Sorted by user id, that is by bytes: upper case before lower case.
    assert_eq!(
        store.blocked_by(&alice).await.unwrap(),
        vec![zed.clone(), bob.clone(), carol.clone()]
    );
    assert_eq!(store.blocked_by(&bob).await.unwrap(), vec![alice.clone()]);
    assert!(store.blocked_by(&carol).await.unwrap().is_empty());

    assert!(store.unblock(&alice, &bob).await.unwrap());
    assert!(!store.unblock(&alice, &bob).await.unwrap());
    assert!(!store.unblock(&carol, &alice).await.unwrap());
    assert!(!store.is_blocked(&alice, &bob).await.unwrap());
    assert_eq!(store.blocked_by(&alice).await.unwrap(), vec![zed, carol]);
    assert!(store.is_blocked(&bob, &alice).await.unwrap());
}

async fn call_log_order_limit_and_current_state(db: &mut TestDb) {
    let store = &db.store;
    let (alice, bob) = (user("alice"), user("bob"));

    let a = new_link(&alice, 0);
    let b = new_link(&alice, 10_000);
    let c = new_link(&bob, 20_000);
    for l in [&a, &b, &c] {
        store.create_link(l).await.unwrap();
    }
    assert!(matches!(
        store.record_join(&c.id, &alice, at(30_000), TTL).await,
        Ok(JoinOutcome::Renewed(_))
    ));
    assert!(matches!(
        store.record_join(&a.id, &alice, at(40_000), TTL).await,
        Ok(JoinOutcome::Renewed(_))
    ));
    store.revoke_link(&c.id, "done", at(50_000)).await.unwrap();

    let log = store.call_log(&alice, 10).await.unwrap();
    let ids: Vec<LinkId> = log.iter().map(|e| e.link.id).collect();
    assert_eq!(ids, vec![a.id, c.id, b.id], "newest activity first");
    let roles: Vec<Role> = log.iter().map(|e| e.role).collect();
    assert_eq!(roles, vec![Role::Creator, Role::Participant, Role::Creator]);
    assert_eq!(log[0].last_joined_at, Some(at(40_000)));
    assert_eq!(log[0].last_activity_at, at(40_000));
    assert_eq!(log[1].last_joined_at, Some(at(30_000)));
    assert_eq!(log[2].last_joined_at, None);
    assert_eq!(log[2].last_activity_at, at(10_000));

    // Each entry shows the link as stored now: renewed expiry, revocation.
    for entry in &log {
        assert_eq!(
            store.get_link(&entry.link.id).await.unwrap().as_ref(),
            Some(&entry.link)
        );
    }
    assert_eq!(log[0].link.expires_at, at(40_000 + HOUR_MS));
    assert_eq!(
        log[1].link.revoked,
        Some(Revocation {
            at: at(50_000),
            reason: "done".into(),
        })
    );

    let limited = store.call_log(&alice, 2).await.unwrap();
    assert_eq!(limited, log[..2].to_vec());
    assert!(store.call_log(&alice, 0).await.unwrap().is_empty());

    let bobs = store.call_log(&bob, 10).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].role, Role::Creator);
    assert!(store
        .call_log(&user("nobody"), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn purge_removes_only_links_past_grace(db: &mut TestDb) {
    let store = &db.store;
    let (alice, bob) = (user("alice"), user("bob"));
    let grace = Duration::from_secs(10 * 60);

    // Expires at 1h + 1s.
    let old = new_link(&alice, 0);
    store.create_link(&old).await.unwrap();
    store
        .record_join(&old.id, &bob, at(1000), TTL)
        .await
        .unwrap();
    // Expires at 1h 5min: expired, but within the grace at the purge below.
    let recent = new_link(&alice, 5 * MINUTE_MS);
    store.create_link(&recent).await.unwrap();
    // Expires at 1h 30min: still valid.
    let live = new_link(&alice, 0);
    store.create_link(&live).await.unwrap();
    store
        .record_join(&live.id, &bob, at(30 * MINUTE_MS), TTL)
        .await
        .unwrap();
    assert_eq!(db.count_rows("call_log").await, 5);

    let deadline = HOUR_MS + 1000 + 10 * MINUTE_MS;
    assert_eq!(
        store.purge_expired(at(deadline - 1), grace).await.unwrap(),
        0
    );
    assert!(store.get_link(&old.id).await.unwrap().is_some());

    assert_eq!(store.purge_expired(at(deadline), grace).await.unwrap(), 1);
    assert_eq!(store.get_link(&old.id).await.unwrap(), None);
    assert!(store.get_link(&recent.id).await.unwrap().is_some());
    assert!(store.get_link(&live.id).await.unwrap().is_some());
    // The purged link's call-log rows are gone too, not merely hidden.
    assert_eq!(db.count_rows("call_log").await, 3);
    assert_eq!(db.count_rows("links").await, 2);
    let bobs: Vec<LinkId> = store
        .call_log(&bob, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.link.id)
        .collect();
    assert_eq!(bobs, vec![live.id]);
    assert_eq!(
        store
            .record_join(&old.id, &bob, at(deadline), TTL)
            .await
            .unwrap(),
        JoinOutcome::NotFound
    );

    assert_eq!(store.purge_expired(at(deadline), grace).await.unwrap(), 0);
    // Much later, everything goes.
    assert_eq!(
        store.purge_expired(at(100 * HOUR_MS), grace).await.unwrap(),
        2
    );
    assert_eq!(db.count_rows("call_log").await, 0);
}

async fn fifty_concurrent_joins(db: &mut TestDb) {
    const N: usize = 50;
    let alice = user("alice");
    let link = new_link(&alice, 0);
    db.store.create_link(&link).await.unwrap();

    // Distinct join times, in an order unrelated to the users' order.
    let nows: Vec<DateTime<Utc>> = (0..N as i64)
        .map(|i| at(MINUTE_MS + (i * 37 % N as i64) * 10))
        .collect();
    let max_now = *nows.iter().max().expect("non-empty");

    let start = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = nows
        .iter()
        .enumerate()
        .map(|(i, &now)| {
            let store = db.store.clone();
            let start = start.clone();
            let id = link.id;
            tokio::spawn(async move {
                let who = user(&format!("user{i:02}"));
                start.wait().await;
                store.record_join(&id, &who, now, TTL).await
            })
        })
        .collect();
    for (i, result) in futures::future::join_all(tasks)
        .await
        .into_iter()
        .enumerate()
    {
        match result.expect("task") {
            Ok(JoinOutcome::Renewed(l)) => assert_eq!(l.id, link.id),
            other => panic!("join {i}: {other:?}"),
        }
    }

    let stored = db.store.get_link(&link.id).await.unwrap().expect("exists");
    assert_eq!(stored.last_used_at, max_now);
    assert_eq!(
        stored.expires_at,
        callrelay_links::add_duration(max_now, TTL)
    );
    assert_eq!(db.count_rows("call_log").await, N as i64 + 1);
    for (i, &now) in nows.iter().enumerate() {
        let log = db
            .store
            .call_log(&user(&format!("user{i:02}")), 10)
            .await
            .unwrap();
        assert_eq!(log.len(), 1, "user{i:02}");
        assert_eq!(log[0].role, Role::Participant);
        assert_eq!(log[0].last_joined_at, Some(now));
        assert_eq!(log[0].link, stored);
    }
}

async fn state_survives_a_restart(db: &mut TestDb) {
    let (alice, bob) = (user("alice"), user("bob"));
    let kept = new_link(&alice, 0);
    let revoked = new_link(&alice, 1);
    db.store.create_link(&kept).await.unwrap();
    db.store.create_link(&revoked).await.unwrap();
    let kept = match db
        .store
        .record_join(&kept.id, &bob, at(MINUTE_MS), TTL)
        .await
        .unwrap()
    {
        JoinOutcome::Renewed(l) => l,
        other => panic!("{other:?}"),
    };
    let revoked = db
        .store
        .revoke_link(&revoked.id, "gone", at(2 * MINUTE_MS))
        .await
        .unwrap()
        .expect("exists");
    db.store.block(&alice, &bob, at(3)).await.unwrap();
    let bobs_log = db.store.call_log(&bob, 10).await.unwrap();

    db.restart().await;

    let store = &db.store;
    store.ping().await.unwrap();
    assert_eq!(store.get_link(&kept.id).await.unwrap(), Some(kept));
    assert_eq!(store.get_link(&revoked.id).await.unwrap(), Some(revoked));
    assert!(store.is_blocked(&alice, &bob).await.unwrap());
    assert_eq!(store.blocked_by(&alice).await.unwrap(), vec![bob.clone()]);
    assert_eq!(store.call_log(&bob, 10).await.unwrap(), bobs_log);
    assert_eq!(store.call_log(&alice, 10).await.unwrap().len(), 2);
}

async fn two_stores_share_one_database(db: &mut TestDb) {
    // Two stores on one database (two nodes on PostgreSQL; a restart overlapping the old process
    // on SQLite): what one writes, the other reads; migrations run again harmlessly.
    let other = db.open_another().await;
    let link = new_link(&user("alice"), 0);
    db.store.create_link(&link).await.unwrap();
    assert_eq!(other.get_link(&link.id).await.unwrap(), Some(link.clone()));
    other
        .revoke_link(&link.id, "by the other node", at(5))
        .await
        .unwrap();
    assert_eq!(
        db.store
            .record_join(&link.id, &user("bob"), at(6), TTL)
            .await
            .unwrap(),
        JoinOutcome::Revoked
    );
}

// ---------------------------------------------------------------------------------------------
// Backend-specific
// ---------------------------------------------------------------------------------------------

mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn creates_missing_directories_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c/links.db");
        let store = SqliteStore::open(&path).await.expect("open");
        assert!(path.is_file());
        assert_eq!(store.path(), path.as_path());
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        conn.close().await.unwrap();
        store.close().await;
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));

        let in_dir = SqliteStore::open_in(&dir.path().join("data"))
            .await
            .unwrap();
        assert!(in_dir.path().starts_with(dir.path().join("data")));
        in_dir.ping().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_from_two_stores() {
        // Two stores on one file contend for SQLite's write lock (as two processes would): the
        // busy timeout and `BEGIN IMMEDIATE` make every join wait its turn instead of failing.
        let db = TestDb::sqlite().await;
        let other = db.open_another().await;
        let link = new_link(&user("alice"), 0);
        db.store.create_link(&link).await.unwrap();
        let joins = (0..50i64).map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                other.clone()
            };
            let id = link.id;
            tokio::spawn(async move {
                let who = user(&format!("user{i:02}"));
                store.record_join(&id, &who, at(1000 + i), TTL).await
            })
        });
        for result in futures::future::join_all(joins).await {
            assert!(matches!(result.expect("task"), Ok(JoinOutcome::Renewed(_))));
        }
        let stored = other.get_link(&link.id).await.unwrap().expect("exists");
        assert_eq!(stored.last_used_at, at(1049));
        assert_eq!(db.count_rows("call_log").await, 51);
        drop(other);
        db.cleanup().await;
    }

    #[tokio::test]
    async fn unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A parent that is a regular file: no directory can be created there (even as root).
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, vec![b'x'; 4096]).unwrap();
        let err = SqliteStore::open(&file.join("sub/store.sqlite3"))
            .await
            .expect_err("parent is a file");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        // The database path is a directory.
        let err = SqliteStore::open(dir.path())
            .await
            .expect_err("path is a directory");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        // The file exists but is not a database.
        let err = SqliteStore::open(&file).await.expect_err("not a database");
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    }

    #[tokio::test]
    async fn undecodable_row_is_corrupt() {
        let db = TestDb::sqlite().await;
        let Backend::Sqlite { path, .. } = &db.backend else {
            unreachable!()
        };
        let id = LinkId::random();
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO links (id, kind, creator, created_at, last_used_at, expires_at) \
             VALUES ($1, 'hologram', 'alice', 0, 0, 9999999999999)",
        )
        .bind(id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO call_log (user_id, link_id, role, last_activity_at) \
             VALUES ('alice', $1, 'creator', 0)",
        )
        .bind(id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let err = db.store.get_link(&id).await.expect_err("bad kind");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let err = db
            .store
            .call_log(&user("alice"), 10)
            .await
            .expect_err("bad kind");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let err = db
            .store
            .record_join(&id, &user("bob"), at(0), TTL)
            .await
            .expect_err("bad kind");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        db.cleanup().await;
    }
}

mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        // Nothing listens on port 1. The pool retries until the acquire timeout.
        let started = std::time::Instant::now();
        let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres")
            .await
            .expect_err("no server");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < callrelay_store::ACQUIRE_TIMEOUT + Duration::from_secs(3),
            "fails fast"
        );
    }

    #[tokio::test]
    async fn invalid_url_is_an_error() {
        let err = PostgresStore::connect("not a url")
            .await
            .expect_err("invalid");
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_are_safe() {
        let Some(admin) = pg_admin_url("concurrent_migrations_are_safe") else {
            return;
        };
        let (name, url) = create_pg_database(&admin).await;
        let results = futures::future::join_all((0..4).map(|_| PostgresStore::connect(&url))).await;
        let stores: Vec<PostgresStore> = results
            .into_iter()
            .map(|r| r.expect("every node migrates or finds the schema migrated"))
            .collect();
        let link = new_link(&user("alice"), 0);
        stores[0].create_link(&link).await.unwrap();
        assert_eq!(stores[3].get_link(&link.id).await.unwrap(), Some(link));
        for s in &stores {
            s.close().await;
        }
        let db = TestDb {
            backend: Backend::Postgres {
                admin_url: admin,
                name,
                url,
            },
            store: Arc::new(stores.into_iter().next().expect("one")),
        };
        db.cleanup().await;
    }

    #[test]
    fn database_url_rewriting() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        // PgConnectOptions accepts what we build.
        PgConnectOptions::from_str(&with_database("postgres://u@h:1/postgres", "cr_test_ab"))
            .unwrap();
    }
}

async fn sessions_expire_and_sign_out_deletes_them(db: &mut TestDb) {
    let store = &db.store;
    let session = Session {
        id_hash: "a".repeat(64),
        user: user("1234@idp.example"),
        name: Some("Ada Lovelace".into()),
        csrf: "csrf-token".into(),
        created_at: at(0),
        expires_at: at(HOUR_MS),
    };
    store.create_session(&session).await.unwrap();
    assert!(matches!(
        store.create_session(&session).await,
        Err(StoreError::Conflict(_))
    ));
    let other = Session {
        id_hash: "b".repeat(64),
        name: None,
        ..session.clone()
    };
    store.create_session(&other).await.unwrap();

    assert_eq!(
        store.get_session(&session.id_hash, at(1)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store
            .get_session(&session.id_hash, at(HOUR_MS))
            .await
            .unwrap(),
        None,
        "expired at its expiry"
    );
    assert_eq!(
        store.get_session(&"c".repeat(64), at(1)).await.unwrap(),
        None
    );

    assert!(store.delete_session(&session.id_hash).await.unwrap());
    assert!(!store.delete_session(&session.id_hash).await.unwrap());
    assert_eq!(
        store.get_session(&session.id_hash, at(1)).await.unwrap(),
        None
    );
    assert_eq!(
        store.get_session(&other.id_hash, at(1)).await.unwrap(),
        Some(other.clone()),
        "signing out one browser leaves the user's other sessions"
    );

    assert_eq!(store.purge_sessions(at(HOUR_MS - 1)).await.unwrap(), 0);
    assert_eq!(store.purge_sessions(at(HOUR_MS)).await.unwrap(), 1);
    assert_eq!(
        store.get_session(&other.id_hash, at(1)).await.unwrap(),
        None
    );
}

async fn a_login_is_taken_once_and_only_before_it_expires(db: &mut TestDb) {
    let store = &db.store;
    let login = |state: &str| LoginAttempt {
        state: state.into(),
        verifier: format!("verifier-{state}"),
        nonce: format!("nonce-{state}"),
        return_to: "/calls".into(),
        expires_at: at(10 * MINUTE_MS),
    };
    store.put_login(&login("s1")).await.unwrap();
    store.put_login(&login("s2")).await.unwrap();
    store.put_login(&login("s3")).await.unwrap();

    assert_eq!(
        store.take_login("s1", at(0)).await.unwrap(),
        Some(login("s1"))
    );
    assert_eq!(
        store.take_login("s1", at(0)).await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(store.take_login("nope", at(0)).await.unwrap(), None);
    assert_eq!(
        store.take_login("s2", at(10 * MINUTE_MS)).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.take_login("s2", at(0)).await.unwrap(),
        None,
        "and gone"
    );

    assert_eq!(store.purge_sessions(at(10 * MINUTE_MS)).await.unwrap(), 1);
    assert_eq!(store.take_login("s3", at(0)).await.unwrap(), None, "purged");
}

// ---------------------------------------------------------------------------------------------
// Schedules, reminders and the webhook outbox
// ---------------------------------------------------------------------------------------------

fn hook(id: &str, endpoint: &str, created_ms: i64) -> NewWebhook {
    NewWebhook {
        msg_id: id.into(),
        endpoint: endpoint.into(),
        event_type: "link.created".into(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: at(created_ms),
    }
}

/// One message per endpoint for a due reminder, named after the link and offset.
fn reminder_messages(r: &DueReminder) -> Vec<NewWebhook> {
    ["http://a", "http://b"]
        .iter()
        .map(|e| NewWebhook {
            msg_id: format!("{}-{}", r.link.id.as_str(), r.offset.as_millis()),
            endpoint: (*e).into(),
            event_type: "link.reminder".into(),
            body: "{}".into(),
            created_at: r.fire_at,
        })
        .collect()
}

fn scheduled_link(start_ms: i64) -> (Link, Vec<Reminder>) {
    let mut link = new_link(&user("alice"), 0);
    link.scheduled_at = Some(at(start_ms));
    link.duration = Some(Duration::from_secs(1800));
    let reminders = [Duration::from_millis(10 * MINUTE_MS as u64), Duration::ZERO]
        .into_iter()
        .map(|offset| Reminder {
            offset,
            fire_at: at(start_ms - offset.as_millis() as i64),
        })
        .collect();
    (link, reminders)
}

async fn reminders_fire_once_with_their_messages_even_when_two_nodes_race(db: &mut TestDb) {
    let (link, reminders) = scheduled_link(HOUR_MS);
    db.store
        .create_link_with_reminders(&link, &reminders)
        .await
        .unwrap();
    assert_eq!(
        db.store.get_link(&link.id).await.unwrap(),
        Some(link.clone())
    );
    let build: &(dyn Fn(&DueReminder) -> Vec<NewWebhook> + Send + Sync) = &reminder_messages;
    // Not due yet.
    assert_eq!(
        db.store
            .fire_reminders(at(HOUR_MS - 11 * MINUTE_MS), 10, build)
            .await
            .unwrap(),
        0
    );
    // Ten minutes before: two stores (two nodes) race for it; it fires once.
    let other = db.open_another().await;
    let now = at(HOUR_MS - 10 * MINUTE_MS);
    let (a, b) = tokio::join!(
        db.store.fire_reminders(now, 10, build),
        other.fire_reminders(now, 10, build)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "the 10-minute reminder fired once"
    );
    assert_eq!(
        db.store.webhook_counts().await.unwrap(),
        OutboxCounts {
            pending: 2,
            failed: 0
        },
        "with one message per endpoint"
    );
    // A restart loses nothing: the start reminder is still there.
    db.restart().await;
    assert_eq!(
        db.store
            .fire_reminders(at(HOUR_MS), 10, build)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.store
            .fire_reminders(at(2 * HOUR_MS), 10, build)
            .await
            .unwrap(),
        0
    );
    assert_eq!(db.store.webhook_counts().await.unwrap().pending, 4);
}

async fn an_update_rewrites_the_schedule_and_replaces_reminders(db: &mut TestDb) {
    let (link, reminders) = scheduled_link(HOUR_MS);
    db.store
        .create_link_with_reminders(&link, &reminders)
        .await
        .unwrap();
    let update = LinkUpdate {
        title: Some("Moved".into()),
        scheduled_at: Some(at(3 * HOUR_MS)),
        duration: None,
    };
    let moved = [Reminder {
        offset: Duration::ZERO,
        fire_at: at(3 * HOUR_MS),
    }];
    let got = db
        .store
        .update_link(&link.id, &update, Some(&moved), at(1))
        .await
        .unwrap()
        .expect("updated");
    assert_eq!(got.title.as_deref(), Some("Moved"));
    assert_eq!(got.scheduled_at, Some(at(3 * HOUR_MS)));
    assert_eq!(got.duration, None);
    assert_eq!(db.store.get_link(&link.id).await.unwrap(), Some(got));
    let build: &(dyn Fn(&DueReminder) -> Vec<NewWebhook> + Send + Sync) = &reminder_messages;
    // The old reminders are gone; the new one is due at the new start.
    assert_eq!(
        db.store
            .fire_reminders(at(2 * HOUR_MS), 10, build)
            .await
            .unwrap(),
        0
    );
    // A title-only update keeps the reminders.
    let title_only = LinkUpdate {
        title: None,
        ..update.clone()
    };
    db.store
        .update_link(&link.id, &title_only, None, at(2))
        .await
        .unwrap()
        .expect("updated");
    assert_eq!(
        db.store
            .fire_reminders(at(3 * HOUR_MS), 10, build)
            .await
            .unwrap(),
        1
    );
    // A revoked link is not updated.
    db.store.revoke_link(&link.id, "", at(3)).await.unwrap();
    assert_eq!(
        db.store
            .update_link(&link.id, &update, None, at(4))
            .await
            .unwrap(),
        None
    );
}

async fn an_expired_link_is_announced_once(db: &mut TestDb) {
    let link = new_link(&user("alice"), 0);
    let revoked = new_link(&user("alice"), 0);
    db.store.create_link(&link).await.unwrap();
    db.store.create_link(&revoked).await.unwrap();
    db.store.revoke_link(&revoked.id, "", at(1)).await.unwrap();
    let build: &(dyn Fn(&Link) -> Vec<NewWebhook> + Send + Sync) =
        &|l: &Link| vec![hook(l.id.as_str(), "http://a", 0)];
    assert_eq!(
        db.store.announce_expired(at(1), 10, build).await.unwrap(),
        0
    );
    let after = at(TTL.as_millis() as i64);
    let other = db.open_another().await;
    let (a, b) = tokio::join!(
        db.store.announce_expired(after, 10, build),
        other.announce_expired(after, 10, build)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "announced once; never the revoked link"
    );
    assert_eq!(
        db.store.announce_expired(after, 10, build).await.unwrap(),
        0
    );
    assert_eq!(db.store.webhook_counts().await.unwrap().pending, 1);
}

async fn the_outbox_leases_retries_gives_up_and_purges(db: &mut TestDb) {
    let msgs = [hook("m1", "http://a", 0), hook("m2", "http://a", 1)];
    db.store.enqueue_webhooks(&msgs).await.unwrap();
    // The same message again (a retried enqueue) is not a second delivery.
    db.store.enqueue_webhooks(&msgs[..1]).await.unwrap();
    assert_eq!(db.store.webhook_counts().await.unwrap().pending, 2);

    // Two nodes claim at once: each message goes to one of them.
    let other = db.open_another().await;
    let (a, b) = tokio::join!(
        db.store.claim_webhooks(at(10), at(10_010), 10),
        other.claim_webhooks(at(10), at(10_010), 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a
        .iter()
        .chain(&b)
        .map(|d| d.message.msg_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["m1", "m2"]);
    let all: Vec<_> = a.into_iter().chain(b).collect();
    assert!(all.iter().all(|d| d.attempts == 1));
    assert_eq!(
        all.iter()
            .find(|d| d.message.msg_id == "m1")
            .unwrap()
            .message,
        msgs[0]
    );
    // Leased: nobody else gets them until the lease ends.
    assert!(db
        .store
        .claim_webhooks(at(20), at(30), 10)
        .await
        .unwrap()
        .is_empty());

    let m1 = all.iter().find(|d| d.message.msg_id == "m1").unwrap().seq;
    let m2 = all.iter().find(|d| d.message.msg_id == "m2").unwrap().seq;
    db.store
        .finish_webhook(m1, &WebhookOutcome::Delivered)
        .await
        .unwrap();
    db.store
        .finish_webhook(
            m2,
            &WebhookOutcome::Retry {
                at: at(5_000),
                error: "HTTP 500".into(),
            },
        )
        .await
        .unwrap();
    assert!(db
        .store
        .claim_webhooks(at(4_999), at(9_999), 10)
        .await
        .unwrap()
        .is_empty());
    db.restart().await;
    let again = db
        .store
        .claim_webhooks(at(5_000), at(9_000), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the retry survives a restart");
    assert_eq!(
        (again[0].message.msg_id.as_str(), again[0].attempts),
        ("m2", 2)
    );
    // A lease that ran out (a node died mid-delivery) is claimed again.
    let third = db
        .store
        .claim_webhooks(at(9_000), at(12_000), 10)
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].attempts, 3);
    db.store
        .finish_webhook(
            third[0].seq,
            &WebhookOutcome::Failed {
                at: at(9_500),
                error: "gone".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        db.store.webhook_counts().await.unwrap(),
        OutboxCounts {
            pending: 0,
            failed: 1
        }
    );
    assert!(db
        .store
        .claim_webhooks(at(99_000), at(99_999), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(db.store.purge_webhooks(at(9_499)).await.unwrap(), 0);
    assert_eq!(db.store.purge_webhooks(at(9_500)).await.unwrap(), 1);
    assert_eq!(
        db.store.webhook_counts().await.unwrap(),
        OutboxCounts::default()
    );
}
