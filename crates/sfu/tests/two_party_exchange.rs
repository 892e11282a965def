//! Two participants exchange audio and video both ways through the relay; every payload that
//! arrives is byte-identical to what was sent.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, RoomKind};
use common::World;

#[test]
fn two_parties_exchange_audio_and_video_both_ways() {
    let mut w = World::new();
    let a = w
        .join(1, 100, RoomKind::Video, true, true)
        .expect("a joins");
    let b = w
        .join(2, 100, RoomKind::Video, true, true)
        .expect("b joins");

    // Each subscribes to the other's audio and video.
    w.run_until(Duration::from_secs(5), |w| w.settled(2));

    w.pump(50);

    for (to, from) in [(a, b), (b, a)] {
        let audio = w.received_from(to, from, 0xA0);
        let video = w.received_from(to, from, 0xB0);
        // No loss on this network: everything sent after negotiation arrives.
        assert_eq!(audio, 50, "audio {from} -> {to}");
        assert_eq!(video, 50, "video {from} -> {to}");
        // Nothing of its own comes back.
        assert_eq!(w.received_from(to, to, 0xA0), 0);
        assert_eq!(w.received_from(to, to, 0xB0), 0);
    }

    let published = w.events_matching(|e| matches!(e, Event::TrackPublished { .. }));
    assert_eq!(published.len(), 4);
    let stats = w.sfu.stats();
    assert_eq!(stats.rtp_forwarded, 200);
    assert_eq!(stats.dropped_unknown_source, 0);
}
