//! The join path: the decision (pure) and the decision plus the store write that renews the link
//! and writes the call log, on SQLite and on PostgreSQL.
//!
//! `cargo bench -p callrelay-benches --bench join`
//! PostgreSQL runs when `CALLRELAY_TEST_DATABASE_URL` is set (`eval "$(scripts/pg start)"`).

use std::sync::Arc;
use std::time::Duration;

use callrelay_links::{decide_join, JoinRequest, Link, LinkId, LinkKind, NewLink, UserId};
use callrelay_store::{JoinOutcome, LinkStore, PostgresStore, SqliteStore};
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};

const TTL: Duration = Duration::from_secs(90 * 24 * 3600);

fn decision(c: &mut Criterion) {
    let now = Utc::now();
    let link = Link::create(
        LinkId::random(),
        NewLink {
            creator: UserId::parse("alice").unwrap(),
            kind: LinkKind::Video,
            title: None,
            scheduled_at: None,
            duration: None,
            require_approval: false,
        },
        now,
        TTL,
    );
    let bob = UserId::parse("bob").unwrap();
    c.bench_function("join/decision", |b| {
        b.iter(|| {
            decide_join(std::hint::black_box(&JoinRequest {
                link: Some(&link),
                joiner: &bob,
                blocked_by_creator: false,
                participants: 5,
                max_participants: 32,
                now,
            }))
        })
    });
}

/// One join as the HTTP handler does it, minus HTTP: read the link, check the block, decide,
/// record the join (renewal + call log, one transaction).
async fn join_once(store: &dyn LinkStore, id: &LinkId, user: &UserId) {
    let now = Utc::now();
    let link = store.get_link(id).await.unwrap();
    let link_ref = link.as_ref().unwrap();
    let blocked = store.is_blocked(&link_ref.creator, user).await.unwrap();
    decide_join(&JoinRequest {
        link: link.as_ref(),
        joiner: user,
        blocked_by_creator: blocked,
        participants: 1,
        max_participants: 32,
        now,
    })
    .unwrap();
    match store.record_join(id, user, now, TTL).await.unwrap() {
        JoinOutcome::Renewed(_) => {}
        other => panic!("join refused: {other:?}"),
    }
}

fn store_join(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn LinkStore>,
) {
    let link = Link::create(
        LinkId::random(),
        NewLink {
            creator: UserId::parse("alice").unwrap(),
            kind: LinkKind::Video,
            title: None,
            scheduled_at: None,
            duration: None,
            require_approval: false,
        },
        Utc::now(),
        TTL,
    );
    rt.block_on(store.create_link(&link)).unwrap();
    let users: Vec<UserId> = (0..64)
        .map(|i| UserId::parse(&format!("user{i}")).unwrap())
        .collect();
    let mut i = 0usize;
    c.bench_function(&format!("join/decision+store/{name}"), |b| {
        b.to_async(rt).iter(|| {
            i = i.wrapping_add(1);
            let user = &users[i % users.len()];
            let store = store.clone();
            let id = link.id;
            async move { join_once(store.as_ref(), &id, user).await }
        })
    });
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn LinkStore> = Arc::new(
        rt.block_on(SqliteStore::open(&dir.path().join("bench.db")))
            .unwrap(),
    );
    store_join(c, "sqlite", &rt, sqlite);

    match std::env::var("CALLRELAY_TEST_DATABASE_URL") {
        Ok(admin) => {
            let name = format!("cr_bench_{:08x}", rand::random::<u32>());
            rt.block_on(async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
            });
            let (base, _) = admin.rsplit_once('/').unwrap();
            let pg: Arc<dyn LinkStore> = Arc::new(rt.block_on(PostgresStore::connect(&format!("{base}/{name}"))).unwrap());
            store_join(c, "postgres", &rt, pg);
        }
        Err(_) => eprintln!("\n*** join/decision+store/postgres SKIPPED: set CALLRELAY_TEST_DATABASE_URL (eval \"$(scripts/pg start)\") ***\n"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = decision, stores
}
criterion_main!(benches);
