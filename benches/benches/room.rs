//! CPU per forwarded packet *with housekeeping*: whole rooms driven for 10 s of virtual time,
//! everything the relay does in that time divided by the copies it forwarded.
//!
//! `cargo bench -p callrelay-benches --bench room` (all runs, ~5 min on 2 vCPUs; a filter
//! argument keeps the runs whose name contains it, e.g. `-- video_10p`)
//! `cargo bench -p callrelay-benches --bench room -- --test` (smoke: 1 s per run, once)
//!
//! A plain harness (criterion's model, one iteration = one packet, does not fit a run whose
//! unit is a 10 s scene): each run is repeated (`--reps`, 3 by default) and the median printed;
//! every run is written to `target/callrelay-room/room.json` for `benches/scripts/summarize.py`.
//!
//! A run: the room is set up (real ICE/DTLS/SRTP with str0m clients, in memory), every
//! subscriber asks for the `h` layer of every publisher, 2 s of traffic warm it up (first
//! keyframes, layer switches, the estimate), then [`MEASURED`] of virtual time are driven as
//! the worker drives them (`rig::Net::run_live`): publishers send at their real rates (audio
//! 50 packets/s, each simulcast layer 30 frames/s, keyframes every 2 s and on request), every
//! client decrypts what it receives and sends its RTCP, transport-cc feedback and keyframe
//! requests back, and the relay's timers run when due (str0m's RTCP, pacer and BWE, our
//! simulcast allocation, idle checks). The figure is the wall time spent inside the relay's
//! calls over the whole run — every `handle_datagram` (media *and* feedback), every
//! `handle_timeout`, with the `poll_*` drains after each — divided by the forwarded copies that
//! left the relay in the run. The clients' work (encrypting, decrypting every copy) is
//! excluded: it is not the relay's, and it is as large as the relay's. The run's whole wall
//! time, clients included, is printed beside it.
//!
//! Not included: what the IO layer adds per packet (socket calls, its counters and
//! histograms), measured by the capacity runs (`loadtest/capacity.sh`).
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use callrelay_benches::rig::{Net, RelayWork, Sender, Traffic, HELD_BOUNDS_MS, SFU_ADDR};
use callrelay_sfu::{
    ParticipantId, Rid, RoomKey, RoomKind, SfuConfig, DEFAULT_BWE_INITIAL_BITRATE,
};

/// Virtual time measured per run.
const MEASURED: Duration = Duration::from_secs(10);
/// Virtual time of traffic before the measured part.
const WARM_UP: Duration = Duration::from_secs(2);

/// A room: who publishes what, who only subscribes.
#[derive(Clone)]
struct Shape {
    name: &'static str,
    kind: RoomKind,
    publishers: usize,
    subscribers: usize,
    traffic: Traffic,
}

/// How the relay and its clients are configured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The server's default: bandwidth estimation on, clients with transport-cc (browsers).
    Bwe,
    /// Bandwidth estimation off.
    Off,
    /// The server's default, clients without transport-cc or NACK: the load generator's
    /// sampled receivers, i.e. the capacity runs' setting (the relay does not pace them).
    NoTwcc,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bwe => "bwe",
            Mode::Off => "off",
            Mode::NoTwcc => "no_twcc",
        }
    }
}

fn shapes() -> Vec<(Shape, Vec<Mode>)> {
    let video = |name, publishers, subscribers| Shape {
        name,
        kind: RoomKind::Video,
        publishers,
        subscribers,
        traffic: Traffic::simulcast(),
    };
    vec![
        // Issue #11's room: 10 people, each audio + l/m/h, everyone asking for h.
        (
            video("video_10p", 10, 0),
            vec![Mode::Bwe, Mode::Off, Mode::NoTwcc],
        ),
        // The capacity runs' shapes (loadtest/capacity.py), one room each.
        (video("meeting_5p", 5, 0), vec![Mode::Bwe, Mode::NoTwcc]),
        (video("webinar_31p", 1, 30), vec![Mode::Bwe, Mode::NoTwcc]),
        (
            Shape {
                name: "voice_30p",
                kind: RoomKind::Voice,
                publishers: 30,
                subscribers: 0,
                traffic: Traffic::audio(),
            },
            vec![Mode::Bwe, Mode::NoTwcc],
        ),
    ]
}

/// One measured run.
struct Run {
    busy: Duration,
    wall: Duration,
    work: RelayWork,
    packets_in: u64,
    /// Copies forwarded were every packet sent to every subscriber of it on the `h` layer.
    copies_at_h: u64,
    /// Copies handed to str0m in the run (some may still sit in its pacer at the end).
    written: u64,
    audio_written: u64,
    video_written: u64,
    layers: [u64; 4],
    estimate_median: Option<u64>,
    keyframe_requests: u64,
    layer_switches: u64,
}

impl Run {
    fn us_per_copy(&self) -> f64 {
        self.busy.as_secs_f64() * 1e6 / self.work.copies as f64
    }
}

fn run(shape: &Shape, mode: Mode, warm_up: Duration, measured: Duration) -> Run {
    let parties = shape.publishers + shape.subscribers;
    // The server's defaults (crates/server/src/media/mod.rs), rooms big enough.
    let mut config = SfuConfig::new(SFU_ADDR);
    config.max_participants = parties.max(32);
    config.bwe_initial_bitrate = (mode != Mode::Off).then_some(DEFAULT_BWE_INITIAL_BITRATE);
    let mut net = Net::new(config);
    net.client_twcc = mode != Mode::NoTwcc;
    let video = !shape.traffic.video.is_empty();
    let rids = shape.traffic.rids();
    let room = RoomKey(1);
    for _ in 0..shape.publishers {
        net.join_with(room, shape.kind, shape.traffic.audio, video, &rids);
    }
    for _ in 0..shape.subscribers {
        net.join(room, shape.kind, false, false);
    }
    let tracks = usize::from(shape.traffic.audio) + usize::from(video);
    let p = shape.publishers;
    net.drive_until(|n| {
        n.peers.iter().all(|c| c.rtc.is_connected())
            && n.peers.iter().enumerate().all(|(i, c)| {
                let others = if i < p { p - 1 } else { p };
                c.subscribed >= others * tracks
            })
    });
    net.run_for(Duration::from_millis(100));
    // Every subscriber asks for the highest layer of every publisher.
    let top = rids.last().map(|r| Rid::from(*r));
    let mut pairs = Vec::new();
    if let Some(top) = top {
        for publisher in 0..p {
            let mid = net.peers[publisher].video_mid.expect("publisher's video");
            for sub in (0..parties).filter(|&s| s != publisher) {
                let now = net.now;
                net.sfu
                    .set_subscriber_layer(
                        now,
                        ParticipantId(sub as u64),
                        ParticipantId(publisher as u64),
                        mid,
                        top,
                    )
                    .expect("subscription to the publisher's video");
                pairs.push((sub, publisher, mid));
            }
        }
    }
    // Senders spread over the audio and frame intervals, as real ones are.
    let mut senders: Vec<Sender> = (0..p)
        .map(|i| {
            let audio = Duration::from_micros(20_000 * i as u64 / p as u64);
            let frame = Duration::from_micros(33_333 * i as u64 / p as u64);
            Sender::new(&net, i, shape.traffic.clone(), audio, frame)
        })
        .collect();
    let mut scratch = RelayWork::default();
    let written_before_warm_up = net.sfu.stats().rtp_forwarded;
    net.run_live(warm_up, &mut senders, &mut scratch);

    let stats0 = net.sfu.stats();
    let sent0: Vec<u64> = senders.iter().map(|s| s.sent).collect();
    let mut work = RelayWork::default();
    let wall = Instant::now();
    net.run_live(measured, &mut senders, &mut work);
    let wall = wall.elapsed();
    let stats = net.sfu.stats();

    let packets_in: u64 = senders.iter().zip(&sent0).map(|(s, b)| s.sent - b).sum();
    // What the copies would be with every subscriber on `h`: audio to everyone else, the top
    // layer's packets (keyframes included) to everyone else.
    let secs = measured.as_secs_f64();
    let fan_out = (parties - 1) as f64;
    let t = &shape.traffic;
    let mut per_publisher = if t.audio {
        t.packets_per_second(None)
    } else {
        0.0
    };
    if video {
        per_publisher += t.packets_per_second(Some(t.video.len() - 1));
    }
    let copies_at_h = (per_publisher * secs * fan_out * p as f64) as u64;
    let mut layers = [0u64; 4];
    for &(sub, publisher, mid) in &pairs {
        let l = net
            .sfu
            .subscriber_layer(
                ParticipantId(sub as u64),
                ParticipantId(publisher as u64),
                mid,
            )
            .and_then(|l| l.current);
        let i = l
            .and_then(|l| rids.iter().position(|r| Rid::from(*r) == l))
            .unwrap_or(3);
        layers[i] += 1;
    }
    let mut estimates: Vec<u64> = (0..parties)
        .filter_map(|i| net.sfu.bandwidth_estimate(ParticipantId(i as u64)))
        .collect();
    estimates.sort_unstable();
    let run = Run {
        busy: work.busy,
        wall,
        packets_in,
        copies_at_h,
        written: stats.rtp_forwarded - stats0.rtp_forwarded,
        audio_written: stats.audio_forwarded - stats0.audio_forwarded,
        video_written: stats.video_forwarded - stats0.video_forwarded,
        layers,
        estimate_median: estimates.get(estimates.len() / 2).copied(),
        keyframe_requests: stats.keyframe_requests_relayed - stats0.keyframe_requests_relayed,
        layer_switches: (stats.layer_switches_down + stats.layer_switches_up)
            - (stats0.layer_switches_down + stats0.layer_switches_up),
        work,
    };
    // The bench must not silently measure nothing: every publisher's packets reached the
    // relay, every audio packet went to everyone else, and video flowed on some layer.
    assert_eq!(
        net.sfu.participant_count(),
        parties,
        "nobody left during the run"
    );
    assert_eq!(
        stats.rtp_received - stats0.rtp_received,
        packets_in,
        "the relay received every packet sent"
    );
    if t.audio {
        let audio_expected = (50.0 * secs * fan_out * p as f64) as u64;
        assert!(
            run.audio_written * 100 >= audio_expected * 99,
            "audio to everyone: {} of {audio_expected}",
            run.audio_written
        );
    }
    if video {
        assert!(run.video_written > 0, "video forwarded");
    }
    // What was handed to str0m left it, but for what the pacer still holds at the end (a few
    // packets per subscriber at most). Copies held from the warm-up leave in the measured part
    // (with the estimate still low, str0m's pacer can hold a backlog for a while), so the
    // account starts with the warm-up.
    let written_all = stats.rtp_forwarded - written_before_warm_up;
    let out_all = scratch.copies + run.work.copies;
    assert!(
        out_all <= written_all && (written_all - out_all) * 20 <= run.written,
        "copies out {out_all} against {written_all} written to str0m since the warm-up began \
         ({} written in the measured part)",
        run.written
    );
    run
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test");
    let mut reps = if smoke { 1 } else { 3 };
    let mut filter: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            s if s.starts_with("--") => {}
            s => filter = Some(s.to_string()),
        }
    }
    let (warm_up, measured) = if smoke {
        (Duration::from_millis(500), Duration::from_secs(1))
    } else {
        (WARM_UP, MEASURED)
    };
    let load_before = loadavg();
    let started = chrono::Utc::now();
    let mut results = Vec::new();
    for (shape, modes) in shapes() {
        for mode in modes {
            let name = format!("room/{}/{}", shape.name, mode.name());
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..reps {
                let r = run(&shape, mode, warm_up, measured);
                print_run(&name, &r, measured);
                runs.push(r);
            }
            let mut per: Vec<f64> = runs.iter().map(Run::us_per_copy).collect();
            per.sort_by(f64::total_cmp);
            let median = per[per.len() / 2];
            println!(
                "{name}: median {median:.3} µs of relay time per forwarded copy \
                 (min {:.3}, max {:.3}, {} runs of {measured:?})",
                per[0],
                per[per.len() - 1],
                runs.len()
            );
            results.push(serde_json::json!({
                "name": name,
                "shape": shape.name,
                "mode": mode.name(),
                "publishers": shape.publishers,
                "subscribers": shape.subscribers,
                "virtual_seconds": measured.as_secs_f64(),
                "median_us_per_copy": median,
                "runs": runs.iter().map(|r| run_json(r, measured)).collect::<Vec<_>>(),
            }));
        }
    }
    let load_after = loadavg();
    println!("load average before {load_before}, after {load_after}");
    if smoke {
        return;
    }
    let doc = serde_json::json!({
        "started": started.to_rfc3339(),
        "finished": chrono::Utc::now().to_rfc3339(),
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_before": load_before,
        "load_after": load_after,
        "results": results,
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("callrelay-room");
    std::fs::create_dir_all(&dir).expect("create the results directory");
    let path = dir.join("room.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
        .expect("write the results");
    println!("written to {}", path.display());
}

fn print_run(name: &str, r: &Run, measured: Duration) {
    let w = &r.work;
    let secs = measured.as_secs_f64();
    let est = r.estimate_median.map_or("none".to_string(), |e| {
        format!("{:.1} Mbit/s", e as f64 / 1e6)
    });
    println!(
        "{name}: {:.3} µs/copy — relay busy {:.3} s for {} copies ({:.0}/s, {:.0} % of all on h; \
         audio {}, video {} written) from {} packets in; whole run {:.2} s wall with the clients",
        r.us_per_copy(),
        r.busy.as_secs_f64(),
        w.copies,
        w.copies as f64 / secs,
        100.0 * w.copies as f64 / r.copies_at_h.max(1) as f64,
        r.audio_written,
        r.video_written,
        r.packets_in,
        r.wall.as_secs_f64(),
    );
    println!(
        "    {} datagrams in ({} of them RTCP/STUN), {} handle_timeout, {} other datagrams out; \
         held by the pacer p50 <= {} ms, p99 <= {} ms, max {:?}; layers l/m/h/none {:?}; \
         estimate median {est}; {} keyframe requests relayed, {} layer switches",
        w.datagrams_in,
        w.datagrams_in.saturating_sub(r.packets_in),
        w.timeouts,
        w.other_out,
        ms(w.held_quantile(0.5)),
        ms(w.held_quantile(0.99)),
        w.held_max,
        r.layers,
        r.keyframe_requests,
        r.layer_switches,
    );
}

fn run_json(r: &Run, measured: Duration) -> serde_json::Value {
    let w = &r.work;
    serde_json::json!({
        "us_per_copy": r.us_per_copy(),
        "relay_busy_s": r.busy.as_secs_f64(),
        "wall_s": r.wall.as_secs_f64(),
        "copies": w.copies,
        "copies_per_s": w.copies as f64 / measured.as_secs_f64(),
        "copies_at_h": r.copies_at_h,
        "written": r.written,
        "audio_written": r.audio_written,
        "video_written": r.video_written,
        "packets_in": r.packets_in,
        "datagrams_in": w.datagrams_in,
        "timeouts": w.timeouts,
        "other_out": w.other_out,
        "held_bounds_ms": HELD_BOUNDS_MS,
        "held": w.held,
        "held_max_ms": w.held_max.as_secs_f64() * 1e3,
        "layers_l_m_h_none": r.layers,
        "estimate_median_bps": r.estimate_median,
        "keyframe_requests": r.keyframe_requests,
        "layer_switches": r.layer_switches,
    })
}

fn ms(bound: Option<u64>) -> String {
    bound.map_or(">500".to_string(), |b| b.to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}
