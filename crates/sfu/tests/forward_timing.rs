//! Every forwarded copy leaves the core with the arrival time of the datagram it copies, so
//! the IO layer's `callrelay_forward_latency_seconds` measures socket-to-kernel per copy.
//! With bandwidth estimation on, forwarded video is not paced: a burst far above the estimate
//! leaves at once (str0m's pacer, at 1.1× the estimate, used to hold keyframes for ~100 ms).

mod common;

use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuConfig};
use common::World;

#[test]
fn each_forwarded_copy_carries_its_arrival_time() {
    let mut w = World::new();
    let a = w.join(1, 7, RoomKind::Video, true, true).expect("a joins");
    let b = w.join(2, 7, RoomKind::Video, true, true).expect("b joins");
    let c = w.join(3, 7, RoomKind::Video, true, true).expect("c joins");
    w.run_until(Duration::from_secs(5), |w| w.settled(4));
    w.forward_delays.clear();
    let before = w.sfu.stats().rtp_forwarded;

    w.pump(40);

    let forwarded = w.sfu.stats().rtp_forwarded - before;
    // 3 senders × 2 others × (audio + video) × 40.
    assert_eq!(forwarded, 480);
    assert_eq!(w.forward_delays.len() as u64, forwarded);
    for i in [a, b, c] {
        let to = w.clients[i].addr;
        let n = w.forward_delays.iter().filter(|(d, _)| *d == to).count();
        assert_eq!(n, 160, "copies timed towards client {i}");
    }
    // Without a pacer (no bandwidth estimation) a copy leaves in the step its original arrived.
    assert!(
        w.forward_delays.iter().all(|(_, d)| d.is_zero()),
        "{:?}",
        w.forward_delays.iter().map(|(_, d)| d).max()
    );
}

#[test]
fn with_bandwidth_estimation_a_video_burst_is_not_held_back() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    // A low starting estimate: str0m's pacer would send video at about this rate.
    config.bwe_initial_bitrate = Some(100_000);
    let mut w = World::with_config(config);
    let a = w.join(1, 7, RoomKind::Video, true, true).expect("a joins");
    let b = w.join(2, 7, RoomKind::Video, true, false).expect("b joins");
    w.run_until(Duration::from_secs(5), |w| {
        w.settled(1) && w.clients[b].subscribed_mids.len() == 2
    });
    w.forward_delays.clear();
    let before = w.sfu.stats().rtp_forwarded;

    // A 30-packet keyframe burst (about 220 kbit) in one instant, far above the estimate.
    for _ in 0..30 {
        w.send_video(a);
    }
    w.drain();
    w.run_for(Duration::from_millis(500));

    let forwarded = w.sfu.stats().rtp_forwarded - before;
    assert_eq!(forwarded, 30);
    let to_b = w.clients[b].addr;
    let delays: Vec<Duration> = w
        .forward_delays
        .iter()
        .filter(|(d, _)| *d == to_b)
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(delays.len(), 30, "every copy is timed");
    assert!(
        delays.iter().all(|d| d.is_zero()),
        "each copy left in the step its original arrived: {delays:?}"
    );
}
