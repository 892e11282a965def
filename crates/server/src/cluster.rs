//! This node as a cluster member (PostgreSQL only): its registration and lease, room placement
//! for joins, and control notices to the other nodes.
//!
//! The rules live in `callrelay_cluster::rules` (pure); the SQL in `callrelay_cluster::pg`. This
//! module holds the node's own state (its epoch, whether it believes it holds its lease) and the
//! heartbeat loop. It knows nothing of HTTP, signaling or the media plane: the enforcement and
//! reconciliation loops (`crate::enforce`) and the join path (`crate::api`) call into it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callrelay_cluster::{
    Advert, Claim, ClusterDb, ClusterError, Load, NodeState, NodeView, Notice, Placed, RoomView,
};
use callrelay_links::LinkId;

use crate::config::{ClusterSettings, Settings, StoreLocation};
use crate::metrics::{ClusterMetrics, NODE_STATES};

/// This node's membership.
pub struct Cluster {
    db: ClusterDb,
    settings: ClusterSettings,
    advert: Advert,
    /// The epoch of the current registration; 0 before the first one.
    epoch: AtomicI64,
    /// When the last heartbeat (or registration) went through.
    last_ok: Mutex<Option<Instant>>,
    /// When this node last registered (start, or after losing its lease).
    registered: Mutex<Option<Instant>>,
    metrics: ClusterMetrics,
    /// Wakes the heartbeat loop at once (a drain started: the registry must say so now).
    pub wake_heartbeat: tokio::sync::Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.settings.node_id)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster membership of a node on PostgreSQL; `None` on SQLite (a single node).
    pub fn new(
        settings: &Settings,
        media_addrs: &[std::net::SocketAddr],
        metrics: ClusterMetrics,
    ) -> anyhow::Result<Option<Cluster>> {
        let StoreLocation::Postgres(url) = &settings.store else {
            return Ok(None);
        };
        let db = ClusterDb::connect_lazy(url)?;
        let c = &settings.cluster;
        Ok(Some(Cluster {
            db,
            advert: Advert {
                node_id: c.node_id.clone(),
                region: c.region.clone(),
                http_url: c.advertise_url.clone(),
                media_addrs: media_addrs.iter().map(|a| a.to_string()).collect(),
                trunk_addr: c
                    .trunk
                    .as_ref()
                    .map(|t| t.advertise.to_string())
                    .unwrap_or_default(),
            },
            settings: c.clone(),
            epoch: AtomicI64::new(0),
            last_ok: Mutex::new(None),
            registered: Mutex::new(None),
            metrics,
            wake_heartbeat: tokio::sync::Notify::new(),
        }))
    }

    /// `cluster.node_id`.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// `cluster.region`.
    pub fn region(&self) -> &str {
        &self.settings.region
    }

    /// `cluster.*`.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The current registration epoch (0: not registered yet).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether this node believes it holds its lease: its last heartbeat went through less than
    /// a lease ago. A node that does not keeps its calls (no fencing on store loss) but places
    /// no room on itself.
    pub fn holds_lease(&self) -> bool {
        self.epoch() > 0
            && self
                .last_ok
                .lock()
                .expect("never poisoned: nothing panics under it")
                .is_some_and(|t| t.elapsed() < self.settings.lease)
    }

    fn record(&self, op: &str, e: &ClusterError) {
        self.metrics.errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "cluster store operation failed");
    }

    /// One heartbeat: renews the lease, or registers (again, under a new epoch) when there is
    /// none. Returns whether the node holds its lease afterwards.
    pub async fn beat(&self, load: Load) -> bool {
        let epoch = self.epoch();
        let renewed = if epoch == 0 {
            Ok(false)
        } else {
            self.db
                .heartbeat(&self.advert.node_id, epoch, &load, self.settings.lease)
                .await
        };
        let ok = match renewed {
            Ok(true) => true,
            Ok(false) => match self
                .db
                .register(&self.advert, &load, self.settings.lease)
                .await
            {
                Ok(e) => {
                    self.epoch.store(e, Ordering::Release);
                    *self
                        .registered
                        .lock()
                        .expect("never poisoned: nothing panics under it") = Some(Instant::now());
                    self.metrics.epoch.set(e);
                    self.metrics.registrations.inc();
                    if epoch == 0 {
                        tracing::info!(node = %self.advert.node_id, epoch = e, region = %self.advert.region, url = %self.advert.http_url, "joined the cluster");
                    } else {
                        tracing::warn!(node = %self.advert.node_id, old_epoch = epoch, epoch = e, "the lease had run out: registered again (rooms placed elsewhere meanwhile are merged back; if this repeats while the store is up, another node uses the same cluster.node_id)");
                    }
                    true
                }
                Err(e) => {
                    self.metrics.heartbeat_failures.inc();
                    self.record("register", &e);
                    false
                }
            },
            Err(e) => {
                self.metrics.heartbeat_failures.inc();
                self.record("heartbeat", &e);
                false
            }
        };
        if ok {
            *self
                .last_ok
                .lock()
                .expect("never poisoned: nothing panics under it") = Some(Instant::now());
        }
        let held = self.holds_lease();
        self.metrics.lease_held.set(i64::from(held));
        held
    }

    /// The home of `link`'s call for a join (placing it if needed), for a caller of `region`
    /// (this node's own region when `None`). A node that does not hold its lease places nothing:
    /// [`ClusterError::Unavailable`].
    pub async fn place(&self, link: &LinkId, region: Option<&str>) -> Result<Placed, ClusterError> {
        if !self.holds_lease() {
            return Err(ClusterError::Unavailable(
                "this node does not hold its cluster lease".into(),
            ));
        }
        let region = region.unwrap_or(&self.settings.region);
        // Just back (start, or a store outage): other nodes may be coming back from the same
        // outage, so their rooms are not taken over during this node's first lease.
        let defer = self
            .registered
            .lock()
            .expect("never poisoned: nothing panics under it")
            .is_none_or(|t| t.elapsed() < self.settings.lease);
        let placed = self.db.place(link.as_str(), region, defer).await;
        match &placed {
            Ok(p) => {
                let outcome = match p.outcome {
                    callrelay_cluster::PlaceOutcome::Existing => "existing",
                    callrelay_cluster::PlaceOutcome::Replaced => "replaced",
                    callrelay_cluster::PlaceOutcome::New if p.node_id == self.node_id() => {
                        "new_local"
                    }
                    callrelay_cluster::PlaceOutcome::New => "new_remote",
                };
                self.metrics.placements.with_label_values(&[outcome]).inc();
                tracing::debug!(link = %link, home = %p.node_id, outcome, "placed");
            }
            Err(ClusterError::NoNode) => {}
            Err(e) => self.record("place", e),
        }
        placed
    }

    /// Claims `link`'s room for this node (see `callrelay_cluster::rules::claim_decision`).
    pub async fn claim(&self, link: &LinkId, participants: i64) -> Result<Claim, ClusterError> {
        let epoch = self.epoch();
        if epoch == 0 || !self.holds_lease() {
            return Err(ClusterError::Unavailable(
                "this node does not hold its cluster lease".into(),
            ));
        }
        self.db
            .claim(link.as_str(), self.node_id(), epoch, participants)
            .await
            .inspect_err(|e| self.record("claim", e))
    }

    /// Records `node` (at `epoch`) as a leg of `link`'s call (a join of its region placed there
    /// while the home is another node).
    pub async fn add_leg(&self, link: &LinkId, node: &str, epoch: i64) -> Result<(), ClusterError> {
        self.db
            .add_leg(link.as_str(), node, epoch)
            .await
            .inspect_err(|e| self.record("add_leg", e))
    }

    /// For a join from `region` into a call whose home is `home`: the node that serves it as a
    /// leg of the call (calls across nodes, #16; `callrelay_cluster::rules::choose_leg`: a node
    /// of that region, or another node when the home is overloaded), recorded as such; `None`
    /// when the home serves it.
    pub async fn leg_for(
        &self,
        link: &LinkId,
        region: &str,
        home: &Placed,
    ) -> Result<Option<Placed>, ClusterError> {
        let (now, nodes) = self.nodes().await?;
        let Some(leg) = callrelay_cluster::rules::choose_leg(
            &nodes,
            &home.node_id,
            region,
            self.settings.node_capacity,
            now,
        ) else {
            return Ok(None);
        };
        self.add_leg(link, &leg.node_id, leg.epoch).await?;
        tracing::debug!(link = %link, home = %home.node_id, leg = %leg.node_id, "placed on a leg of the call");
        Ok(Some(Placed {
            node_id: leg.node_id.clone(),
            epoch: leg.epoch,
            http_url: leg.http_url.clone(),
            // The call's, as the home last reported it (for the room cap).
            participants: home.participants,
            on_legs: home.on_legs,
            outcome: callrelay_cluster::PlaceOutcome::Existing,
        }))
    }

    /// The live nodes serving `link`'s call: its home and its legs.
    pub async fn legs(&self, link: &LinkId) -> Result<Vec<NodeView>, ClusterError> {
        self.db
            .legs(link.as_str())
            .await
            .inspect_err(|e| self.record("legs", e))
    }

    /// Reports the participants of the rooms hosted here; returns the links whose placement still
    /// names this node at its epoch.
    pub async fn report(&self, rooms: &[(String, i64)]) -> Result<Vec<String>, ClusterError> {
        self.db
            .report(self.node_id(), self.epoch(), rooms)
            .await
            .inspect_err(|e| self.record("report", e))
    }

    /// Drops this node's placements of rooms that emptied more than `grace` ago.
    pub async fn release_idle(
        &self,
        live: &[String],
        grace: Duration,
    ) -> Result<u64, ClusterError> {
        self.db
            .release_idle(self.node_id(), self.epoch(), live, grace)
            .await
            .inspect_err(|e| self.record("release", e))
    }

    /// Drops every placement of this node (the end of a drain).
    pub async fn release_all(&self) -> Result<u64, ClusterError> {
        self.db
            .release_all(self.node_id())
            .await
            .inspect_err(|e| self.record("release", e))
    }

    /// The placement of `link`'s room (preview).
    pub async fn room(&self, link: &LinkId) -> Result<Option<RoomView>, ClusterError> {
        self.db
            .room(link.as_str())
            .await
            .inspect_err(|e| self.record("room", e))
    }

    /// Every member and the database's clock; refreshes `callrelay_cluster_nodes`.
    pub async fn nodes(&self) -> Result<(i64, Vec<NodeView>), ClusterError> {
        let (now, nodes) = self
            .db
            .nodes()
            .await
            .inspect_err(|e| self.record("nodes", e))?;
        for s in NODE_STATES {
            let n = nodes
                .iter()
                .filter(|n| callrelay_cluster::rules::node_state(n, now).as_str() == s)
                .count();
            self.metrics
                .nodes
                .with_label_values(&[s])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Ok((now, nodes))
    }

    /// Tells every other node.
    pub async fn notify(&self, notice: &Notice) -> Result<(), ClusterError> {
        let kind = match notice {
            Notice::Revoke { .. } => "revoke",
            Notice::Block { .. } => "block",
        };
        self.db
            .notify(notice)
            .await
            .inspect_err(|e| self.record("notify", e))?;
        self.metrics
            .notices
            .with_label_values(&[kind, "sent"])
            .inc();
        Ok(())
    }

    /// A listener for notices (its own connection).
    pub async fn listen(&self) -> Result<callrelay_cluster::PgListener, ClusterError> {
        self.db.listen().await
    }

    /// Forgets placements of nodes long gone.
    pub async fn collect_garbage(&self) {
        let after = (self.settings.lease * 12).max(Duration::from_secs(60));
        if let Err(e) = self.db.collect_garbage(after).await {
            self.record("gc", &e);
        }
    }

    /// Counts a notice received.
    pub fn received(&self, notice: &Notice) {
        let kind = match notice {
            Notice::Revoke { .. } => "revoke",
            Notice::Block { .. } => "block",
        };
        self.metrics
            .notices
            .with_label_values(&[kind, "received"])
            .inc();
    }

    /// Counts a stale copy merged back.
    pub fn moved(&self) {
        self.metrics.rooms_moved.inc();
    }
}

/// The state of a node as the admin API shows it.
pub fn state_name(node: &NodeView, now: i64) -> &'static str {
    let s: NodeState = callrelay_cluster::rules::node_state(node, now);
    s.as_str()
}

/// The `GET /v1/admin/nodes` answer as a table (`callrelay admin nodes`). `*` marks the node that
/// answered.
pub fn nodes_table(answer: &serde_json::Value) -> String {
    let secs = |v: &serde_json::Value| {
        v.as_i64()
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let header = [
        "NODE",
        "REGION",
        "STATE",
        "EPOCH",
        "LEASE LEFT",
        "HEARTBEAT AGO",
        "PARTICIPANTS",
        "ROOMS",
        "BUSY",
        "TRUNK",
        "URL",
    ];
    let mut rows = Vec::new();
    for n in answer["nodes"].as_array().into_iter().flatten() {
        let text = |k: &str| n[k].as_str().unwrap_or("-").to_owned();
        let me = if n["self"].as_bool() == Some(true) {
            " *"
        } else {
            ""
        };
        rows.push(vec![
            format!("{}{me}", text("node_id")),
            text("region"),
            text("state"),
            n["epoch"].as_i64().unwrap_or(0).to_string(),
            secs(&n["lease_expires_in_ms"]),
            secs(&n["heartbeat_age_ms"]),
            n["participants"].as_i64().unwrap_or(0).to_string(),
            n["rooms"].as_i64().unwrap_or(0).to_string(),
            format!("{:.2}", n["busy_ratio"].as_f64().unwrap_or(0.0)),
            match (n["trunk"]["up"].as_bool(), n["trunk"]["rtt_ms"].as_f64()) {
                (Some(true), Some(rtt)) => format!("up {rtt:.1}ms"),
                (Some(true), None) => "up".into(),
                (Some(false), _) => "down".into(),
                _ => "-".into(),
            },
            text("url"),
        ]);
    }
    let mut out = String::new();
    if answer["cluster"].as_bool() != Some(true) {
        out.push_str("single node (SQLite store): no cluster\n");
    }
    out.push_str(&crate::cli::table(&header, &rows));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_nodes_table_lines_up_and_marks_this_node() {
        let v = serde_json::json!({"cluster": true, "nodes": [
            {"node_id": "node-a", "region": "eu", "url": "http://a", "state": "serving", "epoch": 3,
             "lease_expires_in_ms": 4200, "heartbeat_age_ms": 800, "participants": 12, "rooms": 2,
             "busy_ratio": 0.25, "self": true, "media_addrs": [], "trunk_addr": "10.0.0.1:7800"},
            {"node_id": "node-bb", "region": "eu", "url": "http://b", "state": "expired", "epoch": 1,
             "lease_expires_in_ms": -9000, "heartbeat_age_ms": 14000, "participants": 0, "rooms": 0,
             "busy_ratio": 0.0, "self": false, "media_addrs": [], "trunk_addr": "10.0.0.2:7800",
             "trunk": {"up": true, "rtt_ms": 0.42}}
        ]});
        let t = super::nodes_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NODE "));
        assert!(lines[1].starts_with("node-a *"), "{t}");
        assert!(
            lines[1].contains("serving") && lines[1].contains("4.2s"),
            "{t}"
        );
        assert!(
            lines[2].contains("expired") && lines[2].contains("-9.0s"),
            "{t}"
        );
        assert!(lines[2].contains("up 0.4ms"), "{t}");
        let col = |l: &str| l.find("REGION").or_else(|| l.find("eu")).unwrap();
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
    }
}
