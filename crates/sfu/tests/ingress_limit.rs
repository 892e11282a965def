//! A publisher over its ingress budget (THREATS 12): media above
//! `SfuConfig::max_ingress_bitrate` is dropped before fan-out and counted; the sender stays in
//! the call, what it sends within budget still arrives, and the others' media is untouched.

mod common;

use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuConfig};
use common::{World, SFU_ADDR};

#[test]
fn media_over_the_ingress_budget_is_dropped_and_the_rest_of_the_call_carries_on() {
    let mut config = SfuConfig::new(SFU_ADDR);
    // ~200 kbit/s: a's audio and 900-byte video every 20 ms (~400 kbit/s with overhead) is
    // over it; b's audio alone (~56 kbit/s) is under it.
    config.max_ingress_bitrate = Some(200_000);
    let mut w = World::with_config(config);
    let a = w.join(1, 12, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 12, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let start = w.now;
    w.pump(200);
    let elapsed = (w.now - start).as_secs_f64();

    let dropped = w.sfu.stats().rtp_dropped_ingress_limit;
    let audio = w.received_from(b, a, 0xA0);
    let video = w.received_from(b, a, 0xB0);
    assert_eq!(
        audio + video + dropped as usize,
        400,
        "every packet of a's is either forwarded once or dropped and counted"
    );
    assert!(dropped > 0, "a's excess is dropped");
    // What passed (payload + 60 bytes of overhead each) fits the budget: one second of burst
    // plus the rate over the time the packets were sent in, and uses most of it.
    let passed = (audio * (80 + 60) + video * (900 + 60)) as f64;
    let budget = 25_000.0 * (1.0 + elapsed);
    assert!(
        passed <= budget && passed > 0.75 * budget,
        "{passed} bytes passed of a budget of {budget} ({audio} audio, {video} video)"
    );
    // b, under the budget, loses nothing, and nobody is removed.
    assert_eq!(w.received_from(a, b, 0xA0), 200, "b's audio all arrives");
    assert_eq!(w.sfu.participant_count(), 2);
}

#[test]
fn the_default_budget_drops_nothing_of_a_normal_call() {
    let mut w = World::new();
    let a = w.join(1, 12, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 12, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(100);
    assert_eq!(w.sfu.stats().rtp_dropped_ingress_limit, 0);
    assert_eq!(w.received_from(b, a, 0xB0), 100);
    assert_eq!(w.received_from(a, b, 0xB0), 100);
}
