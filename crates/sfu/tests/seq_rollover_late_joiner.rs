//! A subscriber that joins after the publisher's sequence numbers wrapped still decrypts:
//! the relay rebases extended sequence numbers per subscriber so its SRTP rollover counter
//! starts at 0 (THREATS 14).

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;

#[test]
fn late_joiner_after_sequence_wrap_receives_audio() {
    let mut w = World::new();
    let a = w
        .join(1, 31, RoomKind::Voice, true, false)
        .expect("publisher");
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());

    // Start just below the 16-bit wrap and cross it before anyone subscribes.
    w.clients[a].audio_seq = 65_500;
    for _ in 0..60 {
        w.send_audio(a, -30);
        w.run_for(Duration::from_millis(20));
    }
    assert!(w.clients[a].audio_seq > 65_536, "the publisher wrapped");
    // What is still in flight lands before the late joiner subscribes.
    w.run_for(Duration::from_millis(200));

    let b = w
        .join(2, 31, RoomKind::Voice, true, false)
        .expect("late joiner");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let before = w.received_from(b, a, 0xA0);
    assert_eq!(before, 0);
    for _ in 0..20 {
        w.send_audio(a, -30);
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.received_from(b, a, 0xA0), 20, "decrypted after the wrap");
    let seqs: Vec<u64> = w.clients[b].received.iter().map(|r| r.seq).collect();
    assert!(
        seqs.iter().all(|s| *s < 65_536),
        "the subscriber's stream starts at rollover counter 0: {seqs:?}"
    );
}
