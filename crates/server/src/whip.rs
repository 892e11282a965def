//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep): publish into a call link from a standard
//! client (OBS, GStreamer's `whipclientsink`, ffmpeg, a browser's WHIP client), and watch one
//! with a standard player, each with one HTTP request.
//!
//! `POST /v1/links/{id}/whip` with the user's bearer token and an SDP offer
//! (`application/sdp`) makes the same decision as `POST /v1/links/{id}/join` (link valid, not
//! revoked, caller not blocked, a seat free) and adds a **publish-only** participant to the call:
//! everyone receives its tracks, and it is offered nothing (a WHIP client has no channel for
//! the relay's offers). The answer is `201 Created`, the SDP answer, and the session's URL in
//! `Location`; `DELETE` on that URL (same token, or an operator's) ends it. The relay is
//! ICE-lite and its answer carries its candidates, so no trickle is needed: `PATCH` is not
//! offered (`405`). A call hosted on another node answers `307` to that node's endpoint (§4.5).
//! A revocation, a block, a kick or a drain ends the session like any other participant's.
//!
//! `POST /v1/links/{id}/whep` does the same for a player: its offer only receives (one audio
//! and one video line, typically), and its lines carry one participant's media: the one named
//! by `?participant=p-…`, else the first in the call with media, then the next one when that
//! one leaves, on the same lines (the player is never renegotiated). The session ends with
//! `DELETE /v1/whep/{session}`. Media stays as the publisher sent it: a participant of the web
//! page sends end-to-end encrypted frames, which a player without the link's key cannot
//! decode (WHIP publishers and apps that do not encrypt can be watched).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use callrelay_links::UserId;
use callrelay_proto::server_message;
use callrelay_sfu::{ParticipantId, RemoveReason, RoomKey};
use tokio::sync::mpsc;

use crate::api::{count_join, has_content_type, join_inner, parse_link_id, read_body, ClientIp};
use crate::auth::Caller;
use crate::ice::IceServer;
use crate::media::{Command, JoinMode, SESSION_QUEUE};
use crate::problem::{ApiError, Problem};
use crate::signal::{self, Refusal};
use crate::state::AppState;

/// The WHIP routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/links/{id}/whip", post(publish))
        .route("/v1/whip/{session}", delete(end))
        .route("/v1/links/{id}/whep", post(view))
        .route("/v1/whep/{session}", delete(end_view))
}

/// Live WHIP sessions on this node, by the random id in their URL.
#[derive(Default)]
pub struct WhipSessions {
    live: Mutex<HashMap<String, Live>>,
}

struct Live {
    user: UserId,
    room: RoomKey,
    pid: ParticipantId,
    /// `whip` or `whep`: the path its URL is under.
    kind: &'static str,
    /// When it ended. An ended session is kept [`ENDED_KEPT`], so that the `DELETE` of a client
    /// that closed its connection first (which ends the session at once) is answered `200`.
    ended: Option<Instant>,
}

/// How long an ended session's URL still answers `DELETE` with `200`.
const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

impl WhipSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        let mut map = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, l| l.ended.is_none_or(|t| now.duration_since(t) < ENDED_KEPT));
        map
    }

    /// Sessions live now.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|l| l.ended.is_none()).count()
    }

    /// No session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Publish into a call with WHIP (RFC 9725): an SDP offer in, the answer out.
#[utoipa::path(post, path = "/v1/links/{id}/whip", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    request_body(content = String, content_type = "application/sdp", description = "The client's SDP offer (send-only audio and/or video)"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Publishing: the SDP answer; `Location` is the session's URL (DELETE it to stop), `Link` headers name the ICE servers", body = String, content_type = "application/sdp"),
        (status = 307, description = "The call runs on another relay node: send the offer to `Location`"),
        (status = 400, description = "Malformed id, or an offer the relay cannot negotiate (sdp_rejected)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You can't join this call (join_refused), or the link admits only with its creator's approval (approval_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call is full (room_full), or you hold the most seats one user may hold in it (seat_limit)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/sdp", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable, this node draining, or no cluster node available (retry; Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn publish(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    ingest(s, ip, caller, id, req, JoinMode::Publish).await
}

/// `?participant=` of a WHEP request.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    /// The participant to watch (`p-` and 16 hex digits, as `participant_joined` names them).
    /// Default: the first participant of the call with media, then the next when they leave.
    pub participant: Option<String>,
}

/// Watch a call with WHEP: a receive-only SDP offer in, the answer out.
#[utoipa::path(post, path = "/v1/links/{id}/whep", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$"), ViewQuery),
    request_body(content = String, content_type = "application/sdp", description = "The player's SDP offer (receive-only audio and/or video lines)"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Watching: the SDP answer; `Location` is the session's URL (DELETE it to stop), `Link` headers name the ICE servers", body = String, content_type = "application/sdp"),
        (status = 307, description = "The call runs on another relay node: send the offer to `Location`"),
        (status = 400, description = "Malformed id or participant, or an offer the relay cannot negotiate or that sends (sdp_rejected)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You can't join this call (join_refused), or the link admits only with its creator's approval (approval_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call is full (room_full), or you hold the most seats one user may hold in it (seat_limit)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/sdp", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable, this node draining, or no cluster node available (retry; Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn view(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ViewQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let watch = match q.participant.as_deref() {
        Some(p) => {
            Some(crate::media::parse_participant_id(p).ok_or(ApiError::InvalidParticipantId)?)
        }
        None => None,
    };
    ingest(s, ip, caller, id, req, JoinMode::View { watch }).await
}

/// The WHIP and WHEP POST: the join decision, then a publish-only or view-only participant.
async fn ingest(
    s: Arc<AppState>,
    ip: std::net::IpAddr,
    caller: Caller,
    id: String,
    req: Request,
    mode: JoinMode,
) -> Result<Response, ApiError> {
    let kind = match mode {
        JoinMode::View { .. } => "whep",
        _ => "whip",
    };
    let started = Instant::now();
    let sdp_type = has_content_type(&req, "application/sdp");
    let body = read_body(req, &s).await?;
    if !sdp_type {
        return Err(ApiError::NotSdp);
    }
    let offer = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::SdpRejected("the offer is not UTF-8 text".into()))?;
    if !offer.trim_start().starts_with("v=0") {
        return Err(ApiError::SdpRejected("the body is not an SDP offer".into()));
    }
    let result = join_inner(&s, ip, &caller, &id, None).await;
    count_join(&s, started, &result);
    let (answer, elsewhere) = result?;
    if let Some(home) = elsewhere {
        // The call runs on another node (no seat was taken here): it takes the offer.
        let mut to = format!("{}/v1/links/{id}/{kind}", home.trim_end_matches('/'));
        if let JoinMode::View { watch: Some(p) } = mode {
            to.push_str(&format!("?participant={p}"));
        }
        let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let link_id = parse_link_id(&id)?;
    let release = || s.seats.release(&link_id, &answer.participant_id);
    if answer.lobby {
        release();
        return Err(ApiError::ApprovalRequired);
    }
    let checked = match signal::check(&s, &answer.grant).await {
        Ok(c) => c,
        Err(r) => {
            release();
            return Err(refused(r));
        }
    };
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    // `enter` gives the seat back itself when the worker refuses.
    let (admitted, joined) = signal::enter(&s, checked, offer, tx, started, mode)
        .await
        .map_err(refused)?;
    let session = session_id();
    s.whip.lock().insert(
        session.clone(),
        Live {
            user: caller.user.clone(),
            room: admitted.room,
            pid: admitted.pid,
            kind,
            ended: None,
        },
    );
    tracing::info!(link = %admitted.link, participant = %admitted.pid_text, kind, "whip/whep session started");
    tokio::spawn(watch(s.clone(), session.clone(), admitted, rx));

    let mut r = (StatusCode::CREATED, joined.sdp).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!(
        "{}/v1/{kind}/{session}",
        s.settings.public_url.trim_end_matches('/')
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    for link in ice_links(&answer.ice_servers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok(r)
}

/// Stop publishing: the participant leaves the call.
#[utoipa::path(delete, path = "/v1/whip/{session}", tag = "links",
    params(("session" = String, Path, description = "The session id from the `Location` of the WHIP answer")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Ended: the publisher has left the call (also for a session that ended less than a minute ago)"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session on this node, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn end(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    end_session(&s, &caller, &session, "whip")
}

/// Stop watching.
#[utoipa::path(delete, path = "/v1/whep/{session}", tag = "links",
    params(("session" = String, Path, description = "The session id from the `Location` of the WHEP answer")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Ended: the player has left the call (also for a session that ended less than a minute ago)"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session on this node, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn end_view(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    end_session(&s, &caller, &session, "whep")
}

fn end_session(
    s: &AppState,
    caller: &Caller,
    session: &str,
    kind: &str,
) -> Result<StatusCode, ApiError> {
    let mut map = s.whip.lock();
    // Someone else's session is not revealed.
    let live = map
        .get_mut(session)
        .filter(|l| l.kind == kind && (l.user == caller.user || caller.admin))
        .ok_or(ApiError::SessionNotFound)?;
    if live.ended.is_none() {
        live.ended = Some(Instant::now());
        // The worker removes it; `watch` then gives the seat back.
        s.media
            .send(live.room, Command::Remove(live.pid, RemoveReason::Left));
    }
    Ok(StatusCode::OK)
}

/// Reads what the worker sends this participant (nobody to tell: WHIP has no channel) until it
/// is removed, then gives its seat back.
async fn watch(
    s: Arc<AppState>,
    session: String,
    admitted: signal::Admitted,
    mut rx: mpsc::Receiver<callrelay_proto::ServerMessage>,
) {
    let mut reason = None;
    while let Some(m) = rx.recv().await {
        if let Some(server_message::Msg::Removed(r)) = m.msg {
            reason = Some(r.reason);
        }
    }
    if let Some(l) = s.whip.lock().get_mut(&session) {
        l.ended.get_or_insert_with(Instant::now);
    }
    signal::leave(&s, &admitted, RemoveReason::Left);
    tracing::info!(
        link = %admitted.link,
        participant = %admitted.pid_text,
        reason = reason.as_deref().unwrap_or("left"),
        "whip session ended"
    );
}

/// A signaling refusal as the HTTP problem a WHIP client gets.
fn refused(r: Refusal) -> ApiError {
    match r.code {
        "room_full" => ApiError::RoomFull,
        "seat_limit" => ApiError::SeatLimit,
        "link_expired" => ApiError::LinkExpired,
        "link_revoked" => ApiError::LinkRevoked,
        "join_refused" if r.message.contains("no such link") => ApiError::LinkNotFound,
        "join_refused" => ApiError::JoinRefused,
        "video_not_allowed" | "sdp_rejected" => ApiError::SdpRejected(r.message),
        "wrong_node" => ApiError::NoNodeAvailable,
        _ => {
            tracing::warn!(code = r.code, "whip join failed");
            ApiError::Internal
        }
    }
}

/// 16 random bytes, hex: the session's name in its URL.
fn session_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The ICE servers as RFC 9725 §4.6 `Link` header values.
fn ice_links(servers: &[IceServer]) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_links(&[
            IceServer {
                urls: vec!["stun:stun.example.org".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.org?transport=udp".into(),
                    "turns:turn.example.org:443".into(),
                ],
                username: Some("1700000000:p-00".into()),
                credential: Some("c2VjcmV0".into()),
            },
        ]);
        assert_eq!(links.len(), 3);
        assert_eq!(links[0], "<stun:stun.example.org>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.org?transport=udp>; rel=\"ice-server\"; username=\"1700000000:p-00\"; credential=\"c2VjcmV0\"; credential-type=\"password\""
        );
        assert!(session_id().len() == 32 && session_id() != session_id());
    }
}
