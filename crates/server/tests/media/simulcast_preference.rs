//! `video_preference` picks the simulcast layer a subscriber receives.

use std::time::Duration;

use callrelay_client::{vp8_payload, ClientConfig, ClientEvent, TrackKind, SIMULCAST_RIDS};

use crate::common::{Relay, PATIENCE};

/// Which layer a payload was sent on: the publisher puts the rid's byte after the VP8 header.
fn layer_of(payload: &[u8]) -> Option<u8> {
    callrelay_client::vp8_body(payload)?.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_preference_picks_the_simulcast_layer() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let publisher = ClientConfig {
        audio: false,
        simulcast: true,
        ..ClientConfig::default()
    };
    let alice = relay.join("alice", &link, publisher).await;
    let viewer = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let mut bob = relay.join("bob", &link, viewer).await;
    let alice_id = alice.id();

    // Every 20 ms alice sends one keyframe per layer; bob records which layers arrive.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sent = 0u32;
    let mut layers_seen: Vec<u8> = Vec::new();
    let mut asked = false;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "layers seen: {layers_seen:?}"
        );
        tick.tick().await;
        for rid in SIMULCAST_RIDS {
            let mut body = vec![rid.as_bytes()[0]];
            body.extend_from_slice(&sent.to_be_bytes());
            body.resize(600, 0x5a);
            alice
                .client
                .send_video(Some(rid), vp8_payload(true, &body))
                .unwrap();
        }
        sent += 1;
        while let Some(e) = bob.client.try_next_event() {
            if let ClientEvent::Media(p) = e {
                assert_eq!(p.kind, TrackKind::Video);
                assert_eq!(p.from.as_deref(), Some(alice_id.as_str()));
                layers_seen.extend(layer_of(&p.payload));
            }
        }
        let l = layers_seen.iter().filter(|x| **x == b'l').count();
        if !asked && l >= 10 {
            // Before any preference: the lowest layer only.
            assert!(layers_seen.iter().all(|x| *x == b'l'), "{layers_seen:?}");
            bob.client.set_video_preference(&alice_id, 720).unwrap();
            asked = true;
            layers_seen.clear();
        }
        if asked && layers_seen.iter().filter(|x| **x == b'h').count() >= 10 {
            break;
        }
    }
    // After the switch only `h` flows (a few `l` may have been in flight at the switch).
    let first_h = layers_seen.iter().position(|x| *x == b'h').expect("h seen");
    assert!(
        layers_seen[first_h..].iter().all(|x| *x == b'h'),
        "{layers_seen:?}"
    );
    assert!(!layers_seen.contains(&b'm'));
    drop(alice);
    drop(bob);
    relay.stop().await;
}
