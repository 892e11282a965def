//! A packet's copies for many subscribers leave the relay in one `sendmmsg`, not one `sendmsg`
//! each (issue #11): a publisher and five subscribers in one room on the in-process relay (real
//! HTTP joins, WebSocket signaling, DTLS/SRTP over UDP on 127.0.0.1 with str0m clients), media
//! from the publisher only, and `/metrics` read before and after.
//!
//! With one send call per copy, as before, `callrelay_media_datagrams_sent_total` grows as fast
//! as `callrelay_media_send_syscalls_total` (GSO only merges runs to one subscriber, which a
//! fan-out is not). Batched, each call carries a receive batch's copies for every subscriber.

use std::time::Duration;

use callrelay_client::{ClientConfig, TrackKind};

#[allow(dead_code)]
#[path = "media/common.rs"]
mod common;
use common::{Peer, Relay, PATIENCE};

const SUBSCRIBERS: usize = 5;

/// Publisher ticks (one audio and one video packet each, every 20 ms) in the measured phase.
const TICKS: u32 = 100;

/// The value of an unlabelled counter on the relay's `/metrics`.
async fn counter(relay: &Relay, name: &str) -> f64 {
    let text = relay
        .http
        .get(format!("{}/metrics", relay.base))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not on /metrics"))
}

/// The publisher sends `ticks` audio+video packets, one pair every 20 ms, while every peer's
/// events are read.
async fn publish(publisher: &mut Peer, subscribers: &mut [Peer], ticks: u32) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..ticks {
        tick.tick().await;
        publisher.send_media(1);
        publisher.drain();
        for s in subscribers.iter_mut() {
            s.drain();
        }
    }
}

/// Reads events until every subscriber has `n` intact packets of each kind from `from`.
async fn until_received(subscribers: &mut [Peer], from: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut missing = None;
        for (i, s) in subscribers.iter_mut().enumerate() {
            s.drain();
            for kind in [TrackKind::Audio, TrackKind::Video] {
                let got = s.received_intact(from, kind, 1);
                if got < n && missing.is_none() {
                    missing = Some(format!("subscriber {i} has {got} {kind:?} packets"));
                }
            }
        }
        let Some(m) = missing else { return };
        assert!(tokio::time::Instant::now() < deadline, "{m} (wanted {n})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmmsg_is_used_when_copies_go_to_many_destinations() {
    // One worker: every participant on one socket, so every copy goes through one send path.
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")]).await;
    let link = relay.create_link("publisher", "video").await;
    let mut publisher = relay
        .join("publisher", &link, ClientConfig::default())
        .await;
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        subscribers.push(
            relay
                .join(&format!("sub{i}"), &link, ClientConfig::default())
                .await,
        );
    }
    let from = publisher.id();

    // Until every subscription is negotiated and media flows to all five.
    publish(&mut publisher, &mut subscribers, 25).await;
    until_received(&mut subscribers, &from, 5).await;

    let datagrams_before = counter(&relay, "callrelay_media_datagrams_sent_total").await;
    let syscalls_before = counter(&relay, "callrelay_media_send_syscalls_total").await;
    let drives_before = counter(&relay, "callrelay_media_session_drives_total").await;
    let received_before: Vec<usize> = subscribers
        .iter()
        .map(|s| s.received_intact(&from, TrackKind::Video, 1))
        .collect();

    publish(&mut publisher, &mut subscribers, TICKS).await;
    // Most of the measured phase's packets reached every subscriber, bytes intact.
    let wanted = received_before.iter().max().copied().unwrap_or(0) + TICKS as usize / 2;
    until_received(&mut subscribers, &from, wanted).await;

    let datagrams =
        counter(&relay, "callrelay_media_datagrams_sent_total").await - datagrams_before;
    let syscalls = counter(&relay, "callrelay_media_send_syscalls_total").await - syscalls_before;
    let drives = counter(&relay, "callrelay_media_session_drives_total").await - drives_before;
    eprintln!(
        "{datagrams} datagrams in {syscalls} send syscalls: {:.2} per call; {drives} session drives",
        datagrams / syscalls.max(1.0)
    );
    // Every copy left through a drive of its subscriber's session, and the scrape counts them.
    assert!(
        drives >= SUBSCRIBERS as f64,
        "the subscribers' sessions were driven and counted: {drives}"
    );
    // At least the copies of the measured phase: 2 packets × 5 subscribers per tick.
    assert!(
        datagrams >= f64::from(TICKS) * 2.0 * SUBSCRIBERS as f64 / 2.0,
        "the copies were counted as sent: {datagrams}"
    );
    assert!(syscalls > 0.0, "sends were counted: {syscalls}");
    assert!(
        datagrams / syscalls >= 2.0,
        "one send call carries many datagrams: {datagrams} datagrams in {syscalls} calls"
    );

    drop(publisher);
    drop(subscribers);
    relay.stop().await;
}
