//! The run's report: a JSON document and a table for people, plus the pass/fail thresholds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::{LayerWait, StreamTotals};

/// The whole report (`--json FILE` writes exactly this).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The scenario.
    pub config: RunConfig,
    /// Who joined.
    pub participants: ParticipantReport,
    /// Packet counts and rates seen by the loadgen.
    pub packets: PacketReport,
    /// Wire-to-wire latency (send by one synthetic participant to receipt by another).
    pub latency_ms: LatencyReport,
    /// Join times.
    pub join_ms: JoinReport,
    /// Time each video subscription took to get the simulcast layer its receiver asked for
    /// (`None`: not measured, the run had no video).
    #[serde(default)]
    pub time_to_layer: Option<LayerReport>,
    /// Loss, duplicates, reordering, jitter over every (sender, stream, receiver).
    pub loss: LossReport,
    /// Per stream kind received (`audio`, `video_l`, `video_m`, `video_h`).
    pub streams: BTreeMap<String, StreamTotals>,
    /// Participants that joined again after their session ended for `moved`, `drain` or a
    /// lost node (callrelay only).
    #[serde(default)]
    pub rejoins: RejoinReport,
    /// The relay's own figures from its `/metrics` (absent for targets without them). With
    /// several nodes: the sum over the nodes scraped both before and after the run (see
    /// `relay_nodes`).
    pub relay: Option<RelayReport>,
    /// Each node's figures, when more than one node's metrics were read (in `--metrics-url` /
    /// `--url` order).
    #[serde(default)]
    pub relay_nodes: Vec<NodeReport>,
    /// CPU seconds the loadgen itself used (it shares the machine with the relay), over the
    /// same span as the relay's CPU (from before the first join to after the last leave).
    pub loadgen_cpu_seconds: Option<f64>,
    /// The loadgen's cost against the relay's, and whether its cores were saturated.
    #[serde(default)]
    pub loadgen: LoadgenReport,
    /// False when the loadgen, not the relay, was the bottleneck (its CPU was saturated), or
    /// when the relay held joins back at its per-address connection cap: the latency, loss and
    /// throughput of such a run describe the set-up, and are no relay figures. `invalid` says
    /// why.
    #[serde(default = "yes")]
    pub valid: bool,
    /// Why the run is invalid (empty when valid).
    #[serde(default)]
    pub invalid: Vec<String>,
    /// Seconds from the first join to the stop of traffic.
    pub traffic_seconds: f64,
    /// Threshold verdict, when thresholds were given.
    pub thresholds: Option<Verdict>,
    /// The hostile participants (`--hostile`): what they sent and what the relay did.
    #[serde(default)]
    pub hostile: Option<HostileReport>,
    /// What each participant's model of the call held when sending stopped (callrelay only).
    #[serde(default)]
    pub tracks: Option<TrackReport>,
}

/// The tracks the participants' models of the call held when sending stopped (before anyone
/// left), against what the run published: every other publisher's microphone and camera, and
/// every other sharer's screen. Summed over participants, by source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackReport {
    /// Rooms whose screen sharer's claim and screen track went through (`--screen-kbps`).
    pub screen_sharers: u64,
    /// Screen shares that did not start, by error.
    pub screen_failures: BTreeMap<String, u64>,
    /// Tracks the models should hold, by source (`microphone`, `camera`, `screen`).
    pub expected: BTreeMap<String, u64>,
    /// Tracks they held.
    pub announced: BTreeMap<String, u64>,
    /// Per participant and source, expected tracks its model did not hold, summed.
    pub missing: u64,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// The loadgen's share of `SATURATED` or more of the cores it may use over the traffic makes
/// the run invalid.
pub const SATURATED: f64 = 0.9;

/// The loadgen's CPU per received packet should be at most this fraction of the relay's per
/// forwarded packet, so that the relay saturates first (issue #11).
pub const COST_RATIO_TARGET: f64 = 0.25;

/// The loadgen's and the relays' counters over a span of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Wall time, s.
    pub seconds: f64,
    /// The loadgen's CPU seconds.
    pub cpu: Option<f64>,
    /// Packets the loadgen's receivers counted (read every 250 ms per receiver, so each end of
    /// the span may be up to that late).
    pub received: u64,
    /// The relays' CPU seconds (`/proc` with `--relay-pid`, else `process_cpu_seconds_total`).
    pub relay_cpu: Option<f64>,
    /// Packets the relays forwarded (all kinds).
    pub relay_forwarded: Option<f64>,
    /// Times the relays drove a participant's session (`callrelay_media_session_drives_total`):
    /// `relay_forwarded` over it is the copies one drive sent, which bounds what str0m's
    /// per-drive housekeeping costs per copy.
    #[serde(default)]
    pub relay_session_drives: Option<f64>,
    /// The relays' `callrelay_forward_latency_seconds` over the span (bucket deltas), ms;
    /// `None` for a target without it (Janus).
    #[serde(default)]
    pub relay_forward_latency_ms: Option<SpanLatency>,
    /// Wire-to-wire latency of the packets the receivers decrypted in the span, ms (each
    /// receiver hands its latencies over every 250 ms, so each end may be that late).
    #[serde(default)]
    pub wire_latency_ms: Option<SpanLatency>,
}

/// Percentiles of a latency distribution over a [`Span`], ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanLatency {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
}

/// The loadgen's own cost, next to the relay's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadgenReport {
    /// One RTP packet in this many per stream was decrypted (`--decrypt-sample`).
    pub decrypt_sample: u32,
    /// Cores the loadgen may run on (CPU affinity, cgroup quota).
    pub cores: usize,
    /// The steady window, from a second after the last join to the stop of sending (no
    /// handshakes in it); `None` if the joins took the whole duration.
    pub steady: Option<Span>,
    /// What the figures below are measured over: `steady`, or `whole run` (joins, DTLS
    /// handshakes and leaves included) when there was no steady window.
    pub basis: String,
    /// The loadgen's CPU over the basis' wall time times `cores`: 1 is every allowed core
    /// busy.
    pub utilisation: Option<f64>,
    /// The same over the whole traffic (joins included).
    pub utilisation_traffic: Option<f64>,
    /// The same in the busiest whole second of the traffic.
    pub utilisation_peak_1s: Option<f64>,
    /// The loadgen's CPU per packet received, µs.
    pub cpu_us_per_received: Option<f64>,
    /// The relay's CPU per packet forwarded (all kinds), µs.
    pub relay_cpu_us_per_forwarded: Option<f64>,
    /// `cpu_us_per_received / relay_cpu_us_per_forwarded`; at most [`COST_RATIO_TARGET`] for
    /// the relay to saturate first.
    pub cost_ratio: Option<f64>,
    /// `utilisation` reached [`SATURATED`].
    pub saturated: bool,
}

impl LoadgenReport {
    /// The loadgen's figures for `r`, given the cores it may use, the steady window, its CPU
    /// seconds over the traffic (CPU s, wall s) and its busiest second (CPU s per s). Without
    /// a steady window, they come from the whole run (`loadgen_cpu_seconds`,
    /// `packets.received` and the relay's figures).
    pub fn new(
        r: &Report,
        cores: usize,
        steady: Option<Span>,
        traffic: Option<(f64, f64)>,
        peak_per_s: Option<f64>,
    ) -> LoadgenReport {
        let cores = cores.max(1);
        let busy = |cpu: f64, wall: f64| (wall > 0.0).then(|| cpu / (wall * cores as f64));
        let per = |cpu: Option<f64>, n: f64| cpu.filter(|_| n > 0.0).map(|c| c / n * 1e6);
        let utilisation_traffic = traffic.and_then(|(c, w)| busy(c, w));
        let (basis, utilisation, cpu_us_per_received, relay_cpu_us_per_forwarded) = match steady {
            Some(s) => (
                "steady",
                s.cpu.and_then(|c| busy(c, s.seconds)),
                per(s.cpu, s.received as f64),
                per(s.relay_cpu, s.relay_forwarded.unwrap_or(0.0)),
            ),
            None => (
                "whole run",
                utilisation_traffic,
                per(r.loadgen_cpu_seconds, r.packets.received as f64),
                r.relay
                    .as_ref()
                    .and_then(|x| x.cpu_seconds_per_million_forwarded),
            ),
        };
        LoadgenReport {
            decrypt_sample: r.config.decrypt_sample,
            cores,
            steady,
            basis: basis.into(),
            utilisation,
            utilisation_traffic,
            utilisation_peak_1s: peak_per_s.map(|p| p / cores as f64),
            cpu_us_per_received,
            relay_cpu_us_per_forwarded,
            cost_ratio: cpu_us_per_received
                .zip(relay_cpu_us_per_forwarded)
                .filter(|(_, relay)| *relay > 0.0)
                .map(|(l, relay)| l / relay),
            saturated: utilisation.is_some_and(|u| u >= SATURATED),
        }
    }
}

/// `--hostile`: one flooding participant per room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostileReport {
    /// Times they joined (they join again after each removal).
    pub joins: u64,
    /// Joins that failed.
    pub join_failures: u64,
    /// Signaling messages they sent.
    pub messages_sent: u64,
    /// `error{rate_limited}` answers they got.
    pub messages_refused: u64,
    /// How their sessions ended, by `removed` reason (`rate_limited` expected).
    pub removed: BTreeMap<String, u64>,
}

/// The scenario as run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// `callrelay` or `janus`.
    pub target: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Receive-only participants per room.
    pub subscribers: usize,
    /// Publishers send audio.
    pub audio: bool,
    /// Video layers per publisher.
    pub video_layers: usize,
    /// `--duration`, s.
    pub duration_s: f64,
    /// Joins per second.
    pub join_rate: f64,
    /// `--seed`.
    pub seed: u64,
    /// Keyframe period, s.
    pub keyframe_interval_s: f64,
    /// The simulcast layer receivers asked for (`l`, `m`, `h`).
    #[serde(default)]
    pub subscribe_layer: String,
    /// Receivers decrypted one RTP packet in this many per stream (`--decrypt-sample`).
    #[serde(default = "one")]
    pub decrypt_sample: u32,
    /// The first publisher of each room shared a screen at this many kbit/s (0: none).
    #[serde(default)]
    pub screen_kbps: u32,
    /// Video was paced at this multiple of its bitrate (`--pace`; 0: each frame as one burst,
    /// as every run before 2026-12-07 did).
    #[serde(default)]
    pub pace: f64,
    /// Publishers per room that talked (`--talkers`; 0: all); the others' audio left at the DTX
    /// rate of a silent microphone.
    #[serde(default)]
    pub talkers: usize,
}

/// Who joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantReport {
    /// Participants started.
    pub requested: usize,
    /// Joined and connected (ICE + DTLS).
    pub joined: usize,
    /// Failed to join.
    pub failed: usize,
    /// Error messages (link ids redacted) and how often each happened.
    pub errors: BTreeMap<String, u64>,
    /// Keyframe requests publishers received.
    pub keyframe_requests: u64,
    /// Client events dropped because a participant read too slowly (would look like loss).
    pub dropped_events: u64,
    /// Sessions the relay ended during the run for a reason that is final (`revoked`,
    /// `blocked`, `kicked`, `idle`, `expired`, …; the participant did not join again), by
    /// reason.
    #[serde(default)]
    pub closed_by_relay: BTreeMap<String, u64>,
}

/// Rejoins: a participant whose session ended with `removed{moved | drain}` or without any
/// `removed` (`node_lost`) joins again through the next URL (`callrelay_client::Member`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RejoinReport {
    /// Successful rejoins.
    pub count: u64,
    /// Successful rejoins by reason (`moved`, `drain`, `node_lost`).
    pub by_reason: BTreeMap<String, u64>,
    /// Rejoins that did not succeed before the deadline (`--rejoin-deadline`) or were refused.
    pub failed: u64,
    /// From the end of the old session to the new one's `joined`, median, ms.
    pub took_ms_p50: Option<f64>,
    /// 99th percentile, ms.
    pub took_ms_p99: Option<f64>,
    /// Longest, ms.
    pub took_ms_max: Option<f64>,
}

/// One node's figures in a run against several.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its metrics URL.
    pub metrics_url: String,
    /// Its deltas (`None` if a scrape failed).
    pub relay: Option<RelayReport>,
    /// Why it has no figures (e.g. the node was gone when the run ended).
    pub error: Option<String>,
}

/// Packet counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PacketReport {
    /// RTP packets handed to the clients to send.
    pub sent: u64,
    /// (sender → receiver, audio / video) streams the joined participants should receive.
    #[serde(default)]
    pub expected_streams: u64,
    /// Of those, streams that never delivered a packet (a subscription that failed: loss the
    /// per-stream loss ratio cannot see).
    #[serde(default)]
    pub missing_streams: u64,
    /// RTP packets received carrying our header.
    pub received: u64,
    /// Sent per second of traffic.
    pub sent_per_s: f64,
    /// Received per second of traffic.
    pub received_per_s: f64,
    /// Media packets received without our header.
    pub foreign: u64,
}

/// Latency percentiles, ms (`None` without packets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Packets measured.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// Join times, ms from the HTTP join request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReport {
    /// To ICE + DTLS connected, median.
    pub connected_p50: Option<f64>,
    /// To connected, 99th percentile.
    pub connected_p99: Option<f64>,
    /// To the first media packet received, median.
    pub first_media_p50: Option<f64>,
    /// To the first media packet, 99th percentile.
    pub first_media_p99: Option<f64>,
    /// To the first media packet, largest.
    pub first_media_max: Option<f64>,
    /// Joined participants that never received media.
    pub without_media: usize,
}

/// Percentiles of a time, ms (`None` without values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median (nearest rank).
    pub p50: Option<f64>,
    /// 90th percentile (nearest rank).
    pub p90: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of `ms` (any order).
    pub fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = ms.len();
            (n > 0).then(|| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Percentiles {
            p50: rank(0.5),
            p90: rank(0.9),
            max: ms.last().copied(),
        }
    }
}

/// Time to the requested simulcast layer (`--subscribe-layer`), per video subscription: one
/// (receiver session, SSRC) that delivered at least one video packet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// The layer asked for (`l`, `m`, `h`).
    pub requested: String,
    /// Video subscriptions that delivered at least one packet.
    pub subscriptions: u64,
    /// Of those, how many got a packet of the requested layer.
    pub reached: u64,
    /// Of those, how many never did during the run (the session may have ended first, e.g. a
    /// rejoin).
    pub never_reached: u64,
    /// (publisher → receiver) video streams expected that delivered no video at all (no
    /// subscription to time; also in `packets.missing_streams`).
    pub without_video: u64,
    /// From the subscription's first video packet to its first packet of the requested layer.
    pub from_first_packet_ms: Percentiles,
    /// From when both ends were connected (the later of receiver's and publisher's ICE + DTLS
    /// up) to the first packet of the requested layer: subscription set-up included.
    pub from_connected_ms: Percentiles,
    /// Video packets received before the requested layer, over every subscription (each one
    /// decrypted in sampled mode).
    pub packets_before: u64,
    /// RTP sequence numbers between a subscription's first video packet and its first of the
    /// requested layer whose packets were not seen (lost, or not decrypted), over every
    /// subscription: 0 when every time is exact to the packet.
    #[serde(default)]
    pub packets_unseen_before: u64,
}

impl LayerReport {
    /// The report of `waits` (every video subscription of every receiver), asking for
    /// `requested`, with `without_video` expected streams that delivered no video.
    pub fn new<'a>(
        requested: &str,
        waits: impl Iterator<Item = &'a LayerWait>,
        without_video: u64,
    ) -> LayerReport {
        let (mut first, mut connected) = (Vec::new(), Vec::new());
        let (mut subscriptions, mut packets_before, mut packets_unseen_before) = (0, 0, 0);
        for w in waits {
            subscriptions += 1;
            packets_before += w.before;
            packets_unseen_before += w.unseen_before();
            if let Some(ns) = w.from_first_ns() {
                first.push(ns as f64 / 1e6);
            }
            if let Some(ns) = w.from_connected_ns() {
                connected.push(ns as f64 / 1e6);
            }
        }
        let reached = first.len() as u64;
        LayerReport {
            requested: requested.to_owned(),
            subscriptions,
            reached,
            never_reached: subscriptions - reached,
            without_video,
            from_first_packet_ms: Percentiles::of(first),
            from_connected_ms: Percentiles::of(connected),
            packets_before,
            packets_unseen_before,
        }
    }
}

/// Loss and friends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossReport {
    /// lost / expected.
    pub ratio: f64,
    /// Expected from the sequence ranges received.
    pub expected: u64,
    /// Missing.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a later one.
    pub reordered: u64,
    /// Sequence numbers skipped when the relay switched a simulcast layer off and on again.
    pub skipped_by_layer_switch: u64,
    /// Mean RFC 3550 jitter over the streams, ms.
    pub jitter_ms_mean: f64,
    /// Largest jitter of any stream, ms.
    pub jitter_ms_max: f64,
}

/// The relay's own figures: deltas of its `/metrics` between before and after the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayReport {
    /// `callrelay_packets_received_total`, all kinds.
    pub packets_received: Option<f64>,
    /// `callrelay_packets_forwarded_total`, all kinds.
    pub packets_forwarded: Option<f64>,
    /// Forwarded by kind.
    pub forwarded_by_kind: BTreeMap<String, f64>,
    /// `callrelay_datagrams_dropped_total`, all reasons.
    pub datagrams_dropped: Option<f64>,
    /// Relay CPU seconds during the run.
    pub cpu_seconds: Option<f64>,
    /// Where `cpu_seconds` comes from: `process_cpu_seconds_total` (whole seconds in the
    /// prometheus crate's process collector) or `/proc` (`--relay-pid`, 10 ms resolution).
    pub cpu_source: String,
    /// CPU seconds per million forwarded packets.
    pub cpu_seconds_per_million_forwarded: Option<f64>,
    /// `callrelay_forward_latency_seconds` median from bucket deltas, ms.
    pub forward_latency_ms_p50: Option<f64>,
    /// 90th percentile, ms.
    pub forward_latency_ms_p90: Option<f64>,
    /// 99th percentile, ms.
    pub forward_latency_ms_p99: Option<f64>,
    /// 99.9th percentile, ms.
    pub forward_latency_ms_p999: Option<f64>,
    /// Observations in the delta.
    pub forward_latency_observations: Option<f64>,
    /// `callrelay_http_connections_refused_total{reason="per_ip_limit"}`: connections the relay
    /// closed at accept because `http.max_connections_per_ip` was reached. Every participant of
    /// the loadgen comes from one address, so any of them makes the run invalid: those joins
    /// were held back until others left.
    #[serde(default)]
    pub http_refused_per_ip: Option<f64>,
}

impl RelayReport {
    /// A report with the relay's CPU time only (a target without callrelay's metrics).
    pub fn cpu_only(seconds: f64) -> RelayReport {
        RelayReport {
            packets_received: None,
            packets_forwarded: None,
            forwarded_by_kind: BTreeMap::new(),
            datagrams_dropped: None,
            cpu_seconds: Some(seconds),
            cpu_source: "/proc".into(),
            cpu_seconds_per_million_forwarded: None,
            forward_latency_ms_p50: None,
            forward_latency_ms_p90: None,
            forward_latency_ms_p99: None,
            forward_latency_ms_p999: None,
            forward_latency_observations: None,
            http_refused_per_ip: None,
        }
    }

    /// Replaces the CPU figure (and the per-packet cost derived from it).
    pub fn set_cpu_seconds(&mut self, seconds: f64, source: &str) {
        self.cpu_seconds = Some(seconds);
        self.cpu_source = source.to_owned();
        self.cpu_seconds_per_million_forwarded = match self.packets_forwarded {
            Some(f) if f > 0.0 => Some(seconds / f * 1e6),
            _ => None,
        };
    }
}

/// Pass/fail limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    /// Highest acceptable wire-to-wire p99.
    pub max_p99: Option<Duration>,
    /// Highest acceptable loss ratio.
    pub max_loss: Option<f64>,
}

/// The verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// Every threshold held.
    pub passed: bool,
    /// What failed, in words.
    pub failures: Vec<String>,
}

impl Thresholds {
    /// Judges `r`; `None` when no threshold is set.
    pub fn judge(&self, r: &Report) -> Option<Verdict> {
        if self.max_p99.is_none() && self.max_loss.is_none() {
            return None;
        }
        let mut failures = Vec::new();
        if let Some(max) = self.max_p99 {
            let limit = max.as_secs_f64() * 1e3;
            match r.latency_ms.p99 {
                Some(p) if p <= limit => {}
                Some(p) => failures.push(format!("p99 {p:.3} ms > {limit:.3} ms")),
                None => failures.push("no packet received: p99 unknown".into()),
            }
        }
        if let Some(max) = self.max_loss {
            if r.loss.ratio > max {
                failures.push(format!("loss {:.5} > {max}", r.loss.ratio));
            }
            if r.participants.failed > 0 {
                failures.push(format!(
                    "{} of {} participants failed to join",
                    r.participants.failed, r.participants.requested
                ));
            }
            if r.packets.missing_streams > 0 {
                failures.push(format!(
                    "{} of {} streams never received",
                    r.packets.missing_streams, r.packets.expected_streams
                ));
            }
            if let Some(t) = &r.tracks {
                if t.missing > 0 {
                    failures.push(format!(
                        "{} tracks missing from the participants' models of the call",
                        t.missing
                    ));
                }
                let failed: u64 = t.screen_failures.values().sum();
                if failed > 0 {
                    failures.push(format!("{failed} screen shares did not start"));
                }
            }
            if r.latency_ms.count == 0 {
                failures.push("no packet received: loss unknown".into());
            }
            if r.rejoins.failed > 0 {
                failures.push(format!("{} rejoins failed", r.rejoins.failed));
            }
            let closed: u64 = r.participants.closed_by_relay.values().sum();
            if closed > 0 {
                failures.push(format!(
                    "{closed} sessions closed by the relay ({})",
                    r.participants
                        .closed_by_relay
                        .iter()
                        .map(|(k, n)| format!("{k} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Some(Verdict {
            passed: failures.is_empty(),
            failures,
        })
    }
}

impl Report {
    /// Sets `valid` and `invalid` from the loadgen's figures and the connections the relay refused.
    pub fn judge_validity(&mut self) {
        self.invalid.clear();
        let l = &self.loadgen;
        if l.saturated {
            let over = if l.basis == "steady" {
                "the steady traffic"
            } else {
                "the traffic"
            };
            self.invalid.push(format!(
                "the loadgen's CPU was saturated: {:.0} % of its {} core{} over {over} (limit {:.0} %)",
                l.utilisation.unwrap_or(0.0) * 100.0,
                l.cores,
                if l.cores == 1 { "" } else { "s" },
                SATURATED * 100.0
            ));
        }
        let refused = self.relay.as_ref().and_then(|r| r.http_refused_per_ip);
        if let Some(n) = refused.filter(|&n| n > 0.0) {
            self.invalid.push(format!(
                "the relay refused {n:.0} connection{} at http.max_connections_per_ip: every \
                 participant comes from one address, so joins waited until others left \
                 (start the relay with CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0)",
                if n == 1.0 { "" } else { "s" }
            ));
        }
        self.valid = self.invalid.is_empty();
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

impl Report {
    /// A table for people.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {}  rooms {}  publishers/room {}{}  subscribers/room {}  audio {}  video layers {}  duration {}s  seed {}{}",
            c.target, c.rooms, c.publishers,
            if c.talkers > 0 {
                format!(" ({} talking, the others silent: DTX)", c.talkers)
            } else {
                String::new()
            },
            c.subscribers, c.audio, c.video_layers, c.duration_s, c.seed,
            if c.video_layers > 0 && c.pace > 0.0 {
                format!("  video paced at {}×", c.pace)
            } else if c.video_layers > 0 {
                "  video unpaced".to_owned()
            } else {
                String::new()
            }
        );
        let p = &self.participants;
        let _ = writeln!(
            s,
            "participants  joined {}/{}  failed {}  keyframe requests {}  dropped events {}",
            p.joined, p.requested, p.failed, p.keyframe_requests, p.dropped_events
        );
        for (e, n) in &p.errors {
            let _ = writeln!(s, "  error ×{n}: {e}");
        }
        if !p.closed_by_relay.is_empty() {
            let _ = writeln!(
                s,
                "closed        by the relay, final: {}",
                p.closed_by_relay
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(h) = &self.hostile {
            let _ = writeln!(
                s,
                "hostile       joins {} (failed {})  messages sent {} refused {}  removed: {}",
                h.joins,
                h.join_failures,
                h.messages_sent,
                h.messages_refused,
                h.removed
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let rj = &self.rejoins;
        if rj.count > 0 || rj.failed > 0 {
            let _ = writeln!(
                s,
                "rejoins       {} ({})  failed {}  took ms p50 {} p99 {} max {}  (what was not delivered meanwhile counts as loss; a video gap that ends on a keyframe as a layer-switch gap)",
                rj.count,
                rj.by_reason
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                rj.failed,
                opt(rj.took_ms_p50, 1),
                opt(rj.took_ms_p99, 1),
                opt(rj.took_ms_max, 1)
            );
        }
        if let Some(t) = &self.tracks {
            let by = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "tracks        in the models: microphone {}/{}  camera {}/{}  screen {}/{}  (missing {}){}",
                by(&t.announced, "microphone"),
                by(&t.expected, "microphone"),
                by(&t.announced, "camera"),
                by(&t.expected, "camera"),
                by(&t.announced, "screen"),
                by(&t.expected, "screen"),
                t.missing,
                if self.config.screen_kbps > 0 {
                    format!(
                        "  screen sharers {}{}",
                        t.screen_sharers,
                        t.screen_failures
                            .iter()
                            .map(|(k, n)| format!(", failed: {k} ×{n}"))
                            .collect::<String>()
                    )
                } else {
                    String::new()
                }
            );
        }
        let k = &self.packets;
        let _ = writeln!(
            s,
            "packets       sent {} ({:.0}/s)  received {} ({:.0}/s)  over {:.1} s  streams {}/{} (missing {})",
            k.sent,
            k.sent_per_s,
            k.received,
            k.received_per_s,
            self.traffic_seconds,
            k.expected_streams - k.missing_streams.min(k.expected_streams),
            k.expected_streams,
            k.missing_streams
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "latency ms    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (wire to wire, {} packets)",
            opt(l.p50, 3),
            opt(l.p90, 3),
            opt(l.p99, 3),
            opt(l.p999, 3),
            opt(l.max, 3),
            l.count
        );
        let j = &self.join_ms;
        let _ = writeln!(
            s,
            "join ms       connected p50 {} p99 {}  first media p50 {} p99 {} max {}  without media {}",
            opt(j.connected_p50, 1),
            opt(j.connected_p99, 1),
            opt(j.first_media_p50, 1),
            opt(j.first_media_p99, 1),
            opt(j.first_media_max, 1),
            j.without_media
        );
        match &self.time_to_layer {
            Some(t) => {
                let p = |p: &Percentiles| {
                    format!(
                        "p50 {} p90 {} max {}",
                        opt(p.p50, 1),
                        opt(p.p90, 1),
                        opt(p.max, 1)
                    )
                };
                let _ = writeln!(
                    s,
                    "to layer {:<4} subscriptions {}  reached {}  never reached: {}  without video {}  packets before it {} (unseen {})",
                    t.requested,
                    t.subscriptions,
                    t.reached,
                    t.never_reached,
                    t.without_video,
                    t.packets_before,
                    t.packets_unseen_before
                );
                let _ = writeln!(
                    s,
                    "  ms          from first video packet {}  from both connected {}",
                    p(&t.from_first_packet_ms),
                    p(&t.from_connected_ms)
                );
            }
            None => {
                let _ = writeln!(s, "to layer      not measured (no video)");
            }
        }
        let o = &self.loss;
        let _ = writeln!(
            s,
            "loss          {:.5} ({} of {})  duplicates {}  reordered {}  layer-switch gaps {}  jitter ms mean {:.3} max {:.3}",
            o.ratio, o.lost, o.expected, o.duplicates, o.reordered, o.skipped_by_layer_switch, o.jitter_ms_mean, o.jitter_ms_max
        );
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>11} {:>8} {:>10} {:>14}",
            "stream", "streams", "received", "lost", "loss", "kbps/stream"
        );
        for (name, t) in &self.streams {
            let _ = writeln!(
                s,
                "{:<10} {:>8} {:>11} {:>8} {:>10.5} {:>14.1}",
                name,
                t.streams,
                t.received,
                t.lost,
                t.loss_ratio(),
                t.kbps_per_stream
            );
        }
        if let Some(r) = &self.relay {
            if !self.relay_nodes.is_empty() {
                let summed = self
                    .relay_nodes
                    .iter()
                    .filter(|n| n.relay.is_some())
                    .count();
                let _ = writeln!(
                    s,
                    "relay         sum over {summed} of {} nodes (counters added; latency from the merged histogram)",
                    self.relay_nodes.len()
                );
            }
            relay_lines(&mut s, "relay", r);
            for n in &self.relay_nodes {
                let _ = writeln!(s, "node          {}", n.metrics_url);
                match (&n.relay, &n.error) {
                    (Some(r), _) => relay_lines(&mut s, "  relay", r),
                    (None, e) => {
                        let _ =
                            writeln!(s, "  not counted: {}", e.as_deref().unwrap_or("no figures"));
                    }
                }
            }
        }
        let g = &self.loadgen;
        let window = g
            .steady
            .map_or(String::new(), |w| format!(" {:.1} s", w.seconds));
        let _ = writeln!(
            s,
            "loadgen cpu   {} s in all; {}{window}: {} µs per received packet, relay {} µs per forwarded: ratio {} (target ≤ {COST_RATIO_TARGET})  1 in {} decrypted",
            opt(self.loadgen_cpu_seconds, 2),
            g.basis,
            opt(g.cpu_us_per_received, 2),
            opt(g.relay_cpu_us_per_forwarded, 2),
            opt(g.cost_ratio, 3),
            self.config.decrypt_sample
        );
        if let Some(w) = g.steady {
            let lat = |l: Option<SpanLatency>, digits: usize| {
                l.map_or("-".into(), |l| {
                    format!(
                        "p50 {}  p99 {}  p99.9 {}",
                        opt(l.p50, digits),
                        opt(l.p99, digits),
                        opt(l.p999, digits)
                    )
                })
            };
            let _ = writeln!(
                s,
                "steady ms     relay fwd {}  |  wire to wire {}  (the {:.1} s after the joins)",
                lat(w.relay_forward_latency_ms, 4),
                lat(w.wire_latency_ms, 3),
                w.seconds
            );
        }
        let pct = |v: Option<f64>| v.map_or("-".into(), |u| format!("{:.0} %", u * 100.0));
        let _ = writeln!(
            s,
            "loadgen busy  {} of {} core{} ({}), {} over the traffic with the joins, busiest second {} (saturated at {:.0} %)",
            pct(g.utilisation),
            g.cores,
            if g.cores == 1 { "" } else { "s" },
            g.basis,
            pct(g.utilisation_traffic),
            pct(g.utilisation_peak_1s),
            SATURATED * 100.0
        );
        for why in &self.invalid {
            let _ = writeln!(
                s,
                "INVALID RUN   {why}: the figures above are not the relay's"
            );
        }
        if let Some(v) = &self.thresholds {
            let _ = writeln!(
                s,
                "thresholds    {}{}",
                if v.passed { "PASSED" } else { "FAILED: " },
                v.failures.join("; ")
            );
        }
        s
    }
}

/// The two lines of relay figures, labelled `name`.
fn relay_lines(s: &mut String, name: &str, r: &RelayReport) {
    let _ = writeln!(
        s,
        "{:<12}  received {}  forwarded {}  dropped {}  cpu {} s ({})  cpu s per million forwarded {}",
        name,
        opt(r.packets_received, 0),
        opt(r.packets_forwarded, 0),
        opt(r.datagrams_dropped, 0),
        opt(r.cpu_seconds, 2),
        r.cpu_source,
        opt(r.cpu_seconds_per_million_forwarded, 2)
    );
    let _ = writeln!(
        s,
        "{:<12}  p50 {}  p90 {}  p99 {}  p99.9 {}  (callrelay_forward_latency_seconds buckets)",
        format!("{name} fwd ms"),
        opt(r.forward_latency_ms_p50, 4),
        opt(r.forward_latency_ms_p90, 4),
        opt(r.forward_latency_ms_p99, 4),
        opt(r.forward_latency_ms_p999, 4)
    );
}

/// Packets delivered to receivers per second of relay CPU, if the relay's CPU time is known:
/// the throughput-per-cost figure that compares targets (it counts only what the loadgen
/// measured, so it means the same on callrelay and on Janus).
pub fn delivered_per_cpu_second(r: &Report) -> Option<f64> {
    let cpu = r.relay.as_ref()?.cpu_seconds?;
    (cpu > 0.0).then(|| r.packets.received as f64 / cpu)
}

/// Two reports of the same scenario side by side, with the ratios `b / a` (e.g. callrelay and
/// Janus): throughput per CPU-second, wire-to-wire latency percentiles and loss.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let (an, bn) = (&a.config.target, &b.config.target);
    let same = a.config.rooms == b.config.rooms
        && a.config.publishers == b.config.publishers
        && a.config.subscribers == b.config.subscribers
        && a.config.audio == b.config.audio
        && a.config.video_layers == b.config.video_layers
        && a.config.duration_s == b.config.duration_s
        && a.config.seed == b.config.seed
        && a.config.subscribe_layer == b.config.subscribe_layer;
    let c = &a.config;
    let _ = writeln!(
        s,
        "scenario: {} rooms × ({} publishers + {} subscribers), audio {}, video layers {} (receivers get {}), {} s, seed {}{}",
        c.rooms,
        c.publishers,
        c.subscribers,
        c.audio,
        c.video_layers,
        c.subscribe_layer,
        c.duration_s,
        c.seed,
        if same { "" } else { "  (WARNING: the two runs differ in scenario)" }
    );
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x > 0.0 => format!("{:.2}×", y / x),
        _ => "-".into(),
    };
    let _ = writeln!(
        s,
        "{:<36} {:>14} {:>14} {:>10}",
        "",
        an,
        bn,
        format!("{bn}/{an}")
    );
    let mut row = |name: &str, x: Option<f64>, y: Option<f64>, digits: usize| {
        let _ = writeln!(
            s,
            "{:<36} {:>14} {:>14} {:>10}",
            name,
            opt(x, digits),
            opt(y, digits),
            ratio(x, y)
        );
    };
    let joined = |r: &Report| Some(r.participants.joined as f64);
    row("participants joined", joined(a), joined(b), 0);
    row(
        "packets sent/s",
        Some(a.packets.sent_per_s),
        Some(b.packets.sent_per_s),
        0,
    );
    let missing = |r: &Report| Some(r.packets.missing_streams as f64);
    row("streams never received", missing(a), missing(b), 0);
    row(
        "packets delivered/s",
        Some(a.packets.received_per_s),
        Some(b.packets.received_per_s),
        0,
    );
    let cpu = |r: &Report| r.relay.as_ref().and_then(|x| x.cpu_seconds);
    row("relay CPU s", cpu(a), cpu(b), 2);
    row(
        "delivered per relay CPU-second",
        delivered_per_cpu_second(a),
        delivered_per_cpu_second(b),
        0,
    );
    let per_million = |r: &Report| {
        delivered_per_cpu_second(r)
            .filter(|v| *v > 0.0)
            .map(|v| 1e6 / v)
    };
    row(
        "relay CPU s per million delivered",
        per_million(a),
        per_million(b),
        2,
    );
    row("latency p50 ms", a.latency_ms.p50, b.latency_ms.p50, 3);
    row("latency p99 ms", a.latency_ms.p99, b.latency_ms.p99, 3);
    row("latency p99.9 ms", a.latency_ms.p999, b.latency_ms.p999, 3);
    row("loss ratio", Some(a.loss.ratio), Some(b.loss.ratio), 5);
    row(
        "join → first media p50 ms",
        a.join_ms.first_media_p50,
        b.join_ms.first_media_p50,
        1,
    );
    let layer =
        |r: &Report, f: fn(&LayerReport) -> Option<f64>| r.time_to_layer.as_ref().and_then(f);
    row(
        "to requested layer p50 ms",
        layer(a, |t| t.from_first_packet_ms.p50),
        layer(b, |t| t.from_first_packet_ms.p50),
        1,
    );
    row(
        "to requested layer max ms",
        layer(a, |t| t.from_first_packet_ms.max),
        layer(b, |t| t.from_first_packet_ms.max),
        1,
    );
    row(
        "subscriptions never at layer",
        layer(a, |t| Some(t.never_reached as f64)),
        layer(b, |t| Some(t.never_reached as f64)),
        0,
    );
    let lg = |r: &Report| r.loadgen_cpu_seconds;
    row("loadgen CPU s", lg(a), lg(b), 2);
    let per = |r: &Report| r.loadgen.cpu_us_per_received;
    row("loadgen CPU µs per received", per(a), per(b), 2);
    for (name, r) in [(an, a), (bn, b)] {
        for why in &r.invalid {
            let _ = writeln!(s, "INVALID {name}: {why}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, received: u64, cpu: Option<f64>, p99: f64, missing: u64) -> Report {
        let v = serde_json::json!({
            "config": {"target": target, "rooms": 2, "publishers": 3, "subscribers": 0,
                "audio": true, "video_layers": 3, "duration_s": 10.0, "join_rate": 10.0,
                "seed": 1, "keyframe_interval_s": 2.0},
            "participants": {"requested": 6, "joined": 6, "failed": 0, "errors": {},
                "keyframe_requests": 0, "dropped_events": 0},
            "packets": {"sent": 1000, "expected_streams": 24, "missing_streams": missing,
                "received": received, "sent_per_s": 100.0,
                "received_per_s": received as f64 / 10.0, "foreign": 0},
            "latency_ms": {"count": received, "p50": 0.2, "p90": 0.5, "p99": p99,
                "p999": 2.0, "max": 3.0, "mean": 0.3},
            "join_ms": {"connected_p50": 50.0, "connected_p99": 60.0, "first_media_p50": 70.0,
                "first_media_p99": 90.0, "first_media_max": 95.0, "without_media": 0},
            "loss": {"ratio": 0.0, "expected": received, "lost": 0, "duplicates": 0,
                "reordered": 0, "skipped_by_layer_switch": 0, "jitter_ms_mean": 0.1,
                "jitter_ms_max": 0.2},
            "streams": {},
            "relay": cpu.map(RelayReport::cpu_only),
            "loadgen_cpu_seconds": 1.5,
            "traffic_seconds": 10.0,
            "thresholds": null
        });
        serde_json::from_value(v).expect("a report")
    }

    #[test]
    fn throughput_per_cpu_second_counts_what_receivers_got() {
        assert_eq!(
            delivered_per_cpu_second(&report("a", 5000, Some(0.5), 1.0, 0)),
            Some(10_000.0)
        );
        assert_eq!(
            delivered_per_cpu_second(&report("a", 5000, None, 1.0, 0)),
            None
        );
        assert_eq!(
            delivered_per_cpu_second(&report("a", 5000, Some(0.0), 1.0, 0)),
            None
        );
    }

    #[test]
    fn the_side_by_side_table_gives_ratios_b_over_a() {
        let a = report("callrelay", 8000, Some(0.4), 1.0, 0);
        let b = report("janus", 8000, Some(0.8), 1.5, 0);
        let t = compare(&a, &b);
        let line = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in\n{t}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        // 8000 / 0.4 = 20000 and 8000 / 0.8 = 10000 packets per CPU-second.
        assert_eq!(
            line("delivered per relay CPU-second")[4..],
            ["20000", "10000", "0.50×"]
        );
        assert_eq!(line("latency p99 ms")[3..], ["1.000", "1.500", "1.50×"]);
        assert!(
            t.contains("callrelay") && t.contains("janus/callrelay"),
            "{t}"
        );
        assert!(!t.contains("WARNING"), "{t}");
        let mut other = b.clone();
        other.config.publishers = 4;
        assert!(compare(&a, &other).contains("WARNING"));
    }

    #[test]
    fn streams_that_never_arrive_fail_the_loss_threshold() {
        let t = Thresholds {
            max_p99: None,
            max_loss: Some(0.001),
        };
        assert!(t.judge(&report("a", 100, None, 1.0, 0)).unwrap().passed);
        let v = t.judge(&report("a", 100, None, 1.0, 2)).unwrap();
        assert!(!v.passed);
        assert_eq!(v.failures, ["2 of 24 streams never received"]);
    }

    #[test]
    fn failed_rejoins_and_sessions_the_relay_ended_fail_the_loss_threshold() {
        let t = Thresholds {
            max_p99: None,
            max_loss: Some(0.001),
        };
        // Older reports have neither field: they read as none.
        let mut r = report("a", 100, None, 1.0, 0);
        assert_eq!(r.rejoins.count, 0);
        assert!(r.participants.closed_by_relay.is_empty());
        assert!(r.relay_nodes.is_empty());
        // Successful rejoins alone pass (their gaps count as loss already).
        r.rejoins.count = 3;
        r.rejoins.by_reason.insert("drain".into(), 2);
        r.rejoins.by_reason.insert("node_lost".into(), 1);
        r.rejoins.took_ms_p50 = Some(210.0);
        assert!(t.judge(&r).unwrap().passed);
        let table = r.table();
        assert!(
            table.contains("rejoins       3 (drain ×2, node_lost ×1)  failed 0  took ms p50 210.0"),
            "{table}"
        );
        r.rejoins.failed = 1;
        r.participants.closed_by_relay.insert("revoked".into(), 2);
        let v = t.judge(&r).unwrap();
        assert_eq!(
            v.failures,
            [
                "1 rejoins failed",
                "2 sessions closed by the relay (revoked ×2)"
            ]
        );
        assert!(r
            .table()
            .contains("closed        by the relay, final: revoked ×2"));
    }

    #[test]
    fn several_nodes_show_the_sum_and_each_node() {
        let mut r = report("callrelay", 100, Some(1.0), 1.0, 0);
        r.relay_nodes = vec![
            NodeReport {
                metrics_url: "http://a/metrics".into(),
                relay: Some(RelayReport::cpu_only(0.4)),
                error: None,
            },
            NodeReport {
                metrics_url: "http://b/metrics".into(),
                relay: None,
                error: Some("GET http://b/metrics: connection refused".into()),
            },
        ];
        let t = r.table();
        assert!(t.contains("relay         sum over 1 of 2 nodes"), "{t}");
        assert!(
            t.contains("node          http://a/metrics\n  relay       received"),
            "{t}"
        );
        assert!(
            t.contains("  not counted: GET http://b/metrics: connection refused"),
            "{t}"
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.relay_nodes.len(), 2);
    }

    #[test]
    fn a_saturated_loadgen_makes_the_run_invalid() {
        // Older reports know neither sampling nor validity: every packet decrypted, valid.
        let mut r = report("callrelay", 8000, Some(0.4), 1.0, 0);
        assert_eq!(r.config.decrypt_sample, 1);
        assert!(r.valid && r.invalid.is_empty());
        r.relay.as_mut().unwrap().cpu_seconds_per_million_forwarded = Some(50.0);
        // No steady window: the whole run. 1.5 CPU-s over 10 s of traffic on one core: 15 %
        // busy; 1.5 s / 8000 packets = 187.5 µs each.
        r.loadgen_cpu_seconds = Some(1.5);
        r.loadgen = LoadgenReport::new(&r, 1, None, Some((1.5, 10.0)), Some(0.3));
        r.judge_validity();
        let g = &r.loadgen;
        assert_eq!(g.basis, "whole run");
        assert_eq!(g.utilisation, Some(0.15));
        assert_eq!(g.utilisation_peak_1s, Some(0.3));
        assert_eq!(g.cpu_us_per_received, Some(187.5));
        assert_eq!(g.cost_ratio, Some(3.75));
        assert!(r.valid && !g.saturated);
        let t = r.table();
        assert!(
            t.contains("loadgen busy  15 % of 1 core (whole run)"),
            "{t}"
        );
        assert!(!t.contains("INVALID"));
        // A steady window of 8 s: 2 CPU-s for 40,000 packets (50 µs each) against the relay's
        // 4 CPU-s for 20,000 forwarded (200 µs each).
        let steady = Span {
            seconds: 8.0,
            cpu: Some(2.0),
            received: 40_000,
            relay_cpu: Some(4.0),
            relay_forwarded: Some(20_000.0),
            relay_session_drives: Some(5_000.0),
            relay_forward_latency_ms: Some(SpanLatency {
                count: 20_000,
                p50: Some(0.25),
                p90: Some(0.5),
                p99: Some(0.9),
                p999: Some(1.5),
            }),
            wire_latency_ms: None,
        };
        r.loadgen = LoadgenReport::new(&r, 1, Some(steady), Some((9.5, 10.0)), Some(1.0));
        assert!(
            r.table().contains(
                "steady ms     relay fwd p50 0.2500  p99 0.9000  p99.9 1.5000  |  wire to wire -  (the 8.0 s after the joins)"
            ),
            "{}",
            r.table()
        );
        r.judge_validity();
        let g = &r.loadgen;
        assert_eq!(g.basis, "steady");
        assert_eq!(
            (
                g.cpu_us_per_received,
                g.relay_cpu_us_per_forwarded,
                g.cost_ratio
            ),
            (Some(50.0), Some(200.0), Some(0.25))
        );
        assert_eq!(
            (g.utilisation, g.utilisation_traffic),
            (Some(0.25), Some(0.95))
        );
        assert!(r.valid, "busy in the joins only");
        // 7.6 CPU-s over the 8 s window on one core: saturated.
        let busy = Span {
            cpu: Some(7.6),
            ..steady
        };
        r.loadgen = LoadgenReport::new(&r, 1, Some(busy), Some((9.5, 10.0)), Some(1.0));
        r.judge_validity();
        assert!(r.loadgen.saturated && !r.valid);
        assert_eq!(
            r.invalid,
            ["the loadgen's CPU was saturated: 95 % of its 1 core over the steady traffic (limit 90 %)"]
        );
        assert!(r
            .table()
            .contains("INVALID RUN   the loadgen's CPU was saturated"));
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(!back.valid && back.loadgen.saturated);
        assert_eq!(back.loadgen.steady, Some(busy));
        // Two cores: the same CPU is 47.5 %.
        r.loadgen = LoadgenReport::new(&r, 2, Some(busy), None, None);
        r.judge_validity();
        assert!(r.valid);
    }

    #[test]
    fn connections_refused_at_the_per_address_cap_make_the_run_invalid() {
        let mut r = report("callrelay", 8000, Some(0.4), 1.0, 0);
        // A report written before the field existed: unknown, and valid.
        assert_eq!(r.relay.as_ref().unwrap().http_refused_per_ip, None);
        r.judge_validity();
        assert!(r.valid);
        r.relay.as_mut().unwrap().http_refused_per_ip = Some(0.0);
        r.judge_validity();
        assert!(r.valid && r.invalid.is_empty());
        r.relay.as_mut().unwrap().http_refused_per_ip = Some(87.0);
        r.judge_validity();
        assert!(!r.valid);
        assert_eq!(r.invalid.len(), 1);
        assert!(
            r.invalid[0]
                .starts_with("the relay refused 87 connections at http.max_connections_per_ip")
                && r.invalid[0]
                    .ends_with("(start the relay with CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0)"),
            "{:?}",
            r.invalid
        );
        assert!(r
            .table()
            .contains("INVALID RUN   the relay refused 87 connections"));
    }

    #[test]
    fn participants_that_never_join_fail_the_loss_threshold() {
        let t = Thresholds {
            max_p99: None,
            max_loss: Some(0.001),
        };
        let mut r = report("a", 100, None, 1.0, 0);
        r.participants.joined = 5;
        r.participants.failed = 1;
        let v = t.judge(&r).unwrap();
        assert!(!v.passed);
        assert_eq!(v.failures, ["1 of 6 participants failed to join"]);
        // Without thresholds there is no verdict to fail.
        assert!(Thresholds {
            max_p99: None,
            max_loss: None
        }
        .judge(&r)
        .is_none());
    }

    #[test]
    fn the_time_to_the_layer_is_reported_with_the_subscriptions_that_never_got_it() {
        let p = Percentiles::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((p.p50, p.p90, p.max), (Some(3.0), Some(5.0), Some(5.0)));
        let p = Percentiles::of((1..=10).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.max), (Some(5.0), Some(9.0), Some(10.0)));
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());

        // Older reports have no such figure: not measured.
        let mut r = report("callrelay", 100, None, 1.0, 0);
        assert!(r.time_to_layer.is_none());
        assert!(r.table().contains("to layer      not measured (no video)"));
        r.time_to_layer = Some(LayerReport {
            requested: "h".into(),
            subscriptions: 12,
            reached: 11,
            never_reached: 1,
            without_video: 0,
            from_first_packet_ms: Percentiles::of(vec![80.0; 11]),
            from_connected_ms: Percentiles::of(vec![150.0; 11]),
            packets_before: 300,
            packets_unseen_before: 0,
        });
        let t = r.table();
        assert!(
            t.contains(
                "to layer h    subscriptions 12  reached 11  never reached: 1  without video 0"
            ),
            "{t}"
        );
        assert!(
            t.contains("from first video packet p50 80.0 p90 80.0 max 80.0"),
            "{t}"
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.time_to_layer, r.time_to_layer);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["time_to_layer"]["never_reached"], 1);
        assert_eq!(v["time_to_layer"]["from_first_packet_ms"]["p50"], 80.0);
    }
}
