//! Reordered input (THREATS 14): with jitter larger than the sending interval, datagrams reach
//! the relay out of order in the middle of a call. Every packet is still forwarded once,
//! byte-identical, and nobody is removed; the relay does not drop a packet for arriving after
//! a later one. (A packet that arrives before a stream's very first one is not covered:
//! the subscriber's stream starts at the first packet it is sent.)

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;

/// Indices (the sender's packet number) of what `to` received from `from` with `tag`, in
/// arrival order.
fn indices(w: &World, to: usize, from: usize, tag: u8) -> Vec<u16> {
    let sender = w.clients[from].id.0 as u8;
    w.clients[to]
        .received
        .iter()
        .filter(|r| r.payload.first() == Some(&tag) && r.payload.get(1) == Some(&sender))
        .map(|r| u16::from_be_bytes([r.payload[2], r.payload[3]]))
        .collect()
}

#[test]
fn reordered_packets_are_all_forwarded_once() {
    let mut w = World::new();
    let a = w.join(1, 14, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 14, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    // The streams start in order...
    w.pump(10);
    // ...then packets, sent every 20 ms, get up to 60 ms of extra delay each: many overtake.
    w.jitter = Duration::from_millis(60);
    w.pump(100);
    w.jitter = Duration::ZERO;
    w.run_for(Duration::from_secs(1));

    let all: Vec<u16> = (0..110).collect();
    for (to, from) in [(b, a), (a, b)] {
        let audio = indices(&w, to, from, 0xA0);
        assert!(
            audio.windows(2).any(|p| p[1] < p[0]),
            "the jitter reordered the audio: {audio:?}"
        );
        let mut unique = audio.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique, all, "every audio packet arrives");
        assert_eq!(
            audio.len(),
            110,
            "each audio packet once (audio has no NACK)"
        );
        // `received_from` checks each payload is byte-identical to one sent.
        assert_eq!(w.received_from(to, from, 0xA0), 110);

        let video = indices(&w, to, from, 0xB0);
        assert!(video.windows(2).any(|p| p[1] < p[0]), "{video:?}");
        let mut unique = video.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique, all, "every video packet arrives");
        assert!(w.received_from(to, from, 0xB0) >= 110);
    }
    assert_eq!(w.sfu.participant_count(), 2, "nobody removed");
}
