//! Every metric of the process, defined in one place (name, help, unit, labels, buckets).
//!
//! The registry is created by the caller (`main`, or a test) and passed in; nothing here is a
//! global. Conventions: base units (`_seconds`), counters end in `_total`, node-level labels only
//! (never a label per link, room or participant).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
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
    /// `callrelay_join_decision_duration_seconds` (the whole join request, store included)
    pub join_duration: Histogram,
}

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
        // Initialise the label values an alert or a dashboard expects, so they exist at 0.
        m.joins.with_label_values(&["admitted"]);
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
