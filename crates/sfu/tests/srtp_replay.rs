//! SRTP after the keys (THREATS 8): a replayed packet and a packet that fails authentication
//! are dropped by the publisher's SRTP context; neither reaches a subscriber, nobody is
//! removed, and the call goes on.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::{InFlight, World, SFU_ADDR};

fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

#[test]
fn replayed_and_forged_srtp_reach_nobody() {
    let mut w = World::new();
    let a = w.join(1, 8, RoomKind::Voice, true, false).expect("a");
    let b = w.join(2, 8, RoomKind::Voice, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(5);
    let forwarded = w.sfu.stats().rtp_forwarded;

    // a sends one packet; take its datagram off the wire.
    w.send_audio(a, -30);
    w.drain();
    let source = w.clients[a].addr;
    let i = w
        .net
        .iter()
        .position(|p| p.source == source && p.destination == SFU_ADDR && is_rtp(&p.contents))
        .expect("a's audio is in flight");
    let original = w.net.remove(i).expect("in flight");
    let mut forged = original.contents.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01; // the authentication tag no longer matches
    let mut payload_forged = original.contents.clone();
    payload_forged[14] ^= 0x80; // an encrypted payload byte
    let at = w.now;
    // The original, then the original again (a replay), twice more, then the forgeries.
    for contents in [
        original.contents.clone(),
        original.contents.clone(),
        original.contents.clone(),
        forged,
        payload_forged,
    ] {
        w.net.push_back(InFlight {
            at,
            proto: str0m::net::Protocol::Udp,
            source,
            destination: SFU_ADDR,
            contents,
        });
    }
    w.run_for(Duration::from_millis(200));

    assert_eq!(
        w.sfu.stats().rtp_forwarded - forwarded,
        1,
        "one copy of the one genuine packet"
    );
    assert_eq!(w.received_from(b, a, 0xA0), 6, "b got a's packet once");
    assert_eq!(w.sfu.participant_count(), 2, "nobody removed");
    w.pump(5);
    assert_eq!(w.received_from(b, a, 0xA0), 11, "the call goes on");
}
