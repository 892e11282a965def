//! A publish-only participant (a WHIP client, which has no channel for the relay's offers):
//! everyone receives its tracks, it is offered nothing, and nothing is forwarded to it.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
use common::World;

#[test]
fn a_publisher_is_heard_by_everyone_and_offered_nothing() {
    let mut w = World::new();
    w.publish_only.push(ParticipantId(3));
    let a = w.join(1, 40, RoomKind::Video, true, true).expect("a");
    let whip = w.join(3, 40, RoomKind::Video, true, true).expect("whip");
    let b = w.join(2, 40, RoomKind::Video, true, true).expect("b");
    // a and b each get the other's two tracks and the publisher's two; it gets none.
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[a].subscribed_mids.len() == 4 && w.clients[b].subscribed_mids.len() == 4
    });
    assert!(w.clients[whip].rtc.is_connected());
    let offers_to_whip = w.events_matching(
        |e| matches!(e, Event::SdpOffer { participant, .. } if *participant == ParticipantId(3)),
    );
    assert!(offers_to_whip.is_empty(), "{offers_to_whip:?}");

    w.pump(10);
    for (to, from) in [(a, whip), (b, whip), (a, b), (b, a)] {
        assert_eq!(w.received_from(to, from, 0xA0), 10, "audio {from} → {to}");
        assert_eq!(w.received_from(to, from, 0xB0), 10, "video {from} → {to}");
    }
    assert!(
        w.clients[whip].received.is_empty(),
        "nothing forwarded to it"
    );

    // A track published later (c joins) is not offered to it either.
    let c = w.join(4, 40, RoomKind::Video, true, false).expect("c");
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[c].subscribed_mids.len() == 6 && w.clients[a].subscribed_mids.len() == 5
    });
    w.run_for(Duration::from_millis(200));
    assert!(w
        .events_matching(
            |e| matches!(e, Event::SdpOffer { participant, .. } if *participant == ParticipantId(3))
        )
        .is_empty());
}
