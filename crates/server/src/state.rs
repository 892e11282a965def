//! The shared state every part of the server reads: settings, store, tokens, metrics, seats,
//! rate limits, the clock, the media plane, the drain switch, the cluster membership.
//!
//! This module is the bottom of the server's module graph: routes (`api`, `web`), signaling
//! (`signal`), enforcement (`enforce`) and the composition root (`app`) import it; it imports
//! none of them.

use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callrelay_links::{Link, LinkId, LinkStatus, UserId};
use callrelay_store::{SharedStore, StoreError};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::Registry;
use tokio::sync::broadcast;

use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::config::{LimitsConfig, Settings};
use crate::metrics::{ClusterMetrics, MediaMetrics, Metrics, TrunkMetrics};
use crate::problem::ApiError;
use crate::seats::Seats;

/// What the control plane announced (revocations and blocks), for observers such as tests. The
/// enforcement itself never depends on this broadcast (which may lag): see `crate::enforce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// The operator revoked this link: everyone in its room is removed.
    LinkRevoked {
        /// The link.
        link: LinkId,
    },
    /// `blocker` blocked `blocked`: `blocked` is removed from calls of links `blocker` created.
    UserBlocked {
        /// Who blocked.
        blocker: UserId,
        /// Who is blocked.
        blocked: UserId,
    },
}

/// Wall time, for link expiry (media never uses it). Injected so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(t)))
    }

    /// Moves the clock forward (or back, for wall-clock steps).
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self
            .0
            .lock()
            .expect("the clock mutex is never poisoned: no code panics under it");
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .expect("the clock mutex is never poisoned: no code panics under it")
    }
}

/// GCRA rate limits (per client address and per user).
pub struct Limits {
    join_ip: DefaultKeyedRateLimiter<IpAddr>,
    join_user: DefaultKeyedRateLimiter<UserId>,
    preview_ip: DefaultKeyedRateLimiter<IpAddr>,
    create_user: DefaultKeyedRateLimiter<UserId>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn check<K: Clone + std::hash::Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    scope: &str,
    metrics: &Metrics,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        metrics.rate_limited.with_label_values(&[scope]).inc();
        ApiError::RateLimited(not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        )))
    })
}

impl Limits {
    /// Limiters from `[limits]`.
    pub fn new(c: &LimitsConfig) -> Limits {
        Limits {
            join_ip: RateLimiter::keyed(per_minute(c.join_per_ip_per_minute)),
            join_user: RateLimiter::keyed(per_minute(c.join_per_user_per_minute)),
            preview_ip: RateLimiter::keyed(per_minute(c.preview_per_ip_per_minute)),
            create_user: RateLimiter::keyed(per_minute(c.create_per_user_per_minute)),
        }
    }

    /// A join from `ip`.
    pub fn check_join_ip(&self, ip: IpAddr, m: &Metrics) -> Result<(), ApiError> {
        check(&self.join_ip, &ip, "join_ip", m)
    }

    /// A join by `user`.
    pub fn check_join_user(&self, user: &UserId, m: &Metrics) -> Result<(), ApiError> {
        check(&self.join_user, user, "join_user", m)
    }

    /// A preview or QR code from `ip`.
    pub fn check_preview_ip(&self, ip: IpAddr, m: &Metrics) -> Result<(), ApiError> {
        check(&self.preview_ip, &ip, "preview_ip", m)
    }

    /// A link created by `user`.
    pub fn check_create_user(&self, user: &UserId, m: &Metrics) -> Result<(), ApiError> {
        check(&self.create_user, user, "create_user", m)
    }

    /// Forgets keys whose limits have fully recovered (bounded memory under floods).
    pub fn sweep(&self) {
        self.join_ip.retain_recent();
        self.join_user.retain_recent();
        self.preview_ip.retain_recent();
        self.create_user.retain_recent();
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// Validated configuration.
    pub settings: Settings,
    /// The link store.
    pub store: SharedStore,
    /// Token issuer and checker.
    pub tokens: Tokens,
    /// Metric families of the control plane.
    pub metrics: Metrics,
    /// Metric families of the media plane.
    pub media_metrics: MediaMetrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Seats held per room.
    pub seats: Seats,
    /// Rate limits.
    pub limits: Limits,
    /// Wall time for links.
    pub clock: Arc<dyn Clock>,
    /// Announcements of revocations and blocks (observers only; enforcement is `crate::enforce`).
    pub events: broadcast::Sender<ControlEvent>,
    /// Metric families of enforcement and of the cluster.
    pub cluster_metrics: ClusterMetrics,
    /// This node's cluster membership (`None` on SQLite: a single node).
    pub cluster: Option<Arc<Cluster>>,
    /// Asks the reconciliation loop for a round now.
    pub reconcile_now: tokio::sync::Notify,
    /// The UDP workers (bound in [`build`]).
    pub media: Arc<crate::media::MediaPlane>,
    /// The drain switch (SIGTERM, `POST /v1/admin/drain`).
    pub drain: crate::drain::Drain,
    /// Join grants already used on the signaling socket.
    pub signal_grants: UsedGrants,
    /// Signaling sessions waiting for a new socket to resume them.
    pub resumable: crate::signal::Resumable,
    /// Web sign-in (`None` without `[oidc]`).
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Webhook events (`None` without `webhooks.urls`).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// Joins waiting for a link creator's approval.
    pub lobby: crate::lobby::Lobby,
    /// WHIP publishers on this node, by resource id.
    pub whip: crate::whip::WhipSessions,
    /// Metric families of the trunk between nodes (served on every node, 0 without a trunk).
    pub trunk_metrics: TrunkMetrics,
    /// The trunk between nodes (`None` without `cluster.trunk_addr`).
    pub trunk: Option<Arc<callrelay_trunk::Trunk>>,
    /// The trunk's events, until [`crate::app::serve`] starts the loop that reads them.
    pub trunk_events: Mutex<Option<tokio::sync::mpsc::Receiver<callrelay_trunk::TrunkEvent>>>,
    /// Calls across nodes: what the control task ([`crate::cascade::run`]) takes when
    /// [`crate::app::serve`] starts it (`None` without a trunk).
    #[allow(clippy::type_complexity)]
    pub cascade: Mutex<
        Option<(
            crate::cascade::CascadeLink,
            tokio::sync::mpsc::UnboundedReceiver<crate::cascade::Update>,
        )>,
    >,
}

/// `t` truncated to the millisecond (the store's precision).
pub fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

impl AppState {
    /// Wall time, truncated to the millisecond (the store's precision).
    pub fn now(&self) -> DateTime<Utc> {
        let t = self.clock.now();
        DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
    }

    /// Runs a store operation, timing it and counting its errors.
    pub async fn timed<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let r = fut.await;
        self.metrics
            .store_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &r {
            self.metrics
                .store_errors
                .with_label_values(&[e.kind()])
                .inc();
        }
        r
    }

    /// Reads a link that must be joinable-looking: 400 / 404 / 410 otherwise.
    pub async fn active_link(&self, id: &str) -> Result<Link, ApiError> {
        let id = LinkId::parse(id).map_err(|_| ApiError::InvalidLinkId)?;
        let link = self
            .timed("get_link", self.store.get_link(&id))
            .await?
            .ok_or(ApiError::LinkNotFound)?;
        match link.status(self.now()) {
            LinkStatus::Active => Ok(link),
            LinkStatus::Expired => Err(ApiError::LinkExpired),
            LinkStatus::Revoked => Err(ApiError::LinkRevoked),
        }
    }

    /// Starts draining (idempotent); returns whether this call started it.
    pub fn start_drain(&self) -> bool {
        let now = self.clock.now();
        let started = self.drain.start(tokio::time::Instant::now(), now);
        if started {
            if let Some(c) = &self.cluster {
                c.wake_heartbeat.notify_one();
            }
            self.metrics.draining.set(1);
            self.metrics
                .drain_started
                .set(now.timestamp_millis() as f64 / 1000.0);
            tracing::warn!(
                rooms = self.media.rooms(),
                participants = self.media.participants(),
                deadline_s = self.settings.drain_deadline.as_secs(),
                "draining: no new rooms on this node; calls go on until they end or the deadline"
            );
        }
        started
    }

    /// Returns to serving (idempotent); returns whether the node was draining.
    pub fn stop_drain(&self) -> bool {
        let stopped = self.drain.stop();
        if stopped {
            if let Some(c) = &self.cluster {
                c.wake_heartbeat.notify_one();
            }
            self.metrics.draining.set(0);
            self.metrics.drain_started.set(0.0);
            tracing::warn!("drain cancelled: serving again");
        }
        stopped
    }

    /// Runs until a drain completes: the last room emptied, or the deadline passed and the
    /// remaining participants were removed (reason `drain`).
    ///
    /// In a cluster the node first gives up its placements, so that the participants it removes
    /// (who rejoin by themselves) are placed on another node.
    pub async fn drained(self: &Arc<Self>) -> crate::drain::DrainOutcome {
        let outcome = crate::drain::run(
            &self.drain,
            self.settings.drain_deadline,
            || self.media.rooms(),
            || {
                let s = self.clone();
                tokio::spawn(async move {
                    if let Some(c) = &s.cluster {
                        let _ = tokio::time::timeout(Duration::from_secs(2), c.release_all()).await;
                    }
                    s.media.remove_all(callrelay_sfu::RemoveReason::Drain);
                });
            },
        )
        .await;
        tracing::info!(?outcome, "drain complete");
        outcome
    }

    /// The mean busy ratio of the media workers over their last interval.
    pub fn media_busy_ratio(&self) -> f64 {
        let n = self.settings.media_workers.max(1);
        let sum: f64 = (0..n)
            .map(|i| {
                self.media_metrics
                    .worker_busy
                    .with_label_values(&[&i.to_string()])
                    .get()
            })
            .sum();
        sum / n as f64
    }
}

/// Grants already used on this node: participant id → grant expiry (unix seconds).
#[derive(Debug, Default)]
pub struct UsedGrants {
    used: dashmap::DashMap<String, i64>,
}

impl UsedGrants {
    /// Marks the grant of `pid` used; false if it already was.
    pub fn try_use(&self, pid: &str, exp: i64, now_unix: i64) -> bool {
        if self.used.len() > 4096 {
            self.used.retain(|_, e| *e >= now_unix);
        }
        match self.used.entry(pid.to_owned()) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(exp);
                true
            }
        }
    }
}
