//! One screen sharer at a time per call: the claim is answered to everyone, a second claim gets
//! `screen_share_busy` naming the sharer, a newcomer learns who shares, and the share ends when
//! the sharer leaves.

use callrelay_client::ClientConfig;
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::ScreenShare;
use callrelay_proto::{client_message, ClientMessage};

use crate::common::{Peer, Relay};

fn share(active: bool) -> ClientMessage {
    ClientMessage::from(client_message::Msg::ScreenShare(ScreenShare { active }))
}

fn shared(p: &Peer) -> Vec<(String, bool)> {
    p.signals
        .iter()
        .filter_map(|(_, m)| match m {
            Msg::ScreenShare(s) => Some((s.participant_id.clone(), s.active)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sharer_at_a_time_and_everyone_knows_who() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let a = alice.id();

    alice.client.send_signal(share(true)).unwrap();
    alice
        .until("alice's own claim", |p| shared(p) == [(a.clone(), true)])
        .await;
    bob.until("alice shares", |p| shared(p) == [(a.clone(), true)])
        .await;

    // Bob may not share meanwhile: he is told who does.
    bob.client.send_signal(share(true)).unwrap();
    bob.until("screen_share_busy", |p| {
        p.signals.iter().any(|(_, m)| {
            matches!(m, Msg::Error(e) if e.code == "screen_share_busy" && e.message.contains("sharing their screen"))
        })
    })
    .await;

    // A newcomer hears who shares right after joining.
    let mut carol = relay.join("carol", &link, ClientConfig::default()).await;
    carol
        .until("alice shares", |p| shared(p) == [(a.clone(), true)])
        .await;

    // Alice leaves: the share ends for everyone, and Bob can share.
    alice.client.leave().unwrap();
    for p in [&mut bob, &mut carol] {
        p.until("the share ended", |p| {
            shared(p).last() == Some(&(a.clone(), false))
        })
        .await;
    }
    bob.client.send_signal(share(true)).unwrap();
    let b = bob.id();
    carol
        .until("bob shares", |p| {
            shared(p).last() == Some(&(b.clone(), true))
        })
        .await;
    // And gives it back.
    bob.client.send_signal(share(false)).unwrap();
    carol
        .until("bob stopped", |p| {
            shared(p).last() == Some(&(b.clone(), false))
        })
        .await;
    relay.stop().await;
}
