//! The composition root: opens the store, starts the media plane and the cluster membership,
//! builds the state, wires the routes (API, web pages, signaling) and the background tasks, and
//! serves. Nothing imports this module but the binary and the test helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use callrelay_store::{PostgresStore, SharedStore, SqliteStore, StoreError};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::config::{Settings, StoreLocation};
use crate::metrics::{ClusterMetrics, MediaMetrics, Metrics};
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
    let store = open_store(&settings.store).await?;
    let media = Arc::new(crate::media::MediaPlane::start(
        &settings,
        media_metrics.clone(),
    )?);
    let cluster = Cluster::new(&settings, &media.addrs(), cluster_metrics.clone())?.map(Arc::new);
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
    Ok(Arc::new(AppState {
        cluster_metrics,
        cluster,
        reconcile_now: tokio::sync::Notify::new(),
        media,
        drain: crate::drain::Drain::default(),
        signal_grants: UsedGrants::default(),
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
        .fallback(crate::api::not_found)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::MAX_BODY_BYTES,
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
    }
    let media = state.media.clone();
    let app = router(state);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    maintenance.abort();
    for t in tasks {
        t.abort();
    }
    let _ = tokio::task::spawn_blocking(move || media.shutdown()).await;
    result
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
