//! Every metric of the process, defined in one place (name, help, unit, labels, buckets).
//!
//! The registry is created by the caller (`main`, or a test) and passed in; nothing here is a
//! global. Conventions: base units (`_seconds`), counters end in `_total`, node-level labels only
//! (never a label per link, room or participant).

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use callrelay_links::Refusal;

/// The metric families of the control plane.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `callrelay_http_requests_total{route,method,status}`
    pub http_requests: IntCounterVec,
    /// `callrelay_http_request_duration_seconds{route}`
    pub http_duration: HistogramVec,
    /// `callrelay_joins_total{result}`: `admitted` or a refusal reason.
    pub joins: IntCounterVec,
    /// `callrelay_links_created_total`
    pub links_created: IntCounter,
    /// `callrelay_links_revoked_total`
    pub links_revoked: IntCounter,
    /// `callrelay_links_purged_total`
    pub links_purged: IntCounter,
    /// `callrelay_rate_limited_total{scope}`
    pub rate_limited: IntCounterVec,
    /// `callrelay_auth_failures_total`
    pub auth_failures: IntCounter,
    /// `callrelay_store_operation_duration_seconds{op}`
    pub store_duration: HistogramVec,
    /// `callrelay_store_errors_total{kind}`
    pub store_errors: IntCounterVec,
    /// `callrelay_store_up` (1 when the last readiness check reached the store)
    pub store_up: IntGauge,
    /// `callrelay_join_duration_seconds` (the whole join request, store included)
    pub join_duration: Histogram,
    /// `callrelay_draining`: 1 while this node drains, else 0.
    pub draining: IntGauge,
    /// `callrelay_drain_started_timestamp_seconds`: Unix time the current drain started; 0 when
    /// not draining (alerts compare it with `time()` to catch a drain stuck past its deadline).
    pub drain_started: Gauge,
    /// `callrelay_http_connections`: TCP connections open on the HTTP port (signaling
    /// WebSockets included).
    pub http_connections: IntGauge,
    /// `callrelay_http_connections_refused_total{reason}`: connections closed at accept
    /// (`per_ip_limit`: `http.max_connections_per_ip` reached).
    pub http_connections_refused: IntCounterVec,
    /// `callrelay_http_connections_timed_out_total{phase}`: connections closed by a timeout,
    /// `header` (`http.header_timeout`) or `idle` (`http.idle_timeout`). Body timeouts answer
    /// 408 (`callrelay_http_requests_total{status="408"}`).
    pub http_connections_timed_out: IntCounterVec,
}

/// Reasons used as the `reason` label of `callrelay_http_connections_refused_total`.
pub const HTTP_REFUSAL_REASONS: [&str; 1] = ["per_ip_limit"];

/// Phases used as the `phase` label of `callrelay_http_connections_timed_out_total`.
pub const HTTP_TIMEOUT_PHASES: [&str; 2] = ["header", "idle"];

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

impl Metrics {
    /// Creates and registers every family on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            http_requests: IntCounterVec::new(
                Opts::new(
                    "callrelay_http_requests_total",
                    "HTTP requests answered, by route template, method and status code.",
                ),
                &["route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "callrelay_http_request_duration_seconds",
                    "Time to answer an HTTP request, by route template.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
            joins: IntCounterVec::new(
                Opts::new(
                    "callrelay_joins_total",
                    "Join requests by result: admitted, or the refusal reason.",
                ),
                &["result"],
            )?,
            links_created: IntCounter::new("callrelay_links_created_total", "Call links created.")?,
            links_revoked: IntCounter::new(
                "callrelay_links_revoked_total",
                "Call links revoked by an operator (first revocation only).",
            )?,
            links_purged: IntCounter::new(
                "callrelay_links_purged_total",
                "Expired call links deleted after the grace period.",
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "callrelay_rate_limited_total",
                    "Requests refused with 429, by limit.",
                ),
                &["scope"],
            )?,
            auth_failures: IntCounter::new(
                "callrelay_auth_failures_total",
                "Requests refused for a missing or invalid token.",
            )?,
            store_duration: HistogramVec::new(
                HistogramOpts::new(
                    "callrelay_store_operation_duration_seconds",
                    "Time of one store operation, by operation.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "callrelay_store_errors_total",
                    "Store operations that failed, by kind of error.",
                ),
                &["kind"],
            )?,
            store_up: IntGauge::new(
                "callrelay_store_up",
                "1 if the last readiness probe reached the store, else 0.",
            )?,
            join_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "callrelay_join_duration_seconds",
                    "Time to decide and record a join request (store included).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            draining: IntGauge::new(
                "callrelay_draining",
                "1 while this node is draining, else 0.",
            )?,
            drain_started: Gauge::new(
                "callrelay_drain_started_timestamp_seconds",
                "Unix time the current drain started; 0 when not draining.",
            )?,
            http_connections: IntGauge::new(
                "callrelay_http_connections",
                "TCP connections open on the HTTP port, signaling WebSockets included.",
            )?,
            http_connections_refused: IntCounterVec::new(
                Opts::new(
                    "callrelay_http_connections_refused_total",
                    "HTTP connections closed at accept, by reason (per_ip_limit: http.max_connections_per_ip).",
                ),
                &["reason"],
            )?,
            http_connections_timed_out: IntCounterVec::new(
                Opts::new(
                    "callrelay_http_connections_timed_out_total",
                    "HTTP connections closed by a timeout, by phase (header: http.header_timeout, idle: http.idle_timeout).",
                ),
                &["phase"],
            )?,
        };
        registry.register(Box::new(m.http_requests.clone()))?;
        registry.register(Box::new(m.http_duration.clone()))?;
        registry.register(Box::new(m.joins.clone()))?;
        registry.register(Box::new(m.links_created.clone()))?;
        registry.register(Box::new(m.links_revoked.clone()))?;
        registry.register(Box::new(m.links_purged.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.store_duration.clone()))?;
        registry.register(Box::new(m.store_errors.clone()))?;
        registry.register(Box::new(m.store_up.clone()))?;
        registry.register(Box::new(m.join_duration.clone()))?;
        registry.register(Box::new(m.draining.clone()))?;
        registry.register(Box::new(m.drain_started.clone()))?;
        registry.register(Box::new(m.http_connections.clone()))?;
        registry.register(Box::new(m.http_connections_refused.clone()))?;
        registry.register(Box::new(m.http_connections_timed_out.clone()))?;
        for r in HTTP_REFUSAL_REASONS {
            m.http_connections_refused.with_label_values(&[r]);
        }
        for p in HTTP_TIMEOUT_PHASES {
            m.http_connections_timed_out.with_label_values(&[p]);
        }
        // Initialise the label values an alert or a dashboard expects, so they exist at 0.
        m.joins.with_label_values(&["admitted"]);
        for r in ["seat_limit", "node_draining", "no_node_available", "error"] {
            m.joins.with_label_values(&[r]);
        }
        for r in Refusal::ALL {
            m.joins.with_label_values(&[r.as_str()]);
        }
        for scope in ["join_ip", "join_user", "preview_ip", "create_user"] {
            m.rate_limited.with_label_values(&[scope]);
        }
        m.store_errors.with_label_values(&["unavailable"]);
        let info = IntGauge::with_opts(
            Opts::new(
                "callrelay_build_info",
                "Build information; the value is always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        info.set(1);
        registry.register(Box::new(info))?;
        Ok(m)
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode_utf8(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    out
}

/// Buckets of `callrelay_forward_latency_seconds`: 1 µs to 100 ms.
pub const FORWARD_LATENCY_BUCKETS: &[f64] = &[
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
];

/// Media kinds used as the `kind` label of packet and byte counters.
pub const MEDIA_KINDS: [&str; 3] = ["audio", "video", "rtcp"];

/// Reasons used as the `reason` label of `callrelay_datagrams_dropped_total`. Only datagrams:
/// throttled keyframe requests are not dropped datagrams and have their own counter
/// (`callrelay_keyframe_requests_throttled_total`).
pub const DROP_REASONS: [&str; 10] = [
    "oversized",
    "runt",
    "unknown_source",
    "bad_stun",
    // SRTP/SRTCP from an address that passed ICE, before DTLS gave the keys (THREATS 8).
    "before_keys",
    "not_negotiated",
    // RTP on an SSRC over the sender's cap, or new SSRCs faster than allowed (THREATS 13).
    "ssrc_limit",
    // Media over its sender's ingress budget, dropped before fan-out (THREATS 12).
    "ingress_limit",
    "error",
    // An outgoing datagram the kernel refused (unreachable or invalid address, too large), or
    // the worker's socket failed while datagrams waited for room in it.
    "send_failed",
];

/// The metric families of enforcement and of the cluster (leases, placement).
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// `callrelay_control_propagation_seconds{kind}`: from the API call (revoke, block) or the
    /// moment a link expired to the removal of its participants on the node hosting the call.
    pub propagation: HistogramVec,
    /// `callrelay_cluster_lease_held`: 1 while this node holds its cluster lease.
    pub lease_held: IntGauge,
    /// `callrelay_cluster_epoch`: this node's registration epoch.
    pub epoch: IntGauge,
    /// `callrelay_cluster_heartbeat_failures_total`
    pub heartbeat_failures: IntCounter,
    /// `callrelay_cluster_registrations_total`: (re-)registrations, each under a new epoch.
    pub registrations: IntCounter,
    /// `callrelay_cluster_placements_total{outcome}`
    pub placements: IntCounterVec,
    /// `callrelay_cluster_rooms_moved_total`: stale copies of a room merged into its live home.
    pub rooms_moved: IntCounter,
    /// `callrelay_cluster_nodes{state}`: members as this node last read the registry.
    pub nodes: prometheus::IntGaugeVec,
    /// `callrelay_cluster_notices_total{kind,direction}`
    pub notices: IntCounterVec,
    /// `callrelay_reconcile_removals_total{reason}`: removals made by reconciliation (a notice
    /// was lost, or a link expired).
    pub reconcile_removals: IntCounterVec,
    /// `callrelay_cluster_errors_total{op}`: cluster store operations that failed.
    pub errors: IntCounterVec,
}

/// Buckets of `callrelay_control_propagation_seconds`: the target is under 1 s.
const PROPAGATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Kinds of `callrelay_control_propagation_seconds`.
pub const PROPAGATION_KINDS: [&str; 3] = ["revoke", "block", "expiry"];
/// Outcomes of `callrelay_cluster_placements_total`.
pub const PLACEMENT_OUTCOMES: [&str; 4] = ["existing", "new_local", "new_remote", "replaced"];
/// Operations of `callrelay_cluster_errors_total`.
pub const CLUSTER_OPS: [&str; 10] = [
    "register",
    "heartbeat",
    "place",
    "claim",
    "report",
    "release",
    "room",
    "nodes",
    "notify",
    "gc",
];
/// States of `callrelay_cluster_nodes`.
pub const NODE_STATES: [&str; 3] = ["serving", "draining", "expired"];

impl ClusterMetrics {
    /// Creates and registers every family on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<ClusterMetrics> {
        let m = ClusterMetrics {
            propagation: HistogramVec::new(
                HistogramOpts::new(
                    "callrelay_control_propagation_seconds",
                    "Time from a revocation or block API call (or a link's expiry) to the removal of the participants concerned, on the node hosting the call.",
                )
                .buckets(PROPAGATION_BUCKETS.to_vec()),
                &["kind"],
            )?,
            lease_held: IntGauge::new(
                "callrelay_cluster_lease_held",
                "1 while this node holds its cluster lease, else 0 (always 0 without a cluster).",
            )?,
            epoch: IntGauge::new(
                "callrelay_cluster_epoch",
                "This node's registration epoch in the cluster (0 without a cluster).",
            )?,
            heartbeat_failures: IntCounter::new(
                "callrelay_cluster_heartbeat_failures_total",
                "Cluster heartbeats that did not reach the store.",
            )?,
            registrations: IntCounter::new(
                "callrelay_cluster_registrations_total",
                "Registrations of this node in the cluster, each under a new epoch (start, or after a lost lease).",
            )?,
            placements: IntCounterVec::new(
                Opts::new(
                    "callrelay_cluster_placements_total",
                    "Joins placed by this node, by outcome: the call's existing home, a new room here or elsewhere, or a room whose home was lost.",
                ),
                &["outcome"],
            )?,
            rooms_moved: IntCounter::new(
                "callrelay_cluster_rooms_moved_total",
                "Stale copies of a room on this node merged into the room's live home (participants told `moved`).",
            )?,
            nodes: prometheus::IntGaugeVec::new(
                Opts::new(
                    "callrelay_cluster_nodes",
                    "Cluster members by state, as this node last read the registry.",
                ),
                &["state"],
            )?,
            notices: IntCounterVec::new(
                Opts::new(
                    "callrelay_cluster_notices_total",
                    "Control notices sent to or received from other nodes, by kind and direction.",
                ),
                &["kind", "direction"],
            )?,
            reconcile_removals: IntCounterVec::new(
                Opts::new(
                    "callrelay_reconcile_removals_total",
                    "Participants or rooms removed by periodic reconciliation with the store, by reason.",
                ),
                &["reason"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "callrelay_cluster_errors_total",
                    "Cluster store operations that failed, by operation.",
                ),
                &["op"],
            )?,
        };
        registry.register(Box::new(m.propagation.clone()))?;
        registry.register(Box::new(m.lease_held.clone()))?;
        registry.register(Box::new(m.epoch.clone()))?;
        registry.register(Box::new(m.heartbeat_failures.clone()))?;
        registry.register(Box::new(m.registrations.clone()))?;
        registry.register(Box::new(m.placements.clone()))?;
        registry.register(Box::new(m.rooms_moved.clone()))?;
        registry.register(Box::new(m.nodes.clone()))?;
        registry.register(Box::new(m.notices.clone()))?;
        registry.register(Box::new(m.reconcile_removals.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        for k in PROPAGATION_KINDS {
            m.propagation.with_label_values(&[k]);
        }
        for o in PLACEMENT_OUTCOMES {
            m.placements.with_label_values(&[o]);
        }
        for s in NODE_STATES {
            m.nodes.with_label_values(&[s]);
        }
        for k in ["revoke", "block"] {
            for d in ["sent", "received"] {
                m.notices.with_label_values(&[k, d]);
            }
        }
        for r in ["revoked", "blocked", "expired", "moved"] {
            m.reconcile_removals.with_label_values(&[r]);
        }
        for op in CLUSTER_OPS {
            m.errors.with_label_values(&[op]);
        }
        Ok(m)
    }
}

/// Reasons used as the `reason` label of `callrelay_participants_removed_total`.
pub const REMOVE_REASONS: [&str; 11] = [
    "left",
    "revoked",
    "blocked",
    "room_full",
    "idle",
    "drain",
    "kicked",
    "error",
    "moved",
    "expired",
    "rate_limited",
];

/// Codes used as the `code` label of `callrelay_signaling_errors_total` (proto/signal.proto).
pub const SIGNALING_ERROR_CODES: [&str; 15] = [
    "invalid_message",
    "invalid_grant",
    "grant_expired",
    "link_revoked",
    "link_expired",
    "join_refused",
    "room_full",
    "already_joined",
    "not_joined",
    "sdp_rejected",
    "video_not_allowed",
    "rate_limited",
    "wrong_node",
    "seat_limit",
    "internal",
];

/// The metric families of the media plane (UDP workers, the forwarding core, signaling).
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    /// `callrelay_forward_latency_seconds`: arrival of a datagram at the socket to the moment each
    /// forwarded copy is handed to the kernel, time held back by the pacer included.
    pub forward_latency: Histogram,
    /// `callrelay_packets_received_total{kind}`
    pub packets_received: IntCounterVec,
    /// `callrelay_bytes_received_total{kind}`
    pub bytes_received: IntCounterVec,
    /// `callrelay_packets_forwarded_total{kind}`
    pub packets_forwarded: IntCounterVec,
    /// `callrelay_bytes_forwarded_total{kind}`
    pub bytes_forwarded: IntCounterVec,
    /// `callrelay_datagrams_dropped_total{reason}`
    pub datagrams_dropped: IntCounterVec,
    /// `callrelay_media_datagrams_sent_total`: datagrams the media workers handed to the
    /// kernel (each segment of a GSO send counts).
    pub datagrams_sent: IntCounter,
    /// `callrelay_media_send_syscalls_total`: send system calls the media workers made
    /// (`sendmmsg`, each carrying many datagrams). Datagrams sent over this is the batching.
    pub send_syscalls: IntCounter,
    /// `callrelay_rooms`
    pub rooms: IntGauge,
    /// `callrelay_participants`
    pub participants: IntGauge,
    /// `callrelay_published_tracks{kind}`
    pub published_tracks: prometheus::IntGaugeVec,
    /// `callrelay_join_to_first_packet_seconds`
    pub join_to_first_packet: Histogram,
    /// `callrelay_participants_removed_total{reason}`
    pub participants_removed: IntCounterVec,
    /// `callrelay_keyframe_requests_total`
    pub keyframe_requests: IntCounter,
    /// `callrelay_keyframe_requests_throttled_total`: keyframe requests (PLI/FIR) from
    /// subscribers, or the relay's own, not relayed to the publisher because one for the same
    /// layer went out within the throttle interval.
    pub keyframe_requests_throttled: IntCounter,
    /// `callrelay_nacks_total`
    pub nacks: IntCounter,
    /// `callrelay_worker_busy_ratio{worker}`: share of the last interval a worker spent working.
    pub worker_busy: prometheus::GaugeVec,
    /// `callrelay_signaling_sessions`
    pub signaling_sessions: IntGauge,
    /// `callrelay_signaling_errors_total{code}`
    pub signaling_errors: IntCounterVec,
    /// `callrelay_signaling_rate_limited_total{type}`: client messages refused over their budget.
    pub signaling_rate_limited: IntCounterVec,
    /// `callrelay_signaling_coalesced_total`: room updates (mute, active speaker) replaced by a
    /// newer one before a slow receiver read them.
    pub signaling_coalesced: IntCounter,
}

impl MediaMetrics {
    /// Creates and registers every family on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<MediaMetrics> {
        let m = MediaMetrics {
            forward_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "callrelay_forward_latency_seconds",
                    "Time from a datagram's arrival at the relay's socket to the moment each forwarded copy is handed to the kernel (time held back by the pacer included).",
                )
                .buckets(FORWARD_LATENCY_BUCKETS.to_vec()),
            )?,
            packets_received: IntCounterVec::new(
                Opts::new("callrelay_packets_received_total", "RTP/RTCP packets received from participants, by media kind."),
                &["kind"],
            )?,
            bytes_received: IntCounterVec::new(
                Opts::new("callrelay_bytes_received_total", "Bytes of RTP/RTCP packets received, by media kind."),
                &["kind"],
            )?,
            packets_forwarded: IntCounterVec::new(
                Opts::new("callrelay_packets_forwarded_total", "Packet copies forwarded to subscribers, by media kind."),
                &["kind"],
            )?,
            bytes_forwarded: IntCounterVec::new(
                Opts::new("callrelay_bytes_forwarded_total", "Bytes of packet copies forwarded to subscribers, by media kind."),
                &["kind"],
            )?,
            datagrams_dropped: IntCounterVec::new(
                Opts::new("callrelay_datagrams_dropped_total", "Datagrams dropped before or during processing, by reason."),
                &["reason"],
            )?,
            datagrams_sent: IntCounter::new(
                "callrelay_media_datagrams_sent_total",
                "Datagrams the media workers handed to the kernel (each segment of a GSO send counts).",
            )?,
            send_syscalls: IntCounter::new(
                "callrelay_media_send_syscalls_total",
                "Send system calls made by the media workers (sendmmsg: many datagrams, many destinations each).",
            )?,
            rooms: IntGauge::new("callrelay_rooms", "Rooms with at least one participant on this node.")?,
            participants: IntGauge::new("callrelay_participants", "Participants connected to this node.")?,
            published_tracks: prometheus::IntGaugeVec::new(
                Opts::new("callrelay_published_tracks", "Tracks published on this node, by media kind."),
                &["kind"],
            )?,
            join_to_first_packet: Histogram::with_opts(
                HistogramOpts::new(
                    "callrelay_join_to_first_packet_seconds",
                    "Time from an admitted join to the first media packet forwarded to that participant.",
                )
                .buckets(vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0]),
            )?,
            participants_removed: IntCounterVec::new(
                Opts::new("callrelay_participants_removed_total", "Participants removed from calls, by reason."),
                &["reason"],
            )?,
            keyframe_requests: IntCounter::new(
                "callrelay_keyframe_requests_total",
                "Keyframe requests (PLI/FIR) sent to publishers after throttling.",
            )?,
            keyframe_requests_throttled: IntCounter::new(
                "callrelay_keyframe_requests_throttled_total",
                "Keyframe requests (PLI/FIR) not relayed to the publisher: one for the same layer went out within the throttle interval.",
            )?,
            nacks: IntCounter::new("callrelay_nacks_total", "NACK feedback packets received from subscribers.")?,
            worker_busy: prometheus::GaugeVec::new(
                Opts::new("callrelay_worker_busy_ratio", "Share of time (0-1) each media worker spent working over the last second."),
                &["worker"],
            )?,
            signaling_sessions: IntGauge::new("callrelay_signaling_sessions", "Open signaling WebSockets.")?,
            signaling_errors: IntCounterVec::new(
                Opts::new("callrelay_signaling_errors_total", "Signaling error messages sent to clients, by code."),
                &["code"],
            )?,
            signaling_rate_limited: IntCounterVec::new(
                Opts::new("callrelay_signaling_rate_limited_total", "Client signaling messages refused over the sender's budget, by message type."),
                &["type"],
            )?,
            signaling_coalesced: IntCounter::new(
                "callrelay_signaling_coalesced_total",
                "Room updates (mute, active speaker) to a slow receiver replaced by a newer one before it read them.",
            )?,
        };
        registry.register(Box::new(m.forward_latency.clone()))?;
        registry.register(Box::new(m.packets_received.clone()))?;
        registry.register(Box::new(m.bytes_received.clone()))?;
        registry.register(Box::new(m.packets_forwarded.clone()))?;
        registry.register(Box::new(m.bytes_forwarded.clone()))?;
        registry.register(Box::new(m.datagrams_dropped.clone()))?;
        registry.register(Box::new(m.datagrams_sent.clone()))?;
        registry.register(Box::new(m.send_syscalls.clone()))?;
        registry.register(Box::new(m.rooms.clone()))?;
        registry.register(Box::new(m.participants.clone()))?;
        registry.register(Box::new(m.published_tracks.clone()))?;
        registry.register(Box::new(m.join_to_first_packet.clone()))?;
        registry.register(Box::new(m.participants_removed.clone()))?;
        registry.register(Box::new(m.keyframe_requests.clone()))?;
        registry.register(Box::new(m.keyframe_requests_throttled.clone()))?;
        registry.register(Box::new(m.nacks.clone()))?;
        registry.register(Box::new(m.worker_busy.clone()))?;
        registry.register(Box::new(m.signaling_sessions.clone()))?;
        registry.register(Box::new(m.signaling_errors.clone()))?;
        registry.register(Box::new(m.signaling_rate_limited.clone()))?;
        registry.register(Box::new(m.signaling_coalesced.clone()))?;
        for k in crate::budget::Kind::ALL {
            m.signaling_rate_limited.with_label_values(&[k.as_str()]);
        }
        for kind in MEDIA_KINDS {
            m.packets_received.with_label_values(&[kind]);
            m.bytes_received.with_label_values(&[kind]);
            m.packets_forwarded.with_label_values(&[kind]);
            m.bytes_forwarded.with_label_values(&[kind]);
        }
        for kind in ["audio", "video"] {
            m.published_tracks.with_label_values(&[kind]);
        }
        for reason in DROP_REASONS {
            m.datagrams_dropped.with_label_values(&[reason]);
        }
        for code in SIGNALING_ERROR_CODES {
            m.signaling_errors.with_label_values(&[code]);
        }
        for reason in REMOVE_REASONS {
            m.participants_removed.with_label_values(&[reason]);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_keyframe_requests_are_not_counted_as_dropped_datagrams() {
        let registry = Registry::new();
        MediaMetrics::register(&registry).unwrap();
        Metrics::register(&registry).unwrap();
        let text = render(&registry);
        assert!(
            !text.contains(r#"callrelay_datagrams_dropped_total{reason="rate_limited"}"#),
            "{text}"
        );
        assert!(text.contains("\ncallrelay_keyframe_requests_throttled_total 0\n"));
        assert!(
            text.contains(r#"callrelay_http_connections_refused_total{reason="per_ip_limit"} 0"#)
        );
        assert!(text.contains(r#"callrelay_http_connections_timed_out_total{phase="header"} 0"#));
    }

    #[test]
    fn media_before_keys_and_over_the_ssrc_cap_are_drop_reasons_from_the_start() {
        let registry = Registry::new();
        MediaMetrics::register(&registry).unwrap();
        let text = render(&registry);
        for reason in ["before_keys", "ssrc_limit", "ingress_limit"] {
            let line = format!("callrelay_datagrams_dropped_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "{line}{text}");
        }
    }
}
