//! On a lossy network the call survives: what arrives is byte-identical, most of it arrives.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;

#[test]
fn three_parties_on_a_lossy_network() {
    let mut w = World::new();
    for id in 1..=3 {
        w.join(id, 12, RoomKind::Video, true, true).expect("joins");
    }
    w.run_until(Duration::from_secs(5), |w| w.settled(4));
    w.loss = 0.05;
    w.pump(100);
    w.loss = 0.0;
    w.run_for(Duration::from_secs(1));

    for to in 0..3 {
        for from in 0..3 {
            if to == from {
                continue;
            }
            // `received_from` asserts every payload is byte-identical to one sent.
            let audio = w.received_from(to, from, 0xA0);
            let video = w.received_from(to, from, 0xB0);
            // Two lossy hops at 5 %: about 90 % of audio arrives (the loss is real)...
            assert!((75..=98).contains(&audio), "audio {from}->{to}: {audio}");
            // ...while video is repaired by NACK/RTX on both legs.
            assert!(video >= 95, "video {from}->{to}: {video}");
        }
    }
    assert_eq!(w.sfu.participant_count(), 3);
    // The subscribers' NACKs for what the lossy leg dropped were counted (str0m's 1 s stats).
    w.run_for(Duration::from_secs(2));
    assert!(
        w.sfu.stats().nacks_received > 0,
        "NACKs counted: {:?}",
        w.sfu.stats()
    );
}
