//! A block made during a call removes the blocked user from the blocker's call, nobody else.

use std::time::{Duration, Instant};

use callrelay_client::ClientConfig;
use callrelay_proto::client_message;
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::Ping;
use callrelay_proto::ClientMessage;

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_removes_the_blocked_user_only() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let mut carol = relay.join("carol", &link, ClientConfig::default()).await;
    let bob_id = bob.id();
    let t0 = Instant::now();
    relay.block("alice", "bob").await;
    bob.until("the session to end", |p| p.closed.is_some())
        .await;
    let (at, reason) = bob.closed.clone().expect("closed");
    assert_eq!(reason.as_deref(), Some("blocked"));
    assert!(
        at - t0 < Duration::from_secs(1),
        "removed after {:?}",
        at - t0
    );
    for p in [&mut alice, &mut carol] {
        p.until("participant_left(bob, blocked)", |p| {
            p.signals.iter().any(|(_, m)| {
                matches!(m, Msg::ParticipantLeft(l) if l.participant_id == bob_id && l.reason == "blocked")
            })
        })
        .await;
        // Still in the call: signaling answers.
        p.client
            .send_signal(ClientMessage::from(client_message::Msg::Ping(Ping {
                nonce: 7,
            })))
            .unwrap();
        p.until("pong", |p| {
            p.signals
                .iter()
                .any(|(_, m)| matches!(m, Msg::Pong(x) if x.nonce == 7))
        })
        .await;
        assert!(p.closed.is_none() && p.removed_reason().is_none());
    }
    assert_eq!(relay.preview_participants(&link).await, 2);
    // And bob cannot come back.
    let again = callrelay_client::http_join(&relay.base, &relay.token("bob"), &link).await;
    assert!(again.is_err(), "a blocked user is refused at the HTTP join");
    relay.stop().await;
}
