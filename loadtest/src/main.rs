//! `callrelay-loadgen`: drive a callrelay relay with synthetic participants and report.
//!
//! ```text
//! callrelay-loadgen --url http://127.0.0.1:7700 --dev --rooms 2 --publishers 3 --duration 10s
//! callrelay-loadgen --url http://127.0.0.1:7700 --dev --rooms 2 --publishers 3 --screen-kbps 400
//! callrelay-loadgen --url http://10.0.0.1:7700 --url http://10.0.0.2:7700 --token "$T" --rooms 4
//! callrelay-loadgen --target janus --url http://127.0.0.1:8088/janus --rooms 2 --publishers 3
//! callrelay-loadgen --compare callrelay.json janus.json
//! ```
//!
//! Exit codes: 0 passed (or no thresholds), 1 error, 2 a `--max-p99`/`--max-loss` threshold
//! failed, 3 the run is invalid (the loadgen's CPU was saturated, or the relay refused its
//! connections at `http.max_connections_per_ip`) and `--require-valid` was given.

use std::process::ExitCode;
use std::time::Duration;

use callrelay_loadgen::header::Stream;
use callrelay_loadgen::report::compare as compare_reports;
use callrelay_loadgen::run::DEFAULT_DECRYPT_SAMPLE;
use callrelay_loadgen::traffic::TrafficConfig;
use callrelay_loadgen::{run, Auth, Options, Report, Target, Thresholds};
use clap::Parser;

/// mimalloc, as the relay: with glibc's allocator, `malloc`/`free` were ~6 % of the loadgen's
/// CPU in the meeting shape (hundreds of sessions' packet buffers on one pinned core), and the
/// loadgen's cost per packet bounds what the capacity runs can measure of the relay.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "callrelay-loadgen",
    version,
    about = "Load generator for callrelay: synthetic WebRTC participants measuring wire-to-wire latency, loss and relay cost"
)]
struct Cli {
    /// What to drive: a callrelay relay, or a Janus VideoRoom (its HTTP API, e.g.
    /// --url http://127.0.0.1:8088/janus) for a side-by-side comparison.
    #[arg(long, value_enum, default_value = "callrelay")]
    target: TargetArg,
    /// Relay base URL (only targets you are allowed to load). Repeatable or comma-separated for
    /// the nodes of a cluster: participant i joins through URL i mod n, and joins again through
    /// the next ones when its call moves, its node drains or is lost. Janus: exactly one.
    #[arg(
        long = "url",
        value_delimiter = ',',
        num_args = 1,
        default_value = "http://127.0.0.1:7700"
    )]
    urls: Vec<String>,
    /// A user token for joins (and for creating links unless --admin-token is given).
    #[arg(long, env = "CALLRELAY_TOKEN", conflicts_with = "dev")]
    token: Option<String>,
    /// Dev-mode relay: fetch a token per participant from POST /v1/dev/token.
    #[arg(long)]
    dev: bool,
    /// A token used to create the links (e.g. `callrelay token --user ops --admin`).
    #[arg(long, env = "CALLRELAY_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Use this existing link instead of creating rooms (repeatable; one room per link).
    #[arg(long = "link", value_name = "ID")]
    links: Vec<String>,
    /// Rooms (links) to create.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishing participants per room.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Receive-only participants per room (they publish nothing).
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Publish audio only (voice links).
    #[arg(long)]
    audio_only: bool,
    /// Publishers per room that talk (0: all). The others' microphones are silent: their audio
    /// leaves as Chromium sends it when the relay asks for Opus DTX, ~5 small packets a second.
    #[arg(long, default_value_t = 0, value_name = "N")]
    talkers: usize,
    /// Simulcast video layers per publisher (1 = l, 2 = l+m, 3 = l+m+h).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    video_layers: u8,
    /// Bitrate of the l, m, h layers in kbit/s.
    #[arg(long, value_delimiter = ',', default_value = "150,500,2500")]
    layer_kbps: Vec<u32>,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Keyframe period.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    keyframe_interval: Duration,
    /// Pace each publisher's video at this multiple of its bitrate in 5 ms bursts, as a
    /// browser's pacer does (WebRTC's default is 2.5); 0 sends each frame, keyframes included,
    /// as one burst.
    #[arg(long, default_value_t = callrelay_loadgen::traffic::DEFAULT_PACE)]
    pace: f64,
    /// How long traffic flows once every join has started (at most 10m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Joins started per second.
    #[arg(long, default_value_t = 10.0)]
    join_rate: f64,
    /// The simulcast layer receivers ask for: l (what callrelay sends by default), m or h.
    #[arg(long, value_enum, default_value = "l")]
    subscribe_layer: LayerArg,
    /// Seed for payload sizes and send phases (same seed, same traffic).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Fail (exit 2) if the wire-to-wire p99 exceeds this, e.g. 5ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_p99: Option<Duration>,
    /// Fail (exit 2) if the loss ratio exceeds this, e.g. 0.001.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Where the relays' Prometheus metrics are (default: URL/metrics for every --url).
    /// Repeatable or comma-separated; several nodes' figures are summed in the report, and
    /// each node's is shown too.
    #[arg(long = "metrics-url", value_delimiter = ',', num_args = 1)]
    metrics_urls: Vec<String>,
    /// The relay's pid when it runs on this machine: its CPU is read from /proc (finer than
    /// process_cpu_seconds_total, which counts whole seconds). Repeatable, in --url order.
    #[arg(long = "relay-pid", value_delimiter = ',', num_args = 1)]
    relay_pids: Vec<u32>,
    /// How long a participant keeps trying to join again after its call moved, its node
    /// drained or was lost (round robin over --url, 200 ms doubling to 1 s between tries).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    rejoin_deadline: Duration,
    /// One more participant per room that floods its signaling (mutes, pings, garbage offers)
    /// as fast as it can and joins again each time the relay removes it. The others must not
    /// notice: loss and closed sessions count as usual (callrelay only).
    #[arg(long)]
    hostile: bool,
    /// The first publisher of each room also shares a screen: it claims the share, publishes a
    /// second video track and sends it at this many kbit/s (5 fps; 0: no screen). Receivers
    /// count it as stream `screen`, and the report checks every model of the call shows it.
    #[arg(long, default_value_t = 0, value_name = "KBPS")]
    screen_kbps: u32,
    /// Receivers hand one RTP packet in N per stream to str0m (SRTP decryption, bookkeeping)
    /// and measure its latency; they count every packet — loss, duplicates, reordering — from
    /// its clear-text RTP header, and negotiate neither NACK nor transport-cc. 1: every packet
    /// decrypted, loss from the payload header, NACK and TWCC negotiated. At most 1000.
    #[arg(long, default_value_t = DEFAULT_DECRYPT_SAMPLE, value_name = "N")]
    decrypt_sample: u32,
    /// Exit 3 when the run is invalid: the loadgen's CPU was saturated (90 % of the cores it
    /// may use over the traffic), or the relay refused connections at its per-address cap
    /// (`http.max_connections_per_ip`), so its figures are not the relay's.
    #[arg(long)]
    require_valid: bool,
    /// Do not read the relay's metrics.
    #[arg(long)]
    no_metrics: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Run nothing: print two JSON reports (`--json` files of the same scenario, e.g. callrelay
    /// and Janus) side by side with their ratios.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"])]
    compare: Option<Vec<std::path::PathBuf>>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LayerArg {
    L,
    M,
    H,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Callrelay,
    Janus,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(files) = &cli.compare {
        return compare(files);
    }
    let target = match cli.target {
        TargetArg::Callrelay => Target::Callrelay,
        TargetArg::Janus => Target::Janus,
    };
    let auth = match (&cli.token, cli.dev, &cli.admin_token) {
        _ if target == Target::Janus => Auth::Dev,
        (Some(t), _, _) => Auth::Token(t.clone()),
        (None, true, _) => Auth::Dev,
        (None, false, Some(t)) => Auth::Token(t.clone()),
        (None, false, None) => {
            eprintln!("callrelay-loadgen: give --token, --admin-token or --dev");
            return ExitCode::FAILURE;
        }
    };
    if cli.layer_kbps.len() != 3 {
        eprintln!("callrelay-loadgen: --layer-kbps takes three values (l,m,h)");
        return ExitCode::FAILURE;
    }
    let urls: Vec<String> = cli
        .urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    let metrics_urls = match (cli.no_metrics, &target) {
        (false, Target::Callrelay) if cli.metrics_urls.is_empty() => {
            urls.iter().map(|u| format!("{u}/metrics")).collect()
        }
        (false, Target::Callrelay) => cli.metrics_urls.clone(),
        _ => Vec::new(),
    };
    let opts = Options {
        metrics_urls,
        target,
        urls,
        auth,
        admin_token: cli.admin_token.clone(),
        links: cli.links.clone(),
        rooms: cli.rooms,
        publishers: cli.publishers,
        subscribers: cli.subscribers,
        traffic: TrafficConfig {
            audio: true,
            video_layers: if cli.audio_only {
                0
            } else {
                usize::from(cli.video_layers)
            },
            layer_kbps: [cli.layer_kbps[0], cli.layer_kbps[1], cli.layer_kbps[2]],
            fps: cli.fps,
            keyframe_interval: cli.keyframe_interval,
            screen_kbps: cli.screen_kbps,
            pace: cli.pace,
            talkers: cli.talkers,
            silent: false,
        },
        duration: cli.duration,
        join_rate: cli.join_rate,
        subscribe_layer: match cli.subscribe_layer {
            LayerArg::L => Stream::VideoL,
            LayerArg::M => Stream::VideoM,
            LayerArg::H => Stream::VideoH,
        },
        seed: cli.seed,
        progress: !cli.quiet,
        relay_pids: cli.relay_pids.clone(),
        rejoin_deadline: cli.rejoin_deadline,
        hostile: cli.hostile,
        decrypt_sample: cli.decrypt_sample,
    };
    if let Err(e) = opts.validate() {
        eprintln!("callrelay-loadgen: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("callrelay-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = match runtime.block_on(run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("callrelay-loadgen: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Sessions are closed; do not wait for lingering tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.thresholds = Thresholds {
        max_p99: cli.max_p99,
        max_loss: cli.max_loss,
    }
    .judge(&report);
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("callrelay-loadgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.participants.joined == 0 {
        eprintln!("callrelay-loadgen: no participant joined");
        return ExitCode::FAILURE;
    }
    // An invalid run's thresholds judged the loadgen: its verdict comes first.
    if cli.require_valid && !report.valid {
        eprintln!(
            "callrelay-loadgen: invalid run: {}",
            report.invalid.join("; ")
        );
        return ExitCode::from(3);
    }
    match &report.thresholds {
        Some(v) if !v.passed => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

/// `--compare A.json B.json`.
fn compare(files: &[std::path::PathBuf]) -> ExitCode {
    let mut reports = Vec::with_capacity(2);
    for f in files {
        let parsed = std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Report>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!(
                    "callrelay-loadgen: {}: not a loadgen report: {e}",
                    f.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", compare_reports(&reports[0], &reports[1]));
    ExitCode::SUCCESS
}
