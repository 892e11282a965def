//! The store goes away under a running relay (a real process on a real PostgreSQL, reached through
//! a TCP relay the test can cut): running calls go on, joins fail fast with 503
//! `store_unavailable`, `/readyz` answers 503 — and everything recovers by itself.

use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientConfig, ClientEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[path = "support/relay.rs"]
mod support;
use support::{send, token, Relay};

/// A TCP forwarder to `target` that can be cut (every connection dropped, new ones closed at once)
/// and restored.
async fn cuttable_proxy(target: String) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up_tx, up_rx) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut up = up_rx.clone();
            if !*up.borrow() {
                continue; // dropped: the client sees the connection closed
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_keeps_calls_fails_joins_fast_and_recovers() {
    let Ok(admin) = std::env::var("CALLRELAY_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL outage test: CALLRELAY_TEST_DATABASE_URL is unset"
        );
        eprintln!("\n*** SKIPPED store_outage: set CALLRELAY_TEST_DATABASE_URL (eval \"$(scripts/pg start)\") ***\n");
        return;
    };
    let name = format!("cr_outage_{:016x}", rand::random::<u64>());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    // postgres://user@host:port/db → proxy to host:port.
    let after_at = admin.split('@').nth(1).unwrap();
    let hostport = after_at.split('/').next().unwrap().to_owned();
    let (proxy_port, up) = cuttable_proxy(hostport).await;
    let user = admin
        .trim_start_matches("postgres://")
        .split('@')
        .next()
        .unwrap();
    let url = format!("postgres://{user}@127.0.0.1:{proxy_port}/{name}");

    let relay = Relay::start(&[("CALLRELAY_STORE_DATABASE_URL", &url)], &[]);
    let http = reqwest::Client::new();
    let (st, l) = send(
        http.post(format!("{}/v1/links", relay.base))
            .bearer_auth(token("alice", false))
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(st, 201);
    let link = l["id"].as_str().unwrap().to_owned();
    let audio = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let mut alice = Client::join(&relay.base, &token("alice", false), &link, audio.clone())
        .await
        .unwrap();
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio)
        .await
        .unwrap();
    alice.wait_connected(Duration::from_secs(10)).await.unwrap();
    bob.wait_connected(Duration::from_secs(10)).await.unwrap();

    // Cut the store.
    up.send_replace(false);
    let started = Instant::now();
    let (st, p) = send(
        http.post(format!("{}/v1/links/{link}/join", relay.base))
            .bearer_auth(token("carol", false)),
    )
    .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (503, Some("store_unavailable")),
        "{p}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails fast: {:?}",
        started.elapsed()
    );
    let (st, r) = send(http.get(format!("{}/readyz", relay.base))).await;
    assert_eq!((st, r["store"].as_str()), (503, Some("unavailable")));
    assert_eq!(
        send(http.get(format!("{}/healthz", relay.base))).await.0,
        200
    );

    // The running call goes on: bob still receives alice's audio while the store is down.
    let mut received = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while received < 20 && Instant::now() < until {
        alice.send_audio(vec![0xAB; 100]).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(e) = bob.try_next_event() {
            if let ClientEvent::Media(p) = e {
                if p.payload == vec![0xAB; 100] {
                    received += 1;
                }
            }
        }
    }
    assert!(
        received >= 20,
        "media flows during the outage ({received} packets)"
    );

    // Restore: readiness and joins come back by themselves.
    up.send_replace(true);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, _) = send(http.get(format!("{}/readyz", relay.base))).await;
        if st == 200 {
            break;
        }
        assert!(Instant::now() < until, "readyz recovers within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, _) = send(
        http.post(format!("{}/v1/links/{link}/join", relay.base))
            .bearer_auth(token("carol", false)),
    )
    .await;
    assert_eq!(st, 200);
    alice.leave().unwrap();
    bob.leave().unwrap();
    drop((alice, bob));
    // The relay exits 0 once its room is empty (support::Relay::stop sends SIGTERM).
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}
