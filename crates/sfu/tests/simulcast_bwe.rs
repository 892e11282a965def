//! Simulcast layer chosen from the subscriber's bandwidth estimate: with ample capacity the
//! subscriber climbs to the highest layer it asked for; when its downlink is cut to 400 kbps
//! it is moved down to the layer that fits, and when the capacity comes back it climbs back.
//! Checked on what the subscriber receives: which layer's packets arrive, one contiguous
//! stream of sequence numbers across every switch.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKind, SfuConfig, DEFAULT_BWE_INITIAL_BITRATE};
use common::World;
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::RtpWrite;

/// Layers as a browser lists them, lowest first, and their bitrates (payload bits/s).
const LAYERS: [&str; 3] = ["l", "m", "h"];
const BITRATES: [u64; 3] = [150_000, 500_000, 1_500_000];
const FPS: u64 = 30;
const FRAME: Duration = Duration::from_millis(1000 / FPS);
/// Largest payload per packet; a frame is split into equal packets up to this.
const MAX_PACKET: u64 = 1_100;
/// Frames between periodic keyframes (3 s).
const KEYFRAME_INTERVAL: u32 = 90;

/// A simulcast encoder stand-in: three layers at fixed bitrates, a keyframe every 3 s on each
/// layer, and one on the layer a keyframe request names.
struct Encoder {
    frame: u32,
    seq: [u64; 3],
    keyframe_due: [bool; 3],
    handled_requests: usize,
}

impl Encoder {
    fn new() -> Self {
        Encoder {
            frame: 0,
            seq: [0; 3],
            keyframe_due: [true; 3],
            handled_requests: 0,
        }
    }

    /// One frame on every layer (VP8 payload descriptor S=1 on the first packet, P=0 in the
    /// VP8 header for a keyframe; then the layer, frame number and packet index), and one
    /// audio packet.
    fn frame(&mut self, w: &mut World, publisher: usize, mid: Mid) {
        w.send_audio(publisher, -30);
        let c = &mut w.clients[publisher];
        for rid in c.keyframe_request_rids[self.handled_requests..]
            .iter()
            .flatten()
        {
            if let Some(i) = LAYERS.iter().position(|l| Rid::from(*l) == *rid) {
                self.keyframe_due[i] = true;
            }
        }
        self.handled_requests = c.keyframe_request_rids.len();
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8")
            .pt();
        let now = w.now;
        for (i, layer) in LAYERS.iter().enumerate() {
            let key = std::mem::take(&mut self.keyframe_due[i])
                || self.frame.is_multiple_of(KEYFRAME_INTERVAL);
            let ts = (i as u32 * 1_000_000).wrapping_add(self.frame * (90_000 / FPS as u32));
            let bytes = BITRATES[i] / 8 / FPS;
            let packets = bytes.div_ceil(MAX_PACKET);
            for k in 0..packets {
                let mut payload = if k == 0 {
                    vec![0x10, if key { 0x00 } else { 0x01 }]
                } else {
                    vec![0x00, 0x00]
                };
                payload.push(layer.as_bytes()[0]);
                payload.extend_from_slice(&self.frame.to_be_bytes());
                payload.push(k as u8);
                payload.resize((bytes / packets) as usize, 0xee);
                let mut api = c.rtc.direct_api();
                let tx = api
                    .stream_tx_by_mid(mid, Some(Rid::from(*layer)))
                    .expect("simulcast layer stream");
                tx.write_rtp(
                    RtpWrite::new(pt, self.seq[i].into(), ts, now, payload)
                        .marker(k == packets - 1)
                        .nackable(true),
                );
                self.seq[i] += 1;
            }
        }
        self.frame += 1;
        c.rtc
            .handle_input(str0m::Input::Timeout(now))
            .expect("publisher timeout");
    }
}

/// Video packets the subscriber received: (sequence number, layer).
fn video(w: &World, subscriber: usize) -> Vec<(u64, u8)> {
    w.clients[subscriber]
        .received
        .iter()
        .filter(|r| r.payload.len() > 200)
        .map(|r| (r.seq, r.payload[2]))
        .collect()
}

/// Whether the last `n` video packets received are all of `layer`.
fn settled_on(w: &World, subscriber: usize, layer: u8, n: usize) -> bool {
    let v = video(w, subscriber);
    v.len() >= n && v[v.len() - n..].iter().all(|(_, l)| *l == layer)
}

/// Sends frames until `done` holds; fails after `max` of virtual time. Returns the time taken.
fn frames_until(
    w: &mut World,
    enc: &mut Encoder,
    publisher: usize,
    mid: Mid,
    max: Duration,
    done: impl Fn(&World) -> bool,
) -> Duration {
    let start = w.now;
    while !done(w) {
        assert!(
            w.now - start < max,
            "not reached within {max:?}; layer {:?}, estimate {:?}",
            w.sfu
                .subscriber_layer(ParticipantId(2), ParticipantId(1), mid),
            w.sfu.bandwidth_estimate(ParticipantId(2)),
        );
        enc.frame(w, publisher, mid);
        w.run_for(FRAME);
    }
    w.now - start
}

fn frames_for(w: &mut World, enc: &mut Encoder, publisher: usize, mid: Mid, d: Duration) {
    let end = w.now + d;
    while w.now < end {
        enc.frame(w, publisher, mid);
        w.run_for(FRAME);
    }
}

#[test]
fn subscriber_layer_follows_its_bandwidth_estimate() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    config.bwe_initial_bitrate = Some(1_000_000);
    let mut w = World::with_config(config);
    let a = w
        .join_with_layers(1, 9, RoomKind::Video, true, true, &LAYERS)
        .expect("simulcast publisher");
    let b = w
        .join(2, 9, RoomKind::Video, true, false)
        .expect("subscriber");
    w.run_until(Duration::from_secs(5), |w| {
        w.settled(1) && w.clients[b].subscribed_mids.len() >= 2
    });
    let mid = w.clients[a].video_mid.expect("video mid");
    let b_addr = w.clients[b].addr;
    // The subscriber's tile is large: it may get up to the high layer.
    let now = w.now;
    w.sfu
        .set_subscriber_layer(now, ParticipantId(2), ParticipantId(1), mid, Rid::from("h"))
        .expect("layer exists");
    let mut enc = Encoder::new();

    // Ample capacity: the estimate grows and the subscriber ends on the high layer.
    w.set_capacity(b_addr, Some((10_000_000, Duration::from_millis(200))));
    // Layer bitrates are measured over a second; until then the subscriber gets its cap.
    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(3));
    let took = frames_until(&mut w, &mut enc, a, mid, Duration::from_secs(30), |w| {
        settled_on(w, b, b'h', 60)
    });
    eprintln!(
        "on h after {took:?}, estimate {:?}",
        w.sfu.bandwidth_estimate(ParticipantId(2))
    );
    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(3));
    assert!(settled_on(&w, b, b'h', 200), "stays on the high layer");

    // The downlink drops to 400 kbps: only the low layer (150 kbps, plus audio) fits.
    w.set_capacity(b_addr, Some((400_000, Duration::from_millis(200))));
    let cut_at = video(&w, b).len();
    let cut_seq = video(&w, b)
        .iter()
        .map(|(s, _)| *s)
        .max()
        .expect("video before the cut");
    let took = frames_until(&mut w, &mut enc, a, mid, Duration::from_secs(12), |w| {
        settled_on(w, b, b'l', 30)
    });
    // The bottleneck drops what it cannot carry until its queue has drained (200 ms).
    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(1));
    let settled_seq = video(&w, b)
        .iter()
        .map(|(s, _)| *s)
        .max()
        .expect("low layer received");
    eprintln!(
        "on l after {took:?}, estimate {:?}",
        w.sfu.bandwidth_estimate(ParticipantId(2))
    );

    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(5));
    // In sequence order (retransmissions of packets from before the switch may come late):
    // from the first low-layer packet on, nothing but the low layer.
    let v = video(&w, b);
    let first_l = v[cut_at..]
        .iter()
        .filter(|(_, l)| *l == b'l')
        .map(|(s, _)| *s)
        .min()
        .expect("the low layer arrives");
    let after: Vec<u8> = v
        .iter()
        .filter(|(s, _)| *s >= first_l)
        .map(|(_, l)| *l)
        .collect();
    assert!(
        after.iter().all(|l| *l == b'l'),
        "only the low layer once moved down, while the link stays at 400 kbps"
    );
    assert!(after.len() > 150, "the low layer flows: {}", after.len());

    // Capacity comes back: the subscriber climbs back to the high layer.
    w.set_capacity(b_addr, None);
    let took = frames_until(&mut w, &mut enc, a, mid, Duration::from_secs(40), |w| {
        settled_on(w, b, b'h', 60)
    });
    eprintln!(
        "back on h after {took:?}, estimate {:?}",
        w.sfu.bandwidth_estimate(ParticipantId(2))
    );
    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(1));

    // One stream for the subscriber: each sequence number carries one packet, and outside
    // the congested span (from the cut until settled on the low layer, while the bottleneck
    // drops what it cannot carry) there is no hole and each layer switch continues the
    // numbering.
    let mut v = video(&w, b);
    let total = v.len();
    v.sort_unstable();
    v.dedup_by_key(|(s, _)| *s);
    assert_eq!(v.len(), total, "no sequence number delivered twice");
    let mut layer_switches = 0;
    for p in v.windows(2) {
        let ((s0, l0), (s1, l1)) = (p[0], p[1]);
        let congested = (cut_seq..=settled_seq).contains(&s0);
        if l0 != l1 && !congested {
            layer_switches += 1;
            assert_eq!(
                s1,
                s0 + 1,
                "switch from {} to {} continues the numbering",
                l0 as char,
                l1 as char
            );
        }
        assert!(
            s1 == s0 + 1 || congested,
            "hole after {s0} ({}) to {s1} ({}) outside the congested span (cut {cut_seq}, settled {settled_seq})",
            l0 as char,
            l1 as char
        );
    }
    assert!(
        layer_switches >= 2,
        "at least the start and the climb back: {layer_switches} switches"
    );
    let switches = w.sfu.stats();
    assert!(switches.layer_switches_down >= 1 && switches.layer_switches_up >= 1);
    let layer = w
        .sfu
        .subscriber_layer(ParticipantId(2), ParticipantId(1), mid)
        .expect("subscription");
    assert_eq!(layer.current, Some(Rid::from("h")));
    assert_eq!(layer.cap, Some(Rid::from("h")));
}

/// Bandwidth estimation without added latency (issue #11): with the IO layer's starting
/// estimate ([`DEFAULT_BWE_INITIAL_BITRATE`]), a subscriber asking for `h` gets it within 3 s,
/// and from then on the pacer holds nothing back: the in-relay p99 over the next 10 s is
/// under 1 ms (virtual time, so exact). Measured with this test's exploration (5 s windows
/// after reaching `h`, p99 of the in-relay delay): starting at 300 kbit/s the first window's
/// p99 was 233 ms, at 1 Mbit/s 99 ms, at 2.5 Mbit/s 0; every later window was 0 (max 5–7 ms,
/// the keyframes of a 3 s interval) whatever the start. The pacer only delays while the
/// estimate is below what is sent, so the start estimate is what matters.
#[test]
fn an_h_subscriber_gets_h_within_3s_and_the_pacer_adds_no_latency() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    config.bwe_initial_bitrate = Some(DEFAULT_BWE_INITIAL_BITRATE);
    let mut w = World::with_config(config);
    let a = w
        .join_with_layers(1, 9, RoomKind::Video, true, true, &LAYERS)
        .expect("simulcast publisher");
    let b = w
        .join(2, 9, RoomKind::Video, true, false)
        .expect("subscriber");
    w.run_until(Duration::from_secs(5), |w| {
        w.settled(1) && w.clients[b].subscribed_mids.len() >= 2
    });
    let mid = w.clients[a].video_mid.expect("video mid");
    let now = w.now;
    w.sfu
        .set_subscriber_layer(now, ParticipantId(2), ParticipantId(1), mid, Rid::from("h"))
        .expect("layer exists");
    let mut enc = Encoder::new();
    let took = frames_until(&mut w, &mut enc, a, mid, Duration::from_secs(3), |w| {
        settled_on(w, b, b'h', 10)
    });
    w.forward_delays.clear();
    frames_for(&mut w, &mut enc, a, mid, Duration::from_secs(10));
    let to_b = w.clients[b].addr;
    let mut delays: Vec<Duration> = w
        .forward_delays
        .iter()
        .filter(|(to, _)| *to == to_b)
        .map(|(_, d)| *d)
        .collect();
    delays.sort();
    // ~1.5 Mbit/s of video and 50 audio packets a second for 10 s.
    assert!(delays.len() > 2_000, "{} copies", delays.len());
    let p99 = delays[delays.len() * 99 / 100];
    eprintln!(
        "on h after {took:?}; {} copies, p99 {p99:?}, max {:?}",
        delays.len(),
        delays.last()
    );
    assert!(p99 <= Duration::from_millis(1), "in-relay p99 {p99:?}");
    assert!(settled_on(&w, b, b'h', 200), "still on h");
}
