//! Per-participant SSRC cap (THREATS 13 and 22, issue #12 finding 9): RTP on the SSRCs of more
//! streams than `max_ssrcs_per_participant` is dropped and counted, the streams within the cap
//! are forwarded untouched, a stream that resets its SSRC keeps its place, and RTP spoofed from
//! a participant's address on made-up SSRCs takes no place. A normal publisher (audio, and video
//! in three simulcast layers) never meets the default cap.

mod common;

use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuConfig};
use common::{World, SFU_ADDR};
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::RtpWrite;

const LAYERS: [&str; 3] = ["h", "m", "l"];

fn config(max_ssrcs: usize) -> SfuConfig {
    let mut c = SfuConfig::new(SFU_ADDR);
    c.max_ssrcs_per_participant = max_ssrcs;
    c
}

/// Client `i` sends one VP8 keyframe packet on simulcast layer `rid`; tag 0xC0, layer byte,
/// packet index (so what a subscriber gets can be told apart).
fn send_layer(w: &mut World, i: usize, mid: Mid, layer: usize, index: u16) {
    let now = w.now;
    let c = &mut w.clients[i];
    let pt = c
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Vp8)
        .expect("vp8")
        .pt();
    // VP8 payload descriptor S=1, then a keyframe header (P bit 0).
    let mut payload = vec![0x10, 0x00, 0xC0, LAYERS[layer].as_bytes()[0]];
    payload.extend_from_slice(&index.to_be_bytes());
    payload.resize(300, 0xee);
    let mut api = c.rtc.direct_api();
    let tx = api
        .stream_tx_by_mid(mid, Some(Rid::from(LAYERS[layer])))
        .expect("simulcast layer stream");
    tx.write_rtp(
        RtpWrite::new(
            pt,
            u64::from(index).into(),
            u32::from(index) * 3000,
            now,
            payload,
        )
        .marker(true)
        .nackable(true),
    );
    c.rtc
        .handle_input(str0m::Input::Timeout(now))
        .expect("publisher timeout");
}

/// Audio, then `rounds` rounds of one packet per layer, 20 ms apart.
fn publish(w: &mut World, a: usize, rounds: u16) {
    let mid = w.clients[a].video_mid.expect("video mid");
    // Audio first, so it holds a place whatever the order of the layers.
    for _ in 0..5 {
        w.send_audio(a, -30);
        w.drain();
        w.run_for(Duration::from_millis(20));
    }
    for n in 0..rounds {
        w.send_audio(a, -30);
        for layer in 0..LAYERS.len() {
            send_layer(w, a, mid, layer, n);
        }
        w.drain();
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_millis(200));
}

#[test]
fn rtp_on_streams_beyond_the_cap_is_dropped_and_counted() {
    // Room for audio and two of the three layers.
    let mut w = World::with_config(config(3));
    let a = w
        .join_with_layers(1, 1, RoomKind::Video, true, true, &LAYERS)
        .expect("publisher");
    let b = w.join(2, 1, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let before = w.sfu.stats();

    let rounds = 40;
    publish(&mut w, a, rounds);

    let s = w.sfu.stats();
    let dropped = s.rtp_dropped_ssrc_limit - before.rtp_dropped_ssrc_limit;
    // Every packet of the layer over the cap, and the relay's NACKs for the few it read on
    // credit bring resends on its repair SSRC, also over the cap.
    let rounds64 = u64::from(rounds);
    assert!(
        (rounds64..2 * rounds64).contains(&dropped),
        "the one stream over the cap (and its repair stream): {dropped} dropped, {s:?}"
    );
    assert_eq!(
        s.video_received - before.video_received,
        2 * u64::from(rounds),
        "the two layers with a place are read"
    );
    assert_eq!(
        s.rtp_dropped_unknown_track,
        before.rtp_dropped_unknown_track
    );
    // Audio is untouched.
    assert_eq!(w.received_from(b, a, 0xA0), 5 + rounds as usize);
    assert_eq!(
        w.sfu.participant_count(),
        2,
        "over the cap is not a removal"
    );
}

#[test]
fn a_publisher_with_three_layers_never_meets_the_default_cap() {
    let mut w = World::new();
    let a = w
        .join_with_layers(1, 2, RoomKind::Video, true, true, &LAYERS)
        .expect("publisher");
    let b = w.join(2, 2, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    publish(&mut w, a, 40);
    let s = w.sfu.stats();
    assert_eq!(s.rtp_dropped_ssrc_limit, 0, "{s:?}");
    assert_eq!(s.video_received, 3 * 40);
    assert_eq!(w.received_from(b, a, 0xA0), 45);
    // The subscriber gets the first listed layer.
    let h = w.clients[b]
        .received
        .iter()
        .filter(|r| r.payload.get(2) == Some(&0xC0) && r.payload.get(3) == Some(&b'h'))
        .count();
    assert!(h >= 35, "{h} packets of layer h");
}

/// Client `i` moves its audio stream to SSRC `ssrc` (an encoder restart).
fn reset_audio_ssrc(w: &mut World, i: usize, ssrc: u32) {
    let c = &mut w.clients[i];
    let mid = c.audio_mid.expect("audio");
    c.rtc
        .direct_api()
        .reset_stream_tx(mid, None, ssrc.into(), None)
        .expect("a new ssrc");
}

#[test]
fn a_stream_that_resets_its_ssrc_keeps_its_place() {
    // One place for the one audio stream, and credit for one more new SSRC.
    let mut w = World::with_config(config(2));
    let a = w.join(1, 3, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 3, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(5);
    for (k, ssrc) in [0x5eed_0001u32, 0x5eed_0002, 0x5eed_0003]
        .into_iter()
        .enumerate()
    {
        reset_audio_ssrc(&mut w, a, ssrc);
        w.pump(5);
        assert_eq!(
            w.received_from(b, a, 0xA0),
            10 + 5 * k,
            "forwarded after reset {k}"
        );
        // The credit for new SSRCs tops up in the meantime.
        w.run_for(Duration::from_secs(1));
    }
    assert_eq!(w.sfu.stats().rtp_dropped_ssrc_limit, 0);
}

#[test]
fn spoofed_rtp_on_made_up_ssrcs_takes_no_place_and_no_credit() {
    let mut w = World::with_config(config(2));
    let a = w.join(1, 4, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 4, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(5);
    // A forger who knows a's address sends SRTP-looking RTP on 500 SSRCs (it has no keys).
    let from = w.clients[a].addr;
    for n in 0..500u32 {
        let mut v = vec![0x80, 111, 0, 1, 0, 0, 0, 1];
        v.extend_from_slice(&(0xbad0_0000 + n).to_be_bytes());
        v.extend_from_slice(&[0x5a; 80]);
        let now = w.now;
        w.sfu.handle_datagram(now, from, SFU_ADDR, &v);
    }
    w.drain();
    // Right away (no time for credit to top up), a's encoder restarts: its new SSRC is read.
    reset_audio_ssrc(&mut w, a, 0x5eed_0001);
    w.pump(5);
    assert_eq!(w.received_from(b, a, 0xA0), 10);
    assert_eq!(w.sfu.stats().rtp_dropped_ssrc_limit, 0);
}
