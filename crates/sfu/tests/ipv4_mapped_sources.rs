//! A worker socket bound to `[::]` (dual stack) reports an IPv4 peer as its IPv4-mapped IPv6
//! address (`::ffff:127.0.0.1`). The core takes it as the IPv4 address: the peer pairs with the
//! IPv4 host candidate, is learned once, and media reaches it and comes from it as usual.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::{World, SFU_ADDR};

/// `addr` as a dual-stack socket reports it.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

/// One step of virtual time, every datagram on its way to the relay arriving from the mapped
/// form of its sender's address.
fn step_dual_stack(w: &mut World) {
    for p in w.net.iter_mut().filter(|p| p.destination == SFU_ADDR) {
        p.source = mapped(p.source);
    }
    w.step();
}

#[test]
fn ipv4_peers_seen_through_mapped_addresses_exchange_media() {
    let mut w = World::new();
    for id in 1..=2 {
        w.join(id, 1, RoomKind::Video, true, true).expect("joins");
    }
    // Each subscribes to the other's audio and video.
    let end = w.now + Duration::from_secs(10);
    while !w.settled(2) {
        assert!(w.now < end, "not connected and subscribed within 10 s");
        step_dual_stack(&mut w);
    }

    for _ in 0..30 {
        for i in 0..2 {
            w.send_audio(i, -30);
            w.send_video(i);
        }
        w.drain();
        let next = w.now + Duration::from_millis(20);
        while w.now < next {
            step_dual_stack(&mut w);
        }
    }
    let end = w.now + Duration::from_millis(200);
    while w.now < end {
        step_dual_stack(&mut w);
    }

    for (to, from) in [(0, 1), (1, 0)] {
        assert_eq!(w.received_from(to, from, 0xA0), 30, "audio {from}->{to}");
        assert_eq!(w.received_from(to, from, 0xB0), 30, "video {from}->{to}");
    }
    // One address per peer, its IPv4 form, found by either form.
    assert_eq!(w.sfu.learned_address_count(), 2);
    for c in &w.clients {
        assert!(c.addr.is_ipv4());
        assert_eq!(w.sfu.participant_at(c.addr), Some(c.id));
        assert_eq!(w.sfu.participant_at(mapped(c.addr)), Some(c.id));
    }
    assert_eq!(w.sfu.participant_at(mapped(SFU_ADDR)), None);
    assert_eq!(w.sfu.stats().dropped_unknown_source, 0);
}
