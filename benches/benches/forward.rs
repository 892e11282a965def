//! Per-packet forwarding latency of the sans-IO core, beside its floors.
//!
//! `cargo bench -p callrelay-benches --bench forward`
//!
//! One iteration = one incoming SRTP datagram from the publisher: `Sfu::handle_datagram`
//! (str0m's SRTP decrypt, our demux and forwarding table, str0m's re-encrypt per subscriber)
//! until `poll_transmit` is drained. The datagrams are real: the publisher's str0m client
//! encrypts them after ICE/DTLS/SRTP were negotiated with the relay in memory (`rig.rs`).
//! SRTP replay protection rejects a datagram seen twice, so every iteration gets a fresh one:
//! `iter_custom` generates chunks of [`CHUNK`] packets outside the timed region and times
//! feeding them; each chunk asserts that every packet went out to every subscriber.
//! Throughput is set to the subscriber count, so criterion's "elem/s" is forwarded copies/s.
//!
//! The product's configuration, side by side, for audio_10p, audio_50p, video_10p and
//! video_32p (`live_case`):
//! - `sfu_bwe`: bandwidth estimation on, as the server runs by default
//!   (`media.bandwidth_estimation = true`: `bwe_initial_bitrate` =
//!   `DEFAULT_BWE_INITIAL_BITRATE`), so str0m paces the video it sends to each subscriber;
//! - `sfu_live`: the same with it off.
//!
//! Both are driven live (`Net::run_live_until`): the publisher sends at its real rate in
//! virtual time (audio 50 packets/s; video 30 frames/s of 2.5 Mbit/s, 9 packets a frame),
//! every client is driven (decrypts its copies, sends its RTCP and transport-cc feedback back),
//! and the relay's timers run when they come due, on the worker's millisecond grid. Timed:
//! every call into the relay — the datagrams from the publisher, the feedback from the
//! subscribers, every `handle_timeout` (pacer, RTCP, BWE, housekeeping) — until every copy
//! of the sample's packets has left it (paced copies included, however late: each sample
//! asserts iterations × subscribers copies). Not timed: the clients. One iteration is still one
//! packet from the publisher, so the difference to `sfu` is what the timers and the feedback
//! add, and `sfu_bwe` against `sfu_live` what bandwidth estimation and pacing add. How long
//! the pacer held copies is printed per case.
//!
//! Beside it, per room size and packet size:
//! - `bare_str0m`: the same forward done with bare str0m `Rtc`s, no core (the str0m cost);
//! - `aead_floor`: aws-lc-rs AES-256-GCM (the profile str0m negotiates by default,
//!   SRTP_AEAD_AES_256_GCM) open of one packet and seal of N copies, each with its own key;
//! - `copy_floor`: copying the packet into N buffers.
//!
//! The `timing` group: what recording `callrelay_forward_latency_seconds` costs per packet —
//! the core with and without its per-copy arrival bookkeeping (`SfuConfig::forward_timing`),
//! and the IO layer's part per copy (`Instant::now` + a prometheus histogram `observe`).
//!
//! The `demux` group: one forward from a known 5-tuple (1 subscriber) and one datagram from
//! an unknown address, with 10 and with 10,000 other learned addresses in the same core.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use callrelay_benches::rig::{
    add_address_holders, is_srtp, local, Bare, Media, Net, RelayWork, Sender, Traffic,
    AUDIO_PAYLOAD, SFU_ADDR, VIDEO_PAYLOAD,
};
use callrelay_server::metrics::FORWARD_LATENCY_BUCKETS;
use callrelay_sfu::{ParticipantId, RoomKind, DEFAULT_BWE_INITIAL_BITRATE};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Packets generated per untimed step; the timed loop feeds one chunk at a time.
const CHUNK: u64 = 256;

/// Video bitrate of the live cases: the load generator's `h` layer (30 frames/s of 10.4 kB,
/// 9 packets each).
const LIVE_VIDEO_KBPS: u32 = 2_500;

/// Cases also run live, with and without bandwidth estimation.
const LIVE: [&str; 4] = ["audio_10p", "audio_50p", "video_10p", "video_32p"];

/// SRTP overhead around the payload: 12 B RTP header, 8 B of header extensions (audio level
/// or transport-cc sized), 16 B GCM tag.
const HEADER: usize = 20;
const TAG: usize = 16;

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    let cases = [
        (Media::Audio, 2, RoomKind::Video),
        (Media::Audio, 10, RoomKind::Video),
        (Media::Audio, 32, RoomKind::Video),
        (Media::Audio, 50, RoomKind::Voice),
        (Media::Video, 2, RoomKind::Video),
        (Media::Video, 10, RoomKind::Video),
        (Media::Video, 32, RoomKind::Video),
    ];
    for (media, size, kind) in cases {
        let subs = size - 1;
        let (name, payload) = match media {
            Media::Audio => ("audio", AUDIO_PAYLOAD),
            Media::Video => ("video", VIDEO_PAYLOAD),
        };
        let param = format!("{name}_{size}p");
        g.throughput(Throughput::Elements(subs as u64));

        let mut net = Net::room(size, kind);
        assert_eq!(net.subscribers(), subs);
        // Untimed warm-up: the first packets of a stream trigger one-off RTCP.
        time_sfu(&mut net, media, 4 * CHUNK);
        g.bench_function(BenchmarkId::new("sfu", &param), |b| {
            b.iter_custom(|iters| time_sfu(&mut net, media, iters))
        });
        drop(net);

        if LIVE.contains(&param.as_str()) {
            for (id, bwe) in [("sfu_live", false), ("sfu_bwe", true)] {
                let mut live = LiveCase::new(media, size, kind, bwe);
                g.bench_function(BenchmarkId::new(id, &param), |b| {
                    b.iter_custom(|iters| live.time(iters))
                });
                live.report(&format!("forward/{id}/{param}"));
            }
        }

        let mut bare = Bare::new(media, subs);
        time_bare(&mut bare, media, 4 * CHUNK);
        g.bench_function(BenchmarkId::new("bare_str0m", &param), |b| {
            b.iter_custom(|iters| time_bare(&mut bare, media, iters))
        });
        drop(bare);

        let mut floor = AeadFloor::new(payload, subs);
        g.bench_function(BenchmarkId::new("aead_floor", &param), |b| {
            b.iter(|| floor.run())
        });

        let packet = vec![0x5a_u8; HEADER + payload + TAG];
        let mut copies = vec![vec![0_u8; packet.len()]; subs];
        g.bench_function(BenchmarkId::new("copy_floor", &param), |b| {
            b.iter(|| {
                for c in &mut copies {
                    c.copy_from_slice(black_box(&packet));
                }
                black_box(&mut copies);
            })
        });
    }
    g.finish();
}

fn timing(c: &mut Criterion) {
    let mut g = c.benchmark_group("timing");
    for (media, size) in [(Media::Audio, 10), (Media::Video, 10), (Media::Video, 32)] {
        let subs = size - 1;
        let name = match media {
            Media::Audio => "audio",
            Media::Video => "video",
        };
        let param = format!("{name}_{size}p");
        g.throughput(Throughput::Elements(subs as u64));
        for on in [true, false] {
            let mut config = Net::config(size.max(32));
            config.forward_timing = on;
            let mut net = Net::room_with(size, RoomKind::Video, config);
            time_sfu(&mut net, media, 4 * CHUNK);
            let id = if on {
                "sfu_timing_on"
            } else {
                "sfu_timing_off"
            };
            g.bench_function(BenchmarkId::new(id, &param), |b| {
                b.iter_custom(|iters| time_sfu(&mut net, media, iters))
            });
        }
        // The worker's part: per forwarded copy, read the clock when its send returns and
        // observe the difference in the histogram (same buckets as the relay's).
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("bench_forward_latency_seconds", "bench")
                .buckets(FORWARD_LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        // Each packet arrived 300 µs before its copies go out: they land in the 500 µs bucket,
        // as the relay's do under load (relay p99 0.1-0.3 ms in loadtest/README.md), so
        // `observe` scans as many bounds as it does there. (A fixed arrival time would put
        // every observation past the last bound after 100 ms: the worst case, all 16 scanned.)
        let typical = Duration::from_micros(300);
        g.bench_function(BenchmarkId::new("histogram_per_packet", &param), |b| {
            b.iter(|| {
                let now = Instant::now();
                let arrived = now.checked_sub(typical).unwrap_or(now);
                for _ in 0..subs {
                    let sent = Instant::now();
                    h.observe(
                        sent.saturating_duration_since(black_box(arrived))
                            .as_secs_f64(),
                    );
                }
            })
        });
    }
    g.finish();
}

fn demux(c: &mut Criterion) {
    let mut g = c.benchmark_group("demux");
    for holders in [10, 10_000] {
        let mut net = Net::room(2, RoomKind::Voice);
        let setup = Instant::now();
        add_address_holders(&mut net, holders);
        time_sfu(&mut net, Media::Audio, 4 * CHUNK);
        eprintln!(
            "demux: {holders} address holders set up in {:?}; {} learned addresses",
            setup.elapsed(),
            net.sfu.learned_address_count()
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("forward_1", holders), |b| {
            b.iter_custom(|iters| time_sfu(&mut net, Media::Audio, iters))
        });

        // A valid SRTP datagram from an address nobody taught: lookup miss, dropped.
        let mut one = Vec::new();
        net.publish(Media::Audio, 1, &mut one);
        let stranger = local(9);
        let before = net.sfu.stats().dropped_unknown_source;
        let now = net.now;
        g.bench_function(BenchmarkId::new("unknown_source", holders), |b| {
            b.iter(|| {
                net.sfu
                    .handle_datagram(now, stranger, SFU_ADDR, black_box(&one[0]))
            })
        });
        // Once more outside the bench (which a name filter may have skipped).
        net.sfu
            .handle_datagram(now, stranger, SFU_ADDR, black_box(&one[0]));
        assert!(net.sfu.stats().dropped_unknown_source > before);
        assert!(net.sfu.poll_transmit().is_none());
    }
    g.finish();
}

/// Feeds `iters` fresh datagrams through the core, timing only `handle_datagram` and the
/// `poll_transmit` drain.
fn time_sfu(net: &mut Net, media: Media, iters: u64) -> Duration {
    let subs = net.subscribers();
    let source: SocketAddr = net.publisher_addr();
    let mut batch = Vec::with_capacity(CHUNK as usize);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        // Untimed: timers of the relay and the publisher, then fresh packets.
        net.tick(Duration::from_millis(1));
        batch.clear();
        net.publish(media, n, &mut batch);
        let now = net.now;
        let sfu = &mut net.sfu;
        let mut sent = 0;
        let start = Instant::now();
        for d in &batch {
            sfu.handle_datagram(now, source, SFU_ADDR, d);
            while let Some(t) = sfu.poll_transmit() {
                // One byte compare; RTCP the relay sends along is timed too, but not counted.
                sent += usize::from(is_srtp(&t.contents));
                black_box(t);
            }
        }
        total += start.elapsed();
        assert_eq!(sent, n * subs, "every packet forwarded to every subscriber");
        left -= n as u64;
    }
    total
}

/// A room whose publisher sends one medium at its real rate, driven live (see the module
/// documentation), with or without bandwidth estimation.
struct LiveCase {
    net: Net,
    sender: [Sender; 1],
    /// Totals over every timed sample, for the report.
    total: RelayWork,
    packets: u64,
}

impl LiveCase {
    fn new(media: Media, size: usize, kind: RoomKind, bwe: bool) -> Self {
        let mut config = Net::config(size.max(32));
        config.bwe_initial_bitrate = bwe.then_some(DEFAULT_BWE_INITIAL_BITRATE);
        let net = Net::room_with(size, kind, config);
        let traffic = match media {
            Media::Audio => Traffic::audio(),
            Media::Video => Traffic::video(LIVE_VIDEO_KBPS),
        };
        let sender = Sender::new(&net, 0, traffic, Duration::ZERO, Duration::ZERO);
        let mut live = LiveCase {
            net,
            sender: [sender],
            total: RelayWork::default(),
            packets: 0,
        };
        // Untimed warm-up: 2 s of traffic (first-packet RTCP, the estimate settling).
        let per_s = live.sender[0]
            .traffic
            .packets_per_second(if media == Media::Audio { None } else { Some(0) });
        live.time((2.0 * per_s) as u64);
        live.total = RelayWork::default();
        live.packets = 0;
        live
    }

    /// The publisher sends `iters` more packets at its rate; runs until every copy of them
    /// has left the relay. Returns the wall time spent in the relay's calls.
    fn time(&mut self, iters: u64) -> Duration {
        let subs = self.net.subscribers() as u64;
        let s = &mut self.sender[0];
        s.resume(self.net.now);
        s.limit = Some(s.sent + iters);
        let interval = 1.0
            / s.traffic
                .packets_per_second(s.traffic.video.first().map(|_| 0));
        // The packets' own span and 10 s for the pacer to let the last ones go.
        let max = Duration::from_secs_f64(iters as f64 * interval + 10.0);
        let mut work = RelayWork::default();
        let expected = iters * subs;
        let done = self
            .net
            .run_live_until(max, &mut self.sender, &mut work, |_, w| {
                w.copies >= expected
            });
        assert!(
            done && work.copies == expected,
            "every packet forwarded to every subscriber: {} of {expected} copies",
            work.copies
        );
        self.packets += iters;
        let t = &mut self.total;
        t.busy += work.busy;
        t.datagrams_in += work.datagrams_in;
        t.timeouts += work.timeouts;
        t.copies += work.copies;
        t.other_out += work.other_out;
        for (a, b) in t.held.iter_mut().zip(work.held) {
            *a += b;
        }
        t.held_max = t.held_max.max(work.held_max);
        work.busy
    }

    /// What the timed samples did: calls per packet, other datagrams, the pacer's hold.
    fn report(&self, name: &str) {
        let t = &self.total;
        if self.packets == 0 {
            return;
        }
        let p = self.packets as f64;
        let estimate = self
            .net
            .sfu
            .bandwidth_estimate(ParticipantId(1))
            .map_or("none".to_string(), |e| {
                format!("{:.2} Mbit/s", e as f64 / 1e6)
            });
        eprintln!(
            "{name}: {} packets in, {} copies out; per packet in: {:.2} relay datagrams in \
             (the rest RTCP/feedback), {:.3} handle_timeout calls, {:.2} other datagrams out; \
             copies held by the pacer p50 <= {} ms, p99 <= {} ms, max {:?}; estimate towards \
             subscriber 1: {estimate}",
            self.packets,
            t.copies,
            t.datagrams_in as f64 / p,
            t.timeouts as f64 / p,
            t.other_out as f64 / p,
            fmt_ms(t.held_quantile(0.5)),
            fmt_ms(t.held_quantile(0.99)),
            t.held_max,
        );
    }
}

fn fmt_ms(bound: Option<u64>) -> String {
    bound.map_or(">500".to_string(), |b| b.to_string())
}

/// [`time_sfu`] for the bare-str0m baseline.
fn time_bare(bare: &mut Bare, media: Media, iters: u64) -> Duration {
    let subs = bare.legs.len();
    let mut batch = Vec::with_capacity(CHUNK as usize);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        bare.tick(Duration::from_millis(1));
        batch.clear();
        bare.publish(media, n, &mut batch);
        let mut sent = 0;
        let start = Instant::now();
        for d in &batch {
            bare.forward(d, |t| {
                sent += usize::from(is_srtp(&t));
                black_box(t);
            });
        }
        total += start.elapsed();
        assert_eq!(sent, n * subs, "every packet forwarded to every leg");
        left -= n as u64;
    }
    total
}

/// The crypto floor: one AEAD open, N seals with N keys, as SRTP does with per-leg keys.
struct AeadFloor {
    rx: LessSafeKey,
    tx: Vec<LessSafeKey>,
    header: [u8; HEADER],
    sealed: Vec<u8>,
    work: Vec<u8>,
    out: Vec<Vec<u8>>,
    counter: u64,
}

impl AeadFloor {
    fn new(payload: usize, n: usize) -> Self {
        let key =
            |i: u8| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[i; 32]).expect("32-byte key"));
        let rx = key(0);
        let header = [0x90_u8; HEADER];
        let mut sealed = vec![0x5a_u8; payload];
        rx.seal_in_place_append_tag(nonce(0), Aad::from(header), &mut sealed)
            .expect("seal");
        AeadFloor {
            rx,
            tx: (1..=n).map(|i| key(i as u8)).collect(),
            header,
            work: sealed.clone(),
            sealed,
            out: vec![Vec::with_capacity(payload + TAG); n],
            counter: 1,
        }
    }

    fn run(&mut self) {
        self.work.copy_from_slice(&self.sealed);
        let plain = self
            .rx
            .open_in_place(nonce(0), Aad::from(self.header), &mut self.work)
            .expect("authentic");
        for (key, out) in self.tx.iter().zip(&mut self.out) {
            out.clear();
            out.extend_from_slice(plain);
            self.counter += 1;
            key.seal_in_place_append_tag(nonce(self.counter), Aad::from(self.header), out)
                .expect("seal");
        }
        black_box(&mut self.out);
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0_u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

criterion_group! {
    name = benches;
    // Modest settings: the machine has 2 vCPUs shared with other work.
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = forward, timing, demux
}
criterion_main!(benches);
