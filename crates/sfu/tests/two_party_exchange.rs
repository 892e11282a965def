//! Two participants exchange audio and video both ways through the relay; every payload that
//! arrives is byte-identical to what was sent.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
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

#[test]
fn first_media_is_announced_once_per_publisher_with_its_arrival() {
    let mut w = World::new();
    w.join(1, 1, RoomKind::Video, true, true).expect("a");
    w.join(2, 1, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let before = w.now;
    w.pump(10);
    let first: Vec<(ParticipantId, std::time::Instant)> = w
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::FirstMedia {
                participant, at, ..
            } => Some((*participant, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 2, "{first:?}");
    let mut who: Vec<ParticipantId> = first.iter().map(|(p, _)| *p).collect();
    who.sort_by_key(|p| p.0);
    assert_eq!(who, vec![ParticipantId(1), ParticipantId(2)]);
    assert!(first.iter().all(|(_, at)| *at >= before && *at <= w.now));
    // More media raises nothing more.
    w.pump(10);
    let again = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FirstMedia { .. }))
        .count();
    assert_eq!(again, 2);
}
