//! The relay cluster as operators run it: three real `callrelay` processes on 127.0.0.1 (their own
//! HTTP and UDP ports) sharing one real PostgreSQL database, driven by str0m clients through the
//! public API. Each test has its own database and stops everything it starts.
//!
//! Each node is in its own region (`region-a`, …), so a join without a region hint places a new
//! call on the node that took the request: a test chooses a call's home by the node it joins
//! through first. Leases are short (2 s) so the failure tests stay quick; everything else is the
//! default configuration.

use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientEvent, Member, MemberEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[path = "support/relay.rs"]
mod support;
#[path = "support/webhooks.rs"]
mod webhooks;
use support::{audio_only, create_link, send, token, Relay};

const LEASE: &str = "2s";

/// Skips (locally) or fails (CI) without a PostgreSQL server; returns its admin URL.
fn admin_url() -> Option<String> {
    match std::env::var("CALLRELAY_TEST_DATABASE_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the cluster tests: CALLRELAY_TEST_DATABASE_URL is unset"
            );
            eprintln!("\n*** SKIPPED cluster test: set CALLRELAY_TEST_DATABASE_URL (eval \"$(scripts/pg start)\") ***\n");
            None
        }
    }
}

/// A fresh database on the test server; returns (its URL, the server's host:port, the user).
async fn fresh_database(admin: &str) -> (String, String, String) {
    let name = format!("cr_cluster_{:016x}", rand::random::<u64>());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let after_at = admin.split('@').nth(1).unwrap();
    let hostport = after_at.split('/').next().unwrap().to_owned();
    let user = admin
        .trim_start_matches("postgres://")
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    (
        format!("postgres://{user}@{hostport}/{name}"),
        hostport,
        user,
    )
}

/// A TCP forwarder to `target` that can be cut (every connection dropped, new ones closed at
/// once) and restored: a node's link to PostgreSQL.
async fn cuttable_proxy(target: String) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up_tx, up_rx) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut up = up_rx.clone();
            if !*up.borrow() {
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = up.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (port, up_tx)
}

/// Starts node `name` (`a`, `b`, …) on `db`.
fn node(name: &str, db: &str) -> Relay {
    node_with(name, db, &[])
}

/// Starts node `name` on `db` with more settings.
fn node_with(name: &str, db: &str, extra: &[(&str, &str)]) -> Relay {
    let id = format!("node-{name}");
    let region = format!("region-{name}");
    let mut env = vec![
        ("CALLRELAY_STORE_DATABASE_URL", db),
        ("CALLRELAY_CLUSTER_NODE_ID", &id),
        ("CALLRELAY_CLUSTER_REGION", &region),
        ("CALLRELAY_CLUSTER_LEASE", LEASE),
        ("CALLRELAY_CLUSTER_HEARTBEAT", "250ms"),
        ("CALLRELAY_CLUSTER_RECONCILE", "500ms"),
        ("CALLRELAY_MEDIA_WORKERS", "1"),
        ("CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE", "1000"),
        ("CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE", "1000"),
        ("CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE", "1000"),
    ];
    env.extend_from_slice(extra);
    Relay::start(&env, &[])
}

/// Joins through `via` and waits for media to connect.
async fn join(via: &str, user: &str, link: &str) -> Client {
    let mut c = Client::join(via, &token(user, false), link, audio_only())
        .await
        .unwrap_or_else(|e| panic!("{user} joins through {via}: {e}"));
    c.wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    c
}

/// Sends audio from `from` until `to` has received `n` packets of it (or panics after `within`).
async fn media_flows(from: &Client, to: &mut Client, n: usize, within: Duration) {
    let tag = rand::random::<u8>() | 1;
    let payload = vec![tag; 120];
    let until = Instant::now() + within;
    let mut got = 0;
    while got < n {
        assert!(
            Instant::now() < until,
            "media did not flow within {within:?} ({got}/{n} packets)"
        );
        from.send_audio(payload.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(e) = to.try_next_event() {
            if let ClientEvent::Media(p) = e {
                if p.payload == payload {
                    got += 1;
                }
            }
        }
    }
}

/// Joins a rejoining participant through `urls[0]` (later rejoins go round the list) and waits
/// for media to connect.
async fn member(urls: &[&Relay], user: &str, link: &str) -> Member {
    let urls: Vec<String> = urls.iter().map(|r| r.base.clone()).collect();
    let mut m = Member::join(&urls, &token(user, false), link, audio_only())
        .await
        .unwrap_or_else(|e| panic!("{user} joins: {e}"));
    m.wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    m
}

/// Waits for the member to have joined again by itself; returns why (`moved`, `node_lost`, …).
async fn rejoined(m: &mut Member, within: Duration) -> String {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, m.next_event()).await {
            Ok(Some(MemberEvent::Rejoined { reason, .. })) => return reason,
            Ok(Some(MemberEvent::RejoinFailed { reason, error, .. })) => {
                panic!("rejoin after {reason} failed: {error}")
            }
            Ok(Some(MemberEvent::Client(ClientEvent::Closed { reason }))) => {
                panic!("session ended for good: {reason:?}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the member ended"),
            Err(_) => panic!("no rejoin within {within:?}"),
        }
    }
}

/// Sends audio from member `from` until member `to` has received `n` packets of it.
async fn member_media_flows(from: &mut Member, to: &mut Member, n: usize, within: Duration) {
    let tag = rand::random::<u8>() | 1;
    let payload = vec![tag; 120];
    let until = Instant::now() + within;
    let mut got = 0;
    while got < n {
        assert!(
            Instant::now() < until,
            "media did not flow within {within:?} ({got}/{n} packets)"
        );
        // Err while a rejoin is still in progress: keep pumping both.
        let _ = from.send_audio(payload.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        while from.try_next_event().is_some() {}
        while let Some(e) = to.try_next_event() {
            if let MemberEvent::Client(ClientEvent::Media(p)) = e {
                if p.payload == payload {
                    got += 1;
                }
            }
        }
    }
}

/// Waits for the session to end; returns the relay's `removed` reason and when it came.
async fn removed(c: &mut Client, within: Duration) -> Option<String> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, c.next_event()).await {
            Ok(Some(ClientEvent::Closed { reason })) => return reason,
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(_) => panic!("not removed within {within:?}"),
        }
    }
}

async fn preview_participants(http: &reqwest::Client, via: &Relay, link: &str) -> u64 {
    let (st, p) = send(http.get(format!("{}/v1/links/{link}", via.base))).await;
    assert_eq!(st, 200, "{p}");
    p["participants"].as_u64().unwrap()
}

/// The node a join through `via` is sent to (the host of its `signal_url`).
async fn home_of(http: &reqwest::Client, via: &Relay, user: &str, link: &str) -> String {
    let (st, j) = send(
        http.post(format!("{}/v1/links/{link}/join", via.base))
            .bearer_auth(token(user, false)),
    )
    .await;
    assert_eq!(st, 200, "{j}");
    j["signal_url"].as_str().unwrap().to_owned()
}

fn signal_url(r: &Relay) -> String {
    format!("ws://127.0.0.1:{}/v1/signal", r.port)
}

async fn stop_all(nodes: Vec<Relay>) {
    for n in nodes {
        // Killed, not drained: a test's leftover calls must not hold it up.
        drop(n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_through_three_nodes_end_in_one_call() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, b, c) = (node("a", &db), node("b", &db), node("c", &db));
    let http = reqwest::Client::new();
    let link = create_link(&http, &b, "alice").await;

    let mut alice = join(&a.base, "alice", &link).await;
    let mut bob = join(&b.base, "bob", &link).await;
    let mut carol = join(&c.base, "carol", &link).await;
    // Everyone receives everyone: one call, not three.
    media_flows(&alice, &mut bob, 10, Duration::from_secs(5)).await;
    media_flows(&bob, &mut carol, 10, Duration::from_secs(5)).await;
    media_flows(&carol, &mut alice, 10, Duration::from_secs(5)).await;
    // Every node's preview counts the three, wherever they are (the home reports each 500 ms).
    let until = Instant::now() + Duration::from_secs(5);
    for via in [&a, &b, &c] {
        loop {
            let n = preview_participants(&http, via, &link).await;
            if n == 3 {
                break;
            }
            assert!(
                Instant::now() < until,
                "preview through {} says {n}",
                via.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The call lives on the node the first join went through (its region), for every later join
    // (after the preview check: a join through the home itself holds a seat until its grant expires).
    for via in [&a, &b, &c] {
        assert_eq!(home_of(&http, via, "dave", &link).await, signal_url(&a));
    }
    // The operator sees three serving members.
    let (st, nodes) = send(
        http.get(format!("{}/v1/admin/nodes", c.base))
            .bearer_auth(token("ops", true)),
    )
    .await;
    assert_eq!(st, 200, "{nodes}");
    assert_eq!(nodes["cluster"], true);
    let list = nodes["nodes"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-a", "node-b", "node-c"]);
    assert!(list.iter().all(|n| n["state"] == "serving"), "{nodes}");
    assert_eq!(list.iter().filter(|n| n["self"] == true).count(), 1);
    // The same as a table from the command line.
    let out = std::process::Command::new(support::BIN)
        .args(["admin", "nodes", "--url", &b.base])
        .env_clear()
        .env("CALLRELAY_AUTH_SECRET", support::SECRET)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("STATE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("node-a ") && lines[1].contains("serving"),
        "{table}"
    );
    assert!(lines[2].starts_with("node-b *"), "B answered: {table}");
    assert!(lines[1].contains(" 3 "), "A hosts the three: {table}");
    // Without the operator's secret it is refused, and says so.
    let out = std::process::Command::new(support::BIN)
        .args(["admin", "nodes", "--url", &b.base])
        .env_clear()
        .env(
            "CALLRELAY_AUTH_SECRET",
            "another-secret-another-secret-another",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    drop((alice, bob, carol));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_blocks_through_one_node_remove_participants_on_another_within_1s() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, b, c) = (node("a", &db), node("b", &db), node("c", &db));
    let http = reqwest::Client::new();

    // A call hosted on B, with participants who joined through A and B.
    let link = create_link(&http, &a, "alice").await;
    let mut alice = join(&b.base, "alice", &link).await;
    let mut bob = join(&a.base, "bob", &link).await;
    media_flows(&alice, &mut bob, 5, Duration::from_secs(5)).await;
    let (st, _) = send(
        http.post(format!("{}/v1/admin/links/{link}/revoke", c.base))
            .bearer_auth(token("ops", true))
            .json(&serde_json::json!({"reason": "test"})),
    )
    .await;
    assert_eq!(st, 200);
    let revoked_at = Instant::now();
    for c in [&mut alice, &mut bob] {
        assert_eq!(
            removed(c, Duration::from_secs(3)).await.as_deref(),
            Some("revoked")
        );
    }
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "removed {:?} after the revocation through another node",
        revoked_at.elapsed()
    );

    // A block made through C removes the blocked user from the creator's call on B.
    let link = create_link(&http, &a, "alice").await;
    let alice = join(&b.base, "alice", &link).await;
    let mut mallory = join(&c.base, "mallory", &link).await;
    media_flows(&alice, &mut mallory, 5, Duration::from_secs(5)).await;
    let (st, _) = send(
        http.put(format!("{}/v1/me/blocks/mallory", c.base))
            .bearer_auth(token("alice", false)),
    )
    .await;
    assert_eq!(st, 204);
    let blocked_at = Instant::now();
    assert_eq!(
        removed(&mut mallory, Duration::from_secs(3))
            .await
            .as_deref(),
        Some("blocked")
    );
    assert!(
        blocked_at.elapsed() < Duration::from_secs(1),
        "removed {:?} after the block through another node",
        blocked_at.elapsed()
    );
    // Alice stays, and the block holds on every node.
    assert!(alice.is_running());
    for via in [&a, &b, &c] {
        let (st, p) = send(
            http.post(format!("{}/v1/links/{link}/join", via.base))
                .bearer_auth(token("mallory", false)),
        )
        .await;
        assert_eq!((st, p["code"].as_str()), (403, Some("join_refused")));
    }
    // B measured it.
    let (_, _) = (&a, &c);
    let metrics = http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["revoke", "block"] {
        let count = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "callrelay_control_propagation_seconds_count{{kind=\"{kind}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "B observed a {kind} propagation:\n{metrics}");
    }
    drop((alice, mallory));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_home_node_costs_its_call_less_than_5s() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, mut b, c) = (node("a", &db), node("b", &db), node("c", &db));
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    // The call lives on B (alice's join through B placed it there); bob came in through C.
    // Both are `callrelay_client::Member`s: they rejoin by themselves.
    let mut alice = member(&[&b, &a, &c], "alice", &link).await;
    let mut bob = member(&[&c, &a, &b], "bob", &link).await;
    member_media_flows(&mut alice, &mut bob, 5, Duration::from_secs(5)).await;

    b.child.kill().unwrap(); // SIGKILL
    b.child.wait().unwrap();
    let killed = Instant::now();
    // Their signaling dies without a `removed`: each joins again through the nodes left, once
    // B's lease has run out and the call is placed again.
    let (ra, rb) = tokio::join!(
        rejoined(&mut alice, Duration::from_secs(5)),
        rejoined(&mut bob, Duration::from_secs(5))
    );
    assert_eq!((ra.as_str(), rb.as_str()), ("node_lost", "node_lost"));
    member_media_flows(&mut alice, &mut bob, 5, Duration::from_secs(5)).await;
    member_media_flows(&mut bob, &mut alice, 5, Duration::from_secs(5)).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "media back after {took:?}");
    eprintln!("media flowing again {took:?} after kill -9 of the home node");
    // The operator sees B's lease gone.
    let (_, nodes) = send(
        http.get(format!("{}/v1/admin/nodes", a.base))
            .bearer_auth(token("ops", true)),
    )
    .await;
    let b_row = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "node-b")
        .cloned()
        .unwrap();
    assert_eq!(b_row["state"], "expired", "{nodes}");
    drop((alice, bob));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_keeps_calls_refuses_joins_and_recovers() {
    let Some(admin) = admin_url() else { return };
    let (_, hostport, user) = fresh_database(&admin).await;
    let (db, _, _) = fresh_database(&admin).await;
    let name = db.rsplit('/').next().unwrap().to_owned();
    let (proxy, up) = cuttable_proxy(hostport).await;
    let via_proxy = format!("postgres://{user}@127.0.0.1:{proxy}/{name}");
    let (a, b, c) = (
        node("a", &via_proxy),
        node("b", &via_proxy),
        node("c", &via_proxy),
    );
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut alice = join(&b.base, "alice", &link).await;
    let mut bob = join(&c.base, "bob", &link).await;
    media_flows(&alice, &mut bob, 5, Duration::from_secs(5)).await;

    up.send_replace(false);
    // Longer than a lease: no node can renew it, and no call ends for that.
    let cut = Instant::now();
    for via in [&a, &b, &c] {
        let started = Instant::now();
        let (st, p) = send(
            http.post(format!("{}/v1/links/{link}/join", via.base))
                .bearer_auth(token("carol", false)),
        )
        .await;
        assert_eq!(
            (st, p["code"].as_str()),
            (503, Some("store_unavailable")),
            "{p}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "fails fast");
    }
    while cut.elapsed() < Duration::from_secs(4) {
        media_flows(&alice, &mut bob, 3, Duration::from_secs(2)).await;
        media_flows(&bob, &mut alice, 3, Duration::from_secs(2)).await;
    }
    assert!(alice.is_running() && bob.is_running());
    // Load balancers stop sending joins: not ready, and the lease is known to be gone.
    let (st, r) = send(http.get(format!("{}/readyz", a.base))).await;
    assert_eq!(
        (st, r["cluster_lease"].as_bool()),
        (503, Some(false)),
        "{r}"
    );

    up.send_replace(true);
    // The nodes register again; the call stays where it is and a new join finds it.
    let until = Instant::now() + Duration::from_secs(15);
    let mut carol = loop {
        match Client::join(&a.base, &token("carol", false), &link, audio_only()).await {
            Ok(mut c) => {
                c.wait_connected(Duration::from_secs(10)).await.unwrap();
                break c;
            }
            Err(e) => {
                assert!(Instant::now() < until, "joins recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    media_flows(&alice, &mut carol, 5, Duration::from_secs(5)).await;
    media_flows(&carol, &mut bob, 5, Duration::from_secs(5)).await;
    assert!(alice.is_running() && bob.is_running(), "nobody was moved");
    let (st, r) = send(http.get(format!("{}/readyz", a.base))).await;
    assert_eq!((st, r["cluster_lease"].as_bool()), (200, Some(true)), "{r}");
    drop((alice, bob, carol));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_a_room_after_a_partition_become_one_within_5s() {
    let Some(admin) = admin_url() else { return };
    let (db, hostport, user) = fresh_database(&admin).await;
    let name = db.rsplit('/').next().unwrap().to_owned();
    let (proxy, up) = cuttable_proxy(hostport).await;
    let b_db = format!("postgres://{user}@127.0.0.1:{proxy}/{name}");
    let (a, b, c) = (node("a", &db), node("b", &b_db), node("c", &db));
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut alice = member(&[&b, &c, &a], "alice", &link).await;
    let mut bob = member(&[&b, &a, &c], "bob", &link).await;
    member_media_flows(&mut alice, &mut bob, 5, Duration::from_secs(5)).await;

    // B is cut off: its call goes on, but its lease runs out and the room is placed again on A.
    up.send_replace(false);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, j) = send(
            http.post(format!("{}/v1/links/{link}/join", a.base))
                .bearer_auth(token("probe", false)),
        )
        .await;
        if st == 200 && j["signal_url"] == signal_url(&a).as_str() {
            break;
        }
        assert!(
            Instant::now() < until,
            "the room is placed again once B's lease ran out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut carol = member(&[&a], "carol", &link).await;
    // Two copies now: alice and bob on B, carol alone on A.
    member_media_flows(&mut alice, &mut bob, 3, Duration::from_secs(5)).await;

    up.send_replace(true);
    let healed = Instant::now();
    // B merges its copy into A's: alice and bob are told `moved` and rejoin by themselves.
    let (ra, rb) = tokio::join!(
        rejoined(&mut alice, Duration::from_secs(5)),
        rejoined(&mut bob, Duration::from_secs(5))
    );
    assert_eq!((ra.as_str(), rb.as_str()), ("moved", "moved"));
    member_media_flows(&mut carol, &mut alice, 5, Duration::from_secs(5)).await;
    member_media_flows(&mut bob, &mut carol, 5, Duration::from_secs(5)).await;
    let took = healed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "one call again after {took:?}"
    );
    eprintln!("one call again {took:?} after the partition healed");
    drop((alice, bob, carol));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_to_place_a_new_room_place_it_once() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, b) = (node("a", &db), node("b", &db));
    let http = reqwest::Client::new();
    let mut homes = std::collections::HashMap::new();
    for round in 0..40 {
        let link = create_link(&http, &a, "alice").await;
        // Each node would place a new room on itself (its own region): only one may.
        let (x, y) = tokio::join!(
            home_of(&http, &a, "u1", &link),
            home_of(&http, &b, "u2", &link)
        );
        assert_eq!(x, y, "round {round}: both joins go to one home");
        *homes.entry(x).or_insert(0) += 1;
    }
    eprintln!("homes chosen over 40 races: {homes:?}");
    stop_all(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_calls_and_gets_no_new_room() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, b, c) = (node("a", &db), node("b", &db), node("c", &db));
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut alice = join(&a.base, "alice", &link).await;
    let mut bob = join(&b.base, "bob", &link).await;
    media_flows(&alice, &mut bob, 5, Duration::from_secs(5)).await;

    let (st, d) = send(
        http.post(format!("{}/v1/admin/drain", a.base))
            .bearer_auth(token("ops", true)),
    )
    .await;
    assert_eq!((st, d["draining"].as_bool()), (200, Some(true)));
    // The registry says so (the heartbeat is sent at once).
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, nodes) = send(
            http.get(format!("{}/v1/admin/nodes", c.base))
                .bearer_auth(token("ops", true)),
        )
        .await;
        if nodes["nodes"][0]["state"] == "draining" {
            break;
        }
        assert!(Instant::now() < until, "A shows draining: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new call joined through A goes elsewhere; A's call goes on and still takes joiners.
    let other = create_link(&http, &a, "dave").await;
    let home = home_of(&http, &a, "dave", &other).await;
    assert_ne!(home, signal_url(&a), "no new room on a draining node");
    let dave = join(&a.base, "dave", &other).await;
    let mut erin = join(&c.base, "erin", &other).await;
    media_flows(&dave, &mut erin, 5, Duration::from_secs(5)).await;
    let mut carol = join(&c.base, "carol", &link).await;
    assert_eq!(home_of(&http, &c, "frank", &link).await, signal_url(&a));
    media_flows(&alice, &mut carol, 5, Duration::from_secs(5)).await;
    media_flows(&bob, &mut alice, 5, Duration::from_secs(5)).await;
    drop((alice, bob, carol, dave, erin));
    stop_all(vec![a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_expires_during_a_call_ends_it_on_its_home() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let ttl = [("CALLRELAY_LINKS_TTL", "3s")];
    let (a, b) = (node_with("a", &db, &ttl), node_with("b", &db, &ttl));
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut alice = join(&b.base, "alice", &link).await;
    let joined = Instant::now();
    // The join renewed the link for 3 s; nobody joins again, so it expires during the call and
    // the home's reconciliation (every 500 ms here) ends the call.
    assert_eq!(
        removed(&mut alice, Duration::from_secs(6)).await.as_deref(),
        Some("expired")
    );
    let took = joined.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "not before it expired: {took:?}"
    );
    let (st, p) = send(
        http.post(format!("{}/v1/links/{link}/join", a.base))
            .bearer_auth(token("bob", false)),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (410, Some("link_expired")));
    let metrics = http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("callrelay_control_propagation_seconds_count{kind=\"expiry\"} 1"),
        "{metrics}"
    );
    drop(alice);
    stop_all(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_lists_the_clusters_calls_and_removes_a_participant_where_it_is() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (a, b) = (node("a", &db), node("b", &db));
    let http = reqwest::Client::new();
    let ops = token("ops", true);
    // One call homed on A (bob's join through B goes there too), one on B.
    let on_a = create_link(&http, &a, "alice").await;
    let alice = join(&a.base, "alice", &on_a).await;
    let mut bob = join(&b.base, "bob", &on_a).await;
    media_flows(&alice, &mut bob, 5, Duration::from_secs(5)).await;
    let on_b = create_link(&http, &b, "carol").await;
    let carol = join(&b.base, "carol", &on_b).await;

    // Asked through B, the list has both calls, each with its node.
    let (st, list) = send(
        http.get(format!("{}/v1/admin/rooms", b.base))
            .bearer_auth(&ops),
    )
    .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["cluster"], true);
    assert_eq!(list["unreachable_nodes"], serde_json::json!([]), "{list}");
    let mut seen: Vec<(String, u64)> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_owned(),
                r["participants"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("node-a".to_owned(), 2), ("node-b".to_owned(), 1)],
        "{list}"
    );
    let digest_a = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "node-a")
        .unwrap()["room"]
        .as_str()
        .unwrap()
        .to_owned();

    // B answers for A's call, and removes bob from it.
    let (st, ps) = send(
        http.get(format!("{}/v1/admin/rooms/{digest_a}/participants", b.base))
            .bearer_auth(&ops),
    )
    .await;
    assert_eq!((st, ps["node"].as_str()), (200, Some("node-a")), "{ps}");
    assert_eq!(ps["participants"].as_array().map(Vec::len), Some(2), "{ps}");
    let (st, done) = send(
        http.delete(format!(
            "{}/v1/admin/rooms/{digest_a}/participants/{}",
            b.base,
            bob.participant_id()
        ))
        .bearer_auth(&ops),
    )
    .await;
    assert_eq!((st, done["node"].as_str()), (200, Some("node-a")), "{done}");
    assert_eq!(
        removed(&mut bob, Duration::from_secs(5)).await.as_deref(),
        Some("kicked")
    );

    // A node that died (its lease has not run out yet) is named, not silently left out.
    drop(alice);
    drop(a);
    let (st, list) = send(
        http.get(format!("{}/v1/admin/rooms", b.base))
            .bearer_auth(&ops),
    )
    .await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(
        list["unreachable_nodes"],
        serde_json::json!(["node-a"]),
        "{list}"
    );
    assert_eq!(list["rooms"].as_array().map(Vec::len), Some(1), "{list}");
    drop(carol);
    stop_all(vec![b]).await;
}

/// A free UDP port on 127.0.0.1 (bound, read, released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `relay`'s metric until `ok(value)`, for at most `within`; returns the last value.
async fn metric_until(
    relay: &Relay,
    line: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let until = Instant::now() + within;
    loop {
        let v = support::metric(relay, line).await;
        if ok(v) || Instant::now() > until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The trunk (#16): three nodes with certificates from `callrelay cluster init` connect every
/// pair once (each node sees 2 connections); a fourth node with another cluster's certificates,
/// on the same database, is refused by all three, and both sides count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_join_every_pair_of_nodes_and_refuse_another_clusters_node() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    callrelay_trunk::init_dir(ours.path(), &names(&["node-a", "node-b", "node-c"])).unwrap();
    callrelay_trunk::init_dir(theirs.path(), &names(&["node-d"])).unwrap();
    let c_addr = format!("127.0.0.1:{}", free_udp_port());
    let with_trunk = |name: &str, certs: &std::path::Path| {
        // Node c keeps its address across its restart below.
        let addr = if name == "c" {
            c_addr.clone()
        } else {
            format!("127.0.0.1:{}", free_udp_port())
        };
        let certs = certs.to_str().unwrap().to_owned();
        node_with(
            name,
            &db,
            &[
                ("CALLRELAY_CLUSTER_TRUNK_ADDR", &addr),
                ("CALLRELAY_CLUSTER_TRUNK_CERTS", &certs),
            ],
        )
    };
    let a = with_trunk("a", ours.path());
    let b = with_trunk("b", ours.path());
    let c = with_trunk("c", ours.path());
    for n in [&a, &b, &c] {
        let v = metric_until(
            n,
            "callrelay_trunk_connections ",
            Duration::from_secs(10),
            |v| v == 2.0,
        )
        .await;
        assert_eq!(v, 2.0, "node on port {}: trunk connections", n.port);
    }
    // The operator sees the trunk from any node: each other member's address, up, its RTT.
    let out = std::process::Command::new(support::BIN)
        .args(["admin", "nodes", "--url", &a.base, "--json"])
        .env("CALLRELAY_ADMIN_TOKEN", token("ops", true))
        .output()
        .unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    for n in nodes["nodes"].as_array().unwrap() {
        assert!(
            n["trunk_addr"]
                .as_str()
                .is_some_and(|t| t.starts_with("127.0.0.1:")),
            "{n}"
        );
        if n["node_id"] == "node-a" {
            assert!(n["trunk"].is_null(), "{n}");
        } else {
            assert_eq!(n["trunk"]["up"], true, "{n}");
            assert!(
                n["trunk"]["rtt_ms"].as_f64().is_some_and(|r| r < 1000.0),
                "{n}"
            );
        }
    }
    // Round-trip times are observed once a heartbeat per peer.
    let rtts = metric_until(
        &a,
        "callrelay_trunk_rtt_seconds_count ",
        Duration::from_secs(5),
        |v| v >= 2.0,
    )
    .await;
    assert!(rtts >= 2.0, "rtt observations: {rtts}");

    let d = with_trunk("d", theirs.path());
    let refused = "callrelay_trunk_refused_total{reason=\"unknown_ca\"} ";
    for n in [&a, &b, &c, &d] {
        let v = metric_until(n, refused, Duration::from_secs(10), |v| v >= 1.0).await;
        assert!(v >= 1.0, "node on port {}: refusals {v}", n.port);
    }
    assert_eq!(
        support::metric(&d, "callrelay_trunk_connections ").await,
        0.0
    );
    for n in [&a, &b, &c] {
        assert_eq!(
            support::metric(n, "callrelay_trunk_connections ").await,
            2.0,
            "the refused node takes no place"
        );
    }

    // c is killed (no close reaches a or b) and started again on the same address: its new
    // start replaces the stale connections at once, instead of after their 10 s idle timeout.
    drop(c);
    let killed = Instant::now();
    let c = with_trunk("c", ours.path());
    for n in [&a, &b, &c] {
        let v = metric_until(
            n,
            "callrelay_trunk_connections ",
            Duration::from_secs(5),
            |v| v == 2.0,
        )
        .await;
        assert_eq!(
            v, 2.0,
            "node on port {}: trunk connections after c's restart",
            n.port
        );
    }
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "the trunk took {:?} to come back (the idle timeout is 10 s)",
        killed.elapsed()
    );
    // And it stays: had a or b kept the stale connection, they would close each of c's new ones
    // as a duplicate and c's count would fall back between its dials.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        for n in [&a, &b, &c] {
            assert_eq!(
                support::metric(n, "callrelay_trunk_connections ").await,
                2.0,
                "node on port {}: trunk connections after c's restart",
                n.port
            );
        }
    }
    stop_all(vec![a, b, c, d]).await;
}

/// Three nodes with trunks (certificates from `callrelay cluster init`), every pair connected.
async fn trunked_nodes(db: &str, certs: &std::path::Path) -> (Relay, Relay, Relay) {
    trunked_nodes_with(db, certs, &[]).await
}

/// [`trunked_nodes`] with more settings.
async fn trunked_nodes_with(
    db: &str,
    certs: &std::path::Path,
    extra: &[(&str, &str)],
) -> (Relay, Relay, Relay) {
    let names: Vec<String> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    callrelay_trunk::init_dir(certs, &names).unwrap();
    let certs = certs.to_str().unwrap().to_owned();
    let with_trunk = |name: &str| {
        let addr = format!("127.0.0.1:{}", free_udp_port());
        let mut env = vec![
            ("CALLRELAY_CLUSTER_TRUNK_ADDR", addr.as_str()),
            ("CALLRELAY_CLUSTER_TRUNK_CERTS", certs.as_str()),
        ];
        env.extend_from_slice(extra);
        node_with(name, db, &env)
    };
    let (a, b, c) = (with_trunk("a"), with_trunk("b"), with_trunk("c"));
    for n in [&a, &b, &c] {
        let v = metric_until(
            n,
            "callrelay_trunk_connections ",
            Duration::from_secs(10),
            |v| v == 2.0,
        )
        .await;
        assert_eq!(v, 2.0, "node on port {}: trunk connections", n.port);
    }
    (a, b, c)
}

/// Joins through `via` with a region hint; returns the client (connected) and the signaling
/// URL of the node the join was placed on.
async fn join_in_region(via: &Relay, user: &str, link: &str, region: &str) -> (Client, String) {
    let http = reqwest::Client::new();
    let (st, j) = send(
        http.post(format!("{}/v1/links/{link}/join", via.base))
            .bearer_auth(token(user, false))
            .json(&serde_json::json!({ "region": region })),
    )
    .await;
    assert_eq!(st, 200, "{j}");
    let ticket: callrelay_client::JoinTicket = serde_json::from_value(j).unwrap();
    let config = callrelay_client::ClientConfig {
        video: true,
        simulcast: true,
        ..callrelay_client::ClientConfig::default()
    };
    let mut c = Client::join_with_ticket(&ticket, config)
        .await
        .unwrap_or_else(|e| panic!("{user} joins in {region}: {e}"));
    c.wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    (c, ticket.signal_url)
}

/// Sum of the lines of `relay`'s /metrics starting with `prefix`.
async fn metric_sum(relay: &Relay, prefix: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", relay.base))
        .header("connection", "close")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Everyone sends a round of audio and of video on the three simulcast layers (a keyframe
/// every 25th round); what each received is recorded: `heard[j]` and `seen[j]` are the senders
/// whose audio and video client `j` got.
fn media_round(clients: &[Client], round: u32) {
    for (i, c) in clients.iter().enumerate() {
        let mut audio = vec![0xA0, i as u8];
        audio.extend_from_slice(&round.to_be_bytes());
        audio.resize(80, 0x55);
        c.send_audio(audio).unwrap();
        for rid in callrelay_client::SIMULCAST_RIDS {
            let mut body = vec![0xB0, i as u8, rid.as_bytes()[0]];
            body.extend_from_slice(&round.to_be_bytes());
            // Sizes tell the layers apart on the trunk.
            let size = match rid {
                "l" => 100,
                "m" => 400,
                _ => 1000,
            };
            body.resize(size, 0x66);
            c.send_video(
                Some(rid),
                callrelay_client::vp8_payload(round.is_multiple_of(25), &body),
            )
            .unwrap();
        }
    }
}

/// Waits until `c` is told `participant` left (other events are dropped).
async fn told_left(c: &mut Client, participant: &str, within: Duration) {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, c.next_event()).await {
            Ok(Some(ClientEvent::Signal(m))) => {
                if let Some(callrelay_proto::server_message::Msg::ParticipantLeft(l)) = m.msg {
                    if l.participant_id == participant {
                        return;
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("session ended before {participant} left"),
            Err(_) => panic!("not told {participant} left within {within:?}"),
        }
    }
}

/// `rounds` media rounds 20 ms apart from round `from`, what arrives thrown away; the next
/// round number.
async fn pump(clients: &mut [Client], from: u32, rounds: u32) -> u32 {
    for r in from..from + rounds {
        media_round(clients, r);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for c in clients.iter_mut() {
            while c.try_next_event().is_some() {}
        }
    }
    from + rounds
}

fn record(clients: &mut [Client], heard: &mut [Vec<bool>], seen: &mut [Vec<bool>]) {
    for (j, c) in clients.iter_mut().enumerate() {
        while let Some(e) = c.try_next_event() {
            let ClientEvent::Media(p) = e else { continue };
            if p.payload.first() == Some(&0xA0) {
                if let Some(&i) = p.payload.get(1) {
                    heard[j][usize::from(i) % 9] = true;
                }
            } else if let Some(body) = callrelay_client::vp8_body(&p.payload) {
                if body.first() == Some(&0xB0) {
                    seen[j][usize::from(body[1]) % 9] = true;
                }
            }
        }
    }
}

/// Calls across nodes (#16), done-means 1 and 3: nine participants, three per node by their
/// region hints, all joining through node A: every one hears and sees the eight others
/// (simulcast video), each packet crosses a trunk at most once, a layer nobody wants does not
/// cross, a block removes the blocked participant from every node and a revocation through any
/// node removes everyone, each within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_nine_spans_three_nodes_by_region_and_each_stream_crosses_each_trunk_once() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let certs = tempfile::tempdir().unwrap();
    let (a, b, c) = trunked_nodes(&db, certs.path()).await;
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let nodes = [&a, &b, &c];
    let mut clients = Vec::new();
    for i in 0..9 {
        let leg = i / 3;
        let region = ["region-a", "region-b", "region-c"][leg];
        let (client, url) = join_in_region(&a, &format!("user{i}"), &link, region).await;
        assert_eq!(url, signal_url(nodes[leg]), "user{i} of {region}");
        clients.push(client);
    }

    let mut heard = vec![vec![false; 9]; 9];
    let mut seen = vec![vec![false; 9]; 9];
    let all = |v: &[Vec<bool>]| (0..9).all(|j| (0..9).all(|i| i == j || v[j][i]));
    let until = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    while !(all(&heard) && all(&seen)) {
        if Instant::now() >= until {
            let (mut a, mut b, mut c) = (a, b, c);
            for (n, name) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
                let log = n.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("cascade") || l.contains("trunk"))
                    .collect();
                eprintln!("--- node {name}:\n{}", lines.join("\n"));
            }
            panic!("not everyone got everyone within 20 s: audio {heard:?} video {seen:?}");
        }
        media_round(&clients, round);
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        record(&mut clients, &mut heard, &mut seen);
    }
    eprintln!("nine participants on three nodes got each other after {round} rounds");

    // At most one copy per packet per trunk: what a node received over its trunks is no more
    // than what the other two nodes' publishers sent (three subscribers per node: a copy per
    // subscriber would be three times that), and something crossed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut received = Vec::new();
    let mut trunk_in = Vec::new();
    for n in nodes {
        received.push(
            support::metric(n, "callrelay_packets_received_total{kind=\"audio\"} ").await
                + support::metric(n, "callrelay_packets_received_total{kind=\"video\"} ").await,
        );
        trunk_in.push(support::metric(n, "callrelay_trunk_packets_total{direction=\"in\"} ").await);
    }
    eprintln!("packets from publishers per node {received:?}, in over the trunks {trunk_in:?}");
    for (k, came) in trunk_in.iter().enumerate() {
        let others: f64 = (0..3).filter(|m| *m != k).map(|m| received[m]).sum();
        assert!(
            *came > 0.0 && *came <= others,
            "node {k}: {came} packets in over its trunks, its peers' publishers sent {others}"
        );
    }
    assert_eq!(
        metric_sum(&a, "callrelay_trunk_datagrams_dropped_total").await,
        0.0
    );
    // Each node counts its own three, not the other legs' participants it holds; the link's
    // preview, through any node, counts the whole call (home and legs, as each last reported).
    for n in nodes {
        assert_eq!(support::metric(n, "callrelay_participants ").await, 3.0);
        assert_eq!(support::metric(n, "callrelay_rooms ").await, 1.0);
        let until = Instant::now() + Duration::from_secs(3);
        while preview_participants(&http, n, &link).await != 9 {
            assert!(Instant::now() < until, "the preview never counted the nine");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Done-means 5: the publishers send three layers (100, 400 and 1,000-byte bodies), and the
    // subscribers get `l` (their first layer; their bandwidth estimate does not move them up
    // within this test): `m` and `h`, which nobody on the other side wants, do not cross. Each
    // node gets 6 remote publishers' audio and `l`: 12 datagrams a round, ~133 bytes each
    // (with `m` and `h` crossing too: 24 a round, ~440 bytes each).
    let rounds = 75;
    let mut before = Vec::new();
    for n in nodes {
        before.push((
            support::metric(n, "callrelay_trunk_bytes_total{direction=\"in\"} ").await,
            support::metric(n, "callrelay_trunk_packets_total{direction=\"in\"} ").await,
        ));
    }
    pump(&mut clients, round, rounds).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (k, n) in nodes.iter().enumerate() {
        let bytes = support::metric(n, "callrelay_trunk_bytes_total{direction=\"in\"} ").await
            - before[k].0;
        let packets = support::metric(n, "callrelay_trunk_packets_total{direction=\"in\"} ").await
            - before[k].1;
        let mean = bytes / packets;
        eprintln!("node {k}: {packets} datagrams in over {rounds} rounds, {mean:.0} bytes each");
        assert!(
            packets <= f64::from(12 * rounds) * 1.05 && mean < 200.0,
            "node {k}: {packets} datagrams of {mean:.0} bytes: a layer nobody wants crossed"
        );
    }

    // A block by the link's creator through B removes user8 (served by C) within 1 s, and the
    // others, on every node, are told it left.
    let eight_id = clients[8].participant_id().to_owned();
    let (st, _) = send(
        http.put(format!("{}/v1/me/blocks/user8", b.base))
            .bearer_auth(token("alice", false)),
    )
    .await;
    assert_eq!(st, 204);
    let blocked_at = Instant::now();
    let mut eight = clients.pop().unwrap();
    assert_eq!(
        removed(&mut eight, Duration::from_secs(3)).await.as_deref(),
        Some("blocked")
    );
    for k in [0, 3, 6] {
        told_left(&mut clients[k], &eight_id, Duration::from_secs(3)).await;
    }
    assert!(
        blocked_at.elapsed() < Duration::from_secs(1),
        "user8 removed and its leaving told on every node {:?} after the block",
        blocked_at.elapsed()
    );

    // A revocation through C removes the eight others, on every node, within 1 s.
    let (st, _) = send(
        http.post(format!("{}/v1/admin/links/{link}/revoke", c.base))
            .bearer_auth(token("ops", true))
            .json(&serde_json::json!({"reason": "test"})),
    )
    .await;
    assert_eq!(st, 200);
    let revoked_at = Instant::now();
    for cl in clients.iter_mut() {
        assert_eq!(
            removed(cl, Duration::from_secs(3)).await.as_deref(),
            Some("revoked")
        );
    }
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "all eight removed {:?} after the revocation",
        revoked_at.elapsed()
    );
    stop_all(vec![a, b, c]).await;
}

/// Calls across nodes (#16), done-means 2: a call of nine on three nodes (three per node by
/// region hint, audio); node C (a leg, not the home) is killed with SIGKILL. The six on A and B
/// keep hearing each other with no gap over 1 s; the three of C rejoin by themselves (through
/// the nodes left: C's region has no node any more, so the call's home takes them) and are
/// heard by, and hear, the six again within 5 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leg_leaves_the_other_legs_talking_and_its_people_are_back_within_5s() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let certs = tempfile::tempdir().unwrap();
    let (a, b, mut c) = trunked_nodes(&db, certs.path()).await;
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let urls: Vec<String> = [&a, &b, &c].iter().map(|n| n.base.clone()).collect();
    let mut members = Vec::new();
    for i in 0..9 {
        let config = callrelay_client::ClientConfig {
            region: Some(["region-a", "region-b", "region-c"][i / 3].into()),
            ..audio_only()
        };
        let mut m = Member::join(&urls, &token(&format!("user{i}"), false), &link, config)
            .await
            .unwrap_or_else(|e| panic!("user{i} joins: {e}"));
        m.wait_connected(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("user{i} connects: {e}"));
        members.push(m);
    }
    // last[j][i]: when j last heard i; gap[j][i]: the longest silence j had of i after the kill.
    let start = Instant::now();
    let mut last = vec![vec![None::<Instant>; 9]; 9];
    let mut gap = vec![vec![Duration::ZERO; 9]; 9];
    let mut killed: Option<Instant> = None;
    let mut back: Option<Duration> = None;
    // The three of C as the others knew them, and when each of the six was told they left.
    let mut old_ids: Vec<String> = Vec::new();
    let mut told_left: Vec<Vec<(String, Duration)>> = vec![Vec::new(); 6];
    let mut round: u32 = 0;
    loop {
        for (i, m) in members.iter().enumerate() {
            let mut p = vec![0xA0, i as u8];
            p.extend_from_slice(&round.to_be_bytes());
            p.resize(80, 0x55);
            // Err while a member is joining again.
            let _ = m.send_audio(p);
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = Instant::now();
        for (j, m) in members.iter_mut().enumerate() {
            while let Some(e) = m.try_next_event() {
                match e {
                    MemberEvent::Client(ClientEvent::Media(p))
                        if p.payload.first() == Some(&0xA0) =>
                    {
                        let i = usize::from(p.payload[1]) % 9;
                        if let (Some(t), Some(k)) = (last[j][i], killed) {
                            if t >= k {
                                gap[j][i] = gap[j][i].max(now - t);
                            }
                        }
                        last[j][i] = Some(now);
                    }
                    MemberEvent::Client(ClientEvent::Signal(msg)) if j < 6 => {
                        if let (
                            Some(callrelay_proto::server_message::Msg::ParticipantLeft(left)),
                            Some(k),
                        ) = (msg.msg, killed)
                        {
                            if old_ids.contains(&left.participant_id) {
                                told_left[j].push((left.participant_id, k.elapsed()));
                            }
                        }
                    }
                    MemberEvent::RejoinFailed { reason, error, .. } => {
                        panic!("user{j}: rejoin after {reason} failed: {error}")
                    }
                    MemberEvent::Client(ClientEvent::Closed { reason }) => {
                        panic!("user{j}: session ended for good: {reason:?}")
                    }
                    _ => {}
                }
            }
        }
        let heard_since = |t: Instant| {
            (0..9).all(|j| (0..9).all(|i| i == j || last[j][i].is_some_and(|h| h > t)))
        };
        match killed {
            None if heard_since(start) && start.elapsed() > Duration::from_secs(1) => {
                old_ids = members[6..]
                    .iter()
                    .filter_map(|m| m.participant_id().map(str::to_owned))
                    .collect();
                assert_eq!(old_ids.len(), 3);
                c.child.kill().unwrap(); // SIGKILL
                c.child.wait().unwrap();
                killed = Some(Instant::now());
                // Silence counts from the kill.
                for row in last.iter_mut() {
                    for t in row.iter_mut() {
                        *t = t.map(|_| Instant::now());
                    }
                }
            }
            None => assert!(
                start.elapsed() < Duration::from_secs(20),
                "the nine never all heard each other: {last:?}"
            ),
            Some(k) => {
                // The three of C are back once everyone heard everyone since the kill.
                if back.is_none() && heard_since(k + Duration::from_millis(100)) {
                    back = Some(k.elapsed());
                }
                let all_told = told_left.iter().all(|t| t.len() >= 3);
                if k.elapsed() > Duration::from_secs(6) && all_told {
                    break;
                }
                assert!(
                    k.elapsed() < Duration::from_secs(8),
                    "the six were not all told the three of C left within 8 s: {told_left:?}"
                );
            }
        }
    }
    let back = back.expect("the three of the killed node were not back within 6 s");
    let worst = (0..6)
        .flat_map(|j| (0..6).map(move |i| (j, i)))
        .map(|(j, i)| gap[j][i])
        .max()
        .unwrap_or_default();
    eprintln!(
        "everyone heard everyone again {back:?} after kill -9 of a leg; the longest silence between two of the six others was {worst:?}"
    );
    assert!(back < Duration::from_secs(5), "back after {back:?}");
    // C's lease ends 2 s after the kill and its trunks are silent: the others close them then
    // (not after QUIC's 10 s idle timeout) and take C's participants out of the call.
    let told = told_left
        .iter()
        .flatten()
        .map(|(_, t)| *t)
        .max()
        .unwrap_or_default();
    eprintln!("the six were told the three of the killed leg left within {told:?}");
    assert!(told < Duration::from_secs(6), "told after {told:?}");
    for (j, row) in gap.iter().enumerate().take(6) {
        for (i, g) in row.iter().enumerate().take(6).filter(|(i, _)| *i != j) {
            assert!(
                *g <= Duration::from_secs(1),
                "user{j} did not hear user{i} for {g:?} after the kill"
            );
        }
    }
    drop(members);
    stop_all(vec![a, b, c]).await;
}

/// Calls across nodes (#16): a join that would overload the call's home lands on another node,
/// as a leg. Every node takes 2 participants (`cluster.node_capacity`); four people join one
/// call through its home A, with no region hint: the first two are served by A, the next two by
/// the least-loaded other nodes, and all four hear each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_would_overload_the_home_lands_on_another_node_of_the_call() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let certs = tempfile::tempdir().unwrap();
    let (a, b, c) = trunked_nodes_with(
        &db,
        certs.path(),
        &[("CALLRELAY_CLUSTER_NODE_CAPACITY", "2")],
    )
    .await;
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut clients = Vec::new();
    let mut served = Vec::new();
    for i in 0..4 {
        if i == 2 {
            // A's heartbeat reports its two participants (every 250 ms).
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let (_, nodes) = send(
                    http.get(format!("{}/v1/admin/nodes", b.base))
                        .bearer_auth(token("ops", true)),
                )
                .await;
                let a_row = nodes["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|n| n["node_id"] == "node-a")
                    .cloned()
                    .unwrap();
                if a_row["participants"] == 2 {
                    break;
                }
                assert!(Instant::now() < until, "A never reported 2: {nodes}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let user = format!("user{i}");
        let ticket = callrelay_client::http_join(&a.base, &token(&user, false), &link)
            .await
            .unwrap_or_else(|e| panic!("{user} joins: {e}"));
        served.push(ticket.signal_url.clone());
        let mut c = Client::join_with_ticket(&ticket, audio_only())
            .await
            .unwrap_or_else(|e| panic!("{user} joins: {e}"));
        c.wait_connected(Duration::from_secs(10)).await.unwrap();
        clients.push(c);
    }
    assert_eq!(served[0], signal_url(&a));
    assert_eq!(served[1], signal_url(&a));
    // Then the least-loaded other nodes (by the loads last reported), never A.
    for late in &served[2..] {
        assert!(
            [signal_url(&b), signal_url(&c)].contains(late),
            "{served:?}"
        );
    }
    // One call: everyone hears everyone.
    let mut heard = vec![vec![false; 4]; 4];
    let until = Instant::now() + Duration::from_secs(10);
    let mut round: u32 = 0;
    while !(0..4).all(|j| (0..4).all(|i| i == j || heard[j][i])) {
        assert!(Instant::now() < until, "not one call: {heard:?}");
        for (i, c) in clients.iter().enumerate() {
            let mut p = vec![0xA0, i as u8];
            p.extend_from_slice(&round.to_be_bytes());
            p.resize(80, 0x55);
            c.send_audio(p).unwrap();
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (j, c) in clients.iter_mut().enumerate() {
            while let Some(e) = c.try_next_event() {
                if let ClientEvent::Media(p) = e {
                    if p.payload.first() == Some(&0xA0) {
                        heard[j][usize::from(p.payload[1]) % 4] = true;
                    }
                }
            }
        }
    }
    drop(clients);
    stop_all(vec![a, b, c]).await;
}

/// A UDP relay to `target` that can be cut (everything dropped both ways) and restored: the path
/// of one trunk. One client (the node that dials through it).
async fn cuttable_udp_proxy(target: std::net::SocketAddr) -> (u16, watch::Sender<bool>) {
    let front = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let port = front.local_addr().unwrap().port();
    let (up_tx, up_rx) = watch::channel(true);
    let client = std::sync::Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
    {
        let (front, back, client, up) =
            (front.clone(), back.clone(), client.clone(), up_rx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let open = *up.borrow();
                if open {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            let up = *up_rx.borrow();
            if let (true, Some(to)) = (up, to) {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (port, up_tx)
}

/// Calls across nodes (#16): a trunk that drops. A call spans A and B, whose trunk runs through
/// a UDP path that is then cut. Once QUIC gives the connection up, each side takes the other's
/// participant out of the call; the nodes connect again (B dials A directly, A keeps trying
/// through the cut path with its back-off), each side sends its participants again, and the
/// media resumes, video with a keyframe asked of the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_trunk_reconnects_and_the_call_resumes_with_a_keyframe() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let certs = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["node-a", "node-b"].iter().map(|s| s.to_string()).collect();
    callrelay_trunk::init_dir(certs.path(), &names).unwrap();
    let certs_dir = certs.path().to_str().unwrap().to_owned();
    // Each node is dialed through a path of its own: whichever dial the pair keeps runs through
    // one of them, and cutting both cuts the trunk.
    let a_addr = format!("127.0.0.1:{}", free_udp_port());
    let b_addr = format!("127.0.0.1:{}", free_udp_port());
    let (a_proxy, a_path) = cuttable_udp_proxy(a_addr.parse().unwrap()).await;
    let (b_proxy, b_path) = cuttable_udp_proxy(b_addr.parse().unwrap()).await;
    let a_advertised = format!("127.0.0.1:{a_proxy}");
    let b_advertised = format!("127.0.0.1:{b_proxy}");
    let a = node_with(
        "a",
        &db,
        &[
            ("CALLRELAY_CLUSTER_TRUNK_ADDR", &a_addr),
            ("CALLRELAY_CLUSTER_TRUNK_ADVERTISE", &a_advertised),
            ("CALLRELAY_CLUSTER_TRUNK_CERTS", &certs_dir),
        ],
    );
    let b = node_with(
        "b",
        &db,
        &[
            ("CALLRELAY_CLUSTER_TRUNK_ADDR", &b_addr),
            ("CALLRELAY_CLUSTER_TRUNK_ADVERTISE", &b_advertised),
            ("CALLRELAY_CLUSTER_TRUNK_CERTS", &certs_dir),
        ],
    );
    for n in [&a, &b] {
        let v = metric_until(
            n,
            "callrelay_trunk_connections ",
            Duration::from_secs(10),
            |v| v == 1.0,
        )
        .await;
        assert_eq!(v, 1.0);
    }
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let (mut alice, url) = join_in_region(&a, "alice", &link, "region-a").await;
    assert_eq!(url, signal_url(&a));
    let (mut bob, url) = join_in_region(&a, "bob", &link, "region-b").await;
    assert_eq!(url, signal_url(&b));
    let alice_id = alice.participant_id().to_owned();

    // Alice's video reaches Bob across the trunk.
    video_from_alice(&mut alice, &mut bob, 10, Duration::from_secs(10)).await;

    // The path is cut: QUIC gives the connection up after its 10 s idle timeout; Bob is told
    // Alice left (her node is gone from his view of the call).
    a_path.send(false).unwrap();
    b_path.send(false).unwrap();
    let cut = Instant::now();
    told_left(&mut bob, &alice_id, Duration::from_secs(15)).await;
    let down = cut.elapsed();
    // The paths come back: the nodes dial again (with their back-off) and the trunk is up, and
    // so is Alice's video, starting on a keyframe the relay asked Alice for (she sends none
    // unasked).
    a_path.send(true).unwrap();
    b_path.send(true).unwrap();
    let restored = Instant::now();
    video_from_alice(&mut alice, &mut bob, 10, Duration::from_secs(30)).await;
    let back = restored.elapsed();
    eprintln!(
        "trunk cut: Bob told Alice left after {down:?}; her video back {back:?} after the path"
    );
    drop((alice, bob));
    stop_all(vec![a, b]).await;
}

/// Alice sends video on the three layers every 20 ms, a keyframe only in the round after the
/// relay asked her for one, until Bob has seen `n` packets of it (or panics after `within`).
async fn video_from_alice(alice: &mut Client, bob: &mut Client, n: usize, within: Duration) {
    let until = Instant::now() + within;
    let (mut got, mut asked, mut round) = (0, false, 0u32);
    while got < n {
        assert!(
            Instant::now() < until,
            "Bob saw {got}/{n} of Alice's video within {within:?}"
        );
        for rid in callrelay_client::SIMULCAST_RIDS {
            let mut body = vec![0xB0, 0, rid.as_bytes()[0]];
            body.extend_from_slice(&round.to_be_bytes());
            body.resize(100, 0x66);
            alice
                .send_video(Some(rid), callrelay_client::vp8_payload(asked, &body))
                .unwrap();
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        asked = false;
        while let Some(e) = alice.try_next_event() {
            if let ClientEvent::KeyframeRequest { .. } = e {
                asked = true;
            }
        }
        while let Some(e) = bob.try_next_event() {
            if let ClientEvent::Media(p) = e {
                if callrelay_client::vp8_body(&p.payload).is_some_and(|b| b.first() == Some(&0xB0))
                {
                    got += 1;
                }
            }
        }
    }
}

/// A join's HTTP answer through `via` with a region hint (no session opened).
async fn join_answer(
    via: &Relay,
    user: &str,
    link: &str,
    region: &str,
) -> (u16, serde_json::Value) {
    send(
        reqwest::Client::new()
            .post(format!("{}/v1/links/{link}/join", via.base))
            .bearer_auth(token(user, false))
            .json(&serde_json::json!({ "region": region })),
    )
    .await
}

/// The room cap (`rooms.max_participants`) is the call's, not a node's: with one participant
/// on the home and one on each of two legs, a cap of 3 refuses a fourth join whichever node
/// would serve it, the home included (which holds one seat of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_cap_counts_every_leg_of_a_call() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let certs = tempfile::tempdir().unwrap();
    let (a, b, c) = trunked_nodes_with(
        &db,
        certs.path(),
        &[("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "3")],
    )
    .await;
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut clients = Vec::new();
    for (i, (node, region)) in [(&a, "region-a"), (&b, "region-b"), (&c, "region-c")]
        .into_iter()
        .enumerate()
    {
        let (client, url) = join_in_region(&a, &format!("user{i}"), &link, region).await;
        assert_eq!(url, signal_url(node), "user{i} of {region}");
        clients.push(client);
    }
    // The legs report their participants at their next reconciliation (every 500 ms here):
    // once the preview (the same counts) says 3, every node refuses, for every region. One
    // round only: a join let through would hold its seat and make the next ones look refused.
    let until = Instant::now() + Duration::from_secs(5);
    while preview_participants(&http, &a, &link).await != 3 {
        assert!(
            Instant::now() < until,
            "the legs' participants never reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for (via, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for region in ["region-a", "region-b", "region-c"] {
            let (st, p) = join_answer(via, "dave", &link, region).await;
            answers.push((name, region, st, p["code"].as_str().map(str::to_owned)));
        }
    }
    for (via, region, st, code) in &answers {
        assert_eq!(
            (*st, code.as_deref()),
            (409, Some("room_full")),
            "a fourth join through {via} in {region}: {answers:?}"
        );
    }
    drop(clients);
    stop_all(vec![a, b, c]).await;
}

/// A call across three nodes, every node posting webhooks to one endpoint, is told once: one
/// `call.started` and one `call.ended` (the home's), one `participant.joined` and one
/// `participant.left` per participant (each from the node that serves it), never a copy from a
/// leg that only relays that participant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_nodes_is_told_once_through_webhooks() {
    let Some(admin) = admin_url() else { return };
    let (db, _, _) = fresh_database(&admin).await;
    let (url, got, server) = webhooks::endpoint().await;
    let certs = tempfile::tempdir().unwrap();
    let (a, b, c) = trunked_nodes_with(
        &db,
        certs.path(),
        &[
            ("CALLRELAY_WEBHOOKS_URLS", &url),
            ("CALLRELAY_WEBHOOKS_SECRET", webhooks::SECRET),
            ("CALLRELAY_WEBHOOKS_RETRY_MIN", "200ms"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let link = create_link(&http, &a, "alice").await;
    let mut clients = Vec::new();
    for (i, region) in ["region-a", "region-b", "region-c"].into_iter().enumerate() {
        let (client, _) = join_in_region(&a, &format!("user{i}"), &link, region).await;
        clients.push(client);
    }
    // Everyone knows everyone: each node holds the other legs' participants.
    let ids: Vec<String> = clients
        .iter()
        .map(|c| c.participant_id().to_owned())
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    for (j, c) in clients.iter_mut().enumerate() {
        loop {
            while c.try_next_event().is_some() {}
            let known = c.participants();
            if ids
                .iter()
                .enumerate()
                .all(|(i, id)| i == j || known.contains(id))
            {
                break;
            }
            assert!(
                Instant::now() < until,
                "user{j} knows only {known:?} of {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Everyone leaves, the legs' participants first: the home's call ends with its last.
    for c in clients.iter().rev() {
        c.leave().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let until = Instant::now() + Duration::from_secs(15);
    while webhooks::of_type(&got.lock().unwrap(), "call.ended").is_empty() {
        assert!(
            Instant::now() < until,
            "no call.ended: {:#?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Copies, if any were sent, would come within the same second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = got.lock().unwrap().clone();
    let users = |t: &str| {
        let mut u: Vec<String> = webhooks::of_type(&events, t)
            .iter()
            .map(|e| e["data"]["user"].as_str().unwrap_or_default().to_owned())
            .collect();
        u.sort_unstable();
        u
    };
    assert_eq!(
        webhooks::of_type(&events, "call.started").len(),
        1,
        "{events:#?}"
    );
    assert_eq!(
        webhooks::of_type(&events, "call.ended").len(),
        1,
        "{events:#?}"
    );
    assert_eq!(users("participant.joined"), ["user0", "user1", "user2"]);
    assert_eq!(users("participant.left"), ["user0", "user1", "user2"]);
    let at = |e: &serde_json::Value| e["timestamp"].as_str().unwrap().to_owned();
    let ended = at(webhooks::of_type(&events, "call.ended")[0]);
    assert!(
        webhooks::of_type(&events, "participant.left")
            .iter()
            .all(|l| at(l) <= ended),
        "the call ended before its last participant left: {events:#?}"
    );
    drop(clients);
    stop_all(vec![a, b, c]).await;
    server.abort();
}
