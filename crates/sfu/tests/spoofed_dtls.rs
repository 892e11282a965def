//! A spoofed DTLS ClientHello racing the real one (THREATS 5): a stranger who copies a
//! participant's first DTLS datagram and gets its copy to the relay first is ignored (it never
//! sent authenticated STUN, so its address is unknown): dropped as `unknown_source`, never
//! answered, and the real handshake completes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::{InFlight, World, SFU_ADDR};

fn is_dtls(d: &[u8]) -> bool {
    d.first().is_some_and(|b| (20..64).contains(b))
}

#[test]
fn a_copied_client_hello_from_a_stranger_loses_the_race() {
    let mut w = World::new();
    let a = w.join(1, 5, RoomKind::Voice, true, false).expect("a");
    let a_addr = w.clients[a].addr;
    let stranger: SocketAddr = "127.0.0.1:40999".parse().unwrap();

    // Run until a's first DTLS datagram (its ClientHello) is on the wire, then put a copy
    // from the stranger ahead of it.
    let mut raced = false;
    for _ in 0..10_000 {
        if let Some(hello) = w
            .net
            .iter()
            .find(|p| p.source == a_addr && p.destination == SFU_ADDR && is_dtls(&p.contents))
        {
            let copy = InFlight {
                at: hello.at - Duration::from_micros(1),
                proto: str0m::net::Protocol::Udp,
                source: stranger,
                destination: SFU_ADDR,
                contents: hello.contents.clone(),
            };
            w.net.push_front(copy);
            raced = true;
            break;
        }
        w.step();
    }
    assert!(raced, "a's ClientHello was seen");
    let before = w.sfu.stats().dropped_unknown_source;
    let sent_before = w.sfu_transmits;
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());

    assert_eq!(
        w.sfu.stats().dropped_unknown_source - before,
        1,
        "the stranger's copy is dropped"
    );
    assert_eq!(
        w.sfu.learned_address_count(),
        1,
        "only a's address is known"
    );
    assert_eq!(w.sfu.participant_count(), 1);
    assert!(w.sfu_transmits > sent_before, "the relay answered a");
    // a's media flows: the handshake that completed is a's own.
    let b = w.join(2, 5, RoomKind::Voice, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(5);
    assert_eq!(w.received_from(b, a, 0xA0), 5);
}
