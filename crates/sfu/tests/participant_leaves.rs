//! A participant who leaves stops being forwarded; the others get `ParticipantLeft` and lose
//! its tracks.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;

#[test]
fn leaver_stops_being_forwarded_and_others_are_told() {
    let mut w = World::new();
    for id in 1..=3 {
        w.join(id, 5, RoomKind::Video, true, true).expect("joins");
    }
    w.run_until(Duration::from_secs(5), |w| w.settled(4));
    w.pump(10);
    assert_eq!(w.received_from(0, 2, 0xA0), 10);

    let now = w.now;
    w.sfu
        .remove_participant(now, ParticipantId(3), RemoveReason::Left)
        .expect("present");
    w.drain();

    let left = w.events_matching(|e| matches!(e, Event::ParticipantLeft { .. }));
    assert_eq!(
        left,
        vec![Event::ParticipantLeft {
            room: RoomKey(5),
            participant: ParticipantId(3),
            reason: RemoveReason::Left,
        }]
    );
    let unpublished = w.events_matching(|e| {
        matches!(e, Event::TrackUnpublished { participant, .. } if *participant == ParticipantId(3))
    });
    assert_eq!(unpublished.len(), 2, "its audio and video");
    assert_eq!(
        w.sfu.room_members(RoomKey(5)),
        vec![ParticipantId(1), ParticipantId(2)]
    );

    // The leaver keeps transmitting (a stale client): nothing of it reaches the others.
    let forwarded_before = w.sfu.stats().rtp_forwarded;
    let dropped_before = w.sfu.stats().dropped_unknown_source;
    w.pump(10);
    for to in 0..2 {
        assert_eq!(
            w.received_from(to, 2, 0xA0),
            10,
            "nothing new from the leaver"
        );
        assert_eq!(
            w.received_from(to, 2, 0xB0),
            10,
            "nothing new from the leaver"
        );
    }
    assert_eq!(w.received_from(0, 1, 0xA0), 20, "the others still talk");
    assert_eq!(w.received_from(1, 0, 0xB0), 20, "the others still talk");
    assert_eq!(w.sfu.stats().rtp_forwarded - forwarded_before, 2 * 2 * 10);
    assert!(w.sfu.stats().dropped_unknown_source > dropped_before);
    assert_eq!(
        w.sfu
            .remove_participant(w.now, ParticipantId(3), RemoveReason::Left),
        Err(callrelay_sfu::SfuError::UnknownParticipant)
    );
}

#[test]
fn last_one_out_drops_the_room() {
    let mut w = World::new();
    w.join(1, 9, RoomKind::Voice, true, false).expect("joins");
    assert_eq!(w.sfu.room_count(), 1);
    let now = w.now;
    w.sfu
        .remove_participant(now, ParticipantId(1), RemoveReason::Left)
        .expect("present");
    assert_eq!(w.sfu.room_count(), 0);
    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.poll_timeout(), None);
}
