//! A subscriber that negotiates no transport-wide congestion control (no `transport-cc`
//! feedback, no transport sequence number extension), on a relay that runs bandwidth
//! estimation: there is nothing to estimate its downlink from, so it gets the layer it asked
//! for at the rate the publisher sends it — it is neither held on a lower layer nor paced at
//! the estimator's initial guess (1 Mbit/s here, below the 2.5 Mbit/s high layer). Janus
//! treats subscribers without feedback the same way; the load generator's sampled receivers
//! (`callrelay-loadgen --decrypt-sample`) are such subscribers.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKind, SfuConfig};
use common::World;
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::{Extension, ExtensionMap, RtpWrite};
use str0m::RtcConfig;

const LAYERS: [&str; 3] = ["l", "m", "h"];
/// Payload bits/s per layer: the high layer is well above the 1 Mbit/s initial estimate.
const BITRATES: [u64; 3] = [150_000, 500_000, 2_500_000];
const FPS: u64 = 30;
const FRAME: Duration = Duration::from_millis(1000 / FPS);
const MAX_PACKET: u64 = 1_100;

/// The client's `RtcConfig` without TWCC: no `transport-cc` feedback on any payload type and
/// no transport sequence number extension.
fn without_twcc(mut c: RtcConfig) -> RtcConfig {
    for p in c.codec_config().iter_mut() {
        p.set_fb_transport_cc(false);
    }
    let mut exts = ExtensionMap::empty();
    for (id, e) in ExtensionMap::standard().iter() {
        if !matches!(e, Extension::TransportSequenceNumber) {
            exts.set(id, e.clone());
        }
    }
    c.set_extension_map(exts)
}

/// One frame (number `n`) on every layer, a keyframe on each every second; `seq` is the next
/// sequence number of each layer. Returns the high layer's packets sent.
fn frame(w: &mut World, publisher: usize, mid: Mid, n: u64, seq: &mut [u64; 3]) -> u64 {
    let now = w.now;
    let c = &mut w.clients[publisher];
    let pt = c
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == Codec::Vp8)
        .expect("vp8")
        .pt();
    let mut high = 0;
    for (i, layer) in LAYERS.iter().enumerate() {
        let key = n.is_multiple_of(FPS);
        let bytes = BITRATES[i] / 8 / FPS;
        let packets = bytes.div_ceil(MAX_PACKET);
        for k in 0..packets {
            let mut payload = vec![0x10, if key { 0x00 } else { 0x01 }, layer.as_bytes()[0]];
            payload.resize((bytes / packets) as usize, 0xee);
            let mut api = c.rtc.direct_api();
            let tx = api
                .stream_tx_by_mid(mid, Some(Rid::from(*layer)))
                .expect("simulcast layer stream");
            tx.write_rtp(
                RtpWrite::new(pt, seq[i].into(), (n * 3_000) as u32, now, payload)
                    .marker(k == packets - 1),
            );
            seq[i] += 1;
            if i == 2 {
                high += 1;
            }
        }
    }
    c.rtc
        .handle_input(str0m::Input::Timeout(now))
        .expect("publisher timeout");
    high
}

#[test]
fn a_subscriber_without_twcc_gets_its_layer_unpaced() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    config.bwe_initial_bitrate = Some(1_000_000);
    let mut w = World::with_config(config);
    let a = w
        .join_with_layers(1, 9, RoomKind::Video, true, true, &LAYERS)
        .expect("simulcast publisher");
    let b = w
        .join_custom(2, 9, RoomKind::Video, true, false, &[], without_twcc)
        .expect("subscriber without twcc");
    w.run_until(Duration::from_secs(5), |w| {
        w.settled(1) && w.clients[b].subscribed_mids.len() >= 2
    });
    let mid = w.clients[a].video_mid.expect("video mid");
    let b_addr = w.clients[b].addr;
    let now = w.now;
    w.sfu
        .set_subscriber_layer(now, ParticipantId(2), ParticipantId(1), mid, Rid::from("h"))
        .expect("layer exists");

    // 4 s of video (the switch to h waits for its keyframe), then 2 s that are measured.
    let mut n = 0;
    let mut seq = [0u64; 3];
    let start = w.now;
    while w.now - start < Duration::from_secs(4) {
        frame(&mut w, a, mid, n, &mut seq);
        n += 1;
        w.run_for(FRAME);
    }
    let checked_from = w.forward_delays.len();
    let late_start = w.clients[b].received.len();
    let start = w.now;
    let mut sent_high = 0;
    while w.now - start < Duration::from_secs(2) {
        sent_high += frame(&mut w, a, mid, n, &mut seq);
        n += 1;
        w.run_for(FRAME);
    }
    w.run_for(Duration::from_millis(100));

    assert_eq!(
        w.sfu.bandwidth_estimate(ParticipantId(2)),
        None,
        "nothing to estimate from"
    );
    let layer = w
        .sfu
        .subscriber_layer(ParticipantId(2), ParticipantId(1), mid)
        .expect("subscription");
    assert_eq!(layer.current, Some(Rid::from("h")), "{layer:?}");
    let mut delays: Vec<Duration> = w.forward_delays[checked_from..]
        .iter()
        .filter(|(to, _)| *to == b_addr)
        .map(|(_, d)| *d)
        .collect();
    delays.sort_unstable();
    let p99 = delays[delays.len() * 99 / 100];
    // Paced at the initial 1 Mbit/s estimate, the 2.5 Mbit/s layer queued for over a second.
    assert!(
        p99 < Duration::from_millis(50),
        "forwarded without a pacing queue: p99 {p99:?}"
    );
    let high: usize = w.clients[b].received[late_start..]
        .iter()
        .filter(|r| r.payload.get(2) == Some(&b'h'))
        .count();
    assert!(
        high as u64 >= sent_high * 95 / 100,
        "the high layer arrives at its rate: {high} of {sent_high} in 2 s"
    );
}
