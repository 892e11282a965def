//! Media before keys (THREATS 8, issue #12 finding 6): SRTP and SRTCP from an address that
//! passed ICE but not DTLS cannot be read. They are dropped before str0m and counted, with no
//! reply and no new state; once DTLS completes the call works and nothing more is counted.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::{World, SFU_ADDR};

/// RTP-looking bytes: version 2, PT 111, then `seq`, a timestamp, `ssrc` and a payload.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut v = vec![0x80, 111];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1]);
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[0xab; 100]);
    v
}

/// RTCP-looking bytes: a sender report header and zeros.
fn rtcp() -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6];
    v.extend_from_slice(&[0; 24]);
    v
}

#[test]
fn srtp_after_ice_but_before_dtls_is_dropped_and_counted() {
    let mut w = World::new();
    w.block_dtls = true;
    let a = w.join(1, 1, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 1, RoomKind::Video, true, false).expect("b");
    // ICE passes (the relay learned both addresses from authenticated STUN); DTLS cannot.
    w.run_until(Duration::from_secs(5), |w| {
        w.sfu.learned_address_count() == 2
    });
    assert!(!w.clients[a].rtc.is_connected());
    w.run_for(Duration::from_millis(200));
    w.drain();

    let before = w.sfu.stats();
    let from = w.clients[a].addr;
    for seq in 0..20u16 {
        let now = w.now;
        w.sfu
            .handle_datagram(now, from, SFU_ADDR, &rtp(0x1234, seq));
        w.sfu.handle_datagram(now, from, SFU_ADDR, &rtcp());
        assert!(
            w.sfu.poll_transmit().is_none(),
            "no reply to unreadable media"
        );
        assert!(w.sfu.poll_event().is_none());
    }
    let after = w.sfu.stats();
    assert_eq!(
        after.dropped_before_keys - before.dropped_before_keys,
        40,
        "every RTP and RTCP datagram counted once"
    );
    assert_eq!(
        after.rtp_received, before.rtp_received,
        "nothing reached str0m"
    );
    assert_eq!(after.dropped_unknown_source, before.dropped_unknown_source);
    assert_eq!(w.sfu.participant_count(), 2, "nobody removed for it");
    assert_eq!(w.sfu.learned_address_count(), 2);

    // The keys come: the call works and media is no longer counted as before keys.
    w.block_dtls = false;
    w.run_until(Duration::from_secs(30), |w| w.settled(1));
    let keyed = w.sfu.stats().dropped_before_keys;
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
    assert_eq!(w.sfu.stats().dropped_before_keys, keyed);
}

#[test]
fn a_normal_call_counts_nothing_before_keys() {
    let mut w = World::new();
    let a = w.join(1, 2, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 2, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(20);
    assert_eq!(w.received_from(b, a, 0xA0), 20);
    assert_eq!(w.received_from(a, b, 0xB0), 20);
    let s = w.sfu.stats();
    assert_eq!(s.dropped_before_keys, 0, "{s:?}");
    assert_eq!(s.rtp_dropped_ssrc_limit, 0, "{s:?}");
}
