//! Malformed codec payloads (THREATS 10): payloads are end-to-end ciphertext, forwarded byte
//! for byte; the only clear bytes the relay reads are the start of a simulcast layer's payload
//! (keyframe detection). A publisher whose simulcast payloads are garbage — empty, one byte,
//! truncated or random descriptors — breaks nothing: no panic, nobody removed, whatever is
//! forwarded is byte-identical to what was sent, and the call carries on with real frames.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::RtpWrite;

const LAYERS: [&str; 2] = ["h", "l"];

/// Sends `payload[i]` as one packet on layer `i`.
fn send(w: &mut World, publisher: usize, mid: Mid, seq: &mut [u64; 2], payload: &[Vec<u8>; 2]) {
    let now = w.now;
    let c = &mut w.clients[publisher];
    let pt = c
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Vp8)
        .expect("vp8")
        .pt();
    for (i, layer) in LAYERS.iter().enumerate() {
        let mut api = c.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, Some(Rid::from(*layer)))
            .expect("simulcast layer stream");
        let ts = (seq[i] as u32) * 3000;
        tx.write_rtp(
            RtpWrite::new(pt, seq[i].into(), ts, now, payload[i].clone())
                .marker(true)
                .nackable(true),
        );
        seq[i] += 1;
    }
    c.rtc
        .handle_input(str0m::Input::Timeout(now))
        .expect("publisher timeout");
}

/// A VP8 keyframe packet for `layer` (descriptor S=1 PID=0, P bit 0), tagged `n`.
fn keyframe(layer: usize, n: u16) -> Vec<u8> {
    let mut p = vec![
        0x10,
        0x00,
        LAYERS[layer].as_bytes()[0],
        (n >> 8) as u8,
        n as u8,
    ];
    p.resize(200, 0xee);
    p
}

#[test]
fn garbage_simulcast_payloads_break_nothing() {
    let mut w = World::new();
    let a = w
        .join_with_layers(1, 10, RoomKind::Video, false, true, &LAYERS)
        .expect("simulcast publisher");
    let b = w
        .join(2, 10, RoomKind::Video, true, false)
        .expect("subscriber");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let mid = w.clients[a].video_mid.expect("video mid");
    let mut seq = [0u64; 2];
    let mut sent: Vec<Vec<u8>> = Vec::new();

    // Real keyframes first: the subscriber starts on its layer.
    for n in 0..5 {
        let p = [keyframe(0, n), keyframe(1, n)];
        sent.extend(p.iter().cloned());
        send(&mut w, a, mid, &mut seq, &p);
        w.run_for(Duration::from_millis(33));
    }
    let before = w.clients[b].received.len();
    assert!(before > 0, "the subscriber gets video");

    // Then garbage: every length from 0 to 40, then random lengths up to 1,100 bytes, with
    // random bytes (so random VP8 descriptors: X/I/L/T/K bits, extended picture ids, S bits).
    let mut rng = StdRng::seed_from_u64(10);
    for n in 0..300usize {
        let len = if n <= 40 { n } else { rng.gen_range(0..1_100) };
        let garbage = |rng: &mut StdRng| (0..len).map(|_| rng.gen()).collect::<Vec<u8>>();
        let p = [garbage(&mut rng), garbage(&mut rng)];
        sent.extend(p.iter().cloned());
        send(&mut w, a, mid, &mut seq, &p);
        w.run_for(Duration::from_millis(5));
    }

    // Real frames again: they still reach the subscriber.
    for n in 5..15 {
        let p = [keyframe(0, n), keyframe(1, n)];
        sent.extend(p.iter().cloned());
        send(&mut w, a, mid, &mut seq, &p);
        w.run_for(Duration::from_millis(33));
    }
    w.run_for(Duration::from_millis(500));

    assert_eq!(w.sfu.participant_count(), 2, "nobody removed");
    let got = &w.clients[b].received;
    for r in got {
        assert!(
            sent.contains(&r.payload),
            "a forwarded payload is byte-identical to one sent ({} bytes)",
            r.payload.len()
        );
    }
    let last: Vec<u16> = got
        .iter()
        .filter(|r| r.payload.len() == 200 && r.payload[..3] == [0x10, 0x00, b'h'])
        .map(|r| u16::from_be_bytes([r.payload[3], r.payload[4]]))
        .collect();
    assert!(
        (5..15).all(|n| last.contains(&n)),
        "every real frame after the garbage arrives: {last:?}"
    );
}
