//! The PostgreSQL adapter against a real server (`CALLRELAY_TEST_DATABASE_URL`; CI always sets
//! it): leases and epochs, placement under races, claims after a partition, reports and releases.

use std::time::Duration;

use callrelay_cluster::{Advert, Claim, ClusterDb, ClusterError, Load, PlaceOutcome};

/// A fresh database with the store's migrations applied, or `None` (skipped locally).
async fn fresh() -> Option<String> {
    let Ok(admin) = std::env::var("CALLRELAY_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the cluster store tests: CALLRELAY_TEST_DATABASE_URL is unset"
        );
        eprintln!(
            "\n*** SKIPPED: set CALLRELAY_TEST_DATABASE_URL (eval \"$(scripts/pg start)\") ***\n"
        );
        return None;
    };
    let name = format!("cr_clusterdb_{:016x}", rand::random::<u64>());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{name}");
    let store = callrelay_store::PostgresStore::connect(&url).await.unwrap();
    store.close().await;
    Some(url)
}

fn advert(id: &str, region: &str) -> Advert {
    Advert {
        node_id: id.into(),
        region: region.into(),
        http_url: format!("http://{id}"),
        media_addrs: vec!["127.0.0.1:7710".into()],
        trunk_addr: format!("127.0.0.1:{}", 7800 + id.len()),
    }
}

const LEASE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_epochs_and_the_registry() {
    let Some(url) = fresh().await else { return };
    let db = ClusterDb::connect_lazy(&url).unwrap();
    let load = Load {
        participants: 3,
        rooms: 1,
        busy_ratio: 0.5,
        draining: false,
    };
    assert_eq!(
        db.register(&advert("a", "eu"), &load, LEASE).await.unwrap(),
        1
    );
    assert!(db.heartbeat("a", 1, &load, LEASE).await.unwrap());
    assert!(
        !db.heartbeat("a", 2, &load, LEASE).await.unwrap(),
        "not our epoch"
    );
    assert!(
        !db.heartbeat("b", 1, &load, LEASE).await.unwrap(),
        "never registered"
    );
    // Registering again (a restart, or after a lost lease) bumps the epoch.
    assert_eq!(
        db.register(&advert("a", "eu"), &load, LEASE).await.unwrap(),
        2
    );
    // A lease that ran out cannot be renewed: the node must register again.
    db.register(&advert("b", "us"), &load, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!db.heartbeat("b", 1, &load, LEASE).await.unwrap());
    let (now, nodes) = db.nodes().await.unwrap();
    let ids: Vec<(&str, i64)> = nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.epoch))
        .collect();
    assert_eq!(ids, [("a", 2), ("b", 1)]);
    assert_eq!(nodes[0].participants, 3);
    assert_eq!(nodes[0].media_addrs, ["127.0.0.1:7710"]);
    assert_eq!(
        nodes[0].trunk_addr,
        advert(&nodes[0].node_id, "").trunk_addr
    );
    assert_eq!(
        callrelay_cluster::rules::node_state(&nodes[0], now).as_str(),
        "serving"
    );
    assert_eq!(
        callrelay_cluster::rules::node_state(&nodes[1], now).as_str(),
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_placements_of_one_room_agree_every_time() {
    let Some(url) = fresh().await else { return };
    // Two nodes in two regions, each asking from its own region: each would place a new room on
    // itself; the row lock makes one of them see the other's placement.
    let a = ClusterDb::connect_lazy(&url).unwrap();
    let b = ClusterDb::connect_lazy(&url).unwrap();
    a.register(&advert("a", "eu"), &Load::default(), LEASE)
        .await
        .unwrap();
    b.register(&advert("b", "us"), &Load::default(), LEASE)
        .await
        .unwrap();
    let mut wins = [0, 0];
    for round in 0..200 {
        let link = format!("link{round:018}");
        let (x, y) = tokio::join!(a.place(&link, "eu", false), b.place(&link, "us", false));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.node_id, y.node_id, "round {round}");
        let outcomes = [x.outcome, y.outcome];
        assert!(
            outcomes.contains(&PlaceOutcome::New) && outcomes.contains(&PlaceOutcome::Existing),
            "round {round}: {outcomes:?}"
        );
        wins[usize::from(x.node_id == "b")] += 1;
    }
    eprintln!("placements over 200 races: a {} b {}", wins[0], wins[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_spread_over_the_region_before_any_load_is_reported() {
    let Some(url) = fresh().await else { return };
    let db = ClusterDb::connect_lazy(&url).unwrap();
    for id in ["a", "b", "c"] {
        db.register(&advert(id, "eu"), &Load::default(), LEASE)
            .await
            .unwrap();
    }
    let mut homes = Vec::new();
    for i in 0..6 {
        homes.push(
            db.place(&format!("room{i}"), "eu", false)
                .await
                .unwrap()
                .node_id,
        );
    }
    assert_eq!(homes, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_home_is_replaced_and_its_stale_copy_told_so() {
    let Some(url) = fresh().await else { return };
    let db = ClusterDb::connect_lazy(&url).unwrap();
    let short = Duration::from_millis(300);
    db.register(&advert("a", "eu"), &Load::default(), LEASE)
        .await
        .unwrap();
    let b1 = db
        .register(&advert("b", "eu"), &Load::default(), short)
        .await
        .unwrap();
    // B holds the room (it was placed there: B is the least loaded... make it so by claiming).
    assert_eq!(
        db.claim("room1", "b", b1, 2).await.unwrap(),
        Claim::TakeOver
    );
    assert_eq!(db.claim("room1", "b", b1, 2).await.unwrap(), Claim::Ours);
    let p = db.place("room1", "eu", false).await.unwrap();
    assert_eq!(
        (p.node_id.as_str(), p.outcome, p.participants),
        ("b", PlaceOutcome::Existing, 2)
    );
    // B's lease runs out (cut off): a join places the room on A.
    tokio::time::sleep(short * 2).await;
    assert!(
        matches!(
            db.place("room1", "eu", true).await,
            Err(ClusterError::Unavailable(_))
        ),
        "a node just back defers the takeover"
    );
    let p = db.place("room1", "eu", false).await.unwrap();
    assert_eq!(
        (p.node_id.as_str(), p.outcome),
        ("a", PlaceOutcome::Replaced)
    );
    // B comes back under a new epoch: its copy is stale, the room lives on A.
    let b2 = db
        .register(&advert("b", "eu"), &Load::default(), LEASE)
        .await
        .unwrap();
    assert_eq!(b2, b1 + 1);
    assert_eq!(
        db.report("b", b2, &[("room1".into(), 2)]).await.unwrap(),
        Vec::<String>::new(),
        "the row does not name B"
    );
    assert_eq!(
        db.claim("room1", "b", b2, 2).await.unwrap(),
        Claim::Elsewhere {
            node_id: "a".into()
        }
    );
    // Had nobody taken it, B would have taken it back under its new epoch.
    let b3 = db
        .register(&advert("b", "eu"), &Load::default(), LEASE)
        .await
        .unwrap();
    db.claim("room2", "b", b2, 1).await.unwrap();
    assert_eq!(
        db.claim("room2", "b", b3, 1).await.unwrap(),
        Claim::TakeOver
    );
    assert_eq!(
        db.report("b", b3, &[("room2".into(), 4)]).await.unwrap(),
        ["room2"]
    );
    let r = db.room("room2").await.unwrap().unwrap();
    assert!(r.live);
    assert_eq!(r.row.participants, 4);
    // Emptied: reported as zero by the next report that does not list it.
    db.report("b", b3, &[]).await.unwrap();
    assert_eq!(db.room("room2").await.unwrap().unwrap().row.participants, 0);
    // Released when empty (after the grace), and all at once at the end of a drain.
    assert_eq!(
        db.release_idle("b", b3, &[], Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        db.release_idle("b", b3, &[], Duration::from_millis(1))
            .await
            .unwrap(),
        1
    );
    assert!(db.room("room2").await.unwrap().is_none());
    db.claim("room3", "a", 1, 1).await.unwrap();
    assert_eq!(db.release_all("a").await.unwrap(), 2, "room1 and room3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_serving_node_no_placement_and_notices_arrive() {
    let Some(url) = fresh().await else { return };
    let db = ClusterDb::connect_lazy(&url).unwrap();
    assert!(matches!(
        db.place("r", "eu", false).await,
        Err(ClusterError::NoNode)
    ));
    assert!(
        db.room("r").await.unwrap().is_none(),
        "a refused placement leaves no row"
    );
    let draining = Load {
        draining: true,
        ..Load::default()
    };
    db.register(&advert("a", "eu"), &draining, LEASE)
        .await
        .unwrap();
    assert!(matches!(
        db.place("r", "eu", false).await,
        Err(ClusterError::NoNode)
    ));

    let mut listener = db.listen().await.unwrap();
    let notice = callrelay_cluster::Notice::Revoke {
        link: "4bT9xQ2mZr7LpK0aW3cV1e".into(),
        at_ms: 1,
        origin: "a".into(),
    };
    db.notify(&notice).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        callrelay_cluster::Notice::from_payload(got.payload()),
        Some(notice)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_of_a_call_keeps_its_copy_and_is_listed_with_the_home() {
    let Some(url) = fresh().await else { return };
    let db = ClusterDb::connect_lazy(&url).unwrap();
    let short = Duration::from_millis(300);
    let a = db
        .register(&advert("a", "eu"), &Load::default(), LEASE)
        .await
        .unwrap();
    let b = db
        .register(&advert("b", "us"), &Load::default(), LEASE)
        .await
        .unwrap();
    let c = db
        .register(&advert("c", "ap"), &Load::default(), short)
        .await
        .unwrap();
    assert_eq!(db.claim("call", "a", a, 1).await.unwrap(), Claim::TakeOver);
    // Without a leg row, B's copy is a stale one; with it, B is a leg.
    assert_eq!(
        db.claim("call", "b", b, 1).await.unwrap(),
        Claim::Elsewhere {
            node_id: "a".into()
        }
    );
    db.add_leg("call", "b", b).await.unwrap();
    db.add_leg("call", "c", c).await.unwrap();
    assert_eq!(
        db.claim("call", "b", b, 3).await.unwrap(),
        Claim::Leg {
            node_id: "a".into()
        }
    );
    // The call's count is the home's and its legs': 1 on A, 3 on B, 0 on C.
    let room = db.room("call").await.unwrap().unwrap();
    assert_eq!((room.row.participants, room.on_legs), (1, 3));
    let placed = db.place("call", "us", false).await.unwrap();
    assert_eq!(
        (placed.node_id.as_str(), placed.participants),
        ("a", 4),
        "a join sees the whole call"
    );
    let ids = |v: Vec<callrelay_cluster::NodeView>| -> Vec<String> {
        v.into_iter().map(|n| n.node_id).collect()
    };
    assert_eq!(ids(db.legs("call").await.unwrap()), ["a", "b", "c"]);
    assert!(db.legs("other").await.unwrap().is_empty());
    // C's lease runs out: it is no longer listed.
    tokio::time::sleep(short * 2).await;
    assert_eq!(ids(db.legs("call").await.unwrap()), ["a", "b"]);
    // B under a new epoch (it restarted) is not a leg any more until recorded again.
    let b2 = db
        .register(&advert("b", "us"), &Load::default(), LEASE)
        .await
        .unwrap();
    assert_ne!(b, b2);
    assert_eq!(ids(db.legs("call").await.unwrap()), ["a"]);
    // B's room ended: its leg row goes.
    db.add_leg("call", "b", b2).await.unwrap();
    db.release("call", "b").await.unwrap();
    assert!(matches!(
        db.claim("call", "b", b2, 1).await.unwrap(),
        Claim::Elsewhere { .. }
    ));
}
