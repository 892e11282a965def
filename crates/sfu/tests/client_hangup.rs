//! A client that closes its connection (DTLS close_notify) is removed with reason `left`
//! without waiting for the idle timeout.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;

#[test]
fn client_close_removes_it_as_left() {
    let mut w = World::new();
    w.join(1, 13, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 13, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));

    w.clients[b].rtc.close().expect("close starts");
    w.drain();
    w.run_for(Duration::from_secs(1));

    assert_eq!(
        w.events_matching(|e| matches!(e, Event::ParticipantLeft { .. })),
        vec![Event::ParticipantLeft {
            room: RoomKey(13),
            participant: ParticipantId(2),
            reason: RemoveReason::Left,
        }]
    );
    assert_eq!(w.sfu.room_members(RoomKey(13)), vec![ParticipantId(1)]);
}
