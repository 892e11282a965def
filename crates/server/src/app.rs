//! The composition root: opens the store, starts the media plane and the cluster membership,
//! builds the state, wires the routes (API, web pages, signaling) and the background tasks, and
//! serves. Nothing imports this module but the binary and the test helpers.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use callrelay_store::{PostgresStore, SharedStore, SqliteStore, StoreError};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tower::ServiceExt;

use crate::api::BodyTimeout;
use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::config::{HttpLimits, Settings, StoreLocation};
use crate::metrics::{ClusterMetrics, MediaMetrics, Metrics, TrunkMetrics};
use crate::seats::Seats;
pub use crate::state::{
    AppState, Clock, ControlEvent, Limits, ManualClock, SystemClock, UsedGrants,
};

/// Opens the configured store.
pub async fn open_store(location: &StoreLocation) -> Result<SharedStore, StoreError> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        StoreLocation::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// Builds the state: opens the store, registers metrics, binds the media UDP sockets and starts
/// their workers (a bind failure is an error naming the address).
pub async fn build(
    settings: Settings,
    registry: Registry,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<AppState>> {
    let metrics = Metrics::register(&registry)?;
    let media_metrics = MediaMetrics::register(&registry)?;
    let cluster_metrics = ClusterMetrics::register(&registry)?;
    let trunk_metrics = TrunkMetrics::register(&registry)?;
    let store = open_store(&settings.store).await?;
    let webhooks = match settings.webhooks.clone() {
        Some(w) => Some(Arc::new(crate::webhooks::Webhooks::new(
            w,
            settings.public_url.clone(),
            metrics.clone(),
            clock.clone(),
        )?)),
        None => None,
    };
    // Calls across nodes run where the trunk does (PostgreSQL and `cluster.trunk_*`, checked
    // with the configuration): the workers get the peers and the channel to the control task.
    let (cascade, cascade_updates) = match (&settings.store, &settings.cluster.trunk) {
        (StoreLocation::Postgres(_), Some(_)) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let link = crate::cascade::CascadeLink {
                legs: Arc::new(crate::cascade::Legs::default()),
                updates: tx,
                counters: trunk_metrics.counters(),
            };
            (Some(link), Some(rx))
        }
        _ => (None, None),
    };
    let media = Arc::new(crate::media::MediaPlane::start(
        &settings,
        media_metrics.clone(),
        webhooks.clone(),
        cascade.clone(),
    )?);
    let cluster = Cluster::new(&settings, &media.addrs(), cluster_metrics.clone())?.map(Arc::new);
    // The trunk binds before the node registers, so that the address it advertises answers.
    let (trunk, trunk_events) = match (&cluster, &settings.cluster.trunk) {
        (Some(_), Some(t)) => {
            let (trunk, events) =
                crate::trunk::start(t, &settings.cluster.node_id, &trunk_metrics)?;
            (Some(trunk), Some(events))
        }
        _ => (None, None),
    };
    if let Some(c) = &cluster {
        // Register before serving, so the first join can place a room here. A store that does not
        // answer now is retried by the heartbeat loop.
        let load = callrelay_cluster::Load::default();
        if !tokio::time::timeout(Duration::from_secs(5), c.beat(load))
            .await
            .unwrap_or(false)
        {
            tracing::warn!("not registered in the cluster yet: retrying every heartbeat");
        }
    }
    let oidc = match settings.oidc.clone() {
        Some(o) => Some(Arc::new(crate::oidc::Oidc::new(o, !settings.dev)?)),
        None => None,
    };
    Ok(Arc::new(AppState {
        trunk_metrics,
        trunk,
        trunk_events: std::sync::Mutex::new(trunk_events),
        cascade: std::sync::Mutex::new(cascade.zip(cascade_updates)),
        oidc,
        webhooks,
        lobby: crate::lobby::Lobby::default(),
        whip: crate::whip::WhipSessions::default(),
        cluster_metrics,
        cluster,
        reconcile_now: tokio::sync::Notify::new(),
        media,
        drain: crate::drain::Drain::default(),
        signal_grants: UsedGrants::default(),
        resumable: crate::signal::Resumable::default(),
        tokens: Tokens::new(&settings.auth_secret, settings.leeway),
        limits: Limits::new(&settings.limits),
        seats: Seats::default(),
        events: broadcast::channel(1024).0,
        settings,
        store,
        metrics,
        media_metrics,
        registry,
        clock,
    }))
}

/// Every route: the API and the web pages (counted and timed by route template, bodies capped),
/// and signaling.
pub fn router(state: Arc<AppState>) -> Router {
    crate::api::routes(&state)
        .merge(crate::web::routes())
        .merge(crate::oidc::routes())
        .merge(crate::whip::routes())
        .fallback(crate::api::not_found)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(
            crate::api::refuse_encoded_link_id,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::api::observe,
        ))
        .with_state(state.clone())
        .merge(crate::signal::router(state))
}

/// Serves HTTP and signaling on `listener` until `shutdown` completes, with the background
/// tasks (purge of expired links, sweeping of rate-limit and seat tables, reconciliation of the
/// calls hosted here with the store; in a cluster the heartbeats and the notice listener); then
/// stops the media workers.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintenance(state.clone()));
    let mut tasks = vec![tokio::spawn(crate::enforce::reconcile(state.clone()))];
    if let Some(c) = &state.cluster {
        tasks.push(tokio::spawn(crate::enforce::heartbeats(
            state.clone(),
            c.clone(),
        )));
        tasks.push(tokio::spawn(crate::enforce::listen(
            state.clone(),
            c.clone(),
        )));
        let events = state
            .trunk_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let cascade = state
            .cascade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(trunk), Some(events), Some((link, updates))) = (&state.trunk, events, cascade)
        {
            tasks.push(tokio::spawn(crate::trunk::run(
                trunk.clone(),
                c.clone(),
                state.trunk_metrics.clone(),
                state.settings.cluster.heartbeat,
            )));
            tasks.push(tokio::spawn(crate::cascade::run(
                trunk.clone(),
                c.clone(),
                state.media.clone(),
                link.legs,
                updates,
                events,
            )));
        }
    }
    let trunk = state.trunk.clone();
    let webhook_tasks = match &state.webhooks {
        Some(w) => w.spawn(state.clone()),
        None => Vec::new(),
    };
    let webhooks = state.webhooks.clone();
    let media = state.media.clone();
    let limits = state.settings.http_limits;
    let metrics = state.metrics.clone();
    let app = router(state);
    let result = serve_http(listener, app, limits, metrics, shutdown).await;
    maintenance.abort();
    for t in tasks {
        t.abort();
    }
    let _ = tokio::task::spawn_blocking(move || media.shutdown()).await;
    // The other nodes see this node's trunk close at once, not after its idle timeout.
    if let Some(t) = trunk {
        t.close().await;
    }
    // The media workers said who left; those events reach the outbox before the writer stops.
    if let Some(w) = webhooks {
        w.flush(Duration::from_secs(3)).await;
    }
    for t in webhook_tasks {
        t.abort();
    }
    result
}

// ---------------------------------------------------------------------------------------------
// The HTTP server: axum's router on hyper's HTTP/1 connections, from our own accept loop, so that
// every connection has a header timeout, an idle timeout and a cap per client address.

/// Accepts connections on `listener` and serves `app` on each until `shutdown` completes; then
/// stops accepting, lets the requests in progress finish (idle connections close at once) and
/// returns when every HTTP connection has ended. Upgraded connections (signaling WebSockets) are
/// not HTTP connections any more: they end with their session or the process.
async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: crate::metrics::Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver: when none is left, all have ended.
    let (done_tx, done_rx) = watch::channel(());
    let per_ip = Arc::new(PerIp {
        max: limits.max_connections_per_ip,
        open: Mutex::new(HashMap::new()),
        gauge: metrics.http_connections.clone(),
    });
    let mut refusals = RefusalLog::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::error!(error = %e, "cannot accept HTTP connections");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let Some(permit) = per_ip.acquire(remote.ip()) else {
            metrics
                .http_connections_refused
                .with_label_values(&["per_ip_limit"])
                .inc();
            if let Some(refused) = refusals.refused(Instant::now()) {
                // An operator behind a proxy with the default cap turns users away here: say
                // so where it is seen, at most once a minute.
                tracing::warn!(
                    address = %PerIp::key(remote.ip()),
                    refused,
                    cap = limits.max_connections_per_ip,
                    "HTTP connections refused: http.max_connections_per_ip reached (behind a \
                     proxy every client has the proxy's address: raise the cap or set 0)"
                );
            } else {
                tracing::debug!("HTTP connection refused: http.max_connections_per_ip reached");
            }
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            remote,
            app.clone(),
            limits,
            metrics.clone(),
            permit,
            stop_rx.clone(),
            done_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, is shut down, or a timeout closes it.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: HttpLimits,
    metrics: crate::metrics::Metrics,
    permit: ConnPermit,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) {
    let clock = Arc::new(ConnClock::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
        _permit: permit,
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            clock.set(Phase::Busy);
            req.extensions_mut().insert(ConnectInfo(remote));
            req.extensions_mut()
                .insert(BodyTimeout(limits.body_timeout));
            let app = app.clone();
            let clock = clock.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await;
                // The response is small and written now: the connection is idle again.
                clock.set(Phase::Idle);
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None) // ours, below: hyper's also runs while the connection idles
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            phase = clock.expired(limits) => {
                // Dropping the connection closes the socket.
                metrics
                    .http_connections_timed_out
                    .with_label_values(&[phase.label()])
                    .inc();
                tracing::debug!(phase = phase.label(), "HTTP connection timed out");
                break;
            }
        }
    }
}

/// Where a connection is in its request cycle, for its timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for a request head to complete: `http.header_timeout`. From the connection's
    /// start, and from the first byte of each later request.
    Head = 0,
    /// Between requests: `http.idle_timeout`.
    Idle = 1,
    /// A request in a handler (its body bounded by `http.body_timeout` when read): no timeout.
    Busy = 2,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Head => "header",
            Phase::Idle => "idle",
            Phase::Busy => "busy",
        }
    }
}

/// A connection's phase and when it began; `epoch` counts the changes, and each change wakes
/// [`ConnClock::expired`].
struct ConnClock {
    fast: AtomicU8,
    state: Mutex<(Phase, tokio::time::Instant, u64)>,
    changed: tokio::sync::Notify,
}

impl ConnClock {
    fn new() -> ConnClock {
        ConnClock {
            fast: AtomicU8::new(Phase::Head as u8),
            state: Mutex::new((Phase::Head, tokio::time::Instant::now(), 0)),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn snapshot(&self) -> (Phase, tokio::time::Instant, u64) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *s = (phase, tokio::time::Instant::now(), s.2 + 1);
        self.fast.store(phase as u8, Ordering::Relaxed);
        drop(s);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    fn bytes_read(&self) {
        if self.fast.load(Ordering::Relaxed) != Phase::Idle as u8 {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.0 == Phase::Idle {
            *s = (Phase::Head, tokio::time::Instant::now(), s.2 + 1);
            self.fast.store(Phase::Head as u8, Ordering::Relaxed);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Completes when the connection has stayed in `Head` or `Idle` past its timeout.
    async fn expired(&self, limits: HttpLimits) -> Phase {
        loop {
            // A change after this snapshot leaves a permit in `changed`: never missed.
            let (phase, since, epoch) = self.snapshot();
            let deadline = match phase {
                Phase::Head => since + limits.header_timeout,
                Phase::Idle => since + limits.idle_timeout,
                Phase::Busy => {
                    self.changed.notified().await;
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if self.snapshot().2 == epoch {
                        return phase;
                    }
                }
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// The connection's socket: reports reads to its [`ConnClock`] and holds its place under
/// `http.max_connections_per_ip` until it closes (after an upgrade too).
struct Watched {
    inner: TcpStream,
    clock: Arc<ConnClock>,
    _permit: ConnPermit,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections per client address (an IPv6 address counts as its /64).
struct PerIp {
    /// `http.max_connections_per_ip`; 0: no cap.
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
    gauge: IntGauge,
}

impl PerIp {
    /// The key of `ip`: IPv4 (an IPv4-mapped IPv6 address as IPv4), or the /64 of IPv6.
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
            v4 => v4,
        }
    }

    /// A place for one more connection from `ip`, or `None` at the cap.
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let key = Self::key(ip);
        if self.max > 0 {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(key).or_insert(0);
            if *n >= self.max {
                return None;
            }
            *n += 1;
        }
        self.gauge.inc();
        Some(ConnPermit {
            per_ip: self.clone(),
            key,
        })
    }
}

/// When to warn of connections refused at `http.max_connections_per_ip`: at the first refusal,
/// then at most once per [`RefusalLog::EVERY`], with the count since the last warning (the
/// metric `callrelay_http_connections_refused_total` has every one). Time is passed in.
#[derive(Debug, Default)]
struct RefusalLog {
    last_warned: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(60);

    /// One more refusal at `now`: `Some(refusals since the last warning, this one included)`
    /// when a warning is due.
    fn refused(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self
            .last_warned
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// One connection's place under the cap; given back when dropped.
struct ConnPermit {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.per_ip.gauge.dec();
        if self.per_ip.max == 0 {
            return;
        }
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

async fn maintenance(state: Arc<AppState>) {
    let mut purge = tokio::time::interval(state.settings.purge_interval);
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    // Keeps `callrelay_store_up` current even when nothing probes /readyz.
    let mut probe = tokio::time::interval(Duration::from_secs(10));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = purge.tick() => {
                match state.timed("purge_expired", state.store.purge_expired(state.now(), state.settings.purge_grace)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        state.metrics.links_purged.inc_by(n);
                        tracing::info!(links = n, "purged expired links");
                    }
                    Err(e) => tracing::warn!(error = %e, "purge of expired links failed"),
                }
                if let Err(e) = state.timed("purge_sessions", state.store.purge_sessions(state.now())).await {
                    tracing::warn!(error = %e, "purge of expired sign-in sessions failed");
                }
            }
            _ = probe.tick() => {
                let up = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await.is_ok_and(|r| r.is_ok());
                state.metrics.store_up.set(i64::from(up));
            }
            _ = sweep.tick() => {
                state.limits.sweep();
                state.seats.sweep(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_warned_of_at_the_first_then_once_a_minute_with_the_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.refused(t0), Some(1));
        assert_eq!(log.refused(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.refused(t0 + Duration::from_secs(59)), None);
        // A minute after the last warning: the three since it, this one included.
        assert_eq!(log.refused(t0 + Duration::from_secs(60)), Some(3));
        assert_eq!(log.refused(t0 + Duration::from_secs(61)), None);
        assert_eq!(log.refused(t0 + Duration::from_secs(600)), Some(2));
    }
}
