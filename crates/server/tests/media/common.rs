//! A relay on 127.0.0.1 (HTTP on a free port, media workers on free UDP ports, a fresh SQLite
//! store) and helpers to drive str0m clients against it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientConfig, ClientEvent, TrackKind};
use callrelay_proto::server_message::Msg;
use callrelay_server::app::{self, SystemClock};
use callrelay_server::auth::Tokens;
use callrelay_server::config::Overrides;
use callrelay_server::testing::{self, InProcess};
use chrono::Utc;
use serde_json::{json, Value};

pub const SECRET: &str = "test-secret-test-secret-test-secret!";

/// Upper bound for anything a test awaits.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Relay {
    pub base: String,
    pub http: reqwest::Client,
    pub tokens: Tokens,
    pub state: Arc<app::AppState>,
    relay: InProcess,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub async fn start(env: &[(&str, &str)]) -> Relay {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let public_url = format!("http://{addr}");
        let mut vars = vec![
            ("CALLRELAY_AUTH_SECRET", SECRET),
            ("CALLRELAY_HTTP_PUBLIC_URL", &public_url),
            ("CALLRELAY_MEDIA_WORKERS", "2"),
        ];
        vars.extend_from_slice(env);
        let overrides = Overrides {
            http_addr: Some(addr.to_string()),
            data_dir: Some(dir.path().to_string_lossy().into_owned()),
            ..Overrides::default()
        };
        let settings = testing::settings(&vars, &overrides);
        let tokens = Tokens::new(&settings.auth_secret, settings.leeway);
        let relay = InProcess::start(
            listener,
            settings,
            prometheus::Registry::new(),
            Arc::new(SystemClock),
        )
        .await;
        for a in relay.state.media.addrs() {
            assert_ne!(a.port(), 0, "the announced candidate uses the bound port");
        }
        Relay {
            base: relay.base.clone(),
            http: reqwest::Client::builder()
                .timeout(PATIENCE)
                .build()
                .unwrap(),
            tokens,
            state: relay.state.clone(),
            relay,
            _dir: dir,
        }
    }

    /// What Prometheus would scrape from `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("a metrics body")
    }

    /// Stops HTTP and the media workers.
    pub async fn stop(self) {
        self.relay.stop(PATIENCE).await;
    }

    pub fn token(&self, user: &str) -> String {
        self.tokens.issue_user(
            &callrelay_links::UserId::parse(user).unwrap(),
            Some(user),
            false,
            Utc::now(),
            Duration::from_secs(3600),
        )
    }

    pub fn admin_token(&self) -> String {
        self.tokens.issue_user(
            &callrelay_links::UserId::parse("operator").unwrap(),
            None,
            true,
            Utc::now(),
            Duration::from_secs(3600),
        )
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// Creates a link as `user`; returns its id.
    pub async fn create_link(&self, user: &str, kind: &str) -> String {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/links",
                &self.token(user),
                Some(json!({"kind": kind})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().expect("link id").to_owned()
    }

    pub async fn revoke(&self, link: &str) {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/links/{link}/revoke"),
                &self.admin_token(),
                Some(json!({"reason": "test"})),
            )
            .await;
        assert!(status < 300, "revoke: {status} {v}");
    }

    pub async fn block(&self, blocker: &str, blocked: &str) {
        let (status, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/me/blocks/{blocked}"),
                &self.token(blocker),
                None,
            )
            .await;
        assert!(status < 300, "block: {status} {v}");
    }

    /// The preview's `participants` (seats held).
    pub async fn preview_participants(&self, link: &str) -> u64 {
        let r = self
            .http
            .get(format!("{}/v1/links/{link}", self.base))
            .send()
            .await
            .expect("preview");
        let v: Value = r.json().await.expect("preview json");
        v["participants"].as_u64().expect("participants")
    }

    /// Joins `link` as `user` and waits for ICE/DTLS.
    pub async fn join(&self, user: &str, link: &str, config: ClientConfig) -> Peer {
        let client = Client::join(&self.base, &self.token(user), link, config)
            .await
            .unwrap_or_else(|e| panic!("{user} joins: {e}"));
        let mut peer = Peer::new(client);
        let seen = peer
            .client
            .wait_connected(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        for e in seen {
            peer.record(e);
        }
        peer
    }
}

/// A client plus what it has seen so far.
pub struct Peer {
    pub client: Client,
    /// Received RTP payloads by publisher participant id and kind.
    pub media: HashMap<(String, TrackKind), Vec<Vec<u8>>>,
    pub signals: Vec<(Instant, Msg)>,
    pub closed: Option<(Instant, Option<String>)>,
    sent_audio: u32,
    sent_video: u32,
}

impl Peer {
    pub fn new(client: Client) -> Peer {
        Peer {
            client,
            media: HashMap::new(),
            signals: Vec::new(),
            closed: None,
            sent_audio: 0,
            sent_video: 0,
        }
    }

    pub fn id(&self) -> String {
        self.client.participant_id().to_owned()
    }

    pub fn record(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Media(p) => {
                let from = p.from.clone().unwrap_or_default();
                self.media
                    .entry((from, p.kind))
                    .or_default()
                    .push(p.payload);
            }
            ClientEvent::Signal(m) => {
                if let Some(m) = m.msg {
                    self.signals.push((Instant::now(), m));
                }
            }
            ClientEvent::Closed { reason } => self.closed = Some((Instant::now(), reason)),
            ClientEvent::Connected
            | ClientEvent::KeyframeRequest { .. }
            | ClientEvent::SignalingLost
            | ClientEvent::SignalingResumed => {}
        }
    }

    /// Reads every queued event.
    pub fn drain(&mut self) {
        while let Some(e) = self.client.try_next_event() {
            self.record(e);
        }
    }

    /// Waits until `done` holds for this peer, reading events.
    pub async fn until(&mut self, what: &str, mut done: impl FnMut(&Peer) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.client.next_event()).await {
                Ok(Some(e)) => self.record(e),
                Ok(None) => panic!("{}: session ended before {what}", self.id()),
                Err(_) => panic!("{}: no {what} within {PATIENCE:?}", self.id()),
            }
        }
    }

    /// Sends one audio and one video packet with recognisable payloads.
    pub fn send_media(&mut self, tag: u8) {
        let a = payload(tag, 0xA0, self.sent_audio, 120);
        self.sent_audio += 1;
        let _ = self.client.send_audio(a);
        let v = callrelay_client::vp8_payload(true, &payload(tag, 0xB0, self.sent_video, 900));
        self.sent_video += 1;
        let _ = self.client.send_video(None, v);
    }

    /// Packets received from `from` of `kind`, each checked byte for byte against what `from`
    /// sent (its tag is `tag`).
    pub fn received_intact(&self, from: &str, kind: TrackKind, tag: u8) -> usize {
        let Some(list) = self.media.get(&(from.to_owned(), kind)) else {
            return 0;
        };
        for p in list {
            let expected = match kind {
                TrackKind::Audio => {
                    assert!(p.len() >= 6, "runt audio payload");
                    let n = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    payload(tag, 0xA0, n, 120)
                }
                TrackKind::Video => {
                    let body = callrelay_client::vp8_body(p).expect("a VP8 payload");
                    assert!(body.len() >= 6, "runt video payload");
                    let n = u32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    callrelay_client::vp8_payload(true, &payload(tag, 0xB0, n, 900))
                }
            };
            assert_eq!(
                p, &expected,
                "payload bytes changed in transit (from {from})"
            );
        }
        list.len()
    }

    pub fn removed_reason(&self) -> Option<String> {
        self.signals.iter().find_map(|(_, m)| match m {
            Msg::Removed(r) => Some(r.reason.clone()),
            _ => None,
        })
    }
}

/// A recognisable payload: sender tag, kind tag, index, then filler depending on all three.
pub fn payload(tag: u8, kind: u8, index: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.push(tag);
    v.push(kind);
    v.extend_from_slice(&index.to_be_bytes());
    let mut x = u32::from(tag).wrapping_mul(2_654_435_761) ^ index ^ u32::from(kind);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

/// Every peer sends audio+video every 20 ms for `d`, reading events meanwhile.
pub async fn exchange(peers: &mut [Peer], d: Duration) {
    let end = tokio::time::Instant::now() + d;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        for (i, p) in peers.iter_mut().enumerate() {
            p.send_media(i as u8 + 1);
            p.drain();
        }
    }
}

/// Reads events on every peer until each has received at least `n` audio and video packets
/// from every other peer.
pub async fn until_all_received(peers: &mut [Peer], n: usize) {
    let ids: Vec<String> = peers.iter().map(|p| p.id()).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut missing = None;
        for (i, p) in peers.iter_mut().enumerate() {
            p.drain();
            for (j, from) in ids.iter().enumerate() {
                if i == j {
                    continue;
                }
                for kind in [TrackKind::Audio, TrackKind::Video] {
                    let got = p.received_intact(from, kind, j as u8 + 1);
                    if got < n && missing.is_none() {
                        missing =
                            Some(format!("peer {i} has {got} {kind:?} packets from peer {j}"));
                    }
                }
            }
        }
        let Some(m) = missing else { return };
        assert!(tokio::time::Instant::now() < deadline, "{m} (wanted {n})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
