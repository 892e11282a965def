//! A participant whose session fails is removed alone, with reason `error`; the rest of the
//! room carries on.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;
use str0m::change::SdpOffer;

#[test]
fn a_broken_answer_removes_only_its_sender() {
    let mut w = World::new();
    w.join(1, 61, RoomKind::Video, true, false).expect("a");
    w.join(2, 61, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));

    // c joins; the relay's offers are held so that c can answer with a mangled SDP.
    w.hold_offers = true;
    let c = w.join(3, 61, RoomKind::Video, true, false).expect("c");
    w.run_for(Duration::from_millis(20));
    let held = std::mem::take(&mut w.held_offers);
    w.hold_offers = false;
    for (p, sdp) in held {
        if p != ParticipantId(3) {
            w.answer_offer(p, &sdp);
            continue;
        }
        let offer = SdpOffer::from_sdp_string(&sdp).expect("parses");
        let answer = w.clients[c]
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("client accepts")
            .to_sdp_string();
        // Answer m-lines that were never offered.
        let mangled: String = answer
            .lines()
            .map(|l| match l.strip_prefix("a=mid:") {
                Some(_) => "a=mid:bogus".to_string(),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n";
        let now = w.now;
        assert!(w.sfu.handle_sdp_answer(now, p, &mangled).is_err());
    }
    w.drain();
    w.clients[c].online = false;

    assert_eq!(
        w.events_matching(|e| matches!(e, Event::Removed { .. })),
        vec![Event::Removed {
            room: RoomKey(61),
            participant: ParticipantId(3),
            reason: RemoveReason::Error,
        }]
    );
    assert_eq!(
        w.sfu.room_members(RoomKey(61)),
        vec![ParticipantId(1), ParticipantId(2)]
    );
    w.pump(10);
    assert_eq!(w.received_from(0, 1, 0xA0), 10);
    assert_eq!(w.received_from(1, 0, 0xA0), 10);
}
