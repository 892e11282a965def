//! A subscriber's NACKs are answered from the relay's resend history while
//! `SfuConfig::send_history_video` keeps the packet, and not after it.

mod common;

use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuConfig};
use common::{World, LATENCY, SFU_ADDR};

/// Two people in a video room; 10 % of the relay's datagrams to the second are lost, so what
/// the second misses only the relay can send again. Returns the video packets the second got
/// of the first's, and how many the first sent.
fn call_with_history(history: Duration) -> (usize, usize) {
    let mut config = SfuConfig::new(SFU_ADDR);
    config.send_history_video = history;
    let mut w = World::with_config(config);
    for id in 1..=2 {
        w.join(id, 7, RoomKind::Video, true, true).expect("joins");
    }
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    let (first, second) = (w.client(1), w.client(2));
    let already = w.clients[first].sent_video.len();
    w.lossy_destinations = vec![w.clients[second].addr];
    w.loss = 0.1;
    w.pump(300);
    w.loss = 0.0;
    w.run_for(Duration::from_secs(1));
    let got = w.received_from(second, first, 0xB0);
    let sent = w.clients[first].sent_video.len();
    assert!(
        already <= got,
        "got {got}, {already} of them before the loss"
    );
    (got, sent)
}

#[test]
fn nacks_within_the_history_are_answered() {
    let (got, sent) = call_with_history(Duration::from_secs(1));
    // Everything lost was sent again (a resend can be lost too, and is asked for again).
    assert!(got * 100 >= sent * 99, "got {got} of {sent}");
}

#[test]
fn nacks_past_the_history_go_unanswered() {
    // A NACK reaches the relay a round trip (2 × LATENCY) after the copy left, at least.
    let history = LATENCY / 5;
    let (got, sent) = call_with_history(history);
    // About a tenth of the packets is lost for good.
    assert!(got * 100 <= sent * 95, "got {got} of {sent}");
    assert!(got * 100 >= sent * 80, "got {got} of {sent}");
}
