//! Graceful drain with a real process and real signals: SIGTERM (or `POST /v1/admin/drain`) stops
//! new rooms, keeps running calls, exits when the last room empties; at the deadline the remaining
//! participants get `removed{drain}`; a second signal forces exit; undrain returns to serving.

use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientConfig, ClientEvent};
use callrelay_proto::server_message::Msg;

#[path = "support/relay.rs"]
mod support;
use support::{create_link, send, token, Relay};

async fn in_call(relay: &Relay, user: &str, link: &str) -> Client {
    let config = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let mut c = Client::join(&relay.base, &token(user, false), link, config)
        .await
        .expect("join the call");
    c.wait_connected(Duration::from_secs(10))
        .await
        .expect("media connected");
    c
}

async fn readyz(http: &reqwest::Client, relay: &Relay) -> (u16, serde_json::Value) {
    send(http.get(format!("{}/readyz", relay.base))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_calls_exits_at_once() {
    let mut relay = Relay::start(&[], &[]);
    let started = Instant::now();
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no room to wait for: {:?}",
        started.elapsed()
    );
    let log = relay.log();
    assert!(log.contains("draining"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_store_opens_stops_the_start() {
    // A "PostgreSQL server" that takes the connection and never answers: the relay is held in
    // its start-up (the store's 2 s connect timeout would then fail it with exit code 1).
    let pg = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    pg.set_nonblocking(true).unwrap();
    let url = format!(
        "postgres://callrelay@{}/callrelay",
        pg.local_addr().unwrap()
    );
    let mut relay = Relay::start_listening(&[("CALLRELAY_STORE_DATABASE_URL", &url)], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _held = loop {
        match pg.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the relay never connected to its store"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(10)).expect("exits");
    let log = relay.log();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stopped before serving"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_calls_and_exits_when_the_last_room_empties() {
    let mut relay = Relay::start(&[], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let alice = in_call(&relay, "alice", &link).await;
    assert_eq!(
        readyz(&http, &relay).await,
        (
            200,
            serde_json::json!({"ready": true, "store": "ok", "draining": false})
        )
    );

    relay.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, body) = readyz(&http, &relay).await;
        if st == 503 {
            assert_eq!(
                body,
                serde_json::json!({"ready": false, "store": "ok", "draining": true})
            );
            break;
        }
        assert!(Instant::now() < deadline, "readyz never went 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Liveness stays up; the call goes on; joins into this room are still admitted…
    assert_eq!(
        send(http.get(format!("{}/healthz", relay.base))).await.0,
        200
    );
    let bob = in_call(&relay, "bob", &link).await;
    // …but no new room starts here.
    let other = create_link(&http, &relay, "carol").await;
    let (st, p) = send(
        http.post(format!("{}/v1/links/{other}/join", relay.base))
            .bearer_auth(token("carol", false)),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (503, Some("node_draining")));
    let metrics = http
        .get(format!("{}/metrics", relay.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("callrelay_draining 1"), "{metrics}");
    assert!(
        relay.wait_exit(Duration::from_millis(500)).is_none(),
        "still serving its call"
    );

    // The last two leave: the process exits 0.
    alice.leave().unwrap();
    bob.leave().unwrap();
    let status = relay
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the room is empty");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_removes_participants_with_reason_drain() {
    let mut relay = Relay::start(&[("CALLRELAY_DRAIN_DEADLINE", "2s")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let mut alice = in_call(&relay, "alice", &link).await;
    let started = Instant::now();
    relay.signal("TERM");
    let reason = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(e) = alice.next_event().await {
            if let ClientEvent::Signal(m) = e {
                if let Some(Msg::Removed(r)) = m.msg {
                    return r.reason;
                }
            }
        }
        String::new()
    })
    .await
    .expect("removed before 8 s");
    assert_eq!(reason, "drain");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "not before the deadline: {:?}",
        started.elapsed()
    );
    let status = relay
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the deadline");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_forces_exit() {
    let mut relay = Relay::start(&[], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let _alice = in_call(&relay, "alice", &link).await;
    relay.signal("TERM");
    // Wait until the drain is visible, then signal again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while readyz(&http, &relay).await.0 != 503 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.signal("INT");
    let status = relay
        .wait_exit(Duration::from_secs(3))
        .expect("exits at once");
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_drain_and_undrain_over_http() {
    let mut relay = Relay::start(&[], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let alice = in_call(&relay, "alice", &link).await;
    let admin = token("ops", true);
    let (st, p) = send(
        http.post(format!("{}/v1/admin/drain", relay.base))
            .bearer_auth(token("alice", false)),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (403, Some("forbidden")));

    let (st, d) = send(
        http.post(format!("{}/v1/admin/drain", relay.base))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(d["draining"], true);
    assert_eq!(d["rooms"], 1);
    assert_eq!(d["participants"], 1);
    assert!(d["deadline_in_seconds"].as_u64().unwrap() > 1700);
    assert_eq!(readyz(&http, &relay).await.0, 503);

    let (st, d) = send(
        http.post(format!("{}/v1/admin/undrain", relay.base))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!((st, d["draining"].as_bool()), (200, Some(false)));
    assert_eq!(readyz(&http, &relay).await.0, 200);
    // Serving again: the room emptying does not stop the process, and new rooms start.
    alice.leave().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        relay.wait_exit(Duration::from_millis(100)).is_none(),
        "an undrained node keeps serving"
    );
    let other = create_link(&http, &relay, "carol").await;
    assert_eq!(
        send(
            http.post(format!("{}/v1/links/{other}/join", relay.base))
                .bearer_auth(token("carol", false))
        )
        .await
        .0,
        200
    );
    relay.stop();
}
