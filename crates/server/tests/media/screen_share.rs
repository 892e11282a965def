//! One screen sharer at a time per call: the claim is answered to everyone, a second claim gets
//! `screen_share_busy` naming the sharer, a newcomer learns who shares, and the share ends when
//! the sharer leaves. The shared screen is a track of its own in every client's model of the
//! call, newcomers included, and leaves it when the sharer stops.

use std::time::Duration;

use callrelay_client::{ClientConfig, ClientError, TrackKind, TrackSource};
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::ScreenShare;
use callrelay_proto::{client_message, ClientMessage};

use crate::common::{payload, Peer, Relay};

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

/// The sources of `who`'s tracks in `p`'s model of the call, in the order published.
fn sources(p: &Peer, who: &str) -> Vec<TrackSource> {
    p.client
        .remote_tracks()
        .iter()
        .filter(|t| t.participant_id == who)
        .map(|t| t.source)
        .collect()
}

/// Video packets `p` received from `from` whose body carries the kind tag `kind` (0xB0 camera,
/// 0xC0 screen).
fn video_tagged(p: &Peer, from: &str, kind: u8) -> usize {
    p.media
        .get(&(from.to_owned(), TrackKind::Video))
        .map(|l| {
            l.iter()
                .filter(|v| callrelay_client::vp8_body(v).and_then(|b| b.get(1)) == Some(&kind))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_screen_is_a_track_of_its_own_in_every_model() {
    use TrackSource::{Camera, Microphone, Screen};
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let a = alice.id();
    bob.until("alice's camera and microphone", |p| {
        sources(p, &a).len() == 2
    })
    .await;

    alice.client.share_screen().await.expect("alice shares");
    bob.until("alice's screen", |p| sources(p, &a).contains(&Screen))
        .await;
    assert_eq!(sources(&bob, &a), [Microphone, Camera, Screen]);
    assert_eq!(bob.client.screen_sharer().as_deref(), Some(a.as_str()));

    // Camera and screen both reach Bob, each with its own frames.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0;
    while video_tagged(&bob, &a, 0xB0) < 10 || video_tagged(&bob, &a, 0xC0) < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob got {} camera and {} screen packets from alice",
            video_tagged(&bob, &a, 0xB0),
            video_tagged(&bob, &a, 0xC0)
        );
        tick.tick().await;
        alice.send_media(1);
        let screen = callrelay_client::vp8_payload(true, &payload(1, 0xC0, n, 900));
        alice.client.send_screen(screen).unwrap();
        n += 1;
        alice.drain();
        bob.drain();
    }
    bob.received_intact(&a, TrackKind::Audio, 1);

    // A newcomer's model has the screen at once, and who shares.
    let mut carol = relay.join("carol", &link, ClientConfig::default()).await;
    carol
        .until("alice's three tracks", |p| sources(p, &a).len() == 3)
        .await;
    assert_eq!(sources(&carol, &a), [Microphone, Camera, Screen]);
    carol
        .until("who shares", |p| p.client.screen_sharer().is_some())
        .await;
    assert_eq!(carol.client.screen_sharer().as_deref(), Some(a.as_str()));

    // Bob may not share meanwhile.
    match bob.client.share_screen().await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "screen_share_busy"),
        other => panic!("bob's claim: {other:?}"),
    }

    // Alice stops: the screen leaves every model, her camera stays.
    alice.client.stop_screen().await.expect("alice stops");
    for p in [&mut bob, &mut carol] {
        p.until("the screen gone", |p| {
            !sources(p, &a).contains(&Screen) && p.client.screen_sharer().is_none()
        })
        .await;
        assert_eq!(sources(p, &a), [Microphone, Camera]);
    }

    // Now Bob shares, and Alice sees it; then Alice shares again on her old line.
    let b = bob.id();
    bob.client.share_screen().await.expect("bob shares");
    alice
        .until("bob's screen", |p| sources(p, &b).contains(&Screen))
        .await;
    bob.client.stop_screen().await.expect("bob stops");
    alice
        .client
        .share_screen()
        .await
        .expect("alice shares again");
    carol
        .until("alice's screen again", |p| sources(p, &a).contains(&Screen))
        .await;
    assert_eq!(sources(&carol, &a), [Microphone, Camera, Screen]);
    assert!(!sources(&carol, &b).contains(&Screen));
    relay.stop().await;
}
