//! ICE-TCP (RFC 6544): a client whose network blocks UDP reaches the relay through its passive
//! TCP candidate with an active TCP candidate of its own, and exchanges media with a UDP client.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKind, SfuConfig};
use common::{World, SFU_ADDR};

fn world_with_tcp() -> World {
    let mut config = SfuConfig::new(SFU_ADDR);
    config.tcp_candidates = true;
    World::with_config(config)
}

#[test]
fn a_tcp_only_client_exchanges_media_with_a_udp_client() {
    let mut w = world_with_tcp();
    w.tcp_only.push(ParticipantId(1));
    let tcp = w
        .join(1, 7, RoomKind::Video, true, true)
        .expect("tcp joins");
    // UDP to and from the TCP client vanishes: only ICE-TCP can carry its media.
    let tcp_addr = w.clients[tcp].addr;
    w.udp_blocked.push(tcp_addr);
    let udp = w
        .join(2, 7, RoomKind::Video, true, true)
        .expect("udp joins");

    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(50);

    for (to, from) in [(tcp, udp), (udp, tcp)] {
        assert_eq!(w.received_from(to, from, 0xA0), 50, "audio {from} -> {to}");
        assert_eq!(w.received_from(to, from, 0xB0), 50, "video {from} -> {to}");
    }
    // The TCP client was learned as a TCP peer only, the UDP one as a UDP peer only.
    assert_eq!(w.sfu.participant_at_tcp(tcp_addr), Some(ParticipantId(1)));
    assert_eq!(w.sfu.participant_at(tcp_addr), None);
    let udp_addr = w.clients[udp].addr;
    assert_eq!(w.sfu.participant_at(udp_addr), Some(ParticipantId(2)));
    assert_eq!(w.sfu.participant_at_tcp(udp_addr), None);
    // Everything towards the TCP client went out marked TCP: at least its 100 media copies.
    assert!(w.sfu_tcp_transmits >= 100, "{}", w.sfu_tcp_transmits);
    assert_eq!(w.sfu.stats().dropped_unknown_source, 0);
}

#[test]
fn the_answer_announces_a_passive_tcp_candidate_only_when_configured() {
    for (tcp, expected) in [(true, 1), (false, 0)] {
        let mut config = SfuConfig::new(SFU_ADDR);
        config.tcp_candidates = tcp;
        let mut w = World::with_config(config);
        let offer = {
            let mut rtc = str0m::Rtc::builder().set_rtp_mode(true).build(w.now);
            let mut api = rtc.sdp_api();
            api.add_media(
                str0m::media::MediaKind::Audio,
                str0m::media::Direction::SendOnly,
                None,
                None,
                None,
            );
            let (offer, _) = api.apply().expect("an offer");
            offer.to_sdp_string()
        };
        let answer = w
            .sfu
            .add_participant(
                w.now,
                callrelay_sfu::RoomKey(1),
                ParticipantId(1),
                RoomKind::Video,
                Some(&offer),
            )
            .expect("joins")
            .expect("an answer");
        let passive = answer
            .lines()
            .filter(|l| {
                l.starts_with("a=candidate:")
                    && l.contains(" tcp ")
                    && l.contains("tcptype passive")
            })
            .filter(|l| l.contains("127.0.0.1 40000"))
            .count();
        assert_eq!(passive, expected, "tcp={tcp}:\n{answer}");
        let udp = answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains(" udp "))
            .count();
        assert_eq!(udp, 1, "the UDP candidate stays:\n{answer}");
    }
}

#[test]
fn a_tcp_frame_from_a_stranger_is_dropped_and_not_learned() {
    let mut w = world_with_tcp();
    let stranger = "127.0.0.1:30000".parse().expect("an address");
    // An RTP-looking frame from a connection no STUN ever authenticated.
    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
    rtp.extend_from_slice(&[0; 100]);
    w.sfu.handle_tcp_frame(w.now, stranger, SFU_ADDR, &rtp);
    // Garbage and a runt.
    w.sfu
        .handle_tcp_frame(w.now, stranger, SFU_ADDR, &[0xff; 40]);
    w.sfu.handle_tcp_frame(w.now, stranger, SFU_ADDR, &[1, 2]);
    let stats = w.sfu.stats();
    assert_eq!(stats.dropped_unknown_source, 1);
    assert_eq!(stats.dropped_runt, 1);
    assert_eq!(w.sfu.learned_address_count(), 0);
    assert!(w.sfu.poll_transmit().is_none());
}
