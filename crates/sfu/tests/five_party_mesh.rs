//! Five participants in one room: each receives the audio and video of all four others.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;

#[test]
fn five_parties_each_receive_all_four_others() {
    let mut w = World::new();
    for id in 1..=5 {
        w.join(id, 7, RoomKind::Video, true, true).expect("joins");
    }
    // Each subscribes to 4 × (audio + video).
    w.run_until(Duration::from_secs(10), |w| w.settled(8));
    for c in &w.clients {
        assert_eq!(c.subscribed_mids.len(), 8, "{:?} subscriptions", c.id);
    }

    w.pump(30);

    for to in 0..5 {
        for from in 0..5 {
            let expected = if to == from { 0 } else { 30 };
            assert_eq!(
                w.received_from(to, from, 0xA0),
                expected,
                "audio {from}->{to}"
            );
            assert_eq!(
                w.received_from(to, from, 0xB0),
                expected,
                "video {from}->{to}"
            );
        }
    }
    assert_eq!(w.sfu.stats().rtp_forwarded, 5 * 4 * 2 * 30);
    assert_eq!(w.sfu.room_members(callrelay_sfu::RoomKey(7)).len(), 5);
}
