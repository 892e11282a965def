//! Removal with reasons `revoked` and `blocked` produces the right events for the removed
//! participant and for the rest of the room.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;

#[test]
fn blocked_user_is_removed_with_reason_blocked() {
    let mut w = World::new();
    for id in 1..=3 {
        w.join(id, 4, RoomKind::Video, true, true).expect("joins");
    }
    w.run_until(Duration::from_secs(5), |w| w.settled(4));
    w.events.clear();

    let now = w.now;
    w.sfu
        .remove_participant(now, ParticipantId(2), RemoveReason::Blocked)
        .expect("present");
    w.drain();
    let removed =
        w.events_matching(|e| matches!(e, Event::Removed { .. } | Event::ParticipantLeft { .. }));
    assert_eq!(
        removed,
        vec![
            Event::ParticipantLeft {
                room: RoomKey(4),
                participant: ParticipantId(2),
                reason: RemoveReason::Blocked,
            },
            Event::Removed {
                room: RoomKey(4),
                participant: ParticipantId(2),
                reason: RemoveReason::Blocked,
            },
        ]
    );
    assert_eq!(RemoveReason::Blocked.as_str(), "blocked");
    assert_eq!(w.sfu.participant_count(), 2);
    // The blocked client's connection is closed by the relay, not left to time out.
    w.run_for(Duration::from_millis(100));
    assert!(w.clients[1].closed, "blocked client sees the close");
    assert!(!w.clients[0].closed && !w.clients[2].closed);
}

#[test]
fn revoked_link_removes_everyone_with_reason_revoked() {
    let mut w = World::new();
    for id in 1..=3 {
        w.join(id, 4, RoomKind::Video, true, true).expect("joins");
    }
    w.join(9, 5, RoomKind::Video, true, true)
        .expect("another room");
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());
    w.events.clear();

    let now = w.now;
    w.sfu.remove_room(now, RoomKey(4), RemoveReason::Revoked);
    w.drain();
    let mut removed: Vec<ParticipantId> = w
        .events_matching(|e| {
            matches!(
                e,
                Event::Removed {
                    reason: RemoveReason::Revoked,
                    room: RoomKey(4),
                    ..
                }
            )
        })
        .into_iter()
        .map(|e| match e {
            Event::Removed { participant, .. } => participant,
            _ => unreachable!("filtered on Removed"),
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        vec![ParticipantId(1), ParticipantId(2), ParticipantId(3)]
    );
    assert!(w
        .events_matching(
            |e| matches!(e, Event::Removed { reason, .. } if *reason != RemoveReason::Revoked)
        )
        .is_empty());
    assert_eq!(RemoveReason::Revoked.as_str(), "revoked");
    assert_eq!(w.sfu.room_count(), 1, "only the other room is left");
    assert_eq!(w.sfu.room_members(RoomKey(5)), vec![ParticipantId(9)]);
}

#[test]
fn drain_removes_everyone_in_every_room() {
    let mut w = World::new();
    w.join(1, 4, RoomKind::Video, true, false).expect("joins");
    w.join(2, 4, RoomKind::Video, true, false).expect("joins");
    w.join(3, 5, RoomKind::Voice, true, false).expect("joins");
    w.events.clear();

    let now = w.now;
    w.sfu.remove_all(now, RemoveReason::Drain);
    w.drain();
    let drained = w.events_matching(|e| {
        matches!(
            e,
            Event::Removed {
                reason: RemoveReason::Drain,
                ..
            }
        )
    });
    assert_eq!(drained.len(), 3);
    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.room_count(), 0);
    assert_eq!(w.sfu.poll_timeout(), None);
}
