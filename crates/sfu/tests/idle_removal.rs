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

/// THREATS 6: a peer that keeps ICE alive but never completes DTLS is removed at the
/// handshake timeout (20 s by default), long before any idle timeout would, and a normal
/// participant is not.
#[test]
fn a_handshake_that_never_completes_is_removed_at_the_handshake_timeout() {
    let mut w = World::new();
    let a = w.join(1, 8, RoomKind::Voice, true, false).expect("a");
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());
    // Then b joins, and its DTLS never gets through: ICE completes, the keys never come.
    w.block_dtls = true;
    let b = w.join(2, 8, RoomKind::Voice, true, false).expect("b");
    w.run_for(Duration::from_secs(19));
    assert_eq!(
        w.sfu.participant_count(),
        2,
        "b is within its handshake time"
    );
    w.run_for(Duration::from_secs(2));
    assert_eq!(
        w.events_matching(|e| matches!(e, Event::ParticipantLeft { .. })),
        vec![Event::ParticipantLeft {
            room: RoomKey(8),
            participant: ParticipantId(2),
            reason: RemoveReason::Idle,
        }]
    );
    assert_eq!(w.sfu.room_members(RoomKey(8)), vec![ParticipantId(1)]);
    // b's own DTLS gives up too, a little later; it is gone from the relay already.
    w.clients[b].online = false;
    // a, keyed long ago, is untouched and still connected after both timeouts would have
    // passed for it.
    w.block_dtls = false;
    w.run_for(Duration::from_secs(40));
    assert_eq!(w.sfu.room_members(RoomKey(8)), vec![ParticipantId(1)]);
    assert!(w.clients[a].rtc.is_connected());
}
