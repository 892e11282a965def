//! A participant without ICE activity for `idle_timeout` is removed with reason `idle`; the
//! others are told and keep their call.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;

#[test]
fn silent_participant_is_removed_as_idle() {
    let mut w = World::new();
    w.join(1, 8, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 8, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));

    // b's network goes away: no more STUN from it.
    w.clients[b].online = false;
    w.run_for(Duration::from_secs(25));
    assert_eq!(w.sfu.participant_count(), 2, "not idle yet");
    w.run_for(Duration::from_secs(10));

    assert_eq!(
        w.events_matching(|e| matches!(e, Event::ParticipantLeft { .. })),
        vec![Event::ParticipantLeft {
            room: RoomKey(8),
            participant: ParticipantId(2),
            reason: RemoveReason::Idle,
        }]
    );
    assert_eq!(w.sfu.room_members(RoomKey(8)), vec![ParticipantId(1)]);
    assert_eq!(w.sfu.learned_address_count(), 1, "b's address is forgotten");
}

#[test]
fn participant_that_never_connects_is_removed_as_idle() {
    let mut w = World::new();
    let a = w.join(1, 8, RoomKind::Voice, true, false).expect("a");
    w.clients[a].online = false;
    w.run_for(Duration::from_secs(31));
    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.room_count(), 0, "empty room dropped");
    assert_eq!(
        w.events_matching(|e| matches!(
            e,
            Event::Removed {
                reason: RemoveReason::Idle,
                ..
            }
        ))
        .len(),
        1
    );
}
