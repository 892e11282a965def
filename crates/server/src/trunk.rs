//! This node's end of the trunk between nodes (#16): the QUIC endpoint on `cluster.trunk_addr`,
//! and a loop that keeps a connection to every live member of the cluster that runs a trunk, so
//! that the connection is up and its round-trip time known before a call spans the two nodes.
//!
//! Each pair of nodes has one connection whichever way it came up (`callrelay_trunk::endpoint`).
//! A member that cannot be reached, or whose certificate is refused, is dialed again with a
//! back-off from 1 s doubling to 30 s; refusals are counted in `callrelay_trunk_refused_total`.
//! What comes over the trunk (peers up and down, control, media) goes to `crate::cascade`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_trunk::{Trunk, TrunkEvent, TrunkIdentity};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::Cluster;
use crate::config::TrunkSettings;
use crate::metrics::TrunkMetrics;

/// A peer whose node's lease ended and that sent nothing for this long (keep-alives go every
/// 2 s) is gone: its connection is closed then, not after the 10 s idle timeout, so the calls
/// it took part in drop its participants sooner.
const SILENT_GONE: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Binds the trunk (the identity was checked when the configuration was validated).
pub fn start(
    settings: &TrunkSettings,
    node_id: &str,
    metrics: &TrunkMetrics,
) -> anyhow::Result<(Arc<Trunk>, mpsc::Receiver<TrunkEvent>)> {
    let identity = TrunkIdentity::from_dir(&settings.certs, node_id)?;
    let (trunk, events) = Trunk::bind(settings.bind, &identity, metrics.counters())?;
    tracing::info!(
        addr = %trunk.local_addr()?,
        advertise = %settings.advertise,
        "trunk listening"
    );
    Ok((Arc::new(trunk), events))
}

/// Dials the live members that run a trunk and are not connected yet, every heartbeat; observes
/// each connection's round-trip time; logs peers coming and going.
pub async fn run(trunk: Arc<Trunk>, cluster: Arc<Cluster>, metrics: TrunkMetrics, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per member: when it may be dialed again, and the wait after the next failure.
    let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut dials: JoinSet<(String, bool)> = JoinSet::new();
    let mut dialing: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Per peer: datagrams received at the last look, and since when that count stands still.
    let mut heard: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let peers = trunk.peers();
                heard.retain(|node, _| peers.iter().any(|p| p.node() == node));
                for p in &peers {
                    metrics.rtt.observe(p.rtt().as_secs_f64());
                    let rx = p.datagrams_received();
                    if heard.get(p.node()).is_none_or(|(n, _)| *n != rx) {
                        heard.insert(p.node().to_owned(), (rx, now));
                    }
                }
                let Ok((now_ms, nodes)) = cluster.nodes().await else { continue };
                // A peer gone from the cluster (lease over) and silent: closed now.
                for p in &peers {
                    let live = nodes.iter().any(|n| {
                        n.node_id == p.node() && callrelay_cluster::rules::lease_live(n, now_ms)
                    });
                    let silent = heard
                        .get(p.node())
                        .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= SILENT_GONE);
                    if !live && silent {
                        tracing::warn!(peer = %p.node(), "trunk: the peer's lease ended and it went silent: closing");
                        p.close_gone();
                        heard.remove(p.node());
                    }
                }
                for n in nodes {
                    if n.node_id == trunk.node()
                        || n.trunk_addr.is_empty()
                        || !callrelay_cluster::rules::lease_live(&n, now_ms)
                        || dialing.contains(&n.node_id)
                    {
                        continue;
                    }
                    if trunk.peer(&n.node_id).is_some() {
                        retry.remove(&n.node_id);
                        continue;
                    }
                    if retry.get(&n.node_id).is_some_and(|(at, _)| *at > now) {
                        continue;
                    }
                    let Ok(addr) = n.trunk_addr.parse::<SocketAddr>() else {
                        tracing::warn!(peer = %n.node_id, addr = %n.trunk_addr, "trunk: a member advertises an address that is not IP:port");
                        continue;
                    };
                    dialing.insert(n.node_id.clone());
                    let trunk = trunk.clone();
                    dials.spawn(async move {
                        let ok = match trunk.connect(&n.node_id, addr).await {
                            Ok(_) => true,
                            Err(e) => {
                                tracing::warn!(peer = %n.node_id, error = %e, "trunk: dial failed");
                                false
                            }
                        };
                        (n.node_id, ok)
                    });
                }
            }
            Some(done) = dials.join_next(), if !dials.is_empty() => {
                let Ok((node, ok)) = done else { continue };
                dialing.remove(&node);
                if ok {
                    retry.remove(&node);
                } else {
                    let wait = retry.get(&node).map_or(BACKOFF_MIN, |(_, w)| *w);
                    retry.insert(node, (Instant::now() + wait, (wait * 2).min(BACKOFF_MAX)));
                }
            }
        }
    }
}
