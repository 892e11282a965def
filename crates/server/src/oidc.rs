//! Web sign-in through an OpenID Connect provider: the authorization code flow with PKCE, then a
//! server-side session behind an HttpOnly cookie.
//!
//! - `GET /auth/login?return_to=/calls` stores a [`LoginAttempt`] (state, PKCE verifier, nonce)
//!   in the store, so any node of a cluster can take the callback, and sends the browser to the
//!   provider.
//! - `GET /auth/callback` takes the attempt by its `state` (once), exchanges the code with the
//!   verifier, checks the ID token (signature against the provider's keys, issuer, audience,
//!   expiry, nonce: `openidconnect` does all of it), and creates a [`Session`]. The user id is
//!   `{sub}@{oidc.user_domain}`, the name comes from the claims.
//! - The cookie holds 32 random bytes; the store keeps only their SHA-256, so a copy of the
//!   database signs no one in, and a cookie that was altered matches no session.
//! - `GET /auth/session` tells the page who is signed in and hands it the session's CSRF token.
//!   Every state change authenticated by the cookie must send it back in `X-CSRF-Token`
//!   ([`caller_from_cookie`]); bearer tokens, which a browser never attaches by itself, need none.
//! - `POST /auth/logout` deletes the session and clears the cookie.
//!
//! Nothing secret is logged: not the code, the tokens, the cookie, nor the state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use callrelay_links::{UserId, MAX_USER_ID_LEN};
use callrelay_store::{LoginAttempt, Session, StoreError};
use chrono::{DateTime, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::config::OidcSettings;
use crate::problem::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "callrelay_session";
/// The header that carries the session's CSRF token on cookie-authenticated state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a login may stay at the provider before its callback is refused.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The provider's discovery document (and its keys) is fetched again after this.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Each request to the provider gives up after this.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `return_to` kept.
const MAX_RETURN_TO: usize = 512;

/// The configured provider, with its discovery document cached.
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
    secure_cookie: bool,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

/// Why talking to the provider failed: the result label and a message for the log.
struct Failure {
    result: &'static str,
    message: String,
}

impl Failure {
    fn unavailable(e: impl std::fmt::Display) -> Failure {
        Failure {
            result: "unavailable",
            message: e.to_string(),
        }
    }
    fn failed(e: impl std::fmt::Display) -> Failure {
        Failure {
            result: "failed",
            message: e.to_string(),
        }
    }
}

impl Oidc {
    /// `secure_cookie` is false only in dev mode.
    pub fn new(settings: OidcSettings, secure_cookie: bool) -> anyhow::Result<Oidc> {
        let http = reqwest::Client::builder()
            // The OAuth 2.0 security BCP: never follow redirects on the back channel.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(Oidc {
            settings,
            http,
            metadata: tokio::sync::Mutex::new(None),
            secure_cookie,
        })
    }

    /// The provider's discovery document: cached for [`METADATA_TTL`], fetched again when
    /// `refresh` (an ID token signed with a key we do not know yet: the provider rotated keys).
    async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata, Failure> {
        let mut cached = self.metadata.lock().await;
        if let Some((md, at)) = cached.as_ref() {
            if !refresh && at.elapsed() < METADATA_TTL {
                return Ok(md.clone());
            }
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(Failure::failed)?;
        let md = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| Failure::unavailable(format!("discovery: {}", error_chain(&e))))?;
        *cached = Some((md.clone(), Instant::now()));
        Ok(md)
    }

    fn redirect_url(&self) -> Result<RedirectUrl, Failure> {
        RedirectUrl::new(self.settings.redirect_url.clone()).map_err(Failure::failed)
    }

    /// The provider's authorization URL for a new login, and the attempt to store.
    async fn begin(
        &self,
        return_to: String,
        now: DateTime<Utc>,
    ) -> Result<(String, LoginAttempt), Failure> {
        let md = self.metadata(false).await?;
        let client = CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.settings.client_id.clone()),
            self.client_secret(),
        )
        .set_redirect_uri(self.redirect_url()?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let attempt = LoginAttempt {
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            return_to,
            expires_at: now + chrono::Duration::from_std(LOGIN_TTL).expect("10 minutes"),
        };
        Ok((url.to_string(), attempt))
    }

    fn client_secret(&self) -> Option<ClientSecret> {
        (!self.settings.client_secret.is_empty())
            .then(|| ClientSecret::new(self.settings.client_secret.clone()))
    }

    /// Exchanges `code` and checks the ID token; returns who signed in.
    async fn finish(
        &self,
        code: String,
        attempt: &LoginAttempt,
    ) -> Result<(UserId, Option<String>), Failure> {
        let md = self.metadata(false).await?;
        let client = CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.settings.client_id.clone()),
            self.client_secret(),
        )
        .set_redirect_uri(self.redirect_url()?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(Failure::failed)?
            .set_pkce_verifier(PkceCodeVerifier::new(attempt.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::Request(_) => {
                    Failure::unavailable(format!("token endpoint: {}", error_chain(&e)))
                }
                other => Failure::failed(format!("token endpoint: {}", error_chain(&other))),
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| Failure::failed("the token response has no ID token"))?;
        let nonce = Nonce::new(attempt.nonce.clone());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // Perhaps a key we have not seen: fetch the provider's keys again, once.
                let md = self.metadata(true).await?;
                let fresh = CoreClient::from_provider_metadata(
                    md,
                    ClientId::new(self.settings.client_id.clone()),
                    self.client_secret(),
                );
                let verifier = fresh.id_token_verifier();
                let checked = id_token
                    .claims(&verifier, &nonce)
                    .map_err(|e| Failure::failed(format!("ID token: {first}; again: {e}")))?
                    .clone();
                checked
            }
        };
        let user = user_id(claims.subject().as_str(), &self.settings.user_domain);
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
            .or_else(|| claims.email().map(|e| e.as_str().to_owned()));
        if name.is_none() {
            // Some providers put profile claims only at the userinfo endpoint.
            if let Ok(request) = client.user_info(
                tokens.access_token().clone(),
                Some(claims.subject().clone()),
            ) {
                let info: Result<openidconnect::core::CoreUserInfoClaims, _> =
                    request.request_async(&self.http).await;
                match info {
                    Ok(info) => {
                        name = info
                            .name()
                            .and_then(|n| n.get(None))
                            .map(|n| n.as_str().to_owned())
                            .or_else(|| info.preferred_username().map(|u| u.as_str().to_owned()))
                            .or_else(|| info.email().map(|e| e.as_str().to_owned()));
                    }
                    Err(e) => {
                        tracing::info!(error = %error_chain(&e), "userinfo failed; signing in without a name")
                    }
                }
            }
        }
        Ok((user, name.and_then(|n| clean_name(&n))))
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `{sub}@{domain}`; a `sub` with characters a user id may not hold, or too long for one, is
/// replaced by `h-` and hex of its SHA-256 (cut to fit).
pub fn user_id(sub: &str, domain: &str) -> UserId {
    let room = MAX_USER_ID_LEN.saturating_sub(domain.len() + 1);
    let fits = !sub.is_empty()
        && sub.len() <= room
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    let local = if fits {
        sub.to_owned()
    } else {
        let hex: String = Sha256::digest(sub.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("h-{}", &hex[..room.saturating_sub(2).min(40)])
    };
    UserId::parse(&format!("{local}@{domain}"))
        .expect("a validated user_domain and a checked or hashed sub make a valid user id")
}

/// A display name from the claims: trimmed, at most 64 characters, never blank.
fn clean_name(raw: &str) -> Option<String> {
    let n: String = raw.trim().chars().take(64).collect();
    let n = n.trim_end().to_owned();
    (!n.is_empty()).then_some(n)
}

/// `return_to` if it is a path on this site, else `/` (never an open redirect).
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.len() <= MAX_RETURN_TO
                && !p.contains('\\')
                && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A fresh random secret: 32 bytes, base64url without padding (43 characters).
fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the store keeps of a cookie's secret.
fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session cookie's value in `headers`, if it has the shape of one.
fn session_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The live session behind the request's cookie, if any.
async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, ApiError> {
    let Some(secret) = session_secret(headers) else {
        return Ok(None);
    };
    let hash = hash_secret(secret);
    Ok(state
        .timed("get_session", state.store.get_session(&hash, state.now()))
        .await?)
}

/// Equal in constant time for equal lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The caller signed in by cookie, for [`Caller`]'s extractor when there is no bearer token.
/// `Ok(None)`: no (valid) session. A state change (any method but GET, HEAD and OPTIONS) must
/// carry the session's CSRF token, else [`ApiError::CsrfFailed`].
pub async fn caller_from_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    let Some(session) = current_session(state, headers).await? else {
        return Ok(None);
    };
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|t| same(t, &session.csrf)) {
            return Err(ApiError::CsrfFailed);
        }
    }
    Ok(Some(Caller {
        user: session.user,
        name: session.name,
        admin: false,
    }))
}

fn cookie(secure: bool, value: &str, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie text is ASCII")
}

fn redirect(location: &str, set_cookie: Option<HeaderValue>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = set_cookie {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

/// Back to the page with `sign_in_error={result}`, which it explains.
fn sign_in_error(state: &AppState, result: &'static str) -> Response {
    state.metrics.sign_ins.with_label_values(&[result]).inc();
    redirect(&format!("/?sign_in_error={result}"), None)
}

fn oidc(state: &AppState) -> Result<&Oidc, ApiError> {
    state.oidc.as_deref().ok_or(ApiError::SignInDisabled)
}

/// `GET /auth/login` query.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// A path on this site to come back to (default `/`).
    return_to: Option<String>,
}

async fn login(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let return_to = safe_return_to(q.return_to.as_deref());
    let (url, attempt) = match oidc.begin(return_to, state.now()).await {
        Ok(x) => x,
        Err(f) => {
            tracing::warn!(error = %f.message, "sign-in could not start");
            return sign_in_error(&state, f.result);
        }
    };
    if let Err(e) = state
        .timed("put_login", state.store.put_login(&attempt))
        .await
    {
        tracing::warn!(error = %e, "sign-in could not be stored");
        return sign_in_error(&state, "unavailable");
    }
    redirect(&url, None)
}

/// `GET /auth/callback` query: what the provider sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(State(state): State<Arc<AppState>>, Query(q): Query<CallbackQuery>) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let Some(key) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 256)
    else {
        return sign_in_error(&state, "expired");
    };
    let attempt = match state
        .timed("take_login", state.store.take_login(key, state.now()))
        .await
    {
        Ok(Some(a)) => a,
        Ok(None) => return sign_in_error(&state, "expired"),
        Err(e) => {
            tracing::warn!(error = %e, "sign-in callback: store");
            return sign_in_error(&state, "unavailable");
        }
    };
    if let Some(error) = q.error.as_deref() {
        // The provider's own code (access_denied, login_required, …): printable ASCII by RFC 6749.
        let error: String = error
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        tracing::info!(%error, "the provider refused the sign-in");
        return sign_in_error(&state, "denied");
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return sign_in_error(&state, "failed");
    };
    let (user, name) = match oidc.finish(code, &attempt).await {
        Ok(x) => x,
        Err(f) => {
            tracing::warn!(error = %f.message, "sign-in failed");
            return sign_in_error(&state, f.result);
        }
    };
    let secret = random_secret();
    let now = state.now();
    let ttl = oidc.settings.session_ttl;
    let session = Session {
        id_hash: hash_secret(&secret),
        user: user.clone(),
        name,
        csrf: random_secret(),
        created_at: now,
        expires_at: callrelay_links::add_duration(now, ttl),
    };
    if let Err(e) = state
        .timed("create_session", state.store.create_session(&session))
        .await
    {
        tracing::warn!(error = %e, "sign-in: the session could not be stored");
        return sign_in_error(
            &state,
            if matches!(e, StoreError::Unavailable(_)) {
                "unavailable"
            } else {
                "failed"
            },
        );
    }
    state.metrics.sign_ins.with_label_values(&["ok"]).inc();
    tracing::info!(user = %user.as_str(), "signed in");
    redirect(
        &attempt.return_to,
        Some(cookie(oidc.secure_cookie, &secret, ttl.as_secs())),
    )
}

/// `GET /auth/session` answer: who is signed in on this browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    /// The user id (`{sub}@{oidc.user_domain}`).
    pub user: String,
    /// The display name from the provider's claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Send this in `X-CSRF-Token` with every state change that relies on the cookie.
    pub csrf_token: String,
    /// When the session ends (RFC 3339).
    pub expires_at: DateTime<Utc>,
}

/// Who is signed in on this browser (by the session cookie).
#[utoipa::path(
    get,
    path = "/auth/session",
    tag = "sign-in",
    responses(
        (status = 200, description = "Signed in", body = SessionInfo),
        (status = 401, description = "No session, or it expired, was signed out or altered (`unauthorized`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Sign-in is not configured (`sign_in_disabled`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable (`store_unavailable`)", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn session_info(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    oidc(&state)?;
    let Some(s) = current_session(&state, &headers).await? else {
        return Err(ApiError::Unauthorized);
    };
    let mut resp = Json(SessionInfo {
        user: s.user.as_str().to_owned(),
        name: s.name,
        csrf_token: s.csrf,
        expires_at: s.expires_at,
    })
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Signs this browser out: deletes its session (needs `X-CSRF-Token`) and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "sign-in",
    responses(
        (status = 204, description = "Signed out (also when there was no session)"),
        (status = 403, description = "The session's CSRF token is missing or wrong (`csrf_failed`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Sign-in is not configured (`sign_in_disabled`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable (`store_unavailable`)", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oidc = oidc(&state)?;
    if let Some(s) = current_session(&state, &headers).await? {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|t| same(t, &s.csrf)) {
            return Err(ApiError::CsrfFailed);
        }
        state
            .timed("delete_session", state.store.delete_session(&s.id_hash))
            .await?;
        tracing::info!(user = %s.user.as_str(), "signed out");
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(oidc.secure_cookie, "", 0));
    Ok(resp)
}

/// The sign-in routes, merged into the API's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/session", get(session_info))
        .route("/auth/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_sub_at_domain_and_hash_what_does_not_fit() {
        assert_eq!(
            user_id("248289761001", "accounts.google.com").as_str(),
            "248289761001@accounts.google.com"
        );
        let odd = user_id("auth0|5f7c8ec7c33c6c004bbafe82", "example.eu.auth0.com");
        assert!(odd.as_str().starts_with("h-"), "{odd:?}");
        assert!(odd.as_str().ends_with("@example.eu.auth0.com"));
        assert_eq!(
            odd,
            user_id("auth0|5f7c8ec7c33c6c004bbafe82", "example.eu.auth0.com"),
            "stable"
        );
        assert_ne!(odd, user_id("auth0|other", "example.eu.auth0.com"));
        let long = user_id(&"a".repeat(200), &"d".repeat(40));
        assert!(long.as_str().len() <= MAX_USER_ID_LEN);
        assert_ne!(
            user_id("alice", "one.example"),
            user_id("alice", "two.example"),
            "the domain keeps issuers apart"
        );
    }

    #[test]
    fn return_to_is_a_local_path_or_slash() {
        assert_eq!(safe_return_to(Some("/calls")), "/calls");
        assert_eq!(
            safe_return_to(Some("/video/4bT9xQ2mZr7LpK0aW3cV1e")),
            "/video/4bT9xQ2mZr7LpK0aW3cV1e"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "calls",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(Some(&format!("/{}", "a".repeat(600)))), "/");
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let secret = random_secret();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {SESSION_COOKIE}={secret}; x=1")).unwrap(),
        );
        assert_eq!(session_secret(&h), Some(secret.as_str()));
        let mut bad = HeaderMap::new();
        bad.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={secret}x")).unwrap(),
        );
        assert_eq!(session_secret(&bad), None);
        assert_eq!(session_secret(&HeaderMap::new()), None);
        assert_ne!(hash_secret(&secret), secret, "only the hash is stored");
        assert_eq!(hash_secret(&secret).len(), 64);
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
