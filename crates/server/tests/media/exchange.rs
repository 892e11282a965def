//! Participants exchange audio and video through the relay, payload bytes unchanged.

use std::time::Duration;

use callrelay_client::{ClientConfig, TrackKind};
use callrelay_proto::server_message::Msg;

use crate::common::{exchange, until_all_received, Relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_audio_and_video() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let bob = relay.join("bob", &link, ClientConfig::default()).await;
    assert_eq!(bob.client.joined().link_kind, "video");
    assert_eq!(
        bob.client
            .joined()
            .participants
            .iter()
            .map(|p| p.participant_id.clone())
            .collect::<Vec<_>>(),
        vec![alice.id()],
        "bob is told alice is there"
    );
    alice
        .until("participant_joined(bob)", |p| {
            p.signals.iter().any(|(_, m)| {
                matches!(m, Msg::ParticipantJoined(j)
                    if j.participant.as_ref().is_some_and(|x| x.participant_id == bob.id() && x.user_id == "bob"))
            })
        })
        .await;
    assert_eq!(relay.preview_participants(&link).await, 2, "live seats");

    let mut peers = [alice, bob];
    exchange(&mut peers, Duration::from_secs(2)).await;
    // ~100 packets of each kind were sent each way; the first few may precede the
    // subscription's negotiation.
    until_all_received(&mut peers, 50).await;
    let ids = [peers[0].id(), peers[1].id()];
    for p in peers.iter_mut() {
        // Both speak at -30 dBov: the relay names one of them the active speaker.
        p.until("active_speaker", |p| {
            p.signals
                .iter()
                .any(|(_, m)| matches!(m, Msg::ActiveSpeaker(a) if ids.contains(&a.participant_id)))
        })
        .await;
    }
    let [alice, bob] = &peers;
    assert!(alice.received_intact(&bob.id(), TrackKind::Audio, 2) >= 50);
    assert!(bob.received_intact(&alice.id(), TrackKind::Video, 1) >= 50);

    // Each publisher's first packet was timed from its join, once.
    let first = &relay.state.media_metrics.join_to_first_packet;
    assert_eq!(
        first.get_sample_count(),
        2,
        "one join-to-first-packet sample each"
    );
    assert!(first.get_sample_sum() > 0.0 && first.get_sample_sum() < 20.0);
    let latency = &relay.state.media_metrics.forward_latency;
    assert!(
        latency.get_sample_count() >= 200,
        "forwarded copies are timed"
    );
    eprintln!(
        "forward latency: {} copies, mean {:.1} µs (this build's profile)",
        latency.get_sample_count(),
        latency.get_sample_sum() / latency.get_sample_count() as f64 * 1e6
    );
    let [alice, bob] = peers;
    drop(alice);
    drop(bob);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_clients_each_receive_the_five_others() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("u0", "video").await;
    let mut peers = Vec::new();
    for i in 0..6 {
        peers.push(
            relay
                .join(&format!("u{i}"), &link, ClientConfig::default())
                .await,
        );
    }
    assert_eq!(relay.preview_participants(&link).await, 6);
    exchange(&mut peers, Duration::from_secs(2)).await;
    until_all_received(&mut peers, 30).await;
    drop(peers);
    relay.stop().await;
}

/// A participant that publishes nothing (a listener: `audio` and `video` off) joins with one
/// receive-only line. It receives the others like anyone, and it publishes no track: the
/// relay announces none to the others and opens no subscription for it in their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_receives_everyone_and_publishes_no_track() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let listener = ClientConfig {
        audio: false,
        video: false,
        ..ClientConfig::default()
    };
    let lena = relay.join("lena", &link, listener).await;
    let mut peers = [alice, lena];
    // Both are asked to send; the listener has no line to send on.
    exchange(&mut peers, Duration::from_secs(2)).await;
    let [alice, lena] = &mut peers;
    let alice_id = alice.id();
    lena.until("50 audio and 50 video packets from alice", |p| {
        p.received_intact(&alice_id, TrackKind::Audio, 1) >= 50
            && p.received_intact(&alice_id, TrackKind::Video, 1) >= 50
    })
    .await;
    let lena_id = lena.id();
    alice
        .until("participant_joined(lena)", |p| {
            p.signals.iter().any(|(_, m)| {
                matches!(m, Msg::ParticipantJoined(j)
                    if j.participant.as_ref().is_some_and(|x| x.participant_id == lena_id))
            })
        })
        .await;
    alice.drain();
    let announced: Vec<_> = alice
        .signals
        .iter()
        .filter_map(|(_, m)| match m {
            Msg::TrackPublished(t) if t.participant_id == lena_id => Some(t.kind.clone()),
            _ => None,
        })
        .collect();
    assert!(
        announced.is_empty(),
        "alice was told of lena's tracks: {announced:?}"
    );
    assert!(alice.media.keys().all(|(from, _)| from != &lena_id));
    let [alice, lena] = peers;
    drop(alice);
    drop(lena);
    relay.stop().await;
}
