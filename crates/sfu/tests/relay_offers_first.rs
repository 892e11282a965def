//! A participant may join without an offer: the relay offers first (receive-only lines to
//! publish on, plus the room's tracks), the client answers, and media flows both ways.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind};
use common::World;

#[test]
fn relay_first_offer_carries_publish_lines_and_room_tracks() {
    let mut w = World::new();
    let a = w
        .join(1, 51, RoomKind::Video, true, true)
        .expect("a offers");
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());
    let b = w
        .join_relay_offers(2, 51, RoomKind::Video)
        .expect("b is offered");
    assert_eq!(w.sfu.room_members(RoomKey(51)).len(), 2);

    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    assert!(w.clients[b].audio_mid.is_some() && w.clients[b].video_mid.is_some());
    let published = w.events_matching(|e| {
        matches!(e, Event::TrackPublished { participant, .. } if *participant == ParticipantId(2))
    });
    assert_eq!(published.len(), 2, "b's answer published audio and video");

    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
    assert_eq!(w.received_from(a, b, 0xB0), 10);
}

#[test]
fn relay_first_offer_in_a_voice_room_has_no_video() {
    let mut w = World::new();
    w.hold_offers = true;
    w.join_relay_offers(1, 52, RoomKind::Voice)
        .expect("offered");
    let (_, sdp) = w.held_offers.first().expect("one offer").clone();
    assert!(sdp.contains("m=audio "));
    assert!(!sdp.contains("m=video "), "a voice room offers no video");
}
