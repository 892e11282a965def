//! Hostile datagrams (THREATS wire 1–4): empty, runt, oversized, random bytes, unknown
//! 5-tuple, bad STUN. Each is dropped and counted, with no reply, no panic and no new state;
//! the call carries on afterwards.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuStats};
use common::{World, SFU_ADDR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::ice::{StunMessage, TransId};

fn stun_request(username: &str, password: &[u8]) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 1, 1_000, false);
    let mut buf = vec![0; 1500];
    // A wrong HMAC: whatever the password, integrity cannot verify.
    let n = msg
        .to_bytes(Some(password), &mut buf, |_, _| [0x5a; 20])
        .expect("stun serializes");
    buf.truncate(n);
    buf
}

/// Feeds one datagram and checks that it produced no output.
fn feed(w: &mut World, source: SocketAddr, bytes: &[u8]) {
    let now = w.now;
    w.sfu.handle_datagram(now, source, SFU_ADDR, bytes);
    assert!(w.sfu.poll_transmit().is_none(), "no reply to bad input");
    assert!(w.sfu.poll_event().is_none(), "no event from bad input");
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let mut w = World::new();
    let a = w.join(1, 1, RoomKind::Video, true, false).expect("a");
    w.join(2, 1, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));

    let before = w.sfu.stats();
    let (participants, rooms, addrs) = (
        w.sfu.participant_count(),
        w.sfu.room_count(),
        w.sfu.learned_address_count(),
    );
    assert_eq!(addrs, 2, "one validated address per participant");
    let stranger: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let known = w.clients[a].addr;
    let mut rng = StdRng::seed_from_u64(3);

    // Empty and runts, including runts that look like STUN, DTLS, RTP and RTCP.
    feed(&mut w, stranger, &[]);
    for first in [0x00u8, 0x01, 0x16, 0x80, 0x81] {
        for len in 1..12 {
            let mut v = vec![0u8; len];
            v[0] = first;
            feed(&mut w, stranger, &v);
            feed(&mut w, known, &v);
        }
    }
    // Oversized, even from a known address.
    feed(&mut w, known, &vec![0x80; 1501]);
    feed(&mut w, stranger, &vec![0x00; 4000]);
    // Random bytes from a stranger.
    for _ in 0..200 {
        let len = rng.gen_range(12..1500);
        let v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        feed(&mut w, stranger, &v);
    }
    // Well-formed-looking RTP and RTCP from an unknown 5-tuple ("RTP bleed").
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];
    rtp.extend_from_slice(&[0xab; 100]);
    feed(&mut w, stranger, &rtp);
    let mut rtcp = vec![0x80, 200, 0, 6];
    rtcp.extend_from_slice(&[0; 24]);
    feed(&mut w, stranger, &rtcp);
    // STUN: truncated header, unknown ufrag, known ufrag with bad integrity.
    let mut truncated = stun_request("nobody:x", b"pw");
    truncated.truncate(30);
    feed(&mut w, stranger, &truncated);
    feed(&mut w, stranger, &stun_request("nobody:x", b"pw"));
    let sfu_ufrag = w.clients[a].relay_ufrag.clone();
    feed(
        &mut w,
        stranger,
        &stun_request(&format!("{sfu_ufrag}:x"), b"pw"),
    );

    let after = w.sfu.stats();
    let d = |f: fn(&SfuStats) -> u64| f(&after) - f(&before);
    assert_eq!(d(|s| s.dropped_runt), 1 + 5 * 11 * 2);
    assert_eq!(d(|s| s.dropped_oversized), 2);
    assert!(
        d(|s| s.dropped_unknown_source) >= 2,
        "rtp and rtcp from a stranger"
    );
    assert!(
        d(|s| s.dropped_bad_stun) >= 4,
        "truncated, unknown ufrag, bad integrity"
    );
    let dropped = d(|s| s.dropped_runt)
        + d(|s| s.dropped_oversized)
        + d(|s| s.dropped_unknown_source)
        + d(|s| s.dropped_bad_stun)
        + d(|s| s.dropped_malformed);
    assert_eq!(
        dropped,
        d(|s| s.datagrams_received),
        "every bad datagram is counted"
    );
    assert_eq!(w.sfu.participant_count(), participants);
    assert_eq!(w.sfu.room_count(), rooms);
    assert_eq!(w.sfu.learned_address_count(), addrs);

    // The call is unharmed.
    w.pump(10);
    assert_eq!(w.received_from(0, 1, 0xA0), 10);
    assert_eq!(w.received_from(1, 0, 0xA0), 10);
}

#[test]
fn garbage_from_a_known_address_does_not_break_the_call() {
    let mut w = World::new();
    let a = w.join(1, 1, RoomKind::Video, true, false).expect("a");
    w.join(2, 1, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let known = w.clients[a].addr;
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..300 {
        let len = rng.gen_range(12..1400);
        let mut v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Make it look like SRTP, SRTCP or DTLS so it reaches the participant's `Rtc`.
        v[0] = [0x80, 0x81, 0x16, 0x17][rng.gen_range(0..4)];
        let now = w.now;
        w.sfu.handle_datagram(now, known, SFU_ADDR, &v);
    }
    w.drain();
    assert_eq!(w.sfu.participant_count(), 2, "spoofed garbage kicks nobody");
    w.pump(10);
    assert_eq!(w.received_from(1, 0, 0xA0), 10);
}
