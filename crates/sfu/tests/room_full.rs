//! `max_participants` is enforced in `add_participant`, per room.

mod common;

use callrelay_sfu::{ParticipantId, RemoveReason, RoomKey, RoomKind, SfuConfig, SfuError};
use common::{World, SFU_ADDR};

#[test]
fn room_full_refuses_the_next_joiner() {
    let mut config = SfuConfig::new(SFU_ADDR);
    config.max_participants = 3;
    let mut w = World::with_config(config);
    for id in 1..=3 {
        w.join(id, 1, RoomKind::Video, true, true).expect("fits");
    }
    assert_eq!(
        w.join(4, 1, RoomKind::Video, true, true).unwrap_err(),
        SfuError::RoomFull
    );
    assert_eq!(w.sfu.room_members(RoomKey(1)).len(), 3);
    assert_eq!(w.sfu.participant_count(), 3);

    // Another room is not affected.
    w.join(5, 2, RoomKind::Video, true, true)
        .expect("other room");

    // A freed seat can be taken again.
    let now = w.now;
    w.sfu
        .remove_participant(now, ParticipantId(2), RemoveReason::Left)
        .expect("present");
    w.join(6, 1, RoomKind::Video, true, true)
        .expect("seat freed");
    assert_eq!(
        w.join(7, 1, RoomKind::Video, true, true).unwrap_err(),
        SfuError::RoomFull
    );
}

#[test]
fn duplicate_participant_is_refused() {
    let mut w = World::new();
    w.join(1, 1, RoomKind::Video, true, false).expect("first");
    assert_eq!(
        w.join(1, 2, RoomKind::Video, true, false).unwrap_err(),
        SfuError::DuplicateParticipant
    );
    assert_eq!(w.sfu.participant_count(), 1);
}
