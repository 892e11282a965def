//! A client that moves to another network (a new local address) restarts ICE over signaling:
//! a new offer with new ICE credentials and its new host candidate. The relay answers with new
//! credentials of its own, routes the client's STUN by them, and media flows both ways again
//! from the new address within 2 s; the participant, its tracks and its subscriptions stay.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
use common::World;
use str0m::change::SdpAnswer;
use str0m::Candidate;

#[test]
fn a_client_on_a_new_address_restarts_ice_and_media_flows_again_within_2s() {
    let mut w = World::new();
    let a = w.join(1, 5, RoomKind::Video, true, true).expect("a joins");
    let b = w.join(2, 5, RoomKind::Video, true, true).expect("b joins");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
    let old_addr = w.clients[a].addr;
    let old_ufrag = w.clients[a].relay_ufrag.clone();

    // The network changes: the old address is gone (packets to it vanish), the client has a
    // new one, restarts ICE with it and offers.
    let new_addr: SocketAddr = "127.0.0.1:31001".parse().unwrap();
    let offer = {
        let c = &mut w.clients[a];
        c.addr = new_addr;
        let mut api = c.rtc.sdp_api();
        api.ice_restart(false);
        api.apply().expect("an ICE-restart offer")
    };
    let (offer, pending) = offer;
    let moved_at = w.now;
    let answer = w
        .sfu
        .handle_sdp_offer(w.now, ParticipantId(1), &offer.to_sdp_string())
        .expect("the relay accepts the restart");
    let new_ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("an ufrag")
        .trim()
        .to_string();
    assert_ne!(new_ufrag, old_ufrag, "the relay's credentials change too");
    w.clients[a]
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("the client accepts the answer");
    w.clients[a].relay_ufrag = new_ufrag;
    // The restart took effect with the answer (and dropped the old local candidates): the new
    // address is the client's one candidate now.
    w.clients[a]
        .rtc
        .add_local_candidate(Candidate::host(new_addr, "udp").expect("host candidate"));

    // Media both ways from and to the new address, within 2 s.
    let (from_b, from_a) = (w.received_from(a, b, 0xA0), w.received_from(b, a, 0xA0));
    let mut flowing = None;
    while w.now - moved_at < Duration::from_secs(2) {
        w.send_audio(a, -30);
        w.send_audio(b, -30);
        w.drain();
        w.run_for(Duration::from_millis(20));
        if w.received_from(a, b, 0xA0) > from_b + 5 && w.received_from(b, a, 0xA0) > from_a + 5 {
            flowing = Some(w.now - moved_at);
            break;
        }
    }
    let took = flowing.unwrap_or_else(|| {
        panic!(
            "no media both ways within 2 s: a got {} (from {from_b}), b got {} (from {from_a}); stats {:?}",
            w.received_from(a, b, 0xA0),
            w.received_from(b, a, 0xA0),
            w.sfu.stats()
        )
    });
    eprintln!("media both ways again {took:?} after the move");
    assert_eq!(w.sfu.participant_at(new_addr), Some(ParticipantId(1)));
    assert_eq!(w.sfu.stats().ice_restarts, 1);
    // The same participant: nobody left, and b's subscription to a is the one it had.
    assert!(
        w.events_matching(|e| matches!(e, Event::ParticipantLeft { .. }))
            .is_empty(),
        "nobody left"
    );
    assert_eq!(w.sfu.participant_count(), 2);
    // Traffic keeps going to the new address only.
    let before = w.received_from(a, b, 0xA0);
    w.pump(20);
    assert_eq!(w.received_from(a, b, 0xA0), before + 20);
    assert_ne!(old_addr, new_addr);
}
