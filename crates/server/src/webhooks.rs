//! Webhooks: JSON events, signed as in the Standard Webhooks spec, delivered at least once from an
//! outbox in the store.
//!
//! The path of an event:
//! 1. [`Webhooks::emit`] (a handler, the signaling layer, a media worker) puts it on a bounded
//!    in-memory queue and returns at once: a join or a call never waits for the store or for an
//!    endpoint. A full queue (the store down for long) drops the event and counts it.
//! 2. The writer task writes queued events to the store's outbox, one row per endpoint, retrying
//!    while the store is down.
//! 3. The delivery task of every node claims due rows (a lease in the store, so two nodes never
//!    post the same row at once), posts them, and records the outcome: delivered rows are deleted;
//!    failures are retried with exponential back-off (`webhooks.retry_min`, doubling, at most an
//!    hour) until `webhooks.retry_for` after the event, then kept as failed for a week. A node that
//!    dies mid-delivery leaves a lease that runs out, and another node (or the restarted one)
//!    posts the row again: at least once, with the same `webhook-id` for deduplication.
//!
//! Reminders of scheduled calls and `link.expired` are not emitted: the scheduler task claims them
//! in the store and writes their outbox rows in the same transaction, so each fires once per
//! cluster, across restarts.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use callrelay_links::{add_duration, Link, LinkId, LinkStatus};
use callrelay_store::{DueReminder, NewWebhook, WebhookDelivery, WebhookOutcome};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, Notify};

use crate::config::WebhookSettings;
use crate::state::AppState;

/// Events the relay sends.
pub const EVENT_TYPES: [&str; 11] = [
    "link.created",
    "link.reminder",
    "link.used",
    "link.expired",
    "link.revoked",
    "call.started",
    "call.ended",
    "participant.joined",
    "participant.left",
    "participant.removed",
    "participant.blocked",
];

/// Events waiting for the writer; beyond this they are dropped (and counted).
const QUEUE: usize = 10_000;
/// Rows claimed per round by one node.
const CLAIM_BATCH: u32 = 32;
/// Reminders or expiries handled per store transaction.
const SCHEDULE_BATCH: u32 = 100;
/// How often the delivery loop looks for due rows when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A reminder this late (the relay was down across it) is dropped rather than sent.
const REMINDER_TOO_LATE: Duration = Duration::from_secs(3600);
/// Failed messages are kept this long for the operator.
const KEEP_FAILED: Duration = Duration::from_secs(7 * 86_400);
/// The most of an endpoint's answer kept as the last error.
const ERROR_BODY: usize = 200;

/// Decodes `webhooks.secret`: `whsec_` and the base64 of 24 to 64 bytes.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = text.trim().strip_prefix("whsec_") else {
        return Err("must start with whsec_ (then the base64 of 24 to 64 random bytes)".into());
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ is not valid base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must hold 24 to 64 bytes after whsec_ (has {})",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header value for a message: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`.
pub fn sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    // An HMAC key of any length is accepted: the constructor cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// A fresh message id: `msg_` and 128 random bits in hex.
fn message_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let mut s = String::with_capacity(36);
    s.push_str("msg_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// When the attempt after `attempts` failed ones comes: `retry_min` doubled per attempt, at most
/// [`MAX_BACKOFF`].
pub fn backoff(retry_min: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    retry_min.saturating_mul(factor).min(MAX_BACKOFF)
}

/// One event before it is written.
#[derive(Debug)]
struct Event {
    kind: &'static str,
    at: DateTime<Utc>,
    data: Map<String, Value>,
}

/// The webhook sender of one node.
pub struct Webhooks {
    settings: WebhookSettings,
    public_url: String,
    queue: mpsc::Sender<Event>,
    /// Taken by [`Webhooks::run`].
    rx: std::sync::Mutex<Option<mpsc::Receiver<Event>>>,
    /// Wakes the delivery loop when the writer added rows.
    written: Notify,
    /// The writer holds a batch not yet in the store.
    writing: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
    metrics: crate::metrics::Metrics,
    /// The relay's clock (events are stamped, and fall due, by it).
    clock: Arc<dyn crate::state::Clock>,
}

impl Webhooks {
    /// The sender for `settings`; nothing runs until [`Webhooks::run`].
    pub fn new(
        settings: WebhookSettings,
        public_url: String,
        metrics: crate::metrics::Metrics,
        clock: Arc<dyn crate::state::Clock>,
    ) -> anyhow::Result<Webhooks> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // An endpoint answers; it does not send the relay elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            settings,
            public_url,
            queue,
            rx: std::sync::Mutex::new(Some(rx)),
            written: Notify::new(),
            writing: std::sync::atomic::AtomicBool::new(false),
            http,
            metrics,
            clock,
        })
    }

    /// The fields every event about `link` carries: its digest, and its id and URL when the
    /// operator opted in (`webhooks.include_link_id`).
    fn link_fields(&self, id: &LinkId, kind: Option<&str>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("link".into(), Value::String(id.digest().to_string()));
        if self.settings.include_link_id {
            m.insert("link_id".into(), Value::String(id.as_str().to_owned()));
            if let Some(kind) = kind {
                m.insert(
                    "url".into(),
                    Value::String(format!("{}/{kind}/{}", self.public_url, id.as_str())),
                );
            }
        }
        m
    }

    /// What events say of a link: identity, kind, title, schedule, creator.
    fn link_data(&self, link: &Link) -> Map<String, Value> {
        let mut m = self.link_fields(&link.id, Some(link.kind.as_str()));
        m.insert("kind".into(), json!(link.kind.as_str()));
        m.insert("creator".into(), json!(link.creator.as_str()));
        m.insert("title".into(), json!(link.title));
        m.insert("scheduled_at".into(), json!(link.scheduled_at.map(rfc3339)));
        m.insert("duration".into(), json!(link.duration.map(|d| d.as_secs())));
        m
    }

    /// Queues an event about `link` (a stored link: its title, schedule and creator go along).
    pub fn emit_link(&self, kind: &'static str, link: &Link, extra: Map<String, Value>) {
        let mut data = self.link_data(link);
        data.extend(extra);
        self.push(kind, data);
    }

    /// Queues an event about a call of link `id` (from the signaling layer or a media worker).
    pub fn emit_call(&self, kind: &'static str, id: &LinkId, extra: Map<String, Value>) {
        let mut data = self.link_fields(id, None);
        data.extend(extra);
        self.push(kind, data);
    }

    fn push(&self, kind: &'static str, data: Map<String, Value>) {
        let event = Event {
            kind,
            // Milliseconds, as the store keeps times.
            at: crate::state::millis(self.clock.now()),
            data,
        };
        if self.queue.try_send(event).is_err() {
            self.metrics.webhook_events_dropped.inc();
            tracing::warn!(event = kind, "webhook queue full: event dropped");
        }
    }

    /// The outbox rows of one event: one per endpoint, one message id.
    fn messages(&self, kind: &str, at: DateTime<Utc>, data: Map<String, Value>) -> Vec<NewWebhook> {
        let msg_id = message_id();
        let body = json!({
            "type": kind,
            "timestamp": rfc3339(at),
            "data": Value::Object(data),
        })
        .to_string();
        self.metrics.webhook_events.with_label_values(&[kind]).inc();
        self.settings
            .urls
            .iter()
            .map(|endpoint| NewWebhook {
                msg_id: msg_id.clone(),
                endpoint: endpoint.clone(),
                event_type: kind.to_owned(),
                body: body.clone(),
                created_at: at,
            })
            .collect()
    }

    /// The messages of a due reminder; none for a link no longer joinable or a reminder over an
    /// hour late.
    fn reminder_messages(&self, r: &DueReminder, now: DateTime<Utc>) -> Vec<NewWebhook> {
        let late = (now - r.fire_at).to_std().unwrap_or_default();
        if r.link.status(now) != LinkStatus::Active || late > REMINDER_TOO_LATE {
            return Vec::new();
        }
        let mut data = self.link_data(&r.link);
        data.insert("starts_in_s".into(), json!(r.offset.as_secs()));
        self.metrics.reminders_fired.inc();
        self.messages("link.reminder", now, data)
    }

    /// Starts the writer, the delivery loop and the scheduler (once; later calls start nothing).
    pub fn spawn(self: &Arc<Self>, state: Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return Vec::new();
        };
        vec![
            tokio::spawn(self.clone().write(state.clone(), rx)),
            tokio::spawn(self.clone().deliver(state.clone())),
            tokio::spawn(self.clone().schedule(state)),
        ]
    }

    /// Waits (at most `deadline`) until every queued event is in the outbox: on shutdown, so the
    /// last events (people leaving a drained node) are not lost with the process.
    pub async fn flush(&self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < end {
            let queued = self.queue.max_capacity() - self.queue.capacity();
            if queued == 0 && !self.writing.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!("webhook events still queued at shutdown");
    }

    /// Writes queued events to the outbox, in batches, retrying while the store is down.
    async fn write(self: Arc<Self>, state: Arc<AppState>, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            self.writing
                .store(true, std::sync::atomic::Ordering::Release);
            let rows: Vec<NewWebhook> = batch
                .drain(..)
                .flat_map(|e| self.messages(e.kind, e.at, e.data))
                .collect();
            let mut wait = Duration::from_millis(200);
            loop {
                match state
                    .timed("enqueue_webhooks", state.store.enqueue_webhooks(&rows))
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, rows = rows.len(), "webhook outbox: write failed, retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
            self.writing
                .store(false, std::sync::atomic::Ordering::Release);
            self.written.notify_one();
        }
    }

    /// Claims due rows, posts them, records the outcomes; forever.
    async fn deliver(self: Arc<Self>, state: Arc<AppState>) {
        let lease = self.settings.timeout + Duration::from_secs(5);
        let mut counted = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            let now = state.now();
            let claimed = state
                .timed(
                    "claim_webhooks",
                    state
                        .store
                        .claim_webhooks(now, add_duration(now, lease), CLAIM_BATCH),
                )
                .await;
            let claimed = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook outbox: claim failed");
                    Vec::new()
                }
            };
            let full = claimed.len() == CLAIM_BATCH as usize;
            let attempts = claimed.into_iter().map(|d| {
                let this = &self;
                let state = &state;
                async move {
                    let outcome = this.attempt(&d, state.now()).await;
                    if let Err(e) = state
                        .timed(
                            "finish_webhook",
                            state.store.finish_webhook(d.seq, &outcome),
                        )
                        .await
                    {
                        // The lease runs out and the row is tried again: at least once.
                        tracing::warn!(error = %e, "webhook outbox: outcome not recorded");
                    }
                }
            });
            futures::future::join_all(attempts).await;
            if counted.elapsed() >= Duration::from_secs(10) {
                counted = tokio::time::Instant::now();
                self.count(&state).await;
            }
            if !full {
                tokio::select! {
                    _ = self.written.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Refreshes `callrelay_webhook_outbox` and purges failed rows older than a week.
    async fn count(&self, state: &AppState) {
        if let Ok(c) = state.store.webhook_counts().await {
            let set = |st: &str, n: u64| {
                self.metrics
                    .webhook_outbox
                    .with_label_values(&[st])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("pending", c.pending);
            set("failed", c.failed);
        }
        let before = state.now() - chrono::Duration::from_std(KEEP_FAILED).unwrap_or_default();
        let _ = state.store.purge_webhooks(before).await;
    }

    /// Posts one message and says what to record.
    async fn attempt(&self, d: &WebhookDelivery, now: DateTime<Utc>) -> WebhookOutcome {
        let m = &d.message;
        let ts = now.timestamp();
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post(&m.endpoint)
            .header("content-type", "application/json")
            .header("webhook-id", &m.msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign(&self.settings.secret, &m.msg_id, ts, &m.body),
            )
            .body(m.body.clone())
            .send()
            .await;
        self.metrics
            .webhook_duration
            .observe(started.elapsed().as_secs_f64());
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                self.metrics
                    .webhook_deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                return WebhookOutcome::Delivered;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(ERROR_BODY).collect();
                format!("HTTP {status}: {text}")
            }
            Err(e) if e.is_timeout() => format!("no answer within {:?}", self.settings.timeout),
            Err(e) if e.is_connect() => format!("cannot connect: {e}"),
            Err(e) => format!("request failed: {e}"),
        };
        let next = add_duration(now, backoff(self.settings.retry_min, d.attempts));
        let give_up = add_duration(m.created_at, self.settings.retry_for);
        if next > give_up {
            self.metrics
                .webhook_deliveries
                .with_label_values(&["failed"])
                .inc();
            tracing::warn!(event = %m.event_type, id = %m.msg_id, attempts = d.attempts, error = %error, "webhook given up");
            WebhookOutcome::Failed { at: now, error }
        } else {
            self.metrics
                .webhook_deliveries
                .with_label_values(&["retry"])
                .inc();
            tracing::info!(event = %m.event_type, id = %m.msg_id, attempts = d.attempts, error = %error, "webhook failed: retrying");
            WebhookOutcome::Retry { at: next, error }
        }
    }

    /// Fires due reminders and announces expired links, every second.
    async fn schedule(self: Arc<Self>, state: Arc<AppState>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = state.now();
            let reminders = |r: &DueReminder| self.reminder_messages(r, now);
            let expired = |l: &Link| self.messages("link.expired", now, self.link_data(l));
            let mut wrote = false;
            loop {
                match state
                    .timed(
                        "fire_reminders",
                        state.store.fire_reminders(now, SCHEDULE_BATCH, &reminders),
                    )
                    .await
                {
                    Ok(n) => {
                        wrote |= n > 0;
                        if n < SCHEDULE_BATCH as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reminders: store failed");
                        break;
                    }
                }
            }
            match state
                .timed(
                    "announce_expired",
                    state.store.announce_expired(now, SCHEDULE_BATCH, &expired),
                )
                .await
            {
                Ok(n) => wrote |= n > 0,
                Err(e) => tracing::warn!(error = %e, "expiry events: store failed"),
            }
            if wrote {
                self.written.notify_one();
            }
        }
    }
}

/// RFC 3339 in UTC with milliseconds, as the API writes times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Shorthand for an event's extra fields.
#[macro_export]
macro_rules! fields {
    ($($k:literal => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_json::Map::new();
        $( m.insert($k.into(), serde_json::json!($v)); )*
        m
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks spec (and of its libraries' tests).
        let secret = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_must_be_whsec_and_24_to_64_bytes() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").unwrap_err().contains("has 3"));
        let ok = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            decode_secret(&format!("whsec_{ok}")).unwrap(),
            vec![7u8; 32]
        );
    }

    #[test]
    fn backoff_doubles_from_retry_min_up_to_an_hour() {
        let min = Duration::from_secs(5);
        assert_eq!(backoff(min, 1), Duration::from_secs(5));
        assert_eq!(backoff(min, 2), Duration::from_secs(10));
        assert_eq!(backoff(min, 4), Duration::from_secs(40));
        assert_eq!(backoff(min, 30), MAX_BACKOFF);
        assert_eq!(backoff(min, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn message_ids_are_fresh() {
        let a = message_id();
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("msg_"));
        assert_ne!(a, message_id());
    }
}
