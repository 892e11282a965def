//! HTTP errors as RFC 9457 `application/problem+json`, mapped to status codes in exactly one
//! place ([`ApiError::status`] and [`ApiError::code`]).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use callrelay_links::Refusal;
use callrelay_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:callrelay:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A stable, machine-readable code such as `link_expired`.
    pub code: String,
    /// What went wrong for this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_link_id`
    #[error("the link id is not 22 characters of [0-9A-Za-z]")]
    InvalidLinkId,
    /// 400 `invalid_user_id`
    #[error("the user id must be 1 to 64 characters of [A-Za-z0-9._@+-]")]
    InvalidUserId,
    /// 400 `invalid_request`: a field breaks a rule.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid_body`: the body is not the expected JSON (syntax, unknown field, type).
    #[error("{0}")]
    InvalidBody(String),
    /// 401 `unauthorized`
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403 `forbidden`: the caller is not an operator.
    #[error("this needs an operator token")]
    Forbidden,
    /// 403 `not_creator`: only the link's creator moderates its call.
    #[error("only the link's creator can do this")]
    NotCreator,
    /// 404 `not_scheduled`: the link has no scheduled time (so no calendar entry).
    #[error("this link has no scheduled time: its creator can set one (PATCH /v1/links/{{id}})")]
    NotScheduled,
    /// 403 `csrf_failed`: a state change authenticated by the sign-in cookie without the
    /// session's `X-CSRF-Token`.
    #[error("this request needs the X-CSRF-Token header of your session (GET /auth/session)")]
    CsrfFailed,
    /// 404 `sign_in_disabled`: this relay has no OpenID provider configured (`[oidc]`).
    #[error("web sign-in is not configured on this relay")]
    SignInDisabled,
    /// 403 `join_refused`: the creator blocked the caller; they learn only that they cannot join.
    #[error("you can't join this call")]
    JoinRefused,
    /// 404 `link_not_found`
    #[error("no such link")]
    LinkNotFound,
    /// 400 `invalid_room`: not a link id nor the 8-hex room digest `GET /v1/admin/rooms` shows.
    #[error("a room is named by its link id (22 characters) or its 8-hex digest")]
    InvalidRoom,
    /// 400 `invalid_participant_id`
    #[error("a participant id is p- and 16 hex digits")]
    InvalidParticipantId,
    /// 404 `room_not_found`: no live call of that link (or digest) on any reachable node.
    #[error("no live call of that link")]
    RoomNotFound,
    /// 404 `participant_not_found`: not in that call (any more).
    #[error("no such participant in that call")]
    ParticipantNotFound,
    /// 409 `ambiguous_room`: two live calls share that digest; name the room by its link id.
    #[error("two live calls share that digest: name the room by its link id")]
    AmbiguousRoom,
    /// 404 `not_found`: no such route.
    #[error("no such resource")]
    NotFound,
    /// 405 `method_not_allowed`
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// 408 `request_timeout`: the body did not arrive within `http.body_timeout`; the
    /// connection is closed.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 409 `room_full`
    #[error("the call is full")]
    RoomFull,
    /// 410 `link_expired`
    #[error("this link has expired")]
    LinkExpired,
    /// 410 `link_revoked`
    #[error("this link was revoked")]
    LinkRevoked,
    /// 413 `payload_too_large`
    #[error("the request body is larger than 16 KiB")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("too many requests; retry later")]
    RateLimited(Duration),
    /// 503 `store_unavailable`
    #[error("the link store is unavailable; retry later")]
    StoreUnavailable,
    /// 503 `node_draining`: this node takes no new rooms; another node will (retry).
    #[error("this node is draining and starts no new calls; retry")]
    NodeDraining,
    /// 409 `seat_limit`: the user already holds `rooms.max_seats_per_user` seats in this call.
    #[error("you already hold the most seats one user may hold in this call")]
    SeatLimit,
    /// 503 `no_node_available`: no cluster node holds a lease and serves (retry).
    #[error("no relay node can take this call now; retry")]
    NoNodeAvailable,
    /// 415 `unsupported_media_type`, for a body that must be an SDP offer (WHIP).
    #[error("the request body must be application/sdp")]
    NotSdp,
    /// 403 `approval_required`: the link requires the creator's approval, which only an app in
    /// the call can wait for (WHIP cannot).
    #[error("this link lets people in only with its creator's approval: join from the app")]
    ApprovalRequired,
    /// 400 `sdp_rejected`: the relay cannot negotiate this offer (with why).
    #[error("{0}")]
    SdpRejected(String),
    /// 404 `session_not_found`: no such WHIP session on this node (ended, or never was).
    #[error("no such session on this relay node")]
    SessionNotFound,
    /// 500 `internal`
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidLinkId
            | ApiError::InvalidUserId
            | ApiError::InvalidRequest(_)
            | ApiError::InvalidBody(_)
            | ApiError::InvalidRoom
            | ApiError::InvalidParticipantId
            | ApiError::SdpRejected(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden
            | ApiError::JoinRefused
            | ApiError::NotCreator
            | ApiError::CsrfFailed
            | ApiError::ApprovalRequired => StatusCode::FORBIDDEN,
            ApiError::SignInDisabled
            | ApiError::NotScheduled
            | ApiError::LinkNotFound
            | ApiError::NotFound
            | ApiError::RoomNotFound
            | ApiError::ParticipantNotFound
            | ApiError::SessionNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RoomFull | ApiError::SeatLimit | ApiError::AmbiguousRoom => {
                StatusCode::CONFLICT
            }
            ApiError::LinkExpired | ApiError::LinkRevoked => StatusCode::GONE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::NotSdp => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreUnavailable | ApiError::NodeDraining | ApiError::NoNodeAvailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidLinkId => "invalid_link_id",
            ApiError::InvalidUserId => "invalid_user_id",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::JoinRefused => "join_refused",
            ApiError::NotCreator => "not_creator",
            ApiError::CsrfFailed => "csrf_failed",
            ApiError::SignInDisabled => "sign_in_disabled",
            ApiError::NotScheduled => "not_scheduled",
            ApiError::LinkNotFound => "link_not_found",
            ApiError::NotFound => "not_found",
            ApiError::InvalidRoom => "invalid_room",
            ApiError::InvalidParticipantId => "invalid_participant_id",
            ApiError::RoomNotFound => "room_not_found",
            ApiError::ParticipantNotFound => "participant_not_found",
            ApiError::AmbiguousRoom => "ambiguous_room",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::RoomFull => "room_full",
            ApiError::LinkExpired => "link_expired",
            ApiError::LinkRevoked => "link_revoked",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType | ApiError::NotSdp => "unsupported_media_type",
            ApiError::ApprovalRequired => "approval_required",
            ApiError::SdpRejected(_) => "sdp_rejected",
            ApiError::SessionNotFound => "session_not_found",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::NodeDraining => "node_draining",
            ApiError::NoNodeAvailable => "no_node_available",
            ApiError::SeatLimit => "seat_limit",
            ApiError::Internal => "internal",
        }
    }

    /// The error for a refused join.
    pub fn from_refusal(r: Refusal) -> ApiError {
        match r {
            Refusal::NotFound => ApiError::LinkNotFound,
            Refusal::Expired => ApiError::LinkExpired,
            Refusal::Revoked => ApiError::LinkRevoked,
            Refusal::Blocked => ApiError::JoinRefused,
            Refusal::RoomFull => ApiError::RoomFull,
        }
    }
}

impl From<callrelay_cluster::ClusterError> for ApiError {
    fn from(e: callrelay_cluster::ClusterError) -> Self {
        match e {
            callrelay_cluster::ClusterError::NoNode => ApiError::NoNodeAvailable,
            callrelay_cluster::ClusterError::Unavailable(_) => ApiError::StoreUnavailable,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable,
            other => {
                tracing::error!(error = %other, "store operation failed");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: format!("urn:callrelay:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code: self.code().to_owned(),
            detail: Some(self.to_string()),
        };
        let body = serde_json::to_vec(&problem).expect("a Problem always serialises");
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::NodeDraining | ApiError::NoNodeAvailable | ApiError::StoreUnavailable =
            self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        if let ApiError::RequestTimeout = self {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited(wait) = self {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}
