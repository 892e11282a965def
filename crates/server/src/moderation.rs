//! Moderation by a link's creator, in the link's call: remove someone (they may join again),
//! block them (removed now, refused on every later join of the creator's links, through the
//! creator's block list), or mute their microphone (they are told, and may unmute).
//!
//! The creator names the person by participant id, as the call shows it, never by user id. The
//! server checks that the caller created the link. In a cluster the node that takes the request
//! acts if the call runs there, else asks the other live members (with the caller's token) to.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use callrelay_links::check_block;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::media;
use crate::problem::ApiError;
use crate::rooms::{ask, auth_header, peers, Scope};
use crate::state::AppState;

/// What the creator did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Remove,
    Block,
    Mute,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "remove" => Some(Action::Remove),
            "block" => Some(Action::Block),
            "mute" => Some(Action::Mute),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Remove => "remove",
            Action::Block => "block",
            Action::Mute => "mute",
        }
    }
}

/// `POST /v1/links/{id}/participants/{pid}/{action}` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Moderated {
    /// Who.
    pub participant_id: String,
    /// `remove`, `block` or `mute`.
    pub action: String,
}

/// Remove, block or mute a participant of the link's call (the link's creator only).
#[utoipa::path(post, path = "/v1/links/{id}/participants/{participant_id}/{action}", tag = "links",
    params(
        ("id" = String, Path, description = "The 22-character link id", min_length = 22, max_length = 22, pattern = "^[0-9A-Za-z]{22}$"),
        ("participant_id" = String, Path, description = "p- and 16 hex digits, as the call shows it"),
        ("action" = String, Path, description = "`remove` (they are told `removed{kicked}` and may join again), `block` (removed with `blocked` and refused on every later join of your links: added to your block list), `mute` (their microphone: they get `mute_requested` and may unmute)", pattern = "^(remove|block|mute)$"),
        Scope,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = Moderated),
        (status = 400, description = "Malformed id, participant id or action; or blocking yourself", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "You did not create this link (not_creator)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link, or nobody with that id in its call (participant_not_found)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn moderate(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, participant, action)): Path<(String, String, String)>,
    Query(scope): Query<Scope>,
) -> Result<Json<Moderated>, ApiError> {
    let link_id = crate::api::parse_link_id(&id)?;
    let pid = media::parse_participant_id(&participant).ok_or(ApiError::InvalidParticipantId)?;
    let action = Action::parse(&action)
        .ok_or_else(|| ApiError::InvalidRequest("the action is remove, block or mute".into()))?;
    let node_only = scope.node_only()?;
    let link = s
        .timed("get_link", s.store.get_link(&link_id))
        .await?
        .ok_or(ApiError::LinkNotFound)?;
    if link.creator != caller.user {
        return Err(ApiError::NotCreator);
    }
    let room = media::room_key(&link_id);
    let done = match action {
        Action::Remove => s.media.kick(room, pid).await,
        Action::Mute => s.media.request_mute(room, pid).await,
        Action::Block => {
            let user = s
                .media
                .inspect(Some(room))
                .await
                .into_iter()
                .flat_map(|r| r.participants)
                .find(|p| p.participant == pid)
                .map(|p| p.user);
            match user {
                Some(user) => {
                    check_block(&caller.user, &user)
                        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
                    let now = s.now();
                    s.timed("block", s.store.block(&caller.user, &user, now))
                        .await?;
                    crate::enforce::blocked(&s, caller.user.clone(), user, now).await;
                    true
                }
                None => false,
            }
        }
    };
    let answer = Moderated {
        participant_id: pid.to_string(),
        action: action.as_str().into(),
    };
    if done {
        tracing::info!(link = %link_id, participant = %pid, action = action.as_str(), "the link's creator moderated its call");
        return Ok(Json(answer));
    }
    if node_only {
        return Err(ApiError::ParticipantNotFound);
    }
    let auth = auth_header(&headers);
    for (node, url) in peers(&s).await? {
        let url = format!(
            "{}/v1/links/{}/participants/{pid}/{}?scope=node",
            url.trim_end_matches('/'),
            link_id.as_str(),
            action.as_str()
        );
        if let Ok(Some(done)) =
            ask::<Moderated>(&node, reqwest::Method::POST, url, auth.as_deref(), None).await
        {
            return Ok(Json(done));
        }
    }
    Err(ApiError::ParticipantNotFound)
}
