//! `Sfu::media_bitrate`: what each participant sends and is sent, over the last second, as
//! the operator's room API shows it.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKind};
use common::World;

#[test]
fn bitrates_follow_what_each_participant_sends_and_receives() {
    let mut w = World::new();
    let a = w
        .join(1, 7, RoomKind::Video, true, true)
        .expect("a (audio + video)");
    let b = w
        .join(2, 7, RoomKind::Video, true, false)
        .expect("b (audio)");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(40);
    assert!(w.received_from(b, a, 0xB0) >= 30, "b gets a's video");

    let now = w.now;
    let ra = w.sfu.media_bitrate(ParticipantId(1), now).expect("a is in");
    let rb = w.sfu.media_bitrate(ParticipantId(2), now).expect("b is in");
    assert!(rb.received_bps > 0, "b sends audio: {rb:?}");
    assert!(
        ra.received_bps > rb.received_bps,
        "a sends audio and video, b audio only: {ra:?} {rb:?}"
    );
    // With two participants, all a sends goes to b and all b sends goes to a, at the same
    // instants: the meters agree exactly.
    assert_eq!(ra.received_bps, rb.forwarded_bps);
    assert_eq!(rb.received_bps, ra.forwarded_bps);
    assert_eq!(w.sfu.media_bitrate(ParticipantId(3), now), None);

    // Two quiet seconds later nothing is measured any more.
    w.run_for(Duration::from_secs(2));
    let quiet = w
        .sfu
        .media_bitrate(ParticipantId(1), w.now)
        .expect("a is in");
    assert_eq!(
        (quiet.received_bps, quiet.forwarded_bps),
        (0, 0),
        "{quiet:?}"
    );
}
