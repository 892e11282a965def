//! The load generator against a real relay on 127.0.0.1 (in-process: HTTP on a free port,
//! media workers on free UDP ports, a fresh SQLite store in a temp dir, dev mode): 2 rooms × 3
//! participants for 5 s through real ICE, DTLS and SRTP. Zero loss, measured latencies, and a
//! `/metrics` that parses and holds every metric `crates/server/src/metrics.rs` defines; the
//! same with receivers that decrypt one packet in 16 and count the rest from RTP headers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use callrelay_loadgen::prom::Scrape;
use callrelay_loadgen::run::DEFAULT_DECRYPT_SAMPLE;
use callrelay_loadgen::traffic::TrafficConfig;
use callrelay_loadgen::{run, Auth, Options};
use callrelay_server::app::SystemClock;
use callrelay_server::config::Overrides;
use callrelay_server::testing::{self, InProcess};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// What every run here has unless it says otherwise: callrelay at `base` (its metrics beside
/// it), dev tokens, one room of one publisher for 5 s, sampled receivers, this process's CPU as
/// the relay's (it runs in-process).
fn options(base: &str) -> Options {
    Options {
        target: callrelay_loadgen::Target::Callrelay,
        urls: vec![base.to_owned()],
        metrics_urls: vec![format!("{base}/metrics")],
        auth: Auth::Dev,
        admin_token: None,
        links: Vec::new(),
        rooms: 1,
        publishers: 1,
        subscribers: 0,
        traffic: TrafficConfig::default(),
        duration: Duration::from_secs(5),
        join_rate: 20.0,
        subscribe_layer: callrelay_loadgen::header::Stream::VideoL,
        seed: 7,
        progress: false,
        // The relay runs in this process: its CPU from /proc (10 ms steps). The prometheus
        // crate's process_cpu_seconds_total counts whole seconds, and a light 5 s run can cross
        // no second boundary (the figure was then 0 and a check on it failed now and then).
        relay_pids: vec![std::process::id()],
        rejoin_deadline: Duration::from_secs(30),
        hostile: false,
        decrypt_sample: DEFAULT_DECRYPT_SAMPLE,
    }
}

/// The relay in-process, as `callrelay serve --dev` runs it, with a temporary store.
struct Relay {
    base: String,
    relay: InProcess,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn stop(self) {
        self.relay.stop(Duration::from_secs(15)).await;
    }
}

async fn start_relay() -> Relay {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let relay = start_relay_in(dir.path(), &[("CALLRELAY_MEDIA_WORKERS", "2")]).await;
    Relay {
        base: relay.base.clone(),
        relay,
        _dir: dir,
    }
}

/// A dev-mode relay on a free port storing in `dir` (relays sharing a dir share links), with
/// `env` on top.
async fn start_relay_in(dir: &std::path::Path, env: &[(&str, &str)]) -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let public_url = format!("http://{addr}");
    let mut vars = vec![("CALLRELAY_HTTP_PUBLIC_URL", public_url.as_str())];
    vars.extend_from_slice(env);
    let overrides = Overrides {
        http_addr: Some(addr.to_string()),
        data_dir: Some(dir.to_string_lossy().into_owned()),
        ..Overrides::default()
    };
    let settings = testing::settings(&vars, &overrides);
    // As `callrelay serve` does: the process collector exports process_cpu_seconds_total.
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registers");
    InProcess::start(listener, settings, registry, Arc::new(SystemClock)).await
}

/// Every metric name written as a string literal in the relay's metrics module.
fn metric_names_in_source() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/server/src/metrics.rs"
    );
    let src = std::fs::read_to_string(path).expect("metrics.rs is readable");
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("callrelay_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_of_three_for_five_seconds_lose_nothing() {
    let relay = start_relay().await;
    let opts = Options {
        rooms: 2,
        publishers: 3,
        // Audio and one video layer: light enough for an unoptimised build sharing 2 cores.
        // The first publisher of each room shares a screen too.
        traffic: TrafficConfig {
            video_layers: 1,
            screen_kbps: 200,
            ..TrafficConfig::default()
        },
        duration: Duration::from_secs(5),
        // Every packet through str0m, loss from the payload header.
        decrypt_sample: 1,
        ..options(&relay.base)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(opts))
        .await
        .expect("the run stops by itself")
        .expect("the run completes");
    eprintln!("{}", report.table());
    assert!(report.relay_nodes.is_empty(), "one node: no per-node lines");
    assert_eq!(report.rejoins.count, 0);
    assert!(report.participants.closed_by_relay.is_empty());

    assert_eq!(
        report.participants.joined, 6,
        "{:?}",
        report.participants.errors
    );
    assert_eq!(report.participants.failed, 0);
    assert_eq!(report.participants.dropped_events, 0);
    // Each of 6 participants hears 2 others on audio and video, and the other two of each
    // room see its sharer's screen.
    assert_eq!(report.streams["audio"].streams, 12);
    assert_eq!(report.streams["video_l"].streams, 12);
    assert_eq!(report.streams["screen"].streams, 4, "{:?}", report.streams);
    assert!(
        report.streams["screen"].received >= 4 * 15,
        "{:?}",
        report.streams
    );
    assert_eq!(report.packets.expected_streams, 28, "{:?}", report.packets);
    // And each one's model of the call holds those tracks, by source.
    let t = report
        .tracks
        .as_ref()
        .expect("callrelay: the models are read");
    assert_eq!(t.screen_sharers, 2, "{t:?}");
    assert!(t.screen_failures.is_empty(), "{t:?}");
    let by_source = |m: &std::collections::BTreeMap<String, u64>| {
        ["microphone", "camera", "screen"].map(|k| m.get(k).copied().unwrap_or(0))
    };
    assert_eq!(by_source(&t.expected), [12, 12, 4], "{t:?}");
    assert_eq!(by_source(&t.announced), [12, 12, 4], "{t:?}");
    assert_eq!(t.missing, 0);
    assert!(report.table().contains("screen 4/4"), "{}", report.table());
    assert_eq!(report.packets.missing_streams, 0, "{:?}", report.packets);
    assert!(report.packets.received > 12 * 100, "{:?}", report.packets);
    assert_eq!(report.loss.lost, 0, "loss: {:?}", report.loss);
    assert_eq!(report.loss.duplicates, 0);
    assert_eq!(report.packets.foreign, 0);
    let l = &report.latency_ms;
    assert!(l.p50.is_some_and(|v| v > 0.0), "{l:?}");
    assert!(l.p99.is_some_and(|v| v > 0.0) && l.max >= l.p99, "{l:?}");
    assert!(report.join_ms.first_media_p50.is_some_and(|v| v > 0.0));
    assert_eq!(report.join_ms.without_media, 0);
    // Receivers ask for l, the layer the relay starts them on: no wait.
    let t = report.time_to_layer.as_ref().expect("video: measured");
    assert_eq!((t.requested.as_str(), t.subscriptions), ("l", 12), "{t:?}");
    assert_eq!((t.reached, t.never_reached, t.without_video), (12, 0, 0));
    assert_eq!(t.from_first_packet_ms.max, Some(0.0), "{t:?}");
    assert_eq!((t.packets_before, t.packets_unseen_before), (0, 0));

    let r = report.relay.as_ref().expect("relay metrics were read");
    assert!(
        r.packets_forwarded
            .is_some_and(|v| v >= report.packets.received as f64 * 0.9),
        "{r:?}"
    );
    assert!(
        r.cpu_seconds_per_million_forwarded.is_some_and(|v| v > 0.0),
        "{r:?}"
    );
    assert!(r.forward_latency_ms_p99.is_some_and(|v| v > 0.0), "{r:?}");
    assert_eq!(r.http_refused_per_ip, Some(0.0), "{r:?}");
    assert!(report.valid, "{:?}", report.invalid);

    // `callrelay_signaling_errors_total{code}` has no label value before the first error (the
    // relay does not pre-create its codes), so provoke one: an unparseable signaling message.
    let ws_url = relay.base.replacen("http://", "ws://", 1) + "/v1/signal";
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("signaling socket opens");
    ws.send(Message::Text("{\"nonsense\": {}}".into()))
        .await
        .expect("frame sent");
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the relay answers");
    assert!(
        matches!(&answer, Some(Ok(Message::Text(t))) if t.contains("invalid_message")),
        "{answer:?}"
    );
    drop(ws);

    // After that load, /metrics parses and has every metric the relay defines.
    let text = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let scrape = Scrape::parse(&text).expect("the exposition parses");
    let names = metric_names_in_source();
    assert!(names.len() >= 25, "found only {names:?} in metrics.rs");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !scrape.families.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from /metrics: {missing:?}"
    );
    // Exported (a whole-seconds counter: a light test process may still be at 0).
    assert!(scrape.sum("process_cpu_seconds_total").is_some());

    relay.stop().await;
}

/// A relay whose per-address connection cap is lower than the loadgen's participants: it
/// refuses the signaling connections past the cap at accept, those joins wait (retried) until
/// others leave, and the report calls the run invalid and says what to change, instead of
/// passing it off as missing streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_held_back_by_the_per_address_connection_cap_is_invalid() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let relay = start_relay_in(
        dir.path(),
        &[
            ("CALLRELAY_MEDIA_WORKERS", "1"),
            ("CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP", "3"),
        ],
    )
    .await;
    let opts = Options {
        rooms: 1,
        publishers: 4,
        traffic: TrafficConfig {
            video_layers: 0,
            ..TrafficConfig::default()
        },
        duration: Duration::from_secs(2),
        ..options(&relay.base)
    };
    let report = tokio::time::timeout(Duration::from_secs(90), run(opts))
        .await
        .expect("the run stops by itself")
        .expect("the run completes");
    eprintln!("{}", report.table());
    let refused = report
        .relay
        .as_ref()
        .and_then(|r| r.http_refused_per_ip)
        .expect("the relay's refusals were read");
    assert!(refused >= 1.0, "{:?}", report.relay);
    // The report's figure is the relay's counter, read before and after the run (a signaling
    // socket may still be closing then, so later attempts can add a few refusals).
    let total = counter(&relay.base, "callrelay_http_connections_refused_total").await;
    assert!(total >= refused, "{total} < {refused}");
    assert!(!report.valid);
    assert!(
        report
            .invalid
            .iter()
            .any(|w| w.contains("at http.max_connections_per_ip")
                && w.contains("CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0")),
        "{:?}",
        report.invalid
    );
    relay.stop(Duration::from_secs(15)).await;
}

/// A counter's increase over a run.
async fn counter(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    Scrape::parse(&text)
        .expect("the exposition parses")
        .sum(name)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_run_counts_every_packet_and_decrypts_one_in_sixteen() {
    let relay = start_relay().await;
    let nacks_before = counter(&relay.base, "callrelay_nacks_total").await;
    let opts = Options {
        rooms: 2,
        publishers: 3,
        // Two layers, receivers ask for m: each subscription switches from l to m once, on
        // one SSRC and one run of sequence numbers.
        // A screen share per room is counted the same way.
        traffic: TrafficConfig {
            video_layers: 2,
            screen_kbps: 200,
            ..TrafficConfig::default()
        },
        duration: Duration::from_secs(5),
        subscribe_layer: callrelay_loadgen::header::Stream::VideoM,
        seed: 5,
        decrypt_sample: 16,
        ..options(&relay.base)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(opts))
        .await
        .expect("the run stops by itself")
        .expect("the run completes");
    eprintln!("{}", report.table());
    assert_eq!(report.config.decrypt_sample, 16);
    assert_eq!(
        (report.participants.joined, report.participants.failed),
        (6, 0),
        "{:?}",
        report.participants.errors
    );
    assert_eq!(report.participants.dropped_events, 0);
    // Every stream reported: 6 receivers × 2 senders, audio and video, and 4 receivers of a
    // screen.
    assert_eq!(report.packets.expected_streams, 28, "{:?}", report.packets);
    assert_eq!(report.streams["screen"].streams, 4, "{:?}", report.streams);
    assert_eq!(report.packets.missing_streams, 0, "{:?}", report.packets);
    assert_eq!(report.streams["audio"].streams, 12, "{:?}", report.streams);
    let m = report.streams.get("video_m").expect("m arrived");
    assert_eq!(m.streams, 12, "every subscription moved to m");
    // Nothing lost, duplicated or unattributed, counted from the RTP headers of every packet.
    assert_eq!(report.loss.lost, 0, "{:?}", report.loss);
    assert_eq!(report.loss.duplicates, 0, "{:?}", report.loss);
    assert_eq!(report.packets.foreign, 0);
    assert_eq!(report.loss.expected, report.packets.received);
    // What the relay says it forwarded (audio and video copies, all of them sent by 127.0.0.1
    // before the run's last second) is exactly what the receivers counted.
    let r = report.relay.as_ref().expect("relay metrics were read");
    let media = r.forwarded_by_kind.get("audio").copied().unwrap_or(0.0)
        + r.forwarded_by_kind.get("video").copied().unwrap_or(0.0);
    let k = &report.packets;
    assert_eq!(media, k.received as f64, "{r:?}");
    // Each packet of audio and m reaches the 2 others of its room (l reaches nobody once the
    // switch is done): more than one copy per packet sent, fewer than two.
    assert!(
        k.received > k.sent && k.received < 2 * k.sent,
        "sent {} received {}",
        k.sent,
        k.received
    );
    // Every subscription got m, from its first packet of l in well under 10 s, and every
    // video packet before it was decrypted (none unseen): the time is exact to the packet.
    let t = report.time_to_layer.as_ref().expect("video: measured");
    assert_eq!((t.requested.as_str(), t.subscriptions), ("m", 12), "{t:?}");
    assert_eq!((t.reached, t.never_reached, t.without_video), (12, 0, 0));
    let f = &t.from_first_packet_ms;
    assert!(f.p50.is_some_and(|v| v > 0.0), "{t:?}");
    assert!(f.max.is_some_and(|v| v < 10_000.0), "{t:?}");
    assert!(t.packets_before >= 12, "{t:?}");
    assert_eq!(t.packets_unseen_before, 0, "{t:?}");
    // One in 16 per stream was decrypted and timed: the first of each, then every 16th; and
    // on video, every packet until m arrived, then every 16th again (up to one more per stream
    // either way from the rounding).
    let l = &report.latency_ms;
    let streams = report.streams.values().map(|t| t.streams).sum::<u64>();
    let least = t.packets_before + (k.received - t.packets_before) / 16;
    let most = t.packets_before + t.subscriptions + k.received / 16 + streams;
    assert!(
        l.count + streams >= least && l.count <= most,
        "{} timed of {} received, {} before m",
        l.count,
        k.received,
        t.packets_before
    );
    assert!(l.p99.is_some_and(|v| v > 0.0), "{l:?}");
    // Sampled receivers negotiate no NACK: nothing asked the relay to resend.
    let nacks = counter(&relay.base, "callrelay_nacks_total").await - nacks_before;
    assert_eq!(nacks, 0.0, "NACKs from sampled receivers");
    // The loadgen's cost is reported next to the relay's.
    let g = &report.loadgen;
    assert_eq!(g.decrypt_sample, 16);
    assert!(g.cores >= 1);
    assert!(g.cpu_us_per_received.is_some_and(|v| v > 0.0), "{g:?}");
    assert!(
        g.relay_cpu_us_per_forwarded.is_some_and(|v| v > 0.0),
        "{g:?}"
    );
    assert!(g.cost_ratio.is_some(), "{g:?}");
    assert!(g.utilisation.is_some_and(|u| u > 0.0), "{g:?}");
    // Measured once every join was done: packets both ways in that window.
    assert_eq!(g.basis, "steady", "{g:?}");
    let w = g.steady.expect("a steady window");
    assert!(w.seconds > 2.0 && w.received > 1_000, "{w:?}");
    assert!(w.relay_forwarded.is_some_and(|f| f > 1_000.0), "{w:?}");
    // Latencies over the steady window alone, next to the whole run's: the relay's from its
    // histogram's bucket deltas, the wire's from the decrypted sample.
    let relay_steady = w
        .relay_forward_latency_ms
        .expect("the relay's latency in the window");
    let whole = report.relay.as_ref().unwrap();
    assert!(
        relay_steady.count > 1_000
            && (relay_steady.count as f64) < whole.forward_latency_observations.unwrap(),
        "{relay_steady:?} vs {whole:?}"
    );
    assert!(
        relay_steady.p99.is_some_and(|p| p > 0.0),
        "{relay_steady:?}"
    );
    let wire_steady = w.wire_latency_ms.expect("the wire latency in the window");
    assert!(
        wire_steady.count > 50 && wire_steady.count < report.latency_ms.count,
        "{wire_steady:?} vs {:?}",
        report.latency_ms
    );
    assert!(wire_steady.p50.is_some_and(|p| p > 0.0), "{wire_steady:?}");
    assert!(report.table().contains("steady ms     relay fwd p50 "));
    assert_eq!(report.valid, !g.saturated);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_the_layer_they_ask_for_and_the_time_it_took() {
    // Sampled (the client decrypts every video packet until h arrives), then every packet
    // decrypted (transport-cc negotiated: the relay's bandwidth estimate decides when h fits).
    for decrypt_sample in [DEFAULT_DECRYPT_SAMPLE, 1] {
        let relay = start_relay().await;
        let opts = Options {
            metrics_urls: Vec::new(),
            rooms: 1,
            publishers: 2,
            // Layers l, m and h (light, for an unoptimised build sharing 2 cores); each
            // receiver sends a video_preference for h on its first video packet.
            traffic: TrafficConfig {
                video_layers: 3,
                layer_kbps: [100, 300, 800],
                ..TrafficConfig::default()
            },
            duration: Duration::from_secs(5),
            seed: 3,
            relay_pids: Vec::new(),
            subscribe_layer: callrelay_loadgen::header::Stream::VideoH,
            decrypt_sample,
            ..options(&relay.base)
        };
        let report = tokio::time::timeout(Duration::from_secs(60), run(opts))
            .await
            .expect("the run stops by itself")
            .expect("the run completes");
        eprintln!("{}", report.table());
        assert_eq!(report.config.subscribe_layer, "h");
        assert_eq!(report.packets.missing_streams, 0, "{:?}", report.packets);
        // Both receivers moved to h (the relay starts them on l and switches at a keyframe).
        let h = report.streams.get("video_h").expect("h arrived");
        assert_eq!(h.streams, 2, "{:?}", report.streams);
        assert!(h.received > 2 * 50, "{h:?}");
        assert_eq!(report.loss.lost, 0, "{:?}", report.loss);
        // Each subscription's time to h: after its first packet (of l), well within the run,
        // with every packet before it seen.
        let t = report.time_to_layer.as_ref().expect("video: measured");
        eprintln!(
            "\"time_to_layer\": {}",
            serde_json::to_string_pretty(t).expect("serializes")
        );
        assert_eq!((t.requested.as_str(), t.subscriptions), ("h", 2), "{t:?}");
        assert_eq!(
            (t.reached, t.never_reached, t.without_video),
            (2, 0, 0),
            "{t:?}"
        );
        for p in [&t.from_first_packet_ms, &t.from_connected_ms] {
            assert!(p.p50.is_some_and(|v| v > 0.0), "{t:?}");
            assert!(p.max.is_some_and(|v| v < 10_000.0), "{t:?}");
        }
        assert!(t.packets_before >= 2, "at least one l packet each: {t:?}");
        assert_eq!(t.packets_unseen_before, 0, "{t:?}");
        relay.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_spread_over_the_urls_and_participants_of_a_draining_node_join_again() {
    // Two relays on one store (one secret, so a token works on both). Without a cluster each
    // hosts the calls joined through it; with 2 rooms and 2 URLs participant i joins room
    // i % 2 through URL i % 2, so each room lives on one relay.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let env = [
        (
            "CALLRELAY_AUTH_SECRET",
            "loadgen-test-secret-loadgen-test-secret",
        ),
        ("CALLRELAY_MEDIA_WORKERS", "1"),
    ];
    let a = start_relay_in(dir.path(), &env).await;
    let b = start_relay_in(dir.path(), &env).await;
    let opts = Options {
        urls: vec![a.base.clone(), b.base.clone()],
        metrics_urls: vec![format!("{}/metrics", a.base), format!("{}/metrics", b.base)],
        rooms: 2,
        publishers: 3,
        traffic: TrafficConfig {
            video_layers: 1,
            ..TrafficConfig::default()
        },
        duration: Duration::from_secs(6),
        seed: 11,
        relay_pids: Vec::new(),
        rejoin_deadline: Duration::from_secs(10),
        // Sampled: the counts of the sessions before and after the rejoin add up.
        decrypt_sample: DEFAULT_DECRYPT_SAMPLE,
        ..options(&a.base)
    };
    let run = tokio::spawn(run(opts));
    // Every join is done after 0.3 s; A then drains: its room's three participants get
    // `removed{drain}` and join again through B.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.state.media.participants(), 3, "room 0 on A");
    assert_eq!(b.state.media.participants(), 3, "room 1 on B");
    a.stop(Duration::from_secs(15)).await;
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .expect("the run task ends")
        .expect("the run completes");
    eprintln!("{}", report.table());

    let p = &report.participants;
    assert_eq!((p.joined, p.failed), (6, 0), "{:?}", p.errors);
    assert!(p.closed_by_relay.is_empty(), "{:?}", p.closed_by_relay);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let r = &report.rejoins;
    assert_eq!(r.count, 3, "{r:?}");
    assert_eq!(r.by_reason.get("drain"), Some(&3), "{r:?}");
    assert_eq!(r.failed, 0);
    assert!(r.took_ms_max.is_some_and(|ms| ms < 5_000.0), "{r:?}");
    assert_eq!(report.packets.missing_streams, 0, "{:?}", report.packets);
    // Media flowed again in the moved room: every packet handed to a client reaches the two
    // other members of its room, but for what was in flight around the move.
    let k = &report.packets;
    assert!(
        k.received as f64 >= 2.0 * k.sent as f64 * 0.8,
        "sent {} received {}",
        k.sent,
        k.received
    );

    // Per node: A was gone when the run ended, so only B is counted in the sum.
    assert_eq!(report.relay_nodes.len(), 2);
    assert!(report.relay_nodes[0].relay.is_none());
    assert!(report.relay_nodes[0].error.is_some());
    let nb = report.relay_nodes[1].relay.as_ref().expect("B's figures");
    let sum = report.relay.as_ref().expect("the sum");
    assert_eq!(sum.packets_forwarded, nb.packets_forwarded);
    assert!(nb.packets_forwarded.is_some_and(|v| v > 0.0), "{nb:?}");
    b.stop(Duration::from_secs(15)).await;
}

/// `--talkers 1` of 3 publishers: the two silent microphones send audio at the DTX rate (~5
/// packets a second) and still deliver every stream, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_microphones_send_at_the_dtx_rate_and_every_stream_arrives() {
    let relay = start_relay().await;
    let opts = Options {
        rooms: 1,
        publishers: 3,
        traffic: TrafficConfig {
            video_layers: 0,
            talkers: 1,
            ..TrafficConfig::default()
        },
        duration: Duration::from_secs(4),
        ..options(&relay.base)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(opts))
        .await
        .expect("the run stops by itself")
        .expect("the run completes");
    eprintln!("{}", report.table());
    assert_eq!(report.config.talkers, 1);
    assert!(report
        .table()
        .contains("publishers/room 3 (1 talking, the others silent: DTX)"));
    assert_eq!(report.participants.joined, 3);
    assert_eq!(report.packets.missing_streams, 0, "{:?}", report.packets);
    assert_eq!(report.loss.lost, 0, "{:?}", report.loss);
    // 6 audio streams; per second of traffic the talker's two carry ~100 packets and the four
    // silent ones ~20, where six talking would carry ~300.
    let a = &report.streams["audio"];
    assert_eq!(a.streams, 6);
    let per_s = a.received as f64 / report.traffic_seconds;
    assert!(
        (60.0..170.0).contains(&per_s),
        "{per_s} audio packets/s received"
    );
    relay.stop().await;
}

/// Pointed at a port nobody listens on, the load generator exits non-zero and says that the
/// relay is unreachable (it said "GET …/metrics: error sending request").
#[test]
fn a_relay_that_is_down_is_reported_as_unreachable() {
    // A port that was free a moment ago: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callrelay-loadgen"))
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--dev"])
        .args(["--rooms", "1", "--publishers", "1", "--duration", "1s"])
        .output()
        .expect("run callrelay-loadgen");
    assert!(!out.status.success(), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the relay at http://127.0.0.1:{port}/metrics is unreachable"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("error sending request"), "{stderr}");
}

/// More talkers than publishers is refused before anything is contacted.
#[test]
fn more_talkers_than_publishers_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callrelay-loadgen"))
        .args(["--url", "http://127.0.0.1:9", "--dev", "--audio-only"])
        .args(["--publishers", "2", "--talkers", "3", "--duration", "1s"])
        .output()
        .expect("run callrelay-loadgen");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--talkers 3 is more than the 2 publishers per room"),
        "{stderr}"
    );
}
