//! One load test: links, paced joins, synthetic traffic, receiver accounting, relay metrics
//! before and after, and the report.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callrelay_client::{
    Client, ClientConfig, ClientError, ClientEvent, DecryptUntil, Member, MemberEvent,
    RejoinPolicy, RtpCounts, TrackKind, MAX_DECRYPT_SAMPLE,
};
use callrelay_proto::signal::{MuteState, Ping, SessionDescription};
use callrelay_proto::{client_message, server_message, ClientMessage};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::header::{self, Stream};
use crate::janus::{self, Janus};
use crate::prom::{self, Scrape};
use crate::report::{
    HostileReport, JoinReport, LatencyReport, LayerReport, LoadgenReport, LossReport, NodeReport,
    PacketReport, ParticipantReport, RejoinReport, RelayReport, Report, RunConfig, Span,
    SpanLatency, TrackReport,
};
use crate::stats::{
    latency_histogram, LayerClock, LayerWait, ReceiverStats, SsrcAttribution, StreamTotals,
};
use crate::traffic::{Schedule, TrafficConfig};

/// Longest `--duration` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most participants in one run.
pub const MAX_PARTICIPANTS: usize = 1_000;
/// Most participants per room (the relay's default `rooms.max_participants`).
pub const MAX_PER_ROOM: usize = 32;
/// How long one join (HTTP, signaling, ICE, DTLS) may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// After senders stop, receivers keep reading this long for packets in flight.
const DRAIN: Duration = Duration::from_secs(1);
/// How long leaving may take before sessions are dropped.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The steady window starts this long after the last join ended.
const STEADY_SETTLE: Duration = Duration::from_secs(1);
/// The default `--decrypt-sample`: one received RTP packet in this many per stream goes through
/// str0m (SRTP, bookkeeping) and gives a latency; the others are only counted from their RTP
/// header. See `loadtest/README.md` for what it costs and saves.
pub const DEFAULT_DECRYPT_SAMPLE: u32 = 16;

/// How the loadgen authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// One user token for every join (and link creation unless an admin token is given).
    Token(String),
    /// Dev mode: a token per participant from `POST /v1/dev/token` (users `loadgen-<n>`).
    Dev,
}

/// What the loadgen drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A callrelay relay (HTTP join + WebSocket signaling).
    Callrelay,
    /// A Janus VideoRoom through Janus's HTTP API at `url` (e.g. `http://127.0.0.1:8088/janus`),
    /// for the side-by-side comparison. Rooms are created (and destroyed) by the run.
    Janus,
}

impl Target {
    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Callrelay => "callrelay",
            Target::Janus => "janus",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// What `urls` are.
    pub target: Target,
    /// Relay base URLs, `http://127.0.0.1:7700`: the nodes of one cluster. Participant `i`
    /// joins through `urls[i % n]` and joins again through the next ones; links are created
    /// and dev tokens fetched through `urls[0]` (a participant's dev token through its own
    /// URL). Janus: exactly one, its API (`http://127.0.0.1:8088/janus`).
    pub urls: Vec<String>,
    /// Where to read the relays' metrics (empty: do not): every node's, summed in the report.
    pub metrics_urls: Vec<String>,
    /// Token source for joins.
    pub auth: Auth,
    /// Token for creating links (else the join token).
    pub admin_token: Option<String>,
    /// Existing link ids to use instead of creating `rooms` links.
    pub links: Vec<String>,
    /// Rooms to create (ignored when `links` is set).
    pub rooms: usize,
    /// Publishing participants per room.
    pub publishers: usize,
    /// Receive-only participants per room.
    pub subscribers: usize,
    /// What publishers send.
    pub traffic: TrafficConfig,
    /// How long traffic flows once every join has started.
    pub duration: Duration,
    /// Joins started per second.
    pub join_rate: f64,
    /// The simulcast layer every receiver asks for (callrelay: `video_preference` with a max
    /// height of 180 / 360 / 720 for `l` / `m` / `h`; Janus: substream 0 / 1 / 2).
    pub subscribe_layer: Stream,
    /// Seed for sizes and phases.
    pub seed: u64,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// The relays' process ids when they run on this machine: their CPU time is then read
    /// from `/proc` (10 ms resolution) instead of `process_cpu_seconds_total` (whole seconds).
    /// In `metrics_urls` order when there are as many (then per node too).
    pub relay_pids: Vec<u32>,
    /// How long a participant whose session ended for `moved`, `drain` or a lost node keeps
    /// trying to join again (round robin over `urls`, 200 ms doubling to 1 s between attempts).
    pub rejoin_deadline: Duration,
    /// One more participant per room that floods signaling as fast as it can and joins again
    /// whenever the relay removes it (callrelay only): the others must not notice.
    pub hostile: bool,
    /// Receivers decrypt one RTP packet in this many per stream and count the others from
    /// their RTP header (1: every packet through str0m, loss from the loadgen header, NACK
    /// and TWCC negotiated, as before sampling existed). See
    /// [`ClientConfig::decrypt_sample`]. At most [`MAX_DECRYPT_SAMPLE`].
    pub decrypt_sample: u32,
}

impl Options {
    /// Checks the bounds every run must respect.
    pub fn validate(&self) -> Result<(), String> {
        let rooms = self.room_count();
        let per_room = self.publishers + self.subscribers;
        if rooms == 0 || per_room == 0 {
            return Err("need at least one room and one participant per room".into());
        }
        if per_room > MAX_PER_ROOM {
            return Err(format!("at most {MAX_PER_ROOM} participants per room"));
        }
        if rooms * per_room > MAX_PARTICIPANTS {
            return Err(format!("at most {MAX_PARTICIPANTS} participants in a run"));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(format!(
                "--duration must be between 1s and {}",
                humantime::format_duration(MAX_DURATION)
            ));
        }
        if !(self.join_rate > 0.0 && self.join_rate.is_finite()) {
            return Err("--join-rate must be positive".into());
        }
        let join_phase = (rooms * per_room) as f64 / self.join_rate;
        if join_phase > MAX_DURATION.as_secs_f64() {
            return Err(format!(
                "joining {} participants at {}/s takes longer than {}",
                rooms * per_room,
                self.join_rate,
                humantime::format_duration(MAX_DURATION)
            ));
        }
        if !self.traffic.audio && self.traffic.video_layers == 0 && self.publishers > 0 {
            return Err("publishers need audio or video".into());
        }
        if self.traffic.video_layers > 3 {
            return Err("--video-layers is 0 to 3".into());
        }
        if self.traffic.talkers > self.publishers {
            return Err(format!(
                "--talkers {} is more than the {} publishers per room",
                self.traffic.talkers, self.publishers
            ));
        }
        let layer = match self.subscribe_layer {
            Stream::VideoL => 1,
            Stream::VideoM => 2,
            Stream::VideoH => 3,
            Stream::Audio | Stream::Screen => return Err("--subscribe-layer is l, m or h".into()),
        };
        if self.traffic.video_layers > 0 && layer > self.traffic.video_layers {
            return Err(format!(
                "--subscribe-layer asks for a layer publishers do not send (--video-layers {})",
                self.traffic.video_layers
            ));
        }
        if self.urls.is_empty() {
            return Err("give at least one --url".into());
        }
        if self.target == Target::Janus && self.urls.len() != 1 {
            return Err("--target janus takes exactly one --url".into());
        }
        if self.rejoin_deadline.is_zero() || self.rejoin_deadline > MAX_DURATION {
            return Err(format!(
                "--rejoin-deadline must be between 1s and {}",
                humantime::format_duration(MAX_DURATION)
            ));
        }
        if !(1..=MAX_DECRYPT_SAMPLE).contains(&self.decrypt_sample) {
            // str0m infers the SRTP rollover counter from the sequence numbers it decrypts:
            // samples must stay well under 2^15 apart (see MAX_DECRYPT_SAMPLE).
            return Err(format!(
                "--decrypt-sample must be between 1 and {MAX_DECRYPT_SAMPLE}"
            ));
        }
        if self.traffic.screen_kbps > 0 {
            if self.target == Target::Janus {
                return Err("--screen-kbps applies to callrelay only".into());
            }
            if self.publishers == 0 || self.traffic.video_layers == 0 {
                return Err("--screen-kbps needs publishers with video".into());
            }
        }
        if self.target == Target::Janus && !self.links.is_empty() {
            return Err(
                "--link applies to callrelay only (Janus rooms are created by the run)".into(),
            );
        }
        Ok(())
    }

    fn room_count(&self) -> usize {
        if self.links.is_empty() {
            self.rooms
        } else {
            self.links.len()
        }
    }
}

/// The loadgen's clock: nanoseconds since the run started, the same for every participant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    /// `t` in nanoseconds since the epoch (0 before it).
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The instant `ns` after the epoch.
    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Counters shared by every participant task and the progress line.
#[derive(Default)]
struct Live {
    joined: AtomicU64,
    failed: AtomicU64,
    rejoins: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    rooms_up: Vec<AtomicU64>,
    /// Per participant index: when its current session was connected (ICE + DTLS), ns on the
    /// loadgen clock; 0 until then.
    connected_ns: Vec<AtomicU64>,
    interval: Mutex<Option<Histogram<u64>>>,
    /// Set while the steady window runs: latencies handed over then also go to `steady`.
    steady_on: AtomicBool,
    steady: Mutex<Option<Histogram<u64>>>,
}

impl Live {
    /// Moves a participant's latencies (ns) of the last quarter second into the progress
    /// line's histogram. A list, not a histogram per participant: resetting or adding a 1 ns
    /// to 60 s histogram walks its 220 KB of counters, four times a second per participant.
    fn merge_interval(&self, latencies: &mut Vec<u64>) {
        if latencies.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.interval.lock() {
            let h = shared.get_or_insert_with(latency_histogram);
            for ns in latencies.iter() {
                h.saturating_record(*ns);
            }
        }
        if self.steady_on.load(Ordering::Relaxed) {
            if let Ok(mut shared) = self.steady.lock() {
                let h = shared.get_or_insert_with(latency_histogram);
                for ns in latencies.iter() {
                    h.saturating_record(*ns);
                }
            }
        }
        latencies.clear();
    }

    /// Participant `index` is connected as of `ns`.
    fn connected(&self, index: u32, ns: u64) {
        if let Some(c) = self.connected_ns.get(index as usize) {
            c.store(ns.max(1), Ordering::Relaxed);
        }
    }

    /// When participant `index` was connected, if it is.
    fn connected_at(&self, index: u32) -> Option<u64> {
        let ns = self
            .connected_ns
            .get(index as usize)?
            .load(Ordering::Relaxed);
        (ns > 0).then_some(ns)
    }

    fn take_interval_p99_ms(&self) -> Option<f64> {
        let h = self.interval.lock().ok()?.take()?;
        Some(h.value_at_quantile(0.99) as f64 / 1e6)
    }
}

/// What one participant task brings back.
struct Outcome {
    /// Its room and whether it publishes.
    room: usize,
    publish: bool,
    error: Option<String>,
    joined: bool,
    /// HTTP join start → first media packet, ms.
    join_to_media_ms: Option<f64>,
    /// HTTP join start → ICE/DTLS connected, ms.
    join_to_connected_ms: Option<f64>,
    stats: ReceiverStats,
    /// Its video subscriptions, waiting for the requested layer or not.
    layers: Vec<LayerWait>,
    sent: u64,
    keyframe_requests: u64,
    dropped_events: u64,
    /// Successful rejoins by reason, and how long each took (ms).
    rejoins: BTreeMap<String, u64>,
    rejoin_ms: Vec<f64>,
    /// A rejoin that did not succeed (the participant's last event).
    rejoin_failed: bool,
    /// The relay ended the session for good, with this reason (`none`: it gave none).
    closed_by_relay: Option<String>,
    /// It shares a screen (the room's first publisher with `screen_kbps`); `Err` when the
    /// relay refused or the offer failed.
    screen: Option<Result<(), String>>,
    /// Others' tracks in its model of the call when sending stopped, by source.
    tracks_seen: BTreeMap<&'static str, u64>,
}

struct Participant {
    index: u32,
    room: usize,
    link: String,
    token: String,
    publish: bool,
    /// Its microphone is silent (`TrafficConfig::talkers`): audio at the DTX rate.
    silent: bool,
    /// Shares a screen once connected (callrelay only).
    screen: bool,
}

/// Runs one load test and returns its report. Bounded: joins are paced and time out, traffic
/// stops after `duration`, and every session is closed before returning.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    opts.validate().map_err(anyhow::Error::msg)?;
    let clock = Clock::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let urls: Vec<String> = opts
        .urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    let base = urls[0].clone();

    // Every node must answer before the run; after it, a node that is gone is left out.
    let mut before = Vec::with_capacity(opts.metrics_urls.len());
    for u in &opts.metrics_urls {
        before.push(scrape(&http, u).await?);
    }
    let cpu_before = cpu_seconds("self");
    let relay_cpu_before: Vec<Option<f64>> = opts
        .relay_pids
        .iter()
        .map(|p| cpu_seconds(&p.to_string()))
        .collect();

    // Tokens and links (Janus: rooms).
    let rooms = opts.room_count();
    let per_room = opts.publishers + opts.subscribers;
    let janus = match opts.target {
        Target::Janus => Some(Janus::new(&base)?),
        Target::Callrelay => None,
    };
    let owner_token = match (&janus, &opts.admin_token, &opts.auth) {
        (Some(_), _, _) => String::new(),
        (None, Some(t), _) => t.clone(),
        (None, None, Auth::Token(t)) => t.clone(),
        (None, None, Auth::Dev) => dev_token(&http, &base, "loadgen-owner").await?,
    };
    let links = if let Some(j) = &janus {
        // Room numbers from the seed and the clock, so runs against one Janus do not collide.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let first = 1_000_000 + (now ^ opts.seed) % 1_000_000_000;
        let mut v = Vec::with_capacity(rooms);
        for i in 0..rooms as u64 {
            if let Err(e) = j.create_room(first + i, opts.publishers).await {
                // Leave nothing behind in a Janus that outlives this run.
                for room in first..first + i {
                    let _ = j.destroy_room(room).await;
                }
                return Err(e);
            }
            v.push((first + i).to_string());
        }
        v
    } else if opts.links.is_empty() {
        let kind = if opts.traffic.video_layers == 0 {
            "voice"
        } else {
            "video"
        };
        let mut v = Vec::with_capacity(rooms);
        for _ in 0..rooms {
            v.push(create_link(&http, &base, &owner_token, kind).await?);
        }
        v
    } else {
        opts.links.clone()
    };
    let mut participants = Vec::with_capacity(rooms * per_room);
    // Round-robin over rooms so every room fills at the same pace; publishers first.
    for slot in 0..per_room {
        for (room, link) in links.iter().enumerate() {
            let index = participants.len() as u32;
            let token = match (&janus, &opts.auth) {
                (Some(_), _) => String::new(),
                (None, Auth::Token(t)) => t.clone(),
                (None, Auth::Dev) => {
                    let via = &urls[index as usize % urls.len()];
                    dev_token(&http, via, &format!("loadgen-{index}")).await?
                }
            };
            participants.push(Participant {
                index,
                room,
                link: link.clone(),
                token,
                publish: slot < opts.publishers,
                silent: opts.traffic.talkers > 0 && slot >= opts.traffic.talkers,
                screen: slot == 0 && opts.traffic.screen_kbps > 0 && janus.is_none(),
            });
        }
    }

    let live = Arc::new(Live {
        rooms_up: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        connected_ns: (0..participants.len()).map(|_| AtomicU64::new(0)).collect(),
        ..Live::default()
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_line(
            live.clone(),
            clock,
            rooms,
            participants.len(),
        ))
    });

    // Paced joins. The loadgen's own CPU is also read over the traffic (joins included), for
    // the saturation check: a busy loadgen delays what it measures.
    let started = Instant::now();
    let cpu_traffic_start = cpu_seconds("self");
    let peak = Arc::new(Mutex::new(None));
    let peak_task = tokio::spawn(track_peak_cpu(peak.clone()));
    let gap = Duration::from_secs_f64(1.0 / opts.join_rate);
    let mut tasks = Vec::with_capacity(participants.len());
    for (i, p) in participants.into_iter().enumerate() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + gap * i as u32)).await;
        tasks.push(tokio::spawn(participant(
            p,
            urls.clone(),
            opts.rejoin_deadline,
            opts.traffic.clone(),
            opts.seed,
            clock,
            live.clone(),
            phase_rx.clone(),
            links.clone(),
            janus.clone(),
            opts.subscribe_layer,
            opts.decrypt_sample,
        )));
    }
    let hostile_counters = Arc::new(HostileCounters::default());
    let mut hostile_tasks = Vec::new();
    if opts.hostile && janus.is_none() {
        for (room, link) in links.iter().enumerate() {
            let token = match &opts.auth {
                Auth::Token(t) => t.clone(),
                Auth::Dev => dev_token(&http, &base, &format!("loadgen-hostile-{room}")).await?,
            };
            hostile_tasks.push(tokio::spawn(hostile(
                link.clone(),
                urls.clone(),
                token,
                room,
                phase_rx.clone(),
                hostile_counters.clone(),
            )));
        }
    }
    // The steady window: from STEADY_SETTLE after every join ended (joined or failed) to the
    // stop of sending. No handshakes in it: the CPU per packet there is the cost of packets.
    let traffic_end = tokio::time::Instant::now() + opts.duration;
    let total = tasks.len() as u64;
    let steady_start = tokio::time::timeout_at(traffic_end, async {
        while live.joined.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(STEADY_SETTLE).await;
        live.steady_on.store(true, Ordering::Relaxed);
        Mark::take(&http, &opts, &live).await
    })
    .await
    .ok();
    tokio::time::sleep_until(traffic_end).await;
    live.steady_on.store(false, Ordering::Relaxed);
    let steady = match steady_start {
        Some(a) => {
            let mut span = Mark::take(&http, &opts, &live).await.since(&a);
            let wire = live.steady.lock().ok().and_then(|mut h| h.take());
            span.wire_latency_ms = wire.filter(|h| !h.is_empty()).map(|h| {
                let ms = |q: f64| Some(h.value_at_quantile(q) as f64 / 1e6);
                SpanLatency {
                    count: h.len(),
                    p50: ms(0.5),
                    p90: ms(0.9),
                    p99: ms(0.99),
                    p999: ms(0.999),
                }
            });
            Some(span)
        }
        None => None,
    };
    let _ = phase_tx.send(Phase::Draining);
    for t in hostile_tasks {
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, t).await;
    }
    // Traffic flows from the first join to the stop (the join phase included).
    let traffic_secs = started.elapsed().as_secs_f64();
    let cpu_traffic = cpu_seconds("self")
        .zip(cpu_traffic_start)
        .map(|(a, b)| a - b);
    peak_task.abort();
    let cpu_peak = peak.lock().ok().and_then(|p| *p);
    tokio::time::sleep(DRAIN).await;

    let mut after = Vec::with_capacity(opts.metrics_urls.len());
    for u in &opts.metrics_urls {
        after.push(scrape(&http, u).await);
    }
    let _ = phase_tx.send(Phase::Leaving);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        match tokio::time::timeout(JOIN_TIMEOUT + LEAVE_TIMEOUT, t).await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => outcomes.push(Outcome::failed(format!("task: {e}"))),
            Err(_) => outcomes.push(Outcome::failed("did not stop in time".into())),
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let cpu_after = cpu_seconds("self");
    let relay_cpu_after: Vec<Option<f64>> = opts
        .relay_pids
        .iter()
        .map(|p| cpu_seconds(&p.to_string()))
        .collect();
    if let Some(j) = &janus {
        for room in &links {
            if let Ok(room) = room.parse() {
                let _ = j.destroy_room(room).await;
            }
        }
    }

    let run_config = RunConfig {
        target: opts.target.name().into(),
        rooms,
        publishers: opts.publishers,
        subscribers: opts.subscribers,
        audio: opts.traffic.audio,
        video_layers: opts.traffic.video_layers,
        duration_s: opts.duration.as_secs_f64(),
        join_rate: opts.join_rate,
        seed: opts.seed,
        keyframe_interval_s: opts.traffic.keyframe_interval.as_secs_f64(),
        subscribe_layer: opts.subscribe_layer.rid().unwrap_or("l").to_owned(),
        decrypt_sample: opts.decrypt_sample,
        screen_kbps: opts.traffic.screen_kbps,
        pace: opts.traffic.pace,
        talkers: opts.traffic.talkers,
    };
    // CPU from /proc: per pid, and their sum when every pid was read both times.
    let pid_cpu: Vec<Option<f64>> = relay_cpu_before
        .iter()
        .zip(&relay_cpu_after)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    let pid_cpu_total: Option<f64> = if pid_cpu.is_empty() {
        None
    } else {
        pid_cpu.iter().copied().sum()
    };
    let (relay, relay_nodes) = if opts.metrics_urls.is_empty() {
        // No metrics (Janus, or --no-metrics): the CPU time alone, when the pids are known.
        (pid_cpu_total.map(RelayReport::cpu_only), Vec::new())
    } else {
        let per_node_cpu = pid_cpu.len() == opts.metrics_urls.len();
        let mut nodes = Vec::with_capacity(opts.metrics_urls.len());
        let mut counted = (Vec::new(), Vec::new());
        // /proc CPU of the nodes counted, when each has its pid read both times.
        let mut counted_cpu = Some(0.0);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let (relay, error) = match a {
                Ok(a) => {
                    counted.0.push(b);
                    counted.1.push(a);
                    let mut r = relay_report(b, a);
                    let cpu = pid_cpu.get(i).copied().flatten().filter(|_| per_node_cpu);
                    if let Some(c) = cpu {
                        r.set_cpu_seconds(c, "/proc");
                    }
                    counted_cpu = counted_cpu.zip(cpu).map(|(t, c)| t + c);
                    (Some(r), None)
                }
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            nodes.push(NodeReport {
                metrics_url: opts.metrics_urls[i].clone(),
                relay,
                error,
            });
        }
        let mut sum = relay_report(
            &Scrape::merge(counted.0.iter().copied()),
            &Scrape::merge(counted.1.iter().copied()),
        );
        // /proc CPU only if it covers exactly the nodes counted: per node (pids in node
        // order), or every pid when every node was counted.
        let all_counted = counted.1.len() == opts.metrics_urls.len();
        match (per_node_cpu, counted_cpu, pid_cpu_total) {
            (true, Some(c), _) => sum.set_cpu_seconds(c, "/proc"),
            (false, _, Some(c)) if all_counted => sum.set_cpu_seconds(c, "/proc"),
            _ => {}
        }
        // One node: its figures are the sum, and no figures is an error, as it always was.
        if nodes.len() == 1 {
            if let Some(e) = nodes.pop().and_then(|n| n.error) {
                anyhow::bail!("after the run: {e}");
            }
        }
        (Some(sum), nodes)
    };
    let loadgen_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let mut report = build_report(run_config, outcomes, traffic_secs, relay, loadgen_cpu);
    report.relay_nodes = relay_nodes;
    report.loadgen = LoadgenReport::new(
        &report,
        allowed_cores(),
        steady,
        cpu_traffic.map(|c| (c, traffic_secs)),
        cpu_peak,
    );
    report.judge_validity();
    if opts.hostile && janus.is_none() {
        report.hostile = Some(hostile_counters.report());
    }
    Ok(report)
}

/// What the hostile participants did and what the relay did to them.
#[derive(Debug, Default)]
struct HostileCounters {
    joins: AtomicU64,
    join_failures: AtomicU64,
    sent: AtomicU64,
    refused: AtomicU64,
    removed: Mutex<BTreeMap<String, u64>>,
}

impl HostileCounters {
    fn report(&self) -> HostileReport {
        HostileReport {
            joins: self.joins.load(Ordering::Relaxed),
            join_failures: self.join_failures.load(Ordering::Relaxed),
            messages_sent: self.sent.load(Ordering::Relaxed),
            messages_refused: self.refused.load(Ordering::Relaxed),
            removed: self.removed.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }
}

/// Mutes sent per 10 ms tick by a hostile participant (500 a second), with a ping, and a
/// garbage renegotiation offer every 20 ticks.
const HOSTILE_MUTES_PER_TICK: u64 = 5;

/// A hostile participant of one room: joins, floods its signaling (mutes, pings, garbage
/// offers) until the relay removes it, waits a second, joins again; until the run drains.
async fn hostile(
    link: String,
    urls: Vec<String>,
    token: String,
    room: usize,
    mut phase: watch::Receiver<Phase>,
    counters: Arc<HostileCounters>,
) {
    let config = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let mut attempt = room;
    while *phase.borrow() == Phase::Running {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let joined = tokio::select! {
            c = Client::join(url, &token, &link, config.clone()) => c,
            _ = phase.changed() => break,
        };
        let mut client = match joined {
            Ok(c) => c,
            Err(_) => {
                counters.join_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        counters.joins.fetch_add(1, Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut ticks: u64 = 0;
        let reason = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if *phase.borrow() != Phase::Running {
                        let _ = client.leave();
                        return;
                    }
                    ticks += 1;
                    let mut msgs: Vec<ClientMessage> = (0..HOSTILE_MUTES_PER_TICK)
                        .map(|i| ClientMessage::from(client_message::Msg::Mute(MuteState {
                            audio_muted: (ticks + i).is_multiple_of(2),
                            video_muted: false,
                        })))
                        .collect();
                    msgs.push(ClientMessage::from(client_message::Msg::Ping(Ping { nonce: ticks })));
                    if ticks.is_multiple_of(20) {
                        msgs.push(ClientMessage::from(client_message::Msg::Offer(SessionDescription {
                            sdp: "v=0\r\nthis is not an offer\r\n".into(),
                        })));
                    }
                    for m in msgs {
                        if client.send_signal(m).is_err() {
                            break;
                        }
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                e = client.next_event() => match e {
                    Some(ClientEvent::Signal(m)) => {
                        if let Some(server_message::Msg::Error(e)) = m.msg {
                            if e.code == "rate_limited" {
                                counters.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Some(ClientEvent::Closed { reason }) => break reason.unwrap_or_else(|| "none".into()),
                    None => break "none".into(),
                    Some(_) => {}
                },
            }
        };
        if let Ok(mut m) = counters.removed.lock() {
            *m.entry(reason).or_default() += 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = phase.changed() => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Leaving,
}

impl Outcome {
    /// It shares a screen: its claim and screen track went through.
    fn sharing(&self) -> bool {
        self.joined && matches!(self.screen, Some(Ok(())))
    }

    fn failed(error: String) -> Outcome {
        Outcome {
            room: usize::MAX,
            publish: false,
            error: Some(error),
            joined: false,
            join_to_media_ms: None,
            join_to_connected_ms: None,
            stats: ReceiverStats::default(),
            layers: Vec::new(),
            sent: 0,
            keyframe_requests: 0,
            dropped_events: 0,
            rejoins: BTreeMap::new(),
            rejoin_ms: Vec::new(),
            rejoin_failed: false,
            closed_by_relay: None,
            screen: None,
            tracks_seen: BTreeMap::new(),
        }
    }
}

/// Replaces every link id in `s` (errors may echo a request path) so none is ever printed.
fn redact(s: &str, links: &[String]) -> String {
    let mut out = s.to_owned();
    for l in links {
        out = out.replace(l.as_str(), "<link>");
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn participant(
    p: Participant,
    urls: Vec<String>,
    rejoin_deadline: Duration,
    traffic: TrafficConfig,
    seed: u64,
    clock: Clock,
    live: Arc<Live>,
    mut phase: watch::Receiver<Phase>,
    links: Vec<String>,
    janus: Option<Janus>,
    subscribe_layer: Stream,
    decrypt_sample: u32,
) -> Outcome {
    let layers = if p.publish { traffic.layers() } else { &[] };
    // One handle for the RTP counts of every session of this participant (rejoins, Janus's
    // two connections).
    let counts = RtpCounts::new();
    let config = ClientConfig {
        // A subscriber publishes nothing: its join offers one receive-only line (as Janus's
        // subscribers, which only subscribe), not a send-only audio line that never sends,
        // which the relay would publish as a track and subscribe everyone else to.
        audio: p.publish && traffic.audio,
        video: !layers.is_empty(),
        simulcast: layers.len() > 1,
        decrypt_sample,
        rtp_counts: Some(counts.clone()),
        // Sampled mode: every video packet of a subscription is decrypted until the layer
        // asked for arrives, so that its time is exact to the packet (`LayerClock`).
        decrypt_video_until: Some(DecryptUntil::new(move |payload: &[u8]| {
            header::find(payload, true)
                .is_some_and(|h| h.stream == subscribe_layer || h.stream == Stream::Screen)
        })),
        ..ClientConfig::default()
    };
    let simulcast = config.simulcast;
    let t0 = clock.now_ns();
    let joined = tokio::time::timeout(JOIN_TIMEOUT, async {
        match janus {
            None => {
                let policy = RejoinPolicy {
                    deadline: rejoin_deadline,
                    ..RejoinPolicy::default()
                };
                let mut m =
                    Member::join_from(&urls, p.index as usize, &p.token, &p.link, config, policy)
                        .await?;
                let early = m.wait_connected(JOIN_TIMEOUT).await?;
                Ok::<_, anyhow::Error>((Peer::Relay(Box::new(m)), early))
            }
            Some(j) => {
                let room = p.link.parse().map_err(|_| anyhow::anyhow!("bad room"))?;
                let receive = config.clone();
                let publish = p.publish.then_some(config);
                let (peer, early) = janus::Peer::join(
                    j,
                    room,
                    format!("loadgen-{}", p.index),
                    publish,
                    receive,
                    substream(subscribe_layer),
                    JOIN_TIMEOUT,
                )
                .await?;
                let early = early.into_iter().map(MemberEvent::Client).collect();
                Ok((Peer::Janus(Box::new(peer)), early))
            }
        }
    })
    .await;
    let (mut client, early) = match joined {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return Outcome::failed(redact(&format!("{e:#}"), &links));
        }
        Err(_) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return Outcome::failed("join timed out".into());
        }
    };
    let mut out = Outcome::failed(String::new());
    out.error = None;
    out.room = p.room;
    out.publish = p.publish;
    out.joined = true;
    let connected_ns = clock.now_ns();
    out.join_to_connected_ms = Some((connected_ns - t0) as f64 / 1e6);
    live.connected(p.index, connected_ns);
    live.joined.fetch_add(1, Ordering::Relaxed);
    live.rooms_up[p.room].fetch_add(1, Ordering::Relaxed);

    // The room's screen sharer claims the share and adds its screen track, as the web page's
    // "Share screen" does.
    if p.screen {
        let shared = match &client {
            Peer::Relay(m) => match m.client() {
                Some(c) => c.share_screen().await.map_err(|e| e.to_string()),
                None => Err("not in the call".to_owned()),
            },
            Peer::Janus(_) => Err("callrelay only".to_owned()),
        };
        out.screen = Some(shared);
    }
    let screen_kbps = if matches!(out.screen, Some(Ok(()))) {
        traffic.screen_kbps
    } else {
        0
    };
    let mut schedule = (p.publish && (traffic.audio || !layers.is_empty())).then(|| {
        Schedule::new(
            TrafficConfig {
                audio: traffic.audio,
                screen_kbps,
                silent: p.silent,
                ..traffic.clone()
            },
            p.index,
            seed,
            clock.now_ns(),
        )
    });
    let mut rx = Rx {
        clock,
        t0,
        interval: Vec::new(),
        received: 0,
        // callrelay sends `l` unless asked otherwise.
        prefer: (subscribe_layer != Stream::VideoL).then(|| max_height(subscribe_layer)),
        asked: HashSet::new(),
        to_ask: Vec::new(),
        sampled: (decrypt_sample > 1).then(|| Sampled {
            counts,
            attribution: SsrcAttribution::default(),
        }),
        index: p.index,
        live: live.clone(),
        connected_ns,
        rejoined: false,
        layer: LayerClock::new(subscribe_layer),
    };
    let mut last_flush = clock.now_ns();
    let mut due = Vec::new();
    let mut sent_flushed = 0u64;
    let mut rejoins_flushed = 0u64;
    for e in early {
        rx.handle(e, &mut out, &mut schedule);
    }
    rx.ask(&client);

    let mut closed = false;
    let mut model_read = false;
    loop {
        let current = *phase.borrow();
        if current != Phase::Running && !model_read {
            // Sending stopped and nobody has left yet: what this participant's model of the
            // call holds now is what the report checks.
            out.tracks_seen = client.tracks_seen();
            model_read = true;
        }
        if current == Phase::Leaving {
            break;
        }
        let sending = current == Phase::Running && schedule.is_some();
        let next = schedule
            .as_ref()
            .filter(|_| sending)
            .map_or(u64::MAX, Schedule::next_due_ns);
        let wake =
            tokio::time::Instant::from_std(clock.instant(next.min(clock.now_ns() + 500_000_000)));
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            ev = client.next_event() => {
                let Some(e) = ev else {
                    closed = true;
                    break;
                };
                closed = rx.handle(e, &mut out, &mut schedule);
                // Read what else is queued in one go.
                let mut n = 0;
                while n < 256 && !closed {
                    let Some(e) = client.try_next_event() else { break };
                    closed = rx.handle(e, &mut out, &mut schedule);
                    n += 1;
                }
                rx.ask(&client);
                if closed {
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if sending {
                    let now = clock.now_ns();
                    if let Some(s) = schedule.as_mut() {
                        s.poll(now, &mut due);
                    }
                    for pkt in due.drain(..) {
                        let payload = pkt.payload(clock.now_ns());
                        let rid = if simulcast { pkt.stream.rid() } else { None };
                        let r = match pkt.stream {
                            Stream::Audio => client.send_audio(payload),
                            Stream::Screen => client.send_screen(payload),
                            _ => client.send_video(rid, payload),
                        };
                        if r.is_ok() {
                            out.sent += 1;
                        }
                    }
                }
            }
        }
        let now = clock.now_ns();
        if now.saturating_sub(last_flush) > 250_000_000 {
            rx.absorb_counts(&mut out);
            live.merge_interval(&mut rx.interval);
            live.sent
                .fetch_add(out.sent - sent_flushed, Ordering::Relaxed);
            sent_flushed = out.sent;
            live.received
                .fetch_add(std::mem::take(&mut rx.received), Ordering::Relaxed);
            let rejoins = out.rejoin_ms.len() as u64;
            live.rejoins
                .fetch_add(rejoins - rejoins_flushed, Ordering::Relaxed);
            rejoins_flushed = rejoins;
            last_flush = now;
        }
    }
    live.merge_interval(&mut rx.interval);
    live.sent
        .fetch_add(out.sent - sent_flushed, Ordering::Relaxed);
    live.rejoins.fetch_add(
        out.rejoin_ms.len() as u64 - rejoins_flushed,
        Ordering::Relaxed,
    );
    out.dropped_events = client.dropped_events();
    if closed {
        if out.error.is_none() {
            out.error = Some("session ended during the run".into());
        }
        out.error = out.error.as_deref().map(|e| redact(e, &links));
    } else {
        client.leave().await;
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, async {
            while client.next_event().await.is_some() {}
        })
        .await;
    }
    // Sampled mode: the sessions have ended and published their last counts.
    rx.absorb_counts(&mut out);
    if let Some(s) = &rx.sampled {
        let counts = s.counts.snapshot();
        out.stats.foreign += s.attribution.unattributed(&counts);
        rx.layer.first_arrivals(&counts, |t| clock.ns(t));
    }
    out.layers = rx.layer.waits().copied().collect();
    live.received.fetch_add(rx.received, Ordering::Relaxed);
    live.rooms_up[p.room].fetch_sub(1, Ordering::Relaxed);
    out
}

/// A participant's connection(s): one callrelay session, or a Janus session with its publisher
/// and subscriber peer connections.
enum Peer {
    /// A callrelay participant that joins again by itself (moved, drain, lost node).
    Relay(Box<Member>),
    Janus(Box<janus::Peer>),
}

impl Peer {
    async fn next_event(&mut self) -> Option<MemberEvent> {
        match self {
            Peer::Relay(c) => c.next_event().await,
            Peer::Janus(j) => j.next_event().await.map(MemberEvent::Client),
        }
    }

    fn try_next_event(&mut self) -> Option<MemberEvent> {
        match self {
            Peer::Relay(c) => c.try_next_event(),
            Peer::Janus(j) => j.try_next_event().map(MemberEvent::Client),
        }
    }

    fn send_audio(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        match self {
            Peer::Relay(c) => c.send_audio(payload),
            Peer::Janus(j) => j.send_audio(payload),
        }
    }

    fn send_video(&self, rid: Option<&str>, payload: Vec<u8>) -> Result<(), ClientError> {
        match self {
            Peer::Relay(c) => c.send_video(rid, payload),
            Peer::Janus(j) => j.send_video(rid, payload),
        }
    }

    /// callrelay only (Janus publishers share no screen here).
    fn send_screen(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        match self {
            Peer::Relay(c) => c.client().ok_or(ClientError::Closed)?.send_screen(payload),
            Peer::Janus(_) => Err(ClientError::NoTrack("screen")),
        }
    }

    /// The others' tracks in the current session's model of the call, by source (callrelay
    /// only: Janus announces none).
    fn tracks_seen(&self) -> BTreeMap<&'static str, u64> {
        let mut seen = BTreeMap::new();
        if let Peer::Relay(m) = self {
            for t in m.client().map(|c| c.remote_tracks()).unwrap_or_default() {
                *seen.entry(t.source.as_str()).or_insert(0) += 1;
            }
        }
        seen
    }

    /// callrelay only: Janus subscriptions pick their substream when made.
    fn set_video_preference(&self, publisher: &str, max_height: u32) {
        if let Peer::Relay(c) = self {
            let _ = c.set_video_preference(publisher, max_height);
        }
    }

    fn dropped_events(&self) -> u64 {
        match self {
            Peer::Relay(c) => c.dropped_events(),
            Peer::Janus(j) => j.dropped_events(),
        }
    }

    async fn leave(&mut self) {
        match self {
            Peer::Relay(c) => {
                let _ = c.leave();
            }
            Peer::Janus(j) => j.leave().await,
        }
    }
}

/// The receiving half of a participant task.
struct Rx {
    clock: Clock,
    t0: u64,
    /// Latencies since the last merge into the progress line's histogram.
    interval: Vec<u64>,
    /// Packets since the last merge into the live counter.
    received: u64,
    /// Max height to ask each publisher's video at (`None`: the relay's default, `l`).
    prefer: Option<u32>,
    /// Publishers asked already, and those to ask.
    asked: HashSet<String>,
    to_ask: Vec<String>,
    /// Sampled mode (`--decrypt-sample` above 1).
    sampled: Option<Sampled>,
    /// This participant's index, and the run's shared counters (connection times).
    index: u32,
    live: Arc<Live>,
    /// When the current session was connected, ns.
    connected_ns: u64,
    /// A rejoin happened: the next `Connected` is the new session's.
    rejoined: bool,
    /// Time to the requested layer per video subscription.
    layer: LayerClock,
}

/// A sampled receiver's RTP counts and what they carry.
struct Sampled {
    counts: RtpCounts,
    attribution: SsrcAttribution,
}

impl Rx {
    /// Accounts for one event; true if it is the participant's last (its call is over).
    fn handle(
        &mut self,
        e: MemberEvent,
        out: &mut Outcome,
        schedule: &mut Option<Schedule>,
    ) -> bool {
        let e = match e {
            MemberEvent::Client(e) => e,
            MemberEvent::Rejoined { reason, took, .. } => {
                *out.rejoins.entry(reason).or_default() += 1;
                out.rejoin_ms.push(took.as_secs_f64() * 1e3);
                // A new session: video preferences are asked again.
                self.asked.clear();
                self.rejoined = true;
                return false;
            }
            MemberEvent::RejoinFailed {
                reason,
                error,
                attempts,
            } => {
                out.rejoin_failed = true;
                out.error = Some(format!(
                    "could not join again after {reason} ({attempts} attempts): {error}"
                ));
                return true;
            }
        };
        match e {
            ClientEvent::Media(m) => {
                let video = m.kind == TrackKind::Video;
                // Ask once per publisher, on its first video packet (the subscription exists).
                if let (true, Some(_), Some(from)) = (video, self.prefer, m.from.as_ref()) {
                    if !self.asked.contains(from) {
                        self.asked.insert(from.clone());
                        self.to_ask.push(from.clone());
                    }
                }
                let h = header::find(&m.payload, video);
                let arrival = self.clock.ns(m.arrival);
                if let (true, Some(h)) = (video, h.as_ref()) {
                    let (live, own) = (&self.live, self.connected_ns);
                    self.layer
                        .record(m.session, m.ssrc, m.seq, h, arrival, |sender| {
                            live.connected_at(sender).map(|theirs| theirs.max(own))
                        });
                }
                let latency = match (h, self.sampled.as_mut()) {
                    // Sampled: this packet is counted from its RTP header already; it gives
                    // a latency and tells what its SSRC carries.
                    (Some(h), Some(s)) => {
                        s.attribution.learn(m.session, m.ssrc, &h);
                        out.stats.record_latency(&h, arrival)
                    }
                    (Some(h), None) => {
                        self.received += 1;
                        out.stats.record(&h, m.payload.len(), arrival)
                    }
                    // Sampled, its SSRC's counts say it if none of its packets had a header.
                    (None, Some(_)) => return false,
                    (None, None) => {
                        out.stats.foreign += 1;
                        return false;
                    }
                };
                self.interval.push(latency);
                if out.join_to_media_ms.is_none() {
                    out.join_to_media_ms = Some(arrival.saturating_sub(self.t0) as f64 / 1e6);
                }
            }
            ClientEvent::KeyframeRequest { rid } => {
                out.keyframe_requests += 1;
                if let Some(s) = schedule.as_mut() {
                    s.request_keyframe(rid.as_deref().and_then(Stream::from_rid));
                    // Without a rid it may be for the screen (its line has no simulcast).
                    if rid.is_none() {
                        s.request_screen_keyframe();
                    }
                }
            }
            ClientEvent::Closed { reason } => {
                let reason = reason.unwrap_or_else(|| "none".to_owned());
                out.error = Some(format!(
                    "session closed by the relay during the run: removed{{{reason}}}"
                ));
                out.closed_by_relay = Some(reason);
                return true;
            }
            ClientEvent::Connected => {
                if std::mem::take(&mut self.rejoined) {
                    self.connected_ns = self.clock.now_ns();
                    self.live.connected(self.index, self.connected_ns);
                }
            }
            // Media goes on while the client resumes its signaling socket by itself; a resume
            // that fails ends in `Closed` (then a rejoin, in a cluster).
            ClientEvent::Signal(_) | ClientEvent::SignalingLost | ClientEvent::SignalingResumed => {
            }
        }
        false
    }
}

impl Rx {
    /// Sampled mode: attributes what the RTP counts added since the last call.
    fn absorb_counts(&mut self, out: &mut Outcome) {
        let Some(s) = self.sampled.as_mut() else {
            return;
        };
        let clock = self.clock;
        self.received += s
            .attribution
            .absorb(&s.counts.snapshot(), &mut out.stats, |t| clock.ns(t));
    }

    /// Sends the video preferences queued by [`Rx::handle`].
    fn ask(&mut self, peer: &Peer) {
        let Some(h) = self.prefer else { return };
        for from in self.to_ask.drain(..) {
            peer.set_video_preference(&from, h);
        }
    }
}

/// The `video_preference` max height that selects `layer` on callrelay.
fn max_height(layer: Stream) -> u32 {
    match layer {
        Stream::VideoM => 360,
        Stream::VideoH => 720,
        _ => 180,
    }
}

/// Janus's substream index of `layer` (with `rid_order: lmh`).
fn substream(layer: Stream) -> u8 {
    match layer {
        Stream::VideoM => 1,
        Stream::VideoH => 2,
        _ => 0,
    }
}

async fn progress_line(live: Arc<Live>, clock: Clock, rooms: usize, total: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_received) = (0u64, 0u64);
    loop {
        tick.tick().await;
        let sent = live.sent.load(Ordering::Relaxed);
        let received = live.received.load(Ordering::Relaxed);
        let up = live
            .rooms_up
            .iter()
            .filter(|r| r.load(Ordering::Relaxed) > 0)
            .count();
        let p99 = live
            .take_interval_p99_ms()
            .map_or("-".to_owned(), |v| format!("{v:.2} ms"));
        eprintln!(
            "[{:>4.0}s] rooms up {up}/{rooms}  joined {}/{total} (failed {}, rejoins {})  packets/s out {}  in {}  p99 {p99}",
            clock.now_ns() as f64 / 1e9,
            live.joined.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
            live.rejoins.load(Ordering::Relaxed),
            sent - last_sent,
            received - last_received,
        );
        last_sent = sent;
        last_received = received;
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Scrape> {
    use anyhow::Context as _;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable_relay(url, e))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?;
    let text = response
        .text()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok(Scrape::parse(&text)?)
}

/// The error for a request that got no answer: says that the relay is unreachable (and why,
/// in reqwest's words), instead of "error sending request".
fn unreachable_relay(url: &str, e: reqwest::Error) -> anyhow::Error {
    if e.is_connect() || e.is_timeout() {
        let why = std::error::Error::source(&e)
            .map(|s| {
                let mut s: &dyn std::error::Error = s;
                while let Some(inner) = s.source() {
                    s = inner;
                }
                s.to_string()
            })
            .unwrap_or_else(|| e.to_string());
        anyhow::anyhow!("the relay at {url} is unreachable ({why}): is it running?")
    } else {
        anyhow::Error::new(e).context(format!("GET {url}"))
    }
}

/// `POST /v1/dev/token` (dev-mode relays only).
pub async fn dev_token(http: &reqwest::Client, base: &str, user: &str) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/v1/dev/token"))
        .json(&serde_json::json!({ "user": user }))
        .send()
        .await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    match v["token"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_owned()),
        _ => anyhow::bail!("POST /v1/dev/token: {status} (is the relay in dev mode?)"),
    }
}

/// `POST /v1/links`; returns the new link's id.
pub async fn create_link(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    kind: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/v1/links"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "kind": kind, "title": "loadgen" }))
        .send()
        .await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    match v["id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => anyhow::bail!(
            "POST /v1/links: {status} {}",
            v["code"].as_str().unwrap_or("")
        ),
    }
}

/// Counters read at one instant of the run, to measure a span of it.
struct Mark {
    at: Instant,
    cpu: Option<f64>,
    received: u64,
    /// The relays' CPU from `/proc` (every `--relay-pid`), else their
    /// `process_cpu_seconds_total` (whole seconds).
    relay_cpu: Option<f64>,
    relay_forwarded: Option<f64>,
    relay_drives: Option<f64>,
    /// The relays' `callrelay_forward_latency_seconds` buckets, added up over the nodes.
    relay_latency: Vec<(f64, f64)>,
}

impl Mark {
    /// Reads the counters now (the relays' through a scrape of each metrics URL).
    async fn take(http: &reqwest::Client, opts: &Options, live: &Live) -> Mark {
        let at = Instant::now();
        let cpu = cpu_seconds("self");
        let received = live.received.load(Ordering::Relaxed);
        let pids: Option<f64> = if opts.relay_pids.is_empty() {
            None
        } else {
            opts.relay_pids
                .iter()
                .map(|p| cpu_seconds(&p.to_string()))
                .sum()
        };
        let mut forwarded = Some(0.0);
        let mut drives = Some(0.0);
        let mut scraped_cpu = Some(0.0);
        let mut relay_latency = Vec::new();
        for u in &opts.metrics_urls {
            let s = scrape(http, u).await.ok();
            let get = |name| s.as_ref().and_then(|s| s.sum(name));
            forwarded = forwarded
                .zip(get("callrelay_packets_forwarded_total"))
                .map(|(a, b)| a + b);
            drives = drives
                .zip(get("callrelay_media_session_drives_total"))
                .map(|(a, b)| a + b);
            scraped_cpu = scraped_cpu
                .zip(get("process_cpu_seconds_total"))
                .map(|(a, b)| a + b);
            if let Some(s) = s.as_ref() {
                prom::add_buckets(
                    &mut relay_latency,
                    &s.buckets("callrelay_forward_latency_seconds"),
                );
            }
        }
        let scraped = !opts.metrics_urls.is_empty();
        Mark {
            at,
            cpu,
            received,
            relay_cpu: pids.or(scraped_cpu.filter(|_| scraped)),
            relay_forwarded: forwarded.filter(|_| scraped),
            relay_drives: drives.filter(|_| scraped),
            relay_latency,
        }
    }

    /// The span from `start` to this mark.
    fn since(&self, start: &Mark) -> Span {
        let d = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        Span {
            seconds: self.at.duration_since(start.at).as_secs_f64(),
            cpu: d(self.cpu, start.cpu),
            received: self.received.saturating_sub(start.received),
            relay_cpu: d(self.relay_cpu, start.relay_cpu),
            relay_forwarded: d(self.relay_forwarded, start.relay_forwarded),
            relay_session_drives: d(self.relay_drives, start.relay_drives),
            relay_forward_latency_ms: bucket_percentiles(&prom::bucket_delta(
                &start.relay_latency,
                &self.relay_latency,
            )),
            wire_latency_ms: None,
        }
    }
}

/// Percentiles in ms from histogram buckets in seconds; `None` without observations.
fn bucket_percentiles(buckets: &[(f64, f64)]) -> Option<SpanLatency> {
    let count = buckets.last().map_or(0.0, |b| b.1);
    if count <= 0.0 {
        return None;
    }
    let q = |x: f64| prom::quantile(x, buckets).map(|s| s * 1e3);
    Some(SpanLatency {
        count: count as u64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
    })
}

/// Cores this process may run on: its CPU affinity (`taskset`) and cgroup quota, as
/// `std::thread::available_parallelism` reads them (Linux: `sched_getaffinity`).
fn allowed_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Keeps in `peak` the most CPU this process used in any one second (CPU-seconds per second,
/// from `/proc`, 10 ms resolution), until aborted.
async fn track_peak_cpu(peak: Arc<Mutex<Option<f64>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), cpu_seconds("self"));
    loop {
        tick.tick().await;
        let now = (Instant::now(), cpu_seconds("self"));
        let secs = now.0.duration_since(last.0).as_secs_f64();
        if let (Some(a), Some(b), true) = (now.1, last.1, secs > 0.0) {
            let rate = (a - b) / secs;
            if let Ok(mut p) = peak.lock() {
                *p = Some(p.map_or(rate, |v: f64| v.max(rate)));
            }
        }
        last = now;
    }
}

/// CPU seconds (user + system) of process `pid` (`self` for this one), from `/proc/<pid>/stat`
/// (Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some((utime + stime) / 100.0)
}

/// Relay-side figures from two scrapes of its `/metrics`.
pub fn relay_report(before: &Scrape, after: &Scrape) -> RelayReport {
    let delta = |name: &str| match (before.sum(name), after.sum(name)) {
        (Some(b), Some(a)) => Some(a - b),
        (None, Some(a)) => Some(a),
        _ => None,
    };
    let kind_delta = |name: &str, kind: &str| {
        let b = before.get(name, "kind", kind).unwrap_or(0.0);
        after.get(name, "kind", kind).map(|a| a - b)
    };
    let forwarded = delta("callrelay_packets_forwarded_total");
    let received = delta("callrelay_packets_received_total");
    let cpu = delta("process_cpu_seconds_total");
    let buckets = prom::bucket_delta(
        &before.buckets("callrelay_forward_latency_seconds"),
        &after.buckets("callrelay_forward_latency_seconds"),
    );
    let q = |x: f64| prom::quantile(x, &buckets).map(|s| s * 1e3);
    let mut forwarded_by_kind = BTreeMap::new();
    for kind in ["audio", "video", "rtcp"] {
        if let Some(v) = kind_delta("callrelay_packets_forwarded_total", kind) {
            forwarded_by_kind.insert(kind.to_owned(), v);
        }
    }
    RelayReport {
        packets_received: received,
        packets_forwarded: forwarded,
        forwarded_by_kind,
        datagrams_dropped: delta("callrelay_datagrams_dropped_total"),
        cpu_seconds: cpu,
        cpu_source: "process_cpu_seconds_total".into(),
        cpu_seconds_per_million_forwarded: match (cpu, forwarded) {
            (Some(c), Some(f)) if f > 0.0 => Some(c / f * 1e6),
            _ => None,
        },
        forward_latency_ms_p50: q(0.5),
        forward_latency_ms_p90: q(0.9),
        forward_latency_ms_p99: q(0.99),
        forward_latency_ms_p999: q(0.999),
        forward_latency_observations: buckets.last().map(|b| b.1),
        http_refused_per_ip: after
            .get(
                "callrelay_http_connections_refused_total",
                "reason",
                "per_ip_limit",
            )
            .map(|a| {
                let b = before.get(
                    "callrelay_http_connections_refused_total",
                    "reason",
                    "per_ip_limit",
                );
                a - b.unwrap_or(0.0)
            }),
    }
}

/// (sender → receiver, audio / video) streams the joined participants should have received,
/// how many of them never delivered a packet, and how many of those are video: each joined
/// publisher's audio and video go to every other joined participant of its room (one video
/// layer each).
fn stream_coverage(config: &RunConfig, outcomes: &[Outcome]) -> (u64, u64, u64) {
    let video = config.video_layers > 0;
    let kinds = u64::from(config.audio) + u64::from(video);
    let mut expected = 0u64;
    let mut received = 0u64;
    let (mut expected_video, mut received_video) = (0u64, 0u64);
    let rooms = outcomes
        .iter()
        .filter(|o| o.joined)
        .map(|o| o.room)
        .collect::<std::collections::BTreeSet<_>>();
    for room in rooms {
        let members: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.joined && o.room == room)
            .collect();
        let publishers = members.iter().filter(|o| o.publish).count() as u64;
        let sharers = members.iter().filter(|o| o.sharing()).count() as u64;
        for m in &members {
            let others = publishers - u64::from(m.publish);
            expected += kinds * others + sharers - u64::from(m.sharing());
            // (sender, kind): 0 audio, 1 camera, 2 screen.
            let pairs: std::collections::BTreeSet<(u32, u8)> = m
                .stats
                .summaries()
                .map(|((sender, stream), _)| {
                    let kind = match stream {
                        Stream::Audio => 0,
                        Stream::Screen => 2,
                        _ => 1,
                    };
                    (sender, kind)
                })
                .collect();
            received += pairs.len() as u64;
            if video {
                expected_video += others;
                received_video += pairs.iter().filter(|(_, k)| *k == 1).count() as u64;
            }
        }
    }
    (
        expected,
        expected.saturating_sub(received),
        expected_video.saturating_sub(received_video),
    )
}

/// What the participants' models of the call held when sending stopped, against what they
/// should: each other joined publisher's microphone (with audio) and camera (with video), each
/// other sharer's screen.
fn track_report(config: &RunConfig, outcomes: &[Outcome]) -> TrackReport {
    let mut r = TrackReport::default();
    for o in outcomes {
        match &o.screen {
            Some(Ok(())) if o.joined => r.screen_sharers += 1,
            Some(Err(e)) => *r.screen_failures.entry(e.clone()).or_default() += 1,
            _ => {}
        }
    }
    let joined: Vec<&Outcome> = outcomes.iter().filter(|o| o.joined).collect();
    for m in &joined {
        let room = joined.iter().filter(|o| o.room == m.room);
        let publishers = room.clone().filter(|o| o.publish).count() as u64 - u64::from(m.publish);
        let sharers = room.filter(|o| o.sharing()).count() as u64 - u64::from(m.sharing());
        let want = [
            ("microphone", if config.audio { publishers } else { 0 }),
            (
                "camera",
                if config.video_layers > 0 {
                    publishers
                } else {
                    0
                },
            ),
            ("screen", sharers),
        ];
        for (source, n) in want {
            let seen = m.tracks_seen.get(source).copied().unwrap_or(0);
            *r.expected.entry(source.to_owned()).or_default() += n;
            *r.announced.entry(source.to_owned()).or_default() += seen;
            r.missing += n.saturating_sub(seen);
        }
    }
    r
}

fn build_report(
    config: RunConfig,
    outcomes: Vec<Outcome>,
    traffic_secs: f64,
    relay: Option<RelayReport>,
    loadgen_cpu_seconds: Option<f64>,
) -> Report {
    let mut latency = latency_histogram();
    let mut join =
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("1 µs..1 h at 3 digits is valid");
    let mut connect = join.clone();
    let mut streams: BTreeMap<String, StreamTotals> = BTreeMap::new();
    let mut all = StreamTotals::default();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut joined, mut failed, mut without_media) = (0, 0, 0);
    let (mut keyframe_requests, mut dropped_events, mut foreign) = (0, 0, 0);
    let mut rejoins = RejoinReport::default();
    let mut rejoin_took =
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("1 µs..1 h at 3 digits is valid");
    let mut closed_by_relay: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outcomes {
        if let Some(e) = &o.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
        for (reason, n) in &o.rejoins {
            *rejoins.by_reason.entry(reason.clone()).or_default() += n;
            rejoins.count += n;
        }
        for ms in &o.rejoin_ms {
            rejoin_took.saturating_record((ms * 1000.0) as u64);
        }
        rejoins.failed += u64::from(o.rejoin_failed);
        if let Some(r) = &o.closed_by_relay {
            *closed_by_relay.entry(r.clone()).or_default() += 1;
        }
        if !o.joined {
            failed += 1;
            continue;
        }
        joined += 1;
        let _ = latency.add(&o.stats.latency);
        match o.join_to_media_ms {
            Some(ms) => join.saturating_record((ms * 1000.0) as u64),
            None => without_media += 1,
        }
        if let Some(ms) = o.join_to_connected_ms {
            connect.saturating_record((ms * 1000.0) as u64);
        }
        for ((_, stream), s) in o.stats.summaries() {
            streams.entry(stream.name().to_owned()).or_default().add(&s);
            all.add(&s);
        }
        keyframe_requests += o.keyframe_requests;
        dropped_events += o.dropped_events;
        foreign += o.stats.foreign;
    }
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let tracks = (config.target == "callrelay").then(|| track_report(&config, &outcomes));
    let (expected_streams, missing_streams, missing_video) = stream_coverage(&config, &outcomes);
    // Not measured without video: nothing to wait for.
    let time_to_layer = (config.video_layers > 0).then(|| {
        LayerReport::new(
            &config.subscribe_layer,
            outcomes.iter().flat_map(|o| o.layers.iter()),
            missing_video,
        )
    });
    let ms = |h: &Histogram<u64>, q: f64, div: f64| {
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / div)
    };
    rejoins.took_ms_p50 = ms(&rejoin_took, 0.5, 1e3);
    rejoins.took_ms_p99 = ms(&rejoin_took, 0.99, 1e3);
    rejoins.took_ms_max = (!rejoin_took.is_empty()).then(|| rejoin_took.max() as f64 / 1e3);
    Report {
        config,
        participants: ParticipantReport {
            requested: outcomes.len(),
            joined,
            failed,
            errors,
            keyframe_requests,
            dropped_events,
            closed_by_relay,
        },
        packets: PacketReport {
            sent,
            expected_streams,
            missing_streams,
            received: all.received,
            sent_per_s: sent as f64 / traffic_secs.max(0.001),
            received_per_s: all.received as f64 / traffic_secs.max(0.001),
            foreign,
        },
        latency_ms: LatencyReport {
            count: latency.len(),
            p50: ms(&latency, 0.5, 1e6),
            p90: ms(&latency, 0.9, 1e6),
            p99: ms(&latency, 0.99, 1e6),
            p999: ms(&latency, 0.999, 1e6),
            max: (!latency.is_empty()).then(|| latency.max() as f64 / 1e6),
            mean: (!latency.is_empty()).then(|| latency.mean() / 1e6),
        },
        join_ms: JoinReport {
            connected_p50: ms(&connect, 0.5, 1e3),
            connected_p99: ms(&connect, 0.99, 1e3),
            first_media_p50: ms(&join, 0.5, 1e3),
            first_media_p99: ms(&join, 0.99, 1e3),
            first_media_max: (!join.is_empty()).then(|| join.max() as f64 / 1e3),
            without_media,
        },
        time_to_layer,
        loss: LossReport {
            ratio: all.loss_ratio(),
            expected: all.expected,
            lost: all.lost,
            duplicates: all.duplicates,
            reordered: all.reordered,
            skipped_by_layer_switch: all.skipped,
            jitter_ms_mean: all.jitter_ms_mean,
            jitter_ms_max: all.jitter_ms_max,
        },
        streams,
        rejoins,
        relay,
        relay_nodes: Vec::new(),
        loadgen_cpu_seconds,
        loadgen: LoadgenReport::default(),
        valid: true,
        invalid: Vec::new(),
        traffic_seconds: traffic_secs,
        thresholds: None,
        hostile: None,
        tracks,
    }
}
