//! The HTTP API: routes, request and response bodies, extractors, and the OpenAPI document.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use callrelay_links::{
    check_block, check_duration, decide_join, normalize_reason, normalize_title, JoinRequest, Link,
    LinkId, LinkKind, NewLink, Refusal, UserId,
};
use callrelay_store::{CallLogEntry, JoinOutcome, LinkUpdate, Reminder, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Caller, GrantClaims, GRANT_AUDIENCE};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a request body may take to arrive in full (`http.body_timeout`), counted from the
/// moment its handler starts reading it. The HTTP server puts it in every request's extensions;
/// [`DEFAULT_BODY_TIMEOUT`] applies without it.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// The body timeout of a request that carries no [`BodyTimeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Bodies

pub(crate) fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn opt_ts<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts(t, s),
        None => s.serialize_none(),
    }
}

/// `POST /v1/links` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// `video` (default) or `voice`.
    #[schema(value_type = Option<String>, example = "video")]
    pub kind: Option<LinkKind>,
    /// Optional title, at most 100 characters.
    #[schema(max_length = 100)]
    pub title: Option<String>,
    /// Optional scheduled start (RFC 3339). Reminders (`links.reminders`) fire before it as
    /// `link.reminder` webhook events.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Optional planned length in seconds (60–86400), with `scheduled_at` only.
    #[schema(minimum = 60, maximum = 86400)]
    pub duration: Option<u64>,
    /// Joiners other than the creator wait in a lobby until the creator, in the call, lets them
    /// in (default false).
    #[serde(default)]
    pub require_approval: bool,
}

/// `PATCH /v1/links/{id}` body: each field present is changed; `null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchLink {
    /// New title (at most 100 characters), or `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 100)]
    pub title: Option<Option<String>>,
    /// New scheduled start (RFC 3339), or `null` for none (which clears `duration` too). The
    /// reminders still to send are replaced.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
    /// New planned length in seconds (60–86400), or `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 60, maximum = 86400)]
    pub duration: Option<Option<u64>>,
}

/// A field that is present (possibly `null`): `Some(value)`; an absent one stays `None` by
/// `#[serde(default)]`.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A call link as its creator, a participant or an operator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    /// The 22-character identifier.
    pub id: String,
    /// `video` or `voice`.
    #[schema(value_type = String, example = "video")]
    pub kind: LinkKind,
    /// `{public_url}/{kind}/{id}`.
    pub url: String,
    /// Optional title.
    pub title: Option<String>,
    /// Optional scheduled start.
    #[serde(serialize_with = "opt_ts")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Optional planned length in seconds.
    pub duration: Option<u64>,
    /// Joiners wait in a lobby for the creator's approval.
    pub require_approval: bool,
    /// Creation time.
    #[serde(serialize_with = "ts")]
    pub created_at: DateTime<Utc>,
    /// Creation or last successful join.
    #[serde(serialize_with = "ts")]
    pub last_used_at: DateTime<Utc>,
    /// When the link expires unless joined before.
    #[serde(serialize_with = "ts")]
    pub expires_at: DateTime<Utc>,
    /// The creator's user id.
    pub creator: String,
    /// When an operator revoked it (absent if never).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_ts")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The operator's reason (absent if never revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

/// What anyone holding the link sees before joining.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    /// The 22-character identifier.
    pub id: String,
    /// `video` or `voice`.
    #[schema(value_type = String, example = "video")]
    pub kind: LinkKind,
    /// `{public_url}/{kind}/{id}`.
    pub url: String,
    /// Optional title.
    pub title: Option<String>,
    /// Optional scheduled start.
    #[serde(serialize_with = "opt_ts")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Optional planned length in seconds.
    pub duration: Option<u64>,
    /// Joiners wait in a lobby for the creator's approval.
    pub require_approval: bool,
    /// When the link expires unless joined before.
    #[serde(serialize_with = "ts")]
    pub expires_at: DateTime<Utc>,
    /// People connected to the call now, on whichever node of the cluster hosts it (in a
    /// cluster, as its home last reported, at most `cluster.reconcile` old).
    pub participants: u32,
}

pub use crate::ice::IceServer;

/// `POST /v1/links/{id}/join` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinAnswer {
    /// The participant id allotted to this join.
    pub participant_id: String,
    /// A signed grant, valid at most 60 s, that the signaling socket accepts once.
    pub grant: String,
    /// The WebSocket URL of signaling.
    pub signal_url: String,
    /// ICE servers for the client: the relay needs none (it is ICE-lite with a public
    /// candidate); TURN servers, when the operator configured them, come with credentials that
    /// expire with the grant.
    pub ice_servers: Vec<IceServer>,
    /// The link, renewed by this join.
    pub link: LinkView,
    /// The caller created this link: in its call they may remove, block and mute the others
    /// (`POST /v1/links/{id}/participants/{pid}/remove|block|mute`).
    pub moderator: bool,
    /// This join waits in the link's lobby: signaling answers `lobby`, then `joined` once the
    /// creator lets you in (or error `lobby_declined` / `lobby_timeout`).
    pub lobby: bool,
}

/// `POST /v1/links/{id}/join` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The region the caller is nearest to: in a cluster a new call is placed on a node of that
    /// region when one serves (default: the region of the node that takes the request).
    /// 1 to 64 characters of `[A-Za-z0-9._:-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    pub region: Option<String>,
}

/// A member of the cluster, as `GET /v1/admin/nodes` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeItem {
    /// `cluster.node_id`.
    pub node_id: String,
    /// `cluster.region`.
    pub region: String,
    /// The node's own URL (its signaling).
    pub url: String,
    /// Its announced media addresses.
    pub media_addrs: Vec<String>,
    /// `serving`, `draining` or `expired` (its lease ran out: it is gone or cut off).
    pub state: String,
    /// Registration epoch (bumped when it registers again after losing its lease); 0 without a
    /// cluster.
    pub epoch: i64,
    /// Milliseconds until its lease runs out (negative: ran out that long ago); absent without a
    /// cluster.
    pub lease_expires_in_ms: Option<i64>,
    /// Milliseconds since its last heartbeat; absent without a cluster.
    pub heartbeat_age_ms: Option<i64>,
    /// Participants connected to it.
    pub participants: i64,
    /// Rooms live on it.
    pub rooms: i64,
    /// Mean busy ratio of its media workers (0–1).
    pub busy_ratio: f64,
    /// Whether this is the node that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Where the other nodes dial its trunk (`IP:port`); absent when it runs none.
    pub trunk_addr: Option<String>,
    /// The answering node's trunk connection to this member; absent for the answering node
    /// itself, or when either of the two runs no trunk.
    pub trunk: Option<TrunkLink>,
}

/// The answering node's trunk connection to another member.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrunkLink {
    /// Whether the connection is up now (it is dialed again every heartbeat while it is not).
    pub up: bool,
    /// Its round-trip time in milliseconds, when up.
    pub rtt_ms: Option<f64>,
}

/// `GET /v1/admin/nodes` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Whether this node is a cluster member (PostgreSQL); on SQLite the list is this node alone.
    pub cluster: bool,
    /// The members, by node id.
    pub nodes: Vec<NodeItem>,
}

/// One line of the call log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallLogItem {
    /// The link as it is now.
    pub link: LinkView,
    /// `creator` or `participant`.
    pub role: String,
    /// The caller's last join of this link, if any.
    #[serde(serialize_with = "opt_ts")]
    pub last_joined_at: Option<DateTime<Utc>>,
}

/// `GET /v1/me/links` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallLog {
    /// Newest first.
    pub links: Vec<CallLogItem>,
}

/// `GET /v1/me/links` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CallLogQuery {
    /// At most this many lines (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// `GET /v1/me/blocks` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockList {
    /// User ids the caller has blocked, sorted.
    pub blocked: Vec<String>,
}

/// `POST /v1/admin/links/{id}/revoke` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeLink {
    /// Why (kept with the link; at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    pub reason: String,
}

/// `POST /v1/dev/token` body (dev mode only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// The user id to issue a token for: 1 to 64 characters of `[A-Za-z0-9._@+-]`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@+-]{1,64}$")]
    pub user: String,
    /// Display name, at most 64 characters.
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// Issue an operator token.
    #[serde(default)]
    pub admin: bool,
}

/// `POST /v1/dev/token` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevToken {
    /// A user token valid for 12 hours.
    pub token: String,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves HTTP.
    pub status: String,
}

/// `GET /readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Whether this node should receive new joins: the store answers, the node is not draining
    /// and, in a cluster, it holds its lease.
    pub ready: bool,
    /// `ok` or `unavailable`.
    pub store: String,
    /// Whether the node is draining (no new rooms; running calls go on).
    pub draining: bool,
    /// In a cluster: whether this node holds its lease (without it, it places no call). Absent
    /// on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_lease: Option<bool>,
}

/// `POST /v1/admin/drain` and `/v1/admin/undrain` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainStatus {
    /// Whether the node is draining now.
    pub draining: bool,
    /// When the current drain started (absent when serving).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_ts")]
    pub since: Option<DateTime<Utc>>,
    /// Seconds left until the remaining participants are removed (absent when serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_in_seconds: Option<u64>,
    /// Rooms live on this node.
    pub rooms: u64,
    /// Participants connected to this node.
    pub participants: u64,
}

impl LinkView {
    fn new(link: &Link, public_url: &str) -> LinkView {
        LinkView {
            id: link.id.as_str().to_owned(),
            kind: link.kind,
            url: link_url(public_url, link),
            title: link.title.clone(),
            scheduled_at: link.scheduled_at,
            duration: link.duration.map(|d| d.as_secs()),
            require_approval: link.require_approval,
            created_at: link.created_at,
            last_used_at: link.last_used_at,
            expires_at: link.expires_at,
            creator: link.creator.as_str().to_owned(),
            revoked_at: link.revoked.as_ref().map(|r| r.at),
            revoke_reason: link.revoked.as_ref().map(|r| r.reason.clone()),
        }
    }
}

/// `{public_url}/{kind}/{id}`.
pub fn link_url(public_url: &str, link: &Link) -> String {
    format!("{public_url}/{}/{}", link.kind, link.id.as_str())
}

// ---------------------------------------------------------------------------------------------
// Extractors

/// A JSON body: `application/json`, at most 16 KiB, no unknown fields.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body means `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

async fn read_json<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    let json_type = has_content_type(&req, "application/json");
    let bytes = read_body(req, state).await?;
    if bytes.is_empty() && allow_empty {
        return Ok(None);
    }
    if !json_type {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::InvalidBody(inner.to_string())
        } else {
            ApiError::InvalidBody(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    Ok(Some(value))
}

/// Whether the request's `Content-Type` is `mime` (parameters ignored).
pub(crate) fn has_content_type(req: &Request, mime: &str) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(mime)
        })
}

/// The whole body, within `http.body_timeout` and the body limit.
pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let within = req
        .extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
    // A body that never ends would hold the connection and this handler forever.
    let bytes = tokio::time::timeout(within, Bytes::from_request(req, state))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidBody("the request body could not be read".into())
            }
        })?;
    Ok(bytes)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_json(req, state, false).await? {
            Some(v) => Ok(JsonBody(v)),
            None => Err(ApiError::InvalidBody("a JSON body is required".into())),
        }
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(OptionalJsonBody(
            read_json(req, state, true).await?.unwrap_or_default(),
        ))
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            // No bearer token: a web page signed in with the session cookie.
            if let Some(caller) =
                crate::oidc::caller_from_cookie(state, &parts.method, &parts.headers).await?
            {
                return Ok(caller);
            }
            state.metrics.auth_failures.inc();
            return Err(ApiError::Unauthorized);
        };
        state.tokens.verify_user(token).map_err(|e| {
            state.metrics.auth_failures.inc();
            tracing::debug!(error = %e, "token refused");
            ApiError::Unauthorized
        })
    }
}

/// The client's address: the socket peer, or the first `X-Forwarded-For` hop when trusted.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.settings.trust_forwarded_for {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Ok(ClientIp(ip));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(ClientIp(peer))
    }
}

pub(crate) fn parse_link_id(s: &str) -> Result<LinkId, ApiError> {
    LinkId::parse(s).map_err(|_| ApiError::InvalidLinkId)
}

/// The path parameter that holds a link id in every route template that takes one.
const LINK_ID_PARAM: &str = "{id}";

/// Refuses a request whose link id is percent-encoded in the path (`/v1/links/%34bT9…`), with
/// 400 `invalid_link_id`, before any handler, rate limit or store lookup. The `Path` extractor
/// decodes, so without this an encoded form of a real id would preview, join and renew the link:
/// a link has exactly one spelling. Applies to every route template with `{id}` (the API and the
/// web pages `/video/{id}`, `/voice/{id}`); installed by `crate::app::router`.
pub async fn refuse_encoded_link_id(req: Request, next: Next) -> Response {
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        if let Some(i) = route
            .as_str()
            .split('/')
            .position(|seg| seg == LINK_ID_PARAM)
        {
            // `{id}` matches exactly one segment, so the raw path has it at the same index.
            let raw = req.uri().path().split('/').nth(i).unwrap_or_default();
            if raw.contains('%') {
                return ApiError::InvalidLinkId.into_response();
            }
        }
    }
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Create a call link.
#[utoipa::path(post, path = "/v1/links", tag = "links",
    request_body = CreateLink,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new link", body = LinkView),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_link(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateLink>,
) -> Result<(StatusCode, Json<LinkView>), ApiError> {
    s.limits.check_create_user(&caller.user, &s.metrics)?;
    let title = normalize_title(body.title.as_deref())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let duration = body.duration.map(Duration::from_secs);
    check_duration(body.scheduled_at, duration)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let new = NewLink {
        creator: caller.user.clone(),
        kind: body.kind.unwrap_or_default(),
        title,
        scheduled_at: body.scheduled_at,
        duration,
        require_approval: body.require_approval,
    };
    let now = s.now();
    let reminders = reminders_for(&s.settings.reminders, new.scheduled_at, now);
    // A collision of two 131-bit random ids is practically impossible; retry once anyway rather
    // than fail a request on it.
    for _ in 0..3 {
        let link = Link::create(LinkId::random(), new.clone(), now, s.settings.link_ttl);
        match s
            .timed(
                "create_link",
                s.store.create_link_with_reminders(&link, &reminders),
            )
            .await
        {
            Ok(()) => {
                s.metrics.links_created.inc();
                if let Some(w) = &s.webhooks {
                    w.emit_link("link.created", &link, crate::fields! {});
                }
                tracing::info!(link = %link.id, kind = %link.kind, creator = %link.creator, "link created");
                return Ok((
                    StatusCode::CREATED,
                    Json(LinkView::new(&link, &s.settings.public_url)),
                ));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal)
}

/// The reminders of a link scheduled at `start`: one per `links.reminders` offset that is still
/// ahead of `now`.
pub fn reminders_for(
    offsets: &[Duration],
    start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Reminder> {
    let Some(start) = start else {
        return Vec::new();
    };
    offsets
        .iter()
        .filter_map(|&offset| {
            let before = chrono::Duration::from_std(offset).ok()?;
            let fire_at = start.checked_sub_signed(before)?;
            (fire_at > now).then_some(Reminder { offset, fire_at })
        })
        .collect()
}

/// Change a link's title or schedule (its creator only).
#[utoipa::path(patch, path = "/v1/links/{id}", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    request_body = PatchLink,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The link as changed", body = LinkView),
        (status = 400, description = "Malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the link's creator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch_link(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchLink>,
) -> Result<Json<LinkView>, ApiError> {
    let link = s.active_link(&id).await?;
    if link.creator != caller.user {
        return Err(ApiError::NotCreator);
    }
    let title = match &body.title {
        Some(t) => {
            normalize_title(t.as_deref()).map_err(|e| ApiError::InvalidRequest(e.to_string()))?
        }
        None => link.title.clone(),
    };
    let scheduled_at = body.scheduled_at.unwrap_or(link.scheduled_at);
    let duration = match body.duration {
        Some(d) => d.map(Duration::from_secs),
        // No start, no length.
        None if scheduled_at.is_none() => None,
        None => link.duration,
    };
    check_duration(scheduled_at, duration).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let now = s.now();
    let reminders = (scheduled_at != link.scheduled_at)
        .then(|| reminders_for(&s.settings.reminders, scheduled_at, now));
    let update = LinkUpdate {
        title,
        scheduled_at,
        duration,
    };
    let updated = s
        .timed(
            "update_link",
            s.store
                .update_link(&link.id, &update, reminders.as_deref(), now),
        )
        .await?;
    match updated {
        Some(l) => {
            tracing::info!(link = %l.id, rescheduled = reminders.is_some(), "link changed by its creator");
            Ok(Json(LinkView::new(&l, &s.settings.public_url)))
        }
        // Revoked, expired or purged since it was read: say which.
        None => Err(s
            .active_link(&id)
            .await
            .err()
            .unwrap_or(ApiError::LinkRevoked)),
    }
}

/// A scheduled link as an iCalendar event.
#[utoipa::path(get, path = "/v1/links/{id}/calendar.ics", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    responses(
        (status = 200, description = "An RFC 5545 calendar with one event: the call, its URL (without the key) and its reminders as alarms", content_type = "text/calendar", body = String),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link, or it has no scheduled time (not_scheduled)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn link_calendar(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.limits.check_preview_ip(ip, &s.metrics)?;
    let link = s.active_link(&id).await?;
    let Some(ics) = crate::calendar::event(
        &link,
        &s.settings.public_url,
        &s.settings.reminders,
        s.now(),
    ) else {
        return Err(ApiError::NotScheduled);
    };
    let file = format!("attachment; filename=\"call-{}.ics\"", link.id.digest());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&file).map_err(|_| ApiError::Internal)?,
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        ics,
    )
        .into_response())
}

/// Preview a link (no authentication; never renews it).
#[utoipa::path(get, path = "/v1/links/{id}", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    responses(
        (status = 200, description = "The preview", body = PreviewView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn preview_link(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<Json<PreviewView>, ApiError> {
    s.limits.check_preview_ip(ip, &s.metrics)?;
    let link = s.active_link(&id).await?;
    // Connected participants only: a seat taken by a join that never connects is not a person.
    let here = s.seats.live(&link.id);
    // In a cluster: the home's count (this node's own seats when it is the home) and the
    // call's legs', each as last reported.
    let participants = match &s.cluster {
        Some(c) => match c.room(&link.id).await {
            Ok(Some(r)) if r.live && r.row.node_id != c.node_id() => {
                usize::try_from(r.row.participants + r.on_legs).unwrap_or(0)
            }
            Ok(Some(r)) if r.live => here + usize::try_from(r.on_legs).unwrap_or(0),
            _ => here,
        },
        None => here,
    };
    Ok(Json(PreviewView {
        id: link.id.as_str().to_owned(),
        kind: link.kind,
        url: link_url(&s.settings.public_url, &link),
        title: link.title.clone(),
        scheduled_at: link.scheduled_at,
        duration: link.duration.map(|d| d.as_secs()),
        require_approval: link.require_approval,
        expires_at: link.expires_at,
        participants: u32::try_from(participants).unwrap_or(u32::MAX),
    }))
}

/// The link's URL as a QR code.
#[utoipa::path(get, path = "/v1/links/{id}/qr.svg", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    responses(
        (status = 200, description = "SVG image of a QR code of the link URL", content_type = "image/svg+xml", body = String),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn link_qr(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.limits.check_preview_ip(ip, &s.metrics)?;
    let link = s.active_link(&id).await?;
    let svg = qr_svg(&link_url(&s.settings.public_url, &link))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=300"),
            ),
        ],
        svg,
    )
        .into_response())
}

/// Renders `text` as an SVG QR code.
pub fn qr_svg(text: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| ApiError::Internal)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// Join a call link: the decision, the renewal and the call-log entry; answers a signaling grant.
#[utoipa::path(post, path = "/v1/links/{id}/join", tag = "links",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    request_body(content = Option<JoinBody>, description = "Optional: the caller's region"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Admitted", body = JoinAnswer),
        (status = 400, description = "Malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You can't join this call", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call is full (room_full), or you hold the most seats one user may hold in it (seat_limit)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable, this node draining, or no cluster node available (retry; Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn join_link(
    State(s): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<JoinBody>,
) -> Result<Json<JoinAnswer>, ApiError> {
    let started = Instant::now();
    let result = join_inner(&s, ip, &caller, &id, body.region.as_deref())
        .await
        .map(|(answer, _)| answer);
    count_join(&s, started, &result);
    result.map(Json)
}

/// Counts and times a join (`callrelay_joins_total{result}`, `callrelay_join_duration_seconds`).
pub(crate) fn count_join<T>(s: &AppState, started: Instant, result: &Result<T, ApiError>) {
    s.metrics
        .join_duration
        .observe(started.elapsed().as_secs_f64());
    let label = match result {
        Ok(_) => "admitted",
        Err(ApiError::LinkNotFound) => Refusal::NotFound.as_str(),
        Err(ApiError::LinkExpired) => Refusal::Expired.as_str(),
        Err(ApiError::LinkRevoked) => Refusal::Revoked.as_str(),
        Err(ApiError::JoinRefused) => Refusal::Blocked.as_str(),
        Err(ApiError::RoomFull) => Refusal::RoomFull.as_str(),
        Err(ApiError::SeatLimit) => "seat_limit",
        Err(ApiError::NodeDraining) => "node_draining",
        Err(ApiError::NoNodeAvailable) => "no_node_available",
        Err(_) => "error",
    };
    s.metrics.joins.with_label_values(&[label]).inc();
}

/// The join decision; with the call's home node's HTTP URL when that is another node (the
/// grant is for it).
pub(crate) async fn join_inner(
    s: &AppState,
    ip: IpAddr,
    caller: &Caller,
    id: &str,
    region: Option<&str>,
) -> Result<(JoinAnswer, Option<String>), ApiError> {
    if let Some(r) = region {
        let ok = !r.is_empty()
            && r.len() <= 64
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            return Err(ApiError::InvalidRequest(
                "region must be 1 to 64 characters of [A-Za-z0-9._:-]".into(),
            ));
        }
    }
    s.limits.check_join_ip(ip, &s.metrics)?;
    s.limits.check_join_user(&caller.user, &s.metrics)?;
    let id = parse_link_id(id)?;
    let link = s.timed("get_link", s.store.get_link(&id)).await?;
    let blocked = match &link {
        Some(l) if l.creator != caller.user => {
            s.timed("is_blocked", s.store.is_blocked(&l.creator, &caller.user))
                .await?
        }
        _ => false,
    };
    let now = s.now();
    let mono = Instant::now();
    let held = s.seats.held(&id, mono);
    let max = s.settings.max_participants;
    decide_join(&JoinRequest {
        link: link.as_ref(),
        joiner: &caller.user,
        blocked_by_creator: blocked,
        participants: held,
        max_participants: max,
        now,
    })
    .map_err(ApiError::from_refusal)?;
    // In a cluster the call has one home, which may be another node (placed here if new).
    let home = match &s.cluster {
        Some(c) => Some(c.place(&id, region).await?),
        None => None,
    };
    // A join from another region than the home's (its hint, else the region of the node it
    // came through) is served by a node of its region, a leg of the call, when the nodes run
    // trunks (calls across nodes). The grant is for that node.
    let mut on_leg = false;
    let home = match (&s.cluster, home) {
        (Some(c), Some(h)) if s.trunk.is_some() => {
            let r = region.unwrap_or(c.region());
            match c.leg_for(&id, r, &h).await? {
                Some(leg) => {
                    on_leg = true;
                    Some(leg)
                }
                None => Some(h),
            }
        }
        (_, h) => h,
    };
    let remote = match (&s.cluster, &home) {
        (Some(c), Some(h)) if h.node_id != c.node_id() => Some(h),
        _ => None,
    };
    let participant_id = new_participant_id();
    if let Some(h) = remote {
        // The home's count is as of its last report; the home enforces the cap at signaling.
        if usize::try_from(h.participants).unwrap_or(usize::MAX) >= max {
            return Err(ApiError::RoomFull);
        }
    } else {
        // On a leg of a call homed elsewhere, the call's count (home and legs, as last
        // reported) holds the cap too, not only this node's seats.
        if on_leg
            && home
                .as_ref()
                .is_some_and(|h| usize::try_from(h.participants).unwrap_or(usize::MAX) >= max)
        {
            return Err(ApiError::RoomFull);
        }
        // A draining node starts no new room; joins into a room already here are still admitted.
        let new_room = match &home {
            Some(h) => h.outcome != callrelay_cluster::PlaceOutcome::Existing,
            None => held == 0,
        };
        if new_room && s.drain.is_draining() {
            return Err(ApiError::NodeDraining);
        }
        // On the home of a call across nodes, the seats its legs hold (as last reported) are
        // the call's too: the cap is the call's, not this node's.
        let on_legs = match &home {
            Some(h) if !on_leg => usize::try_from(h.on_legs).unwrap_or(usize::MAX),
            _ => 0,
        };
        let limits = crate::seats::SeatLimits {
            max: max.saturating_sub(on_legs),
            per_user: s.settings.max_seats_per_user,
        };
        s.seats
            .try_take(
                &id,
                &participant_id,
                &caller.user,
                limits,
                mono,
                s.settings.seat_hold,
            )
            .map_err(|e| match e {
                crate::seats::NoSeat::RoomFull => ApiError::RoomFull,
                crate::seats::NoSeat::UserLimit => ApiError::SeatLimit,
            })?;
    }
    let outcome = s
        .timed(
            "record_join",
            s.store
                .record_join(&id, &caller.user, now, s.settings.link_ttl),
        )
        .await;
    let link = match outcome {
        Ok(JoinOutcome::Renewed(link)) => link,
        other => {
            if remote.is_none() {
                s.seats.release(&id, &participant_id);
            }
            return Err(match other {
                Ok(JoinOutcome::NotFound) => ApiError::LinkNotFound,
                Ok(JoinOutcome::Revoked) => ApiError::LinkRevoked,
                Ok(JoinOutcome::Expired) => ApiError::LinkExpired,
                Ok(JoinOutcome::Renewed(_)) => unreachable!("matched above"),
                Err(e) => e.into(),
            });
        }
    };
    if let Some(w) = &s.webhooks {
        w.emit_link(
            "link.used",
            &link,
            crate::fields! { "user" => caller.user.as_str() },
        );
    }
    // Grants use wall time: they are checked with the JWT library's clock.
    let iat = Utc::now().timestamp();
    let exp = iat + i64::try_from(s.settings.grant_ttl.as_secs()).unwrap_or(60);
    let ice_servers = s.settings.ice.for_join(&participant_id, exp);
    let grant = s.tokens.issue_grant(&GrantClaims {
        sub: caller.user.as_str().to_owned(),
        aud: GRANT_AUDIENCE.into(),
        iat,
        exp,
        link: id.as_str().to_owned(),
        pid: participant_id.clone(),
        kind: link.kind,
        name: caller.name.clone(),
        node: home.as_ref().map(|h| h.node_id.clone()),
    });
    let node_url = match &home {
        Some(h) => h.http_url.as_str(),
        None => s.settings.public_url.as_str(),
    };
    tracing::info!(link = %id, user = %caller.user, participant = %participant_id, home = home.as_ref().map(|h| h.node_id.as_str()), "join admitted");
    let elsewhere = remote.map(|h| h.http_url.clone());
    let answer = JoinAnswer {
        participant_id,
        grant,
        signal_url: signal_url(node_url),
        ice_servers,
        moderator: link.creator == caller.user,
        lobby: link.require_approval
            && link.creator != caller.user
            && !s.lobby.was_admitted(&id, &caller.user, Instant::now()),
        link: LinkView::new(&link, &s.settings.public_url),
    };
    Ok((answer, elsewhere))
}

fn new_participant_id() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!(
        "p-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The signaling WebSocket URL for a public URL (`http` → `ws`, `https` → `wss`).
pub fn signal_url(public_url: &str) -> String {
    let ws = if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_owned()
    };
    format!("{ws}/v1/signal")
}

/// The caller's call log: links they created or joined, newest first.
#[utoipa::path(get, path = "/v1/me/links", tag = "me",
    params(CallLogQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The call log", body = CallLog),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn my_links(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<CallLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CallLog>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let entries = s
        .timed("call_log", s.store.call_log(&caller.user, limit))
        .await?;
    let links = entries
        .iter()
        .map(|e: &CallLogEntry| CallLogItem {
            link: LinkView::new(&e.link, &s.settings.public_url),
            role: e.role.as_str().to_owned(),
            last_joined_at: e.last_joined_at,
        })
        .collect();
    Ok(Json(CallLog { links }))
}

/// The users the caller has blocked.
#[utoipa::path(get, path = "/v1/me/blocks", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Blocked user ids", body = BlockList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn my_blocks(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<BlockList>, ApiError> {
    let blocked = s
        .timed("blocked_by", s.store.blocked_by(&caller.user))
        .await?;
    Ok(Json(BlockList {
        blocked: blocked.iter().map(|u| u.as_str().to_owned()).collect(),
    }))
}

/// Block a user from every link the caller created (and from their calls in progress).
#[utoipa::path(put, path = "/v1/me/blocks/{user_id}", tag = "me",
    params(("user_id" = String, Path, description = "The user to block", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@+-]{1,64}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Blocked (idempotent)"),
        (status = 400, description = "Invalid user id, or yourself", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn block_user(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    let blocked = UserId::parse(&user).map_err(|_| ApiError::InvalidUserId)?;
    check_block(&caller.user, &blocked).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let now = s.now();
    s.timed("block", s.store.block(&caller.user, &blocked, now))
        .await?;
    tracing::info!(blocker = %caller.user, blocked = %blocked, "user blocked");
    crate::enforce::blocked(&s, caller.user, blocked, now).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Unblock a user.
#[utoipa::path(delete, path = "/v1/me/blocks/{user_id}", tag = "me",
    params(("user_id" = String, Path, description = "The user to unblock", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@+-]{1,64}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Not blocked any more (idempotent)"),
        (status = 400, description = "Invalid user id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn unblock_user(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    let blocked = UserId::parse(&user).map_err(|_| ApiError::InvalidUserId)?;
    s.timed("unblock", s.store.unblock(&caller.user, &blocked))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke a link (operators only): permanently invalid; everyone in its call is removed.
#[utoipa::path(post, path = "/v1/admin/links/{id}/revoke", tag = "admin",
    params(("id" = String, Path, description = "The 22-character link id (never percent-encoded)", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$")),
    request_body(content = Option<RevokeLink>, description = "Optional reason"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The revoked link (idempotent)", body = LinkView),
        (status = 400, description = "Malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_link(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RevokeLink>,
) -> Result<Json<LinkView>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let id = parse_link_id(&id)?;
    let reason =
        normalize_reason(&body.reason).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let now = s.now();
    let link = s
        .timed("revoke_link", s.store.revoke_link(&id, &reason, now))
        .await?
        .ok_or(ApiError::LinkNotFound)?;
    if link.revoked.as_ref().is_some_and(|r| r.at == now) {
        s.metrics.links_revoked.inc();
        if let Some(w) = &s.webhooks {
            w.emit_link(
                "link.revoked",
                &link,
                crate::fields! { "reason" => reason.as_str() },
            );
        }
    }
    tracing::warn!(link = %id, operator = %caller.user, "link revoked");
    crate::enforce::revoked(&s, id, now).await;
    Ok(Json(LinkView::new(&link, &s.settings.public_url)))
}

/// Issue a user token (dev mode only; 404 otherwise).
#[utoipa::path(post, path = "/v1/dev/token", tag = "dev",
    request_body = DevTokenRequest,
    responses(
        (status = 200, description = "A token valid 12 hours", body = DevToken),
        (status = 400, description = "Invalid user id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in dev mode", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within http.body_timeout", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn dev_token(
    State(s): State<Arc<AppState>>,
    JsonBody(body): JsonBody<DevTokenRequest>,
) -> Result<Json<DevToken>, ApiError> {
    let user = UserId::parse(&body.user).map_err(|_| ApiError::InvalidUserId)?;
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 64 || n.chars().any(char::is_control)) {
        return Err(ApiError::InvalidRequest(
            "name must be at most 64 characters".into(),
        ));
    }
    let token = s.tokens.issue_user(
        &user,
        name,
        body.admin,
        Utc::now(),
        Duration::from_secs(12 * 3600),
    );
    Ok(Json(DevToken { token }))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    ))]
pub async fn readyz(State(s): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let store_ok = tokio::time::timeout(Duration::from_secs(2), s.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    s.metrics.store_up.set(i64::from(store_ok));
    let draining = s.drain.is_draining();
    let lease = s.cluster.as_ref().map(|c| c.holds_lease());
    let ready = store_ok && !draining && lease != Some(false);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            store: if store_ok { "ok" } else { "unavailable" }.into(),
            draining,
            cluster_lease: lease,
        }),
    )
}

fn drain_status(s: &AppState) -> DrainStatus {
    let state = s.drain.state();
    DrainStatus {
        draining: state.draining(),
        since: state.since.map(|(_, wall)| wall),
        deadline_in_seconds: state.since.map(|(at, _)| {
            (at + s.settings.drain_deadline)
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
        }),
        rooms: s.media.rooms() as u64,
        participants: s.media.participants() as u64,
    }
}

/// Put this node in draining (operators only): `/readyz` answers 503, no new room starts here,
/// running calls go on; the process exits when the last room empties or at `drain.deadline`.
#[utoipa::path(post, path = "/v1/admin/drain", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Draining (idempotent)", body = DrainStatus),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn drain(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<DrainStatus>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    if s.start_drain() {
        tracing::warn!(operator = %caller.user, "drain requested over HTTP");
    }
    Ok(Json(drain_status(&s)))
}

/// Return a draining node to serving (operators only): a stuck drain must be recoverable.
#[utoipa::path(post, path = "/v1/admin/undrain", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Serving (idempotent)", body = DrainStatus),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn undrain(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<DrainStatus>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    if s.stop_drain() {
        tracing::warn!(operator = %caller.user, "undrain requested over HTTP");
    }
    Ok(Json(drain_status(&s)))
}

/// The cluster's members (operators only): leases, load, draining state.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The members", body = NodeList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_nodes(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<NodeList>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden);
    }
    let Some(c) = &s.cluster else {
        return Ok(Json(NodeList {
            cluster: false,
            nodes: vec![NodeItem {
                node_id: s.settings.cluster.node_id.clone(),
                region: s.settings.cluster.region.clone(),
                url: s.settings.public_url.clone(),
                media_addrs: s.media.addrs().iter().map(|a| a.to_string()).collect(),
                state: if s.drain.is_draining() {
                    "draining"
                } else {
                    "serving"
                }
                .into(),
                epoch: 0,
                lease_expires_in_ms: None,
                heartbeat_age_ms: None,
                participants: i64::try_from(s.media.participants()).unwrap_or(i64::MAX),
                rooms: i64::try_from(s.media.rooms()).unwrap_or(i64::MAX),
                busy_ratio: s.media_busy_ratio(),
                is_self: true,
                trunk_addr: None,
                trunk: None,
            }],
        }));
    };
    let (now, nodes) = tokio::time::timeout(Duration::from_secs(3), c.nodes())
        .await
        .map_err(|_| ApiError::StoreUnavailable)??;
    Ok(Json(NodeList {
        cluster: true,
        nodes: nodes
            .into_iter()
            .map(|n| NodeItem {
                trunk: match &s.trunk {
                    Some(t) if !n.trunk_addr.is_empty() && n.node_id != c.node_id() => {
                        let peer = t.peer(&n.node_id);
                        Some(TrunkLink {
                            up: peer.is_some(),
                            rtt_ms: peer.map(|p| p.rtt().as_secs_f64() * 1000.0),
                        })
                    }
                    _ => None,
                },
                trunk_addr: Some(n.trunk_addr.clone()).filter(|a| !a.is_empty()),
                state: crate::cluster::state_name(&n, now).into(),
                lease_expires_in_ms: Some(n.lease_until - now),
                heartbeat_age_ms: Some(now - n.heartbeat_at),
                is_self: n.node_id == c.node_id(),
                node_id: n.node_id,
                region: n.region,
                url: n.http_url,
                media_addrs: n.media_addrs,
                epoch: n.epoch,
                participants: n.participants,
                rooms: n.rooms,
                busy_ratio: n.busy_ratio,
            })
            .collect(),
    }))
}

/// Prometheus metrics in the text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

/// 404 `not_found` for any unknown path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// 405 `method_not_allowed`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts every request by route template and status, and times it. Logs the route template,
/// never the path (a path may hold a link id).
pub async fn observe(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status();
    s.metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    s.metrics
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, route, status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "request");
    resp
}

/// The API's routes (the composition root, `crate::app::router`, adds the web pages, the
/// fallbacks and the layers).
pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let r = Router::new()
        .route("/v1/links", post(create_link))
        .route("/v1/links/{id}", get(preview_link).patch(patch_link))
        .route("/v1/links/{id}/calendar.ics", get(link_calendar))
        .route("/v1/links/{id}/qr.svg", get(link_qr))
        .route("/v1/links/{id}/join", post(join_link))
        .route("/v1/me/links", get(my_links))
        .route("/v1/me/blocks", get(my_blocks))
        .route(
            "/v1/me/blocks/{user_id}",
            put(block_user).delete(unblock_user),
        )
        .route("/v1/admin/links/{id}/revoke", post(revoke_link))
        .route("/v1/admin/drain", post(drain))
        .route("/v1/admin/undrain", post(undrain))
        .route("/v1/admin/nodes", get(admin_nodes))
        .route("/v1/admin/rooms", get(crate::rooms::list_rooms))
        .route(
            "/v1/admin/rooms/{room}/participants",
            get(crate::rooms::list_participants),
        )
        .route(
            "/v1/admin/rooms/{room}/participants/{participant_id}",
            axum::routing::delete(crate::rooms::remove_participant),
        )
        .route(
            "/v1/links/{id}/participants/{participant_id}/{action}",
            post(crate::moderation::moderate),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.settings.dev {
        r.route("/v1/dev/token", post(dev_token))
    } else {
        r
    }
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "callrelay", description = "Call links: create, preview, join, block, revoke. Errors are RFC 9457 application/problem+json with a stable `code`.", license(name = "Apache-2.0")),
    paths(create_link, preview_link, patch_link, link_calendar, link_qr, join_link, crate::whip::publish, crate::whip::end, crate::whip::view, crate::whip::end_view, my_links, my_blocks, block_user, unblock_user, revoke_link, drain, undrain, admin_nodes, crate::rooms::list_rooms, crate::rooms::list_participants, crate::rooms::remove_participant, crate::moderation::moderate, crate::oidc::session_info, crate::oidc::logout, dev_token, healthz, readyz, metrics),
    components(schemas(CreateLink, PatchLink, LinkView, PreviewView, JoinAnswer, JoinBody, NodeItem, NodeList, TrunkLink, crate::rooms::RoomItem, crate::rooms::RoomList, crate::rooms::ParticipantItem, crate::rooms::ParticipantList, crate::rooms::RemoveParticipant, crate::rooms::Removed, crate::moderation::Moderated, crate::oidc::SessionInfo, IceServer, CallLog, CallLogItem, BlockList, RevokeLink, DevTokenRequest, DevToken, Health, Readiness, DrainStatus, Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document as pretty JSON (what `proto/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}
