//! The web page: plain HTML, CSS and JavaScript modules embedded in the binary (no build step).
//!
//! - `/` creates a link, `/calls` is the call log, `/video/{id}` and `/voice/{id}` preview a link
//!   and join its call. All four answer the same shell page; its script reads the path. A malformed
//!   id answers a plain `400` page (the preview API answers 404/410 for well-formed unknown ids).
//! - `/assets/{file}` serves the scripts, the stylesheet and the vendored QR encoder.
//! - `GET /v1/dev/config` tells the page whether the relay runs in dev mode (then the page asks
//!   `/v1/dev/token` for a token under the name the user types) and how long links live
//!   (`links.ttl`, for the expired-link page).
//!
//! The end-to-end key of a link lives only in the URL fragment (`#k=…`), which browsers never send:
//! nothing here sees it. Requests are logged by route template only (see `api::observe`), so the
//! link id in a page path is not logged either.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use callrelay_links::LinkId;
use serde::Serialize;

use crate::state::AppState;

const SHELL: &str = include_str!("../web/index.html");
const BAD_ID: &str = include_str!("../web/bad-link.html");

/// The embedded files under `/assets/`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.mjs"),
    ),
    (
        "call.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/call.mjs"),
    ),
    (
        "e2ee.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/e2ee.mjs"),
    ),
    (
        "e2ee-worker.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/e2ee-worker.mjs"),
    ),
    (
        "qr.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/qr.mjs"),
    ),
    (
        "vendor/qrcode.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/qrcode.mjs"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// What the page may do: scripts, styles and connections to this origin only (plus its WebSocket),
/// media from the camera, workers from this origin.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; worker-src 'self'; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("camera=(self), microphone=(self), display-capture=()"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn shell() -> Response {
    html(StatusCode::OK, SHELL)
}

async fn link_page(Path(id): Path<String>) -> Response {
    if LinkId::parse(&id).is_ok() {
        html(StatusCode::OK, SHELL)
    } else {
        html(StatusCode::BAD_REQUEST, BAD_ID)
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    asset_response(&name)
}

async fn vendor_asset(Path(name): Path<String>) -> Response {
    asset_response(&format!("vendor/{name}"))
}

fn asset_response(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => crate::problem::ApiError::NotFound.into_response(),
    }
}

/// `GET /v1/dev/config` answer.
#[derive(Debug, Serialize)]
pub struct DevConfig {
    /// Whether the relay runs with `--dev` (then `POST /v1/dev/token` issues tokens).
    pub dev: bool,
    /// `links.ttl` in seconds: how long a link lives after its last use (the expired-link
    /// page says it).
    pub link_ttl_seconds: u64,
    /// Whether web sign-in is configured (`[oidc]`): the page then offers "Sign in"
    /// (`/auth/login`) and uses the session cookie.
    pub sign_in: bool,
}

async fn dev_config(State(s): State<Arc<AppState>>) -> Json<DevConfig> {
    Json(DevConfig {
        dev: s.settings.dev,
        link_ttl_seconds: s.settings.link_ttl.as_secs(),
        sign_in: s.oidc.is_some(),
    })
}

/// The page routes, merged into [`crate::app::router`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(shell))
        .route("/calls", get(shell))
        .route("/video/{id}", get(link_page))
        .route("/voice/{id}", get(link_page))
        .route("/assets/{name}", get(asset))
        .route("/assets/vendor/{name}", get(vendor_asset))
        .route("/v1/dev/config", get(dev_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_and_unknown_ones_are_not() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
            assert_eq!(asset_response(name).status(), StatusCode::OK);
        }
        assert_eq!(
            asset_response("../Cargo.toml").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_shell_loads_only_embedded_assets() {
        for src in SHELL.split("/assets/").skip(1) {
            let name = src.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "the shell loads /assets/{name}, which is not embedded"
            );
        }
    }

    #[test]
    fn the_vendored_qr_encoder_keeps_its_license_header() {
        let (_, _, body) = ASSETS
            .iter()
            .find(|(n, _, _)| *n == "vendor/qrcode.mjs")
            .expect("vendored");
        assert!(body.contains("Copyright (c) 2009 Kazuhiko Arase"));
        assert!(body.contains("Licensed under the MIT license"));
    }
}
