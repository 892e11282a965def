//! The operator's room API: live calls, their participants, and removing one participant.
//!
//! A room is named by its link id or by the 8-hex digest of it that this API lists (and that
//! the logs show), so an operator never needs the bearer secret to act on a call. Every node
//! answers for the whole cluster: it lists its own rooms and asks the other live members for
//! theirs (`?scope=node`, with the caller's own token); a member that does not answer within
//! [`PEER_TIMEOUT`] is named in `unreachable_nodes` instead of failing the request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use callrelay_links::LinkId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::OptionalJsonBody;
use crate::auth::Caller;
use crate::media::{self, RoomReport};
use crate::problem::ApiError;
use crate::state::AppState;

/// How long a node waits for another member's answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// A live call, as `GET /v1/admin/rooms` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomItem {
    /// The 8-hex digest of the link id (as in the logs): names the room in the other calls of
    /// this API.
    pub room: String,
    /// The node hosting it (`cluster.node_id`).
    pub node: String,
    /// The link's creator.
    pub creator: Option<String>,
    /// Participants in the call now.
    pub participants: usize,
    /// When its first participant joined on that node.
    #[serde(serialize_with = "crate::api::ts")]
    pub started_at: DateTime<Utc>,
    /// Seconds since `started_at`.
    pub age_seconds: i64,
    /// Media the participants send that is admitted for fan-out, bits/s over the last second.
    pub received_bps: u64,
    /// Media forwarded to the participants, bits/s over the last second.
    pub forwarded_bps: u64,
}

/// `GET /v1/admin/rooms` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    /// Whether the list covers a cluster (PostgreSQL); on SQLite it is this node's.
    pub cluster: bool,
    /// The live calls, oldest first.
    pub rooms: Vec<RoomItem>,
    /// Members that did not answer in time: their calls are missing from `rooms`.
    pub unreachable_nodes: Vec<String>,
}

/// A participant, as `GET /v1/admin/rooms/{room}/participants` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ParticipantItem {
    /// `p-` and 16 hex digits.
    pub participant_id: String,
    /// Its user id.
    pub user_id: String,
    /// Its display name.
    pub name: String,
    /// When it joined.
    #[serde(serialize_with = "crate::api::ts")]
    pub joined_at: DateTime<Utc>,
    /// It muted its microphone.
    pub audio_muted: bool,
    /// It turned its camera off.
    pub video_muted: bool,
    /// What it sends that is admitted for fan-out, bits/s over the last second.
    pub received_bps: u64,
    /// What is forwarded to it, bits/s over the last second.
    pub forwarded_bps: u64,
    /// The relay's bandwidth estimate towards it, bits/s (absent until measured).
    pub estimate_bps: Option<u64>,
}

/// `GET /v1/admin/rooms/{room}/participants` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ParticipantList {
    /// The room's digest.
    pub room: String,
    /// The node hosting it.
    pub node: String,
    /// Its participants, in join order.
    pub participants: Vec<ParticipantItem>,
}

/// `DELETE /v1/admin/rooms/{room}/participants/{pid}` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveParticipant {
    /// Why (logged with the operator's id; at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    pub reason: String,
}

/// `DELETE /v1/admin/rooms/{room}/participants/{pid}` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    /// Who was removed; they were told `removed{reason: "kicked"}` and may join again.
    pub participant_id: String,
    /// The room's digest.
    pub room: String,
    /// The node that hosted them.
    pub node: String,
    /// The reason given.
    pub reason: String,
}

/// `?scope=` of the room API.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// `cluster` (default): every live member answers; `node`: this node only (what members
    /// ask each other).
    #[param(pattern = "^(cluster|node)$")]
    pub scope: Option<String>,
}

impl Scope {
    pub(crate) fn node_only(&self) -> Result<bool, ApiError> {
        match self.scope.as_deref() {
            None | Some("cluster") => Ok(false),
            Some("node") => Ok(true),
            Some(_) => Err(ApiError::InvalidRequest(
                "scope must be cluster or node".into(),
            )),
        }
    }
}

/// How the path names a room.
enum RoomName {
    Link(LinkId),
    Digest(String),
}

fn parse_room(s: &str) -> Result<RoomName, ApiError> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(RoomName::Digest(s.to_ascii_lowercase()));
    }
    LinkId::parse(s)
        .map(RoomName::Link)
        .map_err(|_| ApiError::InvalidRoom)
}

/// This node's live rooms: link, creator and the worker's view, oldest first.
async fn local_rooms(
    s: &AppState,
    only: Option<&LinkId>,
) -> Vec<(LinkId, Option<String>, RoomReport)> {
    let seats = s.seats.snapshot(std::time::Instant::now());
    let links: Vec<_> = seats
        .into_iter()
        .filter(|r| !r.live.is_empty() && only.is_none_or(|l| *l == r.link))
        .map(|r| (media::room_key(&r.link), r.link, r.creator))
        .collect();
    let reports = s.media.inspect(only.map(media::room_key)).await;
    reports
        .into_iter()
        .filter_map(|report| {
            let (_, link, creator) = links.iter().find(|(k, _, _)| *k == report.room)?;
            Some((
                *link,
                creator.as_ref().map(|c| c.as_str().to_owned()),
                report,
            ))
        })
        .collect()
}

/// The local room `name` names, if it runs here.
async fn find_local(
    s: &AppState,
    name: &RoomName,
) -> Result<Option<(LinkId, RoomReport)>, ApiError> {
    let rooms = match name {
        RoomName::Link(l) => local_rooms(s, Some(l)).await,
        RoomName::Digest(d) => local_rooms(s, None)
            .await
            .into_iter()
            .filter(|(l, _, _)| l.digest().to_string() == *d)
            .collect(),
    };
    match rooms.len() {
        0 => Ok(None),
        1 => Ok(rooms.into_iter().next().map(|(l, _, r)| (l, r))),
        _ => Err(ApiError::AmbiguousRoom),
    }
}

fn node_id(s: &AppState) -> String {
    s.settings.cluster.node_id.clone()
}

fn room_item(s: &AppState, link: &LinkId, creator: Option<String>, r: &RoomReport) -> RoomItem {
    let now = Utc::now();
    RoomItem {
        room: link.digest().to_string(),
        node: node_id(s),
        creator,
        participants: r.participants.len(),
        started_at: r.since,
        age_seconds: (now - r.since).num_seconds().max(0),
        received_bps: r.participants.iter().map(|p| p.bitrate.received_bps).sum(),
        forwarded_bps: r.participants.iter().map(|p| p.bitrate.forwarded_bps).sum(),
    }
}

/// The other live members' URLs (none on a single node). A store that does not answer leaves
/// the cluster's other calls unknown: an error, not a partial list that looks whole.
pub(crate) async fn peers(s: &AppState) -> Result<Vec<(String, String)>, ApiError> {
    let Some(c) = &s.cluster else {
        return Ok(Vec::new());
    };
    let (now, nodes) = tokio::time::timeout(PEER_TIMEOUT, c.nodes())
        .await
        .map_err(|_| ApiError::StoreUnavailable)??;
    Ok(nodes
        .into_iter()
        .filter(|n| n.node_id != c.node_id() && crate::cluster::state_name(n, now) != "expired")
        .map(|n| (n.node_id, n.http_url))
        .collect())
}

/// Asks `url` on member `node` with the caller's own Authorization header; `Ok(None)` for a
/// 404, `Err(())` when it does not answer as expected (logged by node: the URL may hold a link
/// id, which is never logged).
pub(crate) async fn ask<T: serde::de::DeserializeOwned>(
    node: &str,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<Option<T>, ()> {
    let client = reqwest::Client::builder()
        .timeout(PEER_TIMEOUT)
        .build()
        .map_err(|_| ())?;
    let mut req = client.request(method, &url);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.map_err(|e| {
        tracing::warn!(node, error = %e.without_url(), "a cluster member did not answer");
    })?;
    match r.status() {
        StatusCode::NOT_FOUND => Ok(None),
        st if st.is_success() => r.json().await.map(Some).map_err(|_| ()),
        st => {
            tracing::warn!(
                url,
                status = st.as_u16(),
                "a cluster member refused the room API"
            );
            Err(())
        }
    }
}

pub(crate) fn auth_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The live calls (operators only): on every member of the cluster, oldest first.
#[utoipa::path(get, path = "/v1/admin/rooms", tag = "admin",
    params(Scope),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The live calls", body = RoomList),
        (status = 400, description = "Bad scope", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable (the cluster's members are unknown)", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_rooms(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Query(scope): Query<Scope>,
) -> Result<Json<RoomList>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let node_only = scope.node_only()?;
    let mut rooms: Vec<RoomItem> = local_rooms(&s, None)
        .await
        .iter()
        .map(|(l, c, r)| room_item(&s, l, c.clone(), r))
        .collect();
    let mut unreachable = Vec::new();
    if !node_only {
        let auth = auth_header(&headers);
        let asks = peers(&s).await?.into_iter().map(|(id, url)| {
            let auth = auth.clone();
            async move {
                let url = format!("{}/v1/admin/rooms?scope=node", url.trim_end_matches('/'));
                let answer =
                    ask::<RoomList>(&id, reqwest::Method::GET, url, auth.as_deref(), None).await;
                (id, answer)
            }
        });
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Some(list)) => rooms.extend(list.rooms),
                Ok(None) | Err(()) => unreachable.push(id),
            }
        }
    }
    rooms.sort_by(|a, b| (a.started_at, &a.room).cmp(&(b.started_at, &b.room)));
    Ok(Json(RoomList {
        cluster: s.cluster.is_some(),
        rooms,
        unreachable_nodes: unreachable,
    }))
}

/// The participants of a live call (operators only), wherever in the cluster it runs.
#[utoipa::path(get, path = "/v1/admin/rooms/{room}/participants", tag = "admin",
    params(
        ("room" = String, Path, description = "The link id, or the 8-hex digest GET /v1/admin/rooms shows"),
        Scope,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The participants", body = ParticipantList),
        (status = 400, description = "Not a link id nor a digest", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No live call of that link (room_not_found)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Two live calls share that digest (ambiguous_room)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_participants(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(scope): Query<Scope>,
) -> Result<Json<ParticipantList>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let name = parse_room(&room)?;
    if let Some((link, report)) = find_local(&s, &name).await? {
        return Ok(Json(ParticipantList {
            room: link.digest().to_string(),
            node: node_id(&s),
            participants: report
                .participants
                .iter()
                .map(|p| ParticipantItem {
                    participant_id: p.participant.to_string(),
                    user_id: p.user.as_str().to_owned(),
                    name: p.name.clone(),
                    joined_at: p.joined_at,
                    audio_muted: p.audio_muted,
                    video_muted: p.video_muted,
                    received_bps: p.bitrate.received_bps,
                    forwarded_bps: p.bitrate.forwarded_bps,
                    estimate_bps: p.bitrate.estimate_bps,
                })
                .collect(),
        }));
    }
    if scope.node_only()? {
        return Err(ApiError::RoomNotFound);
    }
    let auth = auth_header(&headers);
    let mut found: Vec<ParticipantList> = Vec::new();
    for (node, url) in peers(&s).await? {
        let url = format!(
            "{}/v1/admin/rooms/{room}/participants?scope=node",
            url.trim_end_matches('/')
        );
        if let Ok(Some(list)) = ask(&node, reqwest::Method::GET, url, auth.as_deref(), None).await {
            found.push(list);
        }
    }
    match found.len() {
        0 => Err(ApiError::RoomNotFound),
        1 => Ok(Json(found.remove(0))),
        _ => Err(ApiError::AmbiguousRoom),
    }
}

/// Removes one participant from a live call (operators only): they are told
/// `removed{reason: "kicked"}` and may join again (block them, or revoke the link, to keep them
/// out).
#[utoipa::path(delete, path = "/v1/admin/rooms/{room}/participants/{participant_id}", tag = "admin",
    params(
        ("room" = String, Path, description = "The link id, or the 8-hex digest GET /v1/admin/rooms shows"),
        ("participant_id" = String, Path, description = "p- and 16 hex digits"),
        Scope,
    ),
    request_body(content = Option<RemoveParticipant>, description = "Optional reason"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 400, description = "Malformed room, participant id or body", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in that call (participant_not_found)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Two live calls share that digest (ambiguous_room)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_participant(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((room, participant)): Path<(String, String)>,
    Query(scope): Query<Scope>,
    OptionalJsonBody(body): OptionalJsonBody<RemoveParticipant>,
) -> Result<Json<Removed>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let name = parse_room(&room)?;
    let pid = media::parse_participant_id(&participant).ok_or(ApiError::InvalidParticipantId)?;
    let reason = callrelay_links::normalize_reason(&body.reason)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    if let Some((link, _)) = find_local(&s, &name).await? {
        if !s.media.kick(media::room_key(&link), pid).await {
            return Err(ApiError::ParticipantNotFound);
        }
        tracing::warn!(link = %link, participant = %pid, operator = %caller.user, reason, "participant removed by an operator");
        return Ok(Json(Removed {
            participant_id: pid.to_string(),
            room: link.digest().to_string(),
            node: node_id(&s),
            reason,
        }));
    }
    if scope.node_only()? {
        return Err(ApiError::ParticipantNotFound);
    }
    let auth = auth_header(&headers);
    for (node, url) in peers(&s).await? {
        let url = format!(
            "{}/v1/admin/rooms/{room}/participants/{participant}?scope=node",
            url.trim_end_matches('/')
        );
        let body = serde_json::json!({ "reason": reason });
        if let Ok(Some(done)) = ask::<Removed>(
            &node,
            reqwest::Method::DELETE,
            url,
            auth.as_deref(),
            Some(body),
        )
        .await
        {
            return Ok(Json(done));
        }
    }
    Err(ApiError::ParticipantNotFound)
}
