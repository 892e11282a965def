//! Enforcement: a revocation, a block or an expiry reaches the node that hosts the call.
//!
//! Three paths, none of which can lag and drop silently:
//! - **local**: the API handler that took the call removes the participants hosted here at once
//!   (commands on the workers' unbounded channels);
//! - **notices** (cluster): it also sends a notice through PostgreSQL `NOTIFY`; every other node
//!   applies it on receipt ([`listen`]);
//! - **reconciliation**: every `cluster.reconcile` each node checks the calls it hosts against the
//!   store — revoked, expired or purged links, the creator's blocks, and (cluster) whether the room
//!   is still placed here — so a notice lost in a store outage or a listener reconnect is caught
//!   ([`reconcile`]).
//!
//! `callrelay_control_propagation_seconds{kind}` times each removal from the API call (or the
//! link's expiry) to the removal command reaching the media worker, on the hosting node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_cluster::{Claim, Load, Notice};
use callrelay_links::{LinkId, LinkStatus, UserId};
use callrelay_sfu::RemoveReason;
use chrono::{DateTime, Utc};

use crate::cluster::Cluster;
use crate::media::{self, Command};
use crate::state::{AppState, ControlEvent};

fn observe(s: &AppState, kind: &str, since: DateTime<Utc>) {
    let secs = (Utc::now() - since).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    s.cluster_metrics
        .propagation
        .with_label_values(&[kind])
        .observe(secs);
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

/// Empties `link`'s room on this node (if it runs here) with `reason`; times it under `kind`
/// from `since` when someone was removed.
fn remove_room(
    s: &AppState,
    link: &LinkId,
    reason: RemoveReason,
    kind: &str,
    since: DateTime<Utc>,
) {
    let live = s.seats.live(link);
    let room = media::room_key(link);
    s.media.send(room, Command::RemoveRoom(room, reason));
    if live > 0 {
        observe(s, kind, since);
        tracing::info!(link = %link, participants = live, reason = reason.as_str(), "room emptied");
    }
}

/// Removes `blocked` from the calls of links `blocker` created on this node.
fn remove_blocked(s: &AppState, blocker: &UserId, blocked: &UserId, since: DateTime<Utc>) {
    let live = s.seats.live_seats_of(blocker, blocked);
    s.media.broadcast(|| Command::RemoveBlocked {
        blocker: blocker.clone(),
        blocked: blocked.clone(),
    });
    if live > 0 {
        observe(s, "block", since);
        tracing::info!(blocker = %blocker, blocked = %blocked, "blocked user removed from calls");
    }
}

/// An operator revoked `link` at `at`: its call ends here now and, through a notice, wherever it
/// runs in the cluster.
pub async fn revoked(s: &AppState, link: LinkId, at: DateTime<Utc>) {
    remove_room(s, &link, RemoveReason::Revoked, "revoke", at);
    if let Some(c) = &s.cluster {
        let notice = Notice::Revoke {
            link: link.as_str().to_owned(),
            at_ms: at.timestamp_millis(),
            origin: c.node_id().to_owned(),
        };
        // A failed notice is caught by the hosting node's reconciliation.
        let _ = tokio::time::timeout(Duration::from_secs(2), c.notify(&notice)).await;
    }
    let _ = s.events.send(ControlEvent::LinkRevoked { link });
}

/// `blocker` blocked `blocked` at `at`: `blocked` leaves `blocker`'s calls here now and, through a
/// notice, wherever they run.
pub async fn blocked(s: &AppState, blocker: UserId, blocked: UserId, at: DateTime<Utc>) {
    remove_blocked(s, &blocker, &blocked, at);
    if let Some(c) = &s.cluster {
        let notice = Notice::Block {
            blocker: blocker.as_str().to_owned(),
            blocked: blocked.as_str().to_owned(),
            at_ms: at.timestamp_millis(),
            origin: c.node_id().to_owned(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), c.notify(&notice)).await;
    }
    let _ = s
        .events
        .send(ControlEvent::UserBlocked { blocker, blocked });
}

/// Applies a notice from another node.
fn apply(s: &AppState, notice: &Notice) {
    match notice {
        Notice::Revoke { link, at_ms, .. } => {
            if let Ok(link) = LinkId::parse(link) {
                remove_room(s, &link, RemoveReason::Revoked, "revoke", from_ms(*at_ms));
            }
        }
        Notice::Block {
            blocker,
            blocked,
            at_ms,
            ..
        } => {
            if let (Ok(blocker), Ok(blocked)) = (UserId::parse(blocker), UserId::parse(blocked)) {
                remove_blocked(s, &blocker, &blocked, from_ms(*at_ms));
            }
        }
    }
}

/// Receives the other nodes' notices until the task is aborted; reconnects by itself, and asks
/// for a reconciliation after each (re)connection, since notices sent meanwhile are lost.
pub async fn listen(s: Arc<AppState>, c: Arc<Cluster>) {
    loop {
        let mut listener = match tokio::time::timeout(Duration::from_secs(5), c.listen()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for control notices; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => continue,
        };
        tracing::debug!("listening for control notices");
        s.reconcile_now.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match Notice::from_payload(n.payload()) {
                    Some(notice) if notice.origin() == c.node_id() => {}
                    Some(notice) => {
                        c.received(&notice);
                        apply(&s, &notice);
                    }
                    None => tracing::warn!("ignored a control notice this version cannot read"),
                },
                // The connection was lost (the next call reconnects): notices may be missing.
                Ok(None) => {
                    tracing::warn!("control notice connection lost; reconnecting");
                    s.reconcile_now.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control notice listener failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Renews this node's lease every `cluster.heartbeat` (and at once when woken, e.g. when a drain
/// starts) until the task is aborted; refreshes the registry gauges and collects garbage now and
/// then.
pub async fn heartbeats(s: Arc<AppState>, c: Arc<Cluster>) {
    let period = c.settings().heartbeat;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = c.wake_heartbeat.notified() => {}
        }
        let load = Load {
            participants: i64::try_from(s.media.participants()).unwrap_or(i64::MAX),
            rooms: i64::try_from(s.media.rooms()).unwrap_or(i64::MAX),
            busy_ratio: s.media_busy_ratio(),
            draining: s.drain.is_draining(),
        };
        let before = c.epoch();
        let bound = c.settings().lease.min(Duration::from_secs(3));
        if tokio::time::timeout(bound, c.beat(load)).await.is_err() {
            tracing::warn!("cluster heartbeat timed out");
        }
        if before != 0 && c.epoch() != before {
            // Registered again after losing the lease: claim our rooms (or merge them) now.
            s.reconcile_now.notify_one();
        }
        beats += 1;
        if beats % 10 == 1 {
            let _ = tokio::time::timeout(bound, c.nodes()).await;
        }
        if beats.is_multiple_of(60) {
            let _ = tokio::time::timeout(bound, c.collect_garbage()).await;
        }
    }
}

/// Checks the calls hosted here against the store every `cluster.reconcile` (and when asked,
/// [`AppState::reconcile_now`]) until the task is aborted.
pub async fn reconcile(s: Arc<AppState>) {
    let period = s.settings.cluster.reconcile;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = s.reconcile_now.notified() => {}
        }
        let bound = (period * 4).max(Duration::from_secs(5));
        if tokio::time::timeout(bound, reconcile_once(&s))
            .await
            .is_err()
        {
            tracing::warn!("reconciliation took longer than {bound:?}; abandoned this round");
        }
    }
}

/// One round of reconciliation.
pub async fn reconcile_once(s: &AppState) {
    let rooms = s.seats.snapshot(Instant::now());
    let now = s.now();
    for room in rooms.iter().filter(|r| !r.live.is_empty()) {
        let link = match s.store.get_link(&room.link).await {
            Ok(l) => l,
            Err(_) => return, // the store is away: nothing to learn this round
        };
        let removed = |reason: RemoveReason| {
            s.cluster_metrics
                .reconcile_removals
                .with_label_values(&[reason.as_str()])
                .inc();
        };
        match link.as_ref().map(|l| (l, l.status(now))) {
            None => {
                // Purged: it had expired long ago.
                remove_room(s, &room.link, RemoveReason::Expired, "expiry", now);
                removed(RemoveReason::Expired);
                continue;
            }
            Some((l, LinkStatus::Revoked)) => {
                let at = l.revoked.as_ref().map(|r| r.at).unwrap_or(now);
                remove_room(s, &room.link, RemoveReason::Revoked, "revoke", at);
                removed(RemoveReason::Revoked);
                continue;
            }
            Some((l, LinkStatus::Expired)) => {
                remove_room(s, &room.link, RemoveReason::Expired, "expiry", l.expires_at);
                removed(RemoveReason::Expired);
                continue;
            }
            Some((_, LinkStatus::Active)) => {}
        }
        let Some(creator) = &room.creator else {
            continue;
        };
        let Ok(blocked) = s.store.blocked_by(creator).await else {
            return;
        };
        if blocked.is_empty() {
            continue;
        }
        let blocked: HashSet<&UserId> = blocked.iter().collect();
        for (pid, user) in &room.live {
            if blocked.contains(user) {
                if let Some(p) = media::parse_participant_id(pid) {
                    s.media.send(
                        media::room_key(&room.link),
                        Command::Remove(p, RemoveReason::Blocked),
                    );
                    removed(RemoveReason::Blocked);
                    tracing::info!(link = %room.link, participant = %pid, "blocked participant removed by reconciliation");
                }
            }
        }
    }
    if let Some(c) = &s.cluster {
        reconcile_placements(s, c, &rooms).await;
    }
}

/// Reports the rooms hosted here and claims those whose placement no longer names this node:
/// a room found live elsewhere (two copies after a partition) is merged into that home — its
/// participants here are told `moved` and rejoin there by themselves.
async fn reconcile_placements(s: &AppState, c: &Cluster, rooms: &[crate::seats::RoomSeats]) {
    if !c.holds_lease() {
        return;
    }
    // Connected participants (what the preview shows everywhere); a room with only granted
    // seats is listed too, so its placement stays.
    let reports: Vec<(String, i64)> = rooms
        .iter()
        .map(|r| {
            (
                r.link.as_str().to_owned(),
                i64::try_from(r.live.len()).unwrap_or(i64::MAX),
            )
        })
        .collect();
    let Ok(confirmed) = c.report(&reports).await else {
        return;
    };
    let confirmed: HashSet<&str> = confirmed.iter().map(String::as_str).collect();
    for room in rooms {
        if confirmed.contains(room.link.as_str()) {
            continue;
        }
        let held = i64::try_from(room.held).unwrap_or(i64::MAX);
        match c.claim(&room.link, held).await {
            // A leg of a call whose home is elsewhere: its copy is part of the call.
            Ok(Claim::Ours | Claim::Leg { .. }) => {}
            Ok(Claim::TakeOver) => {
                tracing::info!(link = %room.link, "room placement taken back under this node's epoch");
            }
            Ok(Claim::Elsewhere { node_id }) => {
                tracing::warn!(link = %room.link, home = %node_id, participants = room.live.len(), "a second copy of this room runs elsewhere: moving its participants there");
                let key = media::room_key(&room.link);
                s.media
                    .send(key, Command::RemoveRoom(key, RemoveReason::Moved));
                c.moved();
                s.cluster_metrics
                    .reconcile_removals
                    .with_label_values(&["moved"])
                    .inc();
            }
            Err(_) => return,
        }
    }
    let live: Vec<String> = reports.into_iter().map(|(l, _)| l).collect();
    let grace = s.settings.grant_ttl + s.settings.cluster.reconcile * 2;
    let _ = c.release_idle(&live, grace).await;
}
