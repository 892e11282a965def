//! A subscriber whose answer accepts none of the codecs a publisher sends is told
//! (`codec_unsupported`) instead of showing a track that never plays, and stays in the call.

use callrelay_client::{ClientConfig, Codec, TrackKind};
use callrelay_proto::server_message::Msg;

use crate::common::{exchange, Relay, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_without_the_publishers_codec_is_told_and_keeps_the_rest() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    // Alice sends VP8 (and Opus); bob's device decodes H264 only (and sends audio);
    // carol takes the defaults.
    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let h264_only = ClientConfig {
        video: false,
        video_codec: Some(Codec::H264),
        ..ClientConfig::default()
    };
    let bob = relay.join("bob", &link, h264_only).await;
    let carol = relay.join("carol", &link, ClientConfig::default()).await;
    let alice_id = alice.id();

    let mut peers = [alice, bob, carol];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        exchange(&mut peers, std::time::Duration::from_millis(200)).await;
        let [a, b, c] = &peers;
        let done = c.received_intact(&a.id(), TrackKind::Video, 1) >= 20
            && b.received_intact(&a.id(), TrackKind::Audio, 1) >= 20;
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol got {} video packets from alice, bob {} audio",
            c.received_intact(&a.id(), TrackKind::Video, 1),
            b.received_intact(&a.id(), TrackKind::Audio, 1)
        );
    }
    let [alice, bob, carol] = peers;

    // Bob hears alice and carol but gets none of their VP8, and was told why: once per
    // publisher, naming it.
    assert_eq!(bob.received_intact(&alice_id, TrackKind::Video, 1), 0);
    assert_eq!(bob.received_intact(&carol.id(), TrackKind::Video, 3), 0);
    assert!(bob.received_intact(&carol.id(), TrackKind::Audio, 3) >= 20);
    let errors: Vec<_> = bob
        .signals
        .iter()
        .filter_map(|(_, m)| match m {
            Msg::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for publisher in [&alice_id, &carol.id()] {
        let about: Vec<_> = errors
            .iter()
            .filter(|e| e.message.contains(publisher.as_str()))
            .collect();
        assert_eq!(about.len(), 1, "one error about {publisher}: {errors:?}");
        assert_eq!(about[0].code, "codec_unsupported");
        assert!(about[0].message.contains("VP8"), "{}", about[0].message);
    }
    assert!(bob.closed.is_none(), "bob stays in the call");
    // Nobody else was told anything of the kind.
    for p in [&alice, &carol] {
        assert!(
            !p.signals.iter().any(|(_, m)| matches!(m, Msg::Error(_))),
            "{:?}",
            p.signals
        );
    }
    let body = relay.metrics_text().await;
    let dropped = metric_value(
        &body,
        "callrelay_datagrams_dropped_total{reason=\"codec_unsupported\"}",
    );
    assert!(dropped >= 20.0, "dropped copies counted: {dropped}");
    let told = metric_value(
        &body,
        "callrelay_signaling_errors_total{code=\"codec_unsupported\"}",
    );
    assert_eq!(told, 2.0);
    // The rest of the call is whole: carol and alice hear bob.
    assert!(carol.received_intact(&bob.id(), TrackKind::Audio, 2) >= 20);
    assert!(alice.received_intact(&bob.id(), TrackKind::Audio, 2) >= 20);
    drop((alice, bob, carol));
    relay.stop().await;
}

fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not exported"))
}
