//! The PostgreSQL adapter: the only IO of the cluster. Each method is one statement or one
//! transaction; the decisions inside transactions are the pure functions of [`crate::rules`],
//! fed with the rows read under the row lock and the database's clock.
//!
//! The tables (`cluster_nodes`, `cluster_rooms`) are created by the store's PostgreSQL
//! migrations, which every node applies at start (under the migrator's advisory lock).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use crate::notice::{Notice, CHANNEL};
use crate::rules::{choose_home, claim_decision, placement_holds, Claim, NodeView, PlacementRow};

/// The database's clock in milliseconds since the Unix epoch (wall time now, not the
/// transaction's start).
const NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Connections of the cluster pool per node (the listener has its own).
const MAX_CONNECTIONS: u32 = 4;
/// How long a cluster operation waits for a connection before it fails: joins must fail fast.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database did not answer (or answered an error): callers answer 503.
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// No node holds a lease and serves: nowhere to place a new room.
    #[error("no serving node")]
    NoNode,
}

impl From<sqlx::Error> for ClusterError {
    fn from(e: sqlx::Error) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}

/// What a node publishes about itself when it registers.
#[derive(Clone, Debug)]
pub struct Advert {
    /// `cluster.node_id`.
    pub node_id: String,
    /// `cluster.region`.
    pub region: String,
    /// `cluster.advertise_url`.
    pub http_url: String,
    /// Announced media addresses.
    pub media_addrs: Vec<String>,
    /// Where the other nodes dial this node's trunk (`host:port`); empty: no trunk.
    pub trunk_addr: String,
}

/// A node's load and mode, sent with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Participants connected.
    pub participants: i64,
    /// Rooms live.
    pub rooms: i64,
    /// Mean media worker busy ratio.
    pub busy_ratio: f64,
    /// Draining: no new rooms.
    pub draining: bool,
}

/// Where a join goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The home node.
    pub node_id: String,
    /// Its epoch.
    pub epoch: i64,
    /// Its own HTTP URL (signaling).
    pub http_url: String,
    /// Participants of the call as last reported: the home's own and, calls across nodes,
    /// those on its legs (`on_legs`).
    pub participants: i64,
    /// Of `participants`, those on the call's live legs (each as of its last reconciliation).
    pub on_legs: i64,
    /// `existing`: the call was live there; `new`: placed by this call; `replaced`: its former
    /// home had lost its lease.
    pub outcome: PlaceOutcome,
}

/// How a placement came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceOutcome {
    /// The room already had a live home.
    Existing,
    /// A new room.
    New,
    /// The room's home had lost its lease (or was draining and empty): placed again.
    Replaced,
}

/// A room's placement as anyone may read it (preview).
#[derive(Clone, Debug, PartialEq)]
pub struct RoomView {
    /// The row.
    pub row: PlacementRow,
    /// Whether it names a live home now.
    pub live: bool,
    /// Participants of the call on its live legs (each as of its last reconciliation); the
    /// row's count is the home's own.
    pub on_legs: i64,
}

/// Participants of `link`'s call on its live legs (each as of its last reconciliation).
async fn legs_participants(conn: &mut sqlx::PgConnection, link: &str) -> Result<i64, ClusterError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT COALESCE(SUM(l.participants), 0)::BIGINT FROM cluster_legs l \
         JOIN cluster_nodes n ON n.node_id = l.node_id AND n.epoch = l.epoch \
         WHERE l.link_id = $1 AND n.lease_until > {NOW}"
    ))
    .bind(link)
    .fetch_one(conn)
    .await?)
}

/// The cluster tables of one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct ClusterDb {
    pool: PgPool,
    options: PgConnectOptions,
}

fn node_from_row(r: &PgRow) -> Result<NodeView, sqlx::Error> {
    let addrs: String = r.try_get("media_addrs")?;
    Ok(NodeView {
        node_id: r.try_get("node_id")?,
        epoch: r.try_get("epoch")?,
        region: r.try_get("region")?,
        http_url: r.try_get("http_url")?,
        media_addrs: addrs
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        trunk_addr: r.try_get("trunk_addr")?,
        draining: r.try_get("draining")?,
        participants: r.try_get("participants")?,
        rooms: r.try_get("rooms")?,
        busy_ratio: r.try_get("busy_ratio")?,
        registered_at: r.try_get("registered_at")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
        lease_until: r.try_get("lease_until")?,
    })
}

fn placement_from_row(r: &PgRow) -> Result<Option<PlacementRow>, sqlx::Error> {
    let node_id: String = r.try_get("node_id")?;
    // The empty node id marks the row this transaction inserted to lock on: no placement yet.
    if node_id.is_empty() {
        return Ok(None);
    }
    Ok(Some(PlacementRow {
        node_id,
        epoch: r.try_get("epoch")?,
        participants: r.try_get("participants")?,
        placed_at: r.try_get("placed_at")?,
    }))
}

const NODE_COLUMNS: &str =
    "node_id, epoch, region, http_url, media_addrs, draining, participants, \
     rooms, busy_ratio, registered_at, heartbeat_at, lease_until, trunk_addr";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ClusterDb {
    /// Connects a small pool to `url`. It does not wait for the database: an unreachable one
    /// makes each operation fail with [`ClusterError::Unavailable`] until it answers.
    pub fn connect_lazy(url: &str) -> Result<ClusterDb, ClusterError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| ClusterError::Unavailable(format!("invalid database URL: {e}")))?
            .application_name("callrelay-cluster");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(ClusterDb { pool, options })
    }

    /// The database's clock (ms).
    pub async fn now(&self) -> Result<i64, ClusterError> {
        Ok(sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&self.pool)
            .await?)
    }

    /// Registers (or registers again) `advert` with a fresh lease; returns the new epoch, one
    /// more than any earlier registration of this node id.
    pub async fn register(
        &self,
        advert: &Advert,
        load: &Load,
        lease: Duration,
    ) -> Result<i64, ClusterError> {
        let sql = format!(
            "INSERT INTO cluster_nodes ({NODE_COLUMNS}) \
             VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, {NOW}, {NOW}, {NOW} + $9, $10) \
             ON CONFLICT (node_id) DO UPDATE SET epoch = cluster_nodes.epoch + 1, \
             region = excluded.region, http_url = excluded.http_url, \
             media_addrs = excluded.media_addrs, draining = excluded.draining, \
             participants = excluded.participants, rooms = excluded.rooms, \
             busy_ratio = excluded.busy_ratio, registered_at = excluded.registered_at, \
             heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until, \
             trunk_addr = excluded.trunk_addr \
             RETURNING epoch"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(&advert.node_id)
            .bind(&advert.region)
            .bind(&advert.http_url)
            .bind(advert.media_addrs.join(","))
            .bind(load.draining)
            .bind(load.participants)
            .bind(load.rooms)
            .bind(load.busy_ratio)
            .bind(ms(lease))
            .bind(&advert.trunk_addr)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Renews the lease of `node_id` at `epoch` and records its load. `Ok(false)` when the lease
    /// had already run out (or another registration took the node id): the node must register
    /// again, under a new epoch.
    pub async fn heartbeat(
        &self,
        node_id: &str,
        epoch: i64,
        load: &Load,
        lease: Duration,
    ) -> Result<bool, ClusterError> {
        let sql = format!(
            "UPDATE cluster_nodes SET heartbeat_at = {NOW}, lease_until = {NOW} + $3, \
             draining = $4, participants = $5, rooms = $6, busy_ratio = $7 \
             WHERE node_id = $1 AND epoch = $2 AND lease_until > {NOW}"
        );
        let done = sqlx::query(&sql)
            .bind(node_id)
            .bind(epoch)
            .bind(ms(lease))
            .bind(load.draining)
            .bind(load.participants)
            .bind(load.rooms)
            .bind(load.busy_ratio)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every registered node and the database's clock.
    pub async fn nodes(&self) -> Result<(i64, Vec<NodeView>), ClusterError> {
        let mut conn = self.pool.acquire().await?;
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&mut *conn)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM cluster_nodes ORDER BY node_id"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let nodes = rows.iter().map(node_from_row).collect::<Result<_, _>>()?;
        Ok((now, nodes))
    }

    /// The home of `link`'s call, placing it if it has none: the live home if there is one,
    /// otherwise the node [`choose_home`] picks for `region`. One transaction holding the room's
    /// row lock, so two nodes racing on the same new room place it once.
    ///
    /// With `defer_takeover` a room whose home lost its lease is not placed again but answered
    /// [`ClusterError::Unavailable`] (retry): the asking node has just come back itself (start, or
    /// the end of a store outage), and the home may be coming back from the same outage.
    pub async fn place(
        &self,
        link: &str,
        region: &str,
        defer_takeover: bool,
    ) -> Result<Placed, ClusterError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO cluster_rooms (link_id, node_id, epoch, participants, placed_at, updated_at) \
             VALUES ($1, '', 0, 0, {NOW}, {NOW}) ON CONFLICT (link_id) DO NOTHING"
        ))
        .bind(link)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT node_id, epoch, participants, placed_at FROM cluster_rooms \
             WHERE link_id = $1 FOR UPDATE",
        )
        .bind(link)
        .fetch_one(&mut *tx)
        .await?;
        let current = placement_from_row(&row)?;
        // The clock after the lock: time spent waiting on a racing placement counts.
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&mut *tx)
            .await?;
        let mut nodes: Vec<NodeView> = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM cluster_nodes ORDER BY node_id"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(node_from_row)
        .collect::<Result<_, _>>()?;
        // Rooms as placed now (a heartbeat's report may be a second old: two rooms placed within
        // it would otherwise both go to the same node).
        let placed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, COUNT(*) FROM cluster_rooms WHERE node_id <> '' GROUP BY node_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for n in &mut nodes {
            if let Some((_, count)) = placed.iter().find(|(id, _)| *id == n.node_id) {
                n.rooms = *count;
            }
        }
        if let Some(cur) = &current {
            let home = nodes.iter().find(|n| n.node_id == cur.node_id);
            if let (true, Some(home)) = (placement_holds(cur, home, now), home) {
                let on_legs = legs_participants(&mut tx, link).await?;
                tx.commit().await?;
                return Ok(Placed {
                    node_id: home.node_id.clone(),
                    epoch: home.epoch,
                    http_url: home.http_url.clone(),
                    participants: cur.participants + on_legs,
                    on_legs,
                    outcome: PlaceOutcome::Existing,
                });
            }
        }
        if let (Some(cur), true) = (&current, defer_takeover) {
            tx.rollback().await?;
            return Err(ClusterError::Unavailable(format!(
                "the call's home {} has lost its lease and may be coming back; retry",
                cur.node_id
            )));
        }
        let Some(home) = choose_home(&nodes, region, now) else {
            tx.rollback().await?;
            return Err(ClusterError::NoNode);
        };
        sqlx::query(
            "UPDATE cluster_rooms SET node_id = $2, epoch = $3, participants = 0, \
             placed_at = $4, updated_at = $4 WHERE link_id = $1",
        )
        .bind(link)
        .bind(&home.node_id)
        .bind(home.epoch)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Placed {
            node_id: home.node_id.clone(),
            epoch: home.epoch,
            http_url: home.http_url.clone(),
            participants: 0,
            on_legs: 0,
            outcome: if current.is_some() {
                PlaceOutcome::Replaced
            } else {
                PlaceOutcome::New
            },
        })
    }

    /// `me` (at `epoch`, hosting the room with `participants`) claims `link`'s room: see
    /// [`claim_decision`]. On [`Claim::TakeOver`] the row is rewritten to name `me` at `epoch`.
    pub async fn claim(
        &self,
        link: &str,
        me: &str,
        epoch: i64,
        participants: i64,
    ) -> Result<Claim, ClusterError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO cluster_rooms (link_id, node_id, epoch, participants, placed_at, updated_at) \
             VALUES ($1, '', 0, 0, {NOW}, {NOW}) ON CONFLICT (link_id) DO NOTHING"
        ))
        .bind(link)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT node_id, epoch, participants, placed_at FROM cluster_rooms \
             WHERE link_id = $1 FOR UPDATE",
        )
        .bind(link)
        .fetch_one(&mut *tx)
        .await?;
        let current = placement_from_row(&row)?;
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&mut *tx)
            .await?;
        let home = match &current {
            Some(cur) => sqlx::query(&format!(
                "SELECT {NODE_COLUMNS} FROM cluster_nodes WHERE node_id = $1"
            ))
            .bind(&cur.node_id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(node_from_row)
            .transpose()?,
            None => None,
        };
        let decision = claim_decision(me, epoch, current.as_ref(), home.as_ref(), now);
        match &decision {
            Claim::Ours => {
                sqlx::query(
                    "UPDATE cluster_rooms SET participants = $2, updated_at = $3 WHERE link_id = $1",
                )
                .bind(link)
                .bind(participants)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Claim::TakeOver => {
                sqlx::query(
                    "UPDATE cluster_rooms SET node_id = $2, epoch = $3, participants = $4, \
                     placed_at = $5, updated_at = $5 WHERE link_id = $1",
                )
                .bind(link)
                .bind(me)
                .bind(epoch)
                .bind(participants)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Claim::Elsewhere { .. } | Claim::Leg { .. } => {}
        }
        // Elsewhere, unless this node is a leg of the call under its current epoch.
        let decision = match decision {
            Claim::Elsewhere { node_id } => {
                let leg = sqlx::query(&format!(
                    "UPDATE cluster_legs SET updated_at = {NOW}, participants = $4 \
                     WHERE link_id = $1 AND node_id = $2 AND epoch = $3"
                ))
                .bind(link)
                .bind(me)
                .bind(epoch)
                .bind(participants)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if leg > 0 {
                    Claim::Leg { node_id }
                } else {
                    Claim::Elsewhere { node_id }
                }
            }
            d => d,
        };
        tx.commit().await?;
        Ok(decision)
    }

    /// Records `node` (at `epoch`) as a leg of `link`'s call: it serves some of the call's
    /// participants while another node is the home. Its claims on the room then answer
    /// [`Claim::Leg`] instead of moving its participants away.
    pub async fn add_leg(&self, link: &str, node: &str, epoch: i64) -> Result<(), ClusterError> {
        sqlx::query(&format!(
            "INSERT INTO cluster_legs (link_id, node_id, epoch, updated_at) \
             VALUES ($1, $2, $3, {NOW}) ON CONFLICT (link_id, node_id) \
             DO UPDATE SET epoch = $3, updated_at = {NOW}"
        ))
        .bind(link)
        .bind(node)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live nodes serving `link`'s call: its home and its legs (each under the epoch it
    /// was recorded with), by node id.
    pub async fn legs(&self, link: &str) -> Result<Vec<NodeView>, ClusterError> {
        let mut conn = self.pool.acquire().await?;
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&mut *conn)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM cluster_nodes n WHERE \
             EXISTS (SELECT 1 FROM cluster_legs l WHERE l.link_id = $1 \
                     AND l.node_id = n.node_id AND l.epoch = n.epoch) \
             OR EXISTS (SELECT 1 FROM cluster_rooms r WHERE r.link_id = $1 \
                     AND r.node_id = n.node_id AND r.epoch = n.epoch) \
             ORDER BY node_id"
        ))
        .bind(link)
        .fetch_all(&mut *conn)
        .await?;
        let nodes: Vec<NodeView> = rows.iter().map(node_from_row).collect::<Result<_, _>>()?;
        Ok(nodes
            .into_iter()
            .filter(|n| crate::rules::lease_live(n, now))
            .collect())
    }

    /// Records the participants of the rooms `me` hosts under `epoch` (and zero for its other
    /// placements: rooms that emptied, so that a draining node's empty room is placed elsewhere);
    /// returns the links whose row still names `me` at `epoch` (the others need a
    /// [`ClusterDb::claim`]).
    pub async fn report(
        &self,
        me: &str,
        epoch: i64,
        rooms: &[(String, i64)],
    ) -> Result<Vec<String>, ClusterError> {
        let links: Vec<String> = rooms.iter().map(|(l, _)| l.clone()).collect();
        sqlx::query(
            "UPDATE cluster_rooms SET participants = 0 WHERE node_id = $1 AND epoch = $2 \
             AND participants <> 0 AND NOT (link_id = ANY($3))",
        )
        .bind(me)
        .bind(epoch)
        .bind(&links)
        .execute(&self.pool)
        .await?;
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let counts: Vec<i64> = rooms.iter().map(|(_, n)| *n).collect();
        Ok(sqlx::query_scalar(&format!(
            "UPDATE cluster_rooms AS r SET participants = m.n, updated_at = {NOW} \
             FROM UNNEST($3::text[], $4::bigint[]) AS m(link_id, n) \
             WHERE r.link_id = m.link_id AND r.node_id = $1 AND r.epoch = $2 \
             RETURNING r.link_id"
        ))
        .bind(me)
        .bind(epoch)
        .bind(&links)
        .bind(&counts)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops the placements `me` holds under `epoch` for rooms not in `live` that nobody has
    /// confirmed for `grace` (the room emptied; a joiner with a fresh grant has had its time).
    pub async fn release_idle(
        &self,
        me: &str,
        epoch: i64,
        live: &[String],
        grace: Duration,
    ) -> Result<u64, ClusterError> {
        sqlx::query(&format!(
            "DELETE FROM cluster_legs WHERE node_id = $1 AND epoch = $2 \
             AND NOT (link_id = ANY($3)) AND updated_at < {NOW} - $4"
        ))
        .bind(me)
        .bind(epoch)
        .bind(live)
        .bind(ms(grace))
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query(&format!(
            "DELETE FROM cluster_rooms WHERE node_id = $1 AND epoch = $2 \
             AND NOT (link_id = ANY($3)) AND updated_at < {NOW} - $4"
        ))
        .bind(me)
        .bind(epoch)
        .bind(live)
        .bind(ms(grace))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Drops one placement of `me` (its room ended).
    pub async fn release(&self, link: &str, me: &str) -> Result<(), ClusterError> {
        sqlx::query("DELETE FROM cluster_rooms WHERE link_id = $1 AND node_id = $2")
            .bind(link)
            .bind(me)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM cluster_legs WHERE link_id = $1 AND node_id = $2")
            .bind(link)
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops every placement of `me` (the end of a drain: whoever rejoins goes elsewhere).
    pub async fn release_all(&self, me: &str) -> Result<u64, ClusterError> {
        sqlx::query("DELETE FROM cluster_legs WHERE node_id = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("DELETE FROM cluster_rooms WHERE node_id = $1")
            .bind(me)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The placement of `link`'s room, if any.
    pub async fn room(&self, link: &str) -> Result<Option<RoomView>, ClusterError> {
        let mut conn = self.pool.acquire().await?;
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW}"))
            .fetch_one(&mut *conn)
            .await?;
        let Some(row) = sqlx::query(
            "SELECT node_id, epoch, participants, placed_at FROM cluster_rooms WHERE link_id = $1",
        )
        .bind(link)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let Some(row) = placement_from_row(&row)? else {
            return Ok(None);
        };
        let on_legs = legs_participants(&mut conn, link).await?;
        let home = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM cluster_nodes WHERE node_id = $1"
        ))
        .bind(&row.node_id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(node_from_row)
        .transpose()?;
        let live = placement_holds(&row, home.as_ref(), now);
        Ok(Some(RoomView { row, live, on_legs }))
    }

    /// Forgets placements whose home has been gone (lease over, or re-registered under another
    /// epoch) for longer than `after`, and nodes whose lease ended more than a day ago.
    pub async fn collect_garbage(&self, after: Duration) -> Result<u64, ClusterError> {
        let rooms = sqlx::query(&format!(
            "DELETE FROM cluster_rooms r WHERE r.updated_at < {NOW} - $1 AND NOT EXISTS \
             (SELECT 1 FROM cluster_nodes n WHERE n.node_id = r.node_id AND n.epoch = r.epoch \
              AND n.lease_until > {NOW} - $1)"
        ))
        .bind(ms(after))
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query(&format!(
            "DELETE FROM cluster_legs l WHERE l.updated_at < {NOW} - $1 AND NOT EXISTS \
             (SELECT 1 FROM cluster_nodes n WHERE n.node_id = l.node_id AND n.epoch = l.epoch \
              AND n.lease_until > {NOW} - $1)"
        ))
        .bind(ms(after))
        .execute(&self.pool)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM cluster_nodes WHERE lease_until < {NOW} - 86400000"
        ))
        .execute(&self.pool)
        .await?;
        Ok(rooms)
    }

    /// Sends `notice` to every listening node (delivered when it commits; here at once).
    pub async fn notify(&self, notice: &Notice) -> Result<(), ClusterError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notice.to_payload())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A listener on [`CHANNEL`] over its own connection.
    pub async fn listen(&self) -> Result<PgListener, ClusterError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(self.options.clone());
        let mut l = PgListener::connect_with(&pool).await?;
        l.listen(CHANNEL).await?;
        Ok(l)
    }
}
