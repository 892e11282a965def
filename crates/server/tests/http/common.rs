//! The in-process harness: a real server on 127.0.0.1:0 over a real store (a fresh SQLite file,
//! or a fresh database on the PostgreSQL server named by `CALLRELAY_TEST_DATABASE_URL`), with a
//! manual wall clock so expiry boundaries are exact.

use std::sync::Arc;
use std::time::Duration;

use callrelay_server::app::{self, ManualClock};
use callrelay_server::auth::Tokens;
use callrelay_server::config::{Overrides, Settings};
use callrelay_server::testing::{self, InProcess};
use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the store of a test lives; kept across restarts of the server.
pub struct StoreHandle {
    _dir: Option<tempfile::TempDir>,
    pub data_dir: String,
    pub database_url: String,
}

impl StoreHandle {
    /// A fresh store, or `None` when PostgreSQL is not available outside CI (loudly skipped).
    pub async fn fresh(backend: Backend) -> Option<StoreHandle> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let data_dir = dir.path().to_string_lossy().into_owned();
                Some(StoreHandle {
                    _dir: Some(dir),
                    data_dir,
                    database_url: String::new(),
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var("CALLRELAY_TEST_DATABASE_URL") else {
                    if std::env::var_os("CI").is_some() {
                        panic!("CI must run the PostgreSQL half: CALLRELAY_TEST_DATABASE_URL is not set (scripts/test starts a server)");
                    }
                    eprintln!("\n*** SKIPPED: PostgreSQL half of this test: set CALLRELAY_TEST_DATABASE_URL (eval \"$(scripts/pg start)\") ***\n");
                    return None;
                };
                let name = format!("cr_http_{:016x}", rand::random::<u64>());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("connect to the test PostgreSQL server");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create a test database");
                let (base, _) = admin
                    .rsplit_once('/')
                    .expect("a database URL ends in /dbname");
                Some(StoreHandle {
                    _dir: None,
                    data_dir: String::new(),
                    database_url: format!("{base}/{name}"),
                })
            }
        }
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub tokens: Tokens,
    pub state: Arc<app::AppState>,
    relay: InProcess,
}

pub fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// Settings for tests: the given store, generous limits unless a test tightens them.
pub fn settings(store: &StoreHandle, env: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("CALLRELAY_AUTH_SECRET", SECRET),
        ("CALLRELAY_HTTP_PUBLIC_URL", "https://calls.example.org"),
        ("CALLRELAY_MEDIA_WORKERS", "1"),
    ];
    vars.extend_from_slice(env);
    let overrides = Overrides {
        http_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(store.data_dir.clone()),
        database_url: Some(store.database_url.clone()),
        ..Overrides::default()
    };
    testing::settings(&vars, &overrides)
}

impl TestServer {
    pub async fn start(store: &StoreHandle, env: &[(&str, &str)]) -> TestServer {
        Self::start_with_clock(store, env, ManualClock::new(t0())).await
    }

    pub async fn start_with_clock(
        store: &StoreHandle,
        env: &[(&str, &str)],
        clock: Arc<ManualClock>,
    ) -> TestServer {
        let settings = settings(store, env);
        let tokens = Tokens::new(&settings.auth_secret, settings.leeway);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let relay = InProcess::start(
            listener,
            settings,
            prometheus::Registry::new(),
            clock.clone(),
        )
        .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        TestServer {
            base: relay.base.clone(),
            client,
            clock,
            tokens,
            state: relay.state.clone(),
            relay,
        }
    }

    /// Stops the server and waits until it has closed its listener and store handles.
    pub async fn stop(self) {
        self.relay.stop(Duration::from_secs(10)).await;
    }

    pub fn token(&self, user: &str) -> String {
        self.tokens.issue_user(
            &callrelay_links::UserId::parse(user).unwrap(),
            None,
            false,
            Utc::now(),
            Duration::from_secs(3600),
        )
    }

    pub fn admin_token(&self, user: &str) -> String {
        self.tokens.issue_user(
            &callrelay_links::UserId::parse(user).unwrap(),
            None,
            true,
            Utc::now(),
            Duration::from_secs(3600),
        )
    }

    /// Sends a request; returns status, headers and the body parsed as JSON (or `Value::Null`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.expect("request sent")).await
    }

    pub async fn create(&self, token: &str, body: Value) -> Value {
        let r = self
            .call(Method::POST, "/v1/links", Some(token), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        r.json
    }

    pub async fn join(&self, token: &str, id: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/v1/links/{id}/join"),
            Some(token),
            None,
        )
        .await
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// Asserts an RFC 9457 problem with the given status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        assert_eq!(self.json["code"], code, "body: {}", self.text);
        assert_eq!(self.json["status"], status, "body: {}", self.text);
        assert_eq!(self.json["type"], format!("urn:callrelay:problem:{code}"));
    }
}

/// Generates `mod sqlite` and `mod postgres` copies of a test taking a `StoreHandle`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let store = $crate::common::StoreHandle::fresh($crate::common::Backend::Sqlite)
                    .await
                    .unwrap();
                ($body)(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(store) =
                    $crate::common::StoreHandle::fresh($crate::common::Backend::Postgres).await
                {
                    ($body)(store).await;
                }
            }
        }
    };
}
