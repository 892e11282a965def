//! The link store: one async trait, [`LinkStore`], with two real implementations —
//! an embedded SQLite file (zero set-up, one node) and PostgreSQL (several nodes sharing state).
//!
//! Both behave the same and are tested by the same suite (`tests/store.rs`).
//! Timestamps are stored as milliseconds since the Unix epoch (UTC) in 64-bit integers, so both
//! backends compare and order them identically.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use callrelay_links::{Link, LinkId, UserId};
use chrono::{DateTime, Utc};

mod common;
mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A user's role in a link, as shown in their call log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user created the link.
    Creator,
    /// The user joined a link someone else created.
    Participant,
}

impl Role {
    /// `creator` or `participant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Participant => "participant",
        }
    }
}

/// One line of a user's call log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallLogEntry {
    /// The link (as stored now: its current expiry, revocation, …).
    pub link: Link,
    /// Whether the user created or joined it.
    pub role: Role,
    /// The user's last successful join, if they ever joined.
    pub last_joined_at: Option<DateTime<Utc>>,
    /// Creation or last join by this user, whichever is later: the log's sort key (newest first).
    pub last_activity_at: DateTime<Utc>,
}

/// The outcome of [`LinkStore::record_join`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The link was renewed and the call log written; the renewed link.
    Renewed(Link),
    /// The link does not exist (any more).
    NotFound,
    /// The link was revoked before the write (a revocation raced the join).
    Revoked,
    /// The link expired before the write.
    Expired,
}

/// A signed-in browser (web sign-in through OpenID Connect). The cookie holds a random secret;
/// the store keeps only its SHA-256 (`id_hash`), so a copy of the database signs no one in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Hex SHA-256 of the cookie's secret.
    pub id_hash: String,
    /// Who signed in.
    pub user: UserId,
    /// Their display name from the provider's claims.
    pub name: Option<String>,
    /// The token a page must send back (`X-CSRF-Token`) on every state change.
    pub csrf: String,
    /// Sign-in time.
    pub created_at: DateTime<Utc>,
    /// After this the session is refused (and later purged).
    pub expires_at: DateTime<Utc>,
}

/// A login sent to the OpenID provider and not back yet, found again by its `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginAttempt {
    /// The `state` parameter, random and single-use.
    pub state: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The local path to return to after sign-in.
    pub return_to: String,
    /// After this the callback is refused.
    pub expires_at: DateTime<Utc>,
}

/// A reminder still to send for a scheduled link: `offset` before its start, at `fire_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reminder {
    /// How long before the scheduled start (zero: at the start).
    pub offset: Duration,
    /// When it falls due.
    pub fire_at: DateTime<Utc>,
}

/// A reminder that fell due, with its link as stored when it fired.
#[derive(Clone, Debug)]
pub struct DueReminder {
    /// The scheduled link.
    pub link: Link,
    /// How long before the start it was meant to fire.
    pub offset: Duration,
    /// When it was due.
    pub fire_at: DateTime<Utc>,
}

/// The new title and schedule of a link (every field is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUpdate {
    /// Normalised title, or none.
    pub title: Option<String>,
    /// Scheduled start, or none.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Planned length, or none (none without a scheduled start).
    pub duration: Option<Duration>,
}

/// One webhook message for one endpoint, as written to the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    /// The message id (`webhook-id`), the same for every endpoint and every attempt.
    pub msg_id: String,
    /// The URL it is posted to.
    pub endpoint: String,
    /// The event type, e.g. `link.created`.
    pub event_type: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    /// When the event happened; retries stop `webhooks.retry_for` after it.
    pub created_at: DateTime<Utc>,
}

/// A webhook message claimed for one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The outbox row.
    pub seq: i64,
    /// The message as enqueued.
    pub message: NewWebhook,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// How a delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The endpoint answered 2xx: the row is deleted.
    Delivered,
    /// Try again at `at`.
    Retry {
        /// The next attempt.
        at: DateTime<Utc>,
        /// What went wrong this time.
        error: String,
    },
    /// No more attempts: the row stays as failed.
    Failed {
        /// When it was given up.
        at: DateTime<Utc>,
        /// What went wrong the last time.
        error: String,
    },
}

/// Rows in the webhook outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for a (first or next) attempt.
    pub pending: u64,
    /// Given up.
    pub failed: u64,
}

/// Builds the webhook messages for a due reminder or an expired link (inside the store's
/// transaction, so they are written together with the claim).
pub type ReminderMessages<'a> = &'a (dyn Fn(&DueReminder) -> Vec<NewWebhook> + Send + Sync);
/// See [`ReminderMessages`].
pub type ExpiryMessages<'a> = &'a (dyn Fn(&Link) -> Vec<NewWebhook> + Send + Sync);

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time. Joins answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row with this key exists already (for example an identifier collision on create).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row does not decode into the domain types.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Database(_) => "database",
        }
    }
}

/// The store behind the control plane. Every method is one transaction.
#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Which backend this is: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connections (on shutdown). Operations after it answer
    /// [`StoreError::Unavailable`].
    async fn close(&self);

    /// Inserts a new link and its creator's call-log entry (role creator, activity = creation).
    /// An existing id gives [`StoreError::Conflict`].
    async fn create_link(&self, link: &Link) -> Result<(), StoreError> {
        self.create_link_with_reminders(link, &[]).await
    }

    /// [`LinkStore::create_link`] with the reminders to send before the link's scheduled start,
    /// in the same transaction.
    async fn create_link_with_reminders(
        &self,
        link: &Link,
        reminders: &[Reminder],
    ) -> Result<(), StoreError>;

    /// Reads a link. Never renews it.
    async fn get_link(&self, id: &LinkId) -> Result<Option<Link>, StoreError>;

    /// Records a successful join by `user` at `now`, atomically: renews the link
    /// (`last_used_at = now`, `expires_at = now + ttl`) only if it is still neither revoked nor
    /// expired at `now`, and upserts the user's call-log entry (role participant, or creator if
    /// they created it; `last_joined_at = now`). Concurrent joins never lose an update.
    async fn record_join(
        &self,
        id: &LinkId,
        user: &UserId,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<JoinOutcome, StoreError>;

    /// Revokes a link at `now` with `reason`. Idempotent: a second call keeps the first
    /// revocation's time and reason. Returns the link as stored after the call, or `None`.
    async fn revoke_link(
        &self,
        id: &LinkId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError>;

    /// `blocker` blocks `blocked` (idempotent). Applies to every link `blocker` created.
    async fn block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Removes a block; returns whether one existed.
    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, StoreError>;

    /// The users `blocker` has blocked, sorted by user id.
    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<UserId>, StoreError>;

    /// Whether `blocker` has blocked `blocked`.
    async fn is_blocked(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, StoreError>;

    /// The links `user` created or joined, newest activity first, at most `limit`.
    async fn call_log(&self, user: &UserId, limit: u32) -> Result<Vec<CallLogEntry>, StoreError>;

    /// Deletes links (and their call-log entries) whose `expires_at + grace <= now`.
    /// Returns how many links were deleted.
    async fn purge_expired(&self, now: DateTime<Utc>, grace: Duration) -> Result<u64, StoreError>;

    /// Stores a new session. An existing `id_hash` gives [`StoreError::Conflict`].
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The session with this hash if it has not expired at `now`.
    async fn get_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError>;

    /// Deletes a session (sign-out); returns whether it existed.
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Stores a login on its way to the provider.
    async fn put_login(&self, login: &LoginAttempt) -> Result<(), StoreError>;

    /// Takes (deletes and returns) the login with this `state`, if any and unexpired at `now`:
    /// each one is good for one callback.
    async fn take_login(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LoginAttempt>, StoreError>;

    /// Deletes sessions and logins that expired before `now`; returns how many rows went.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Writes a link's title and schedule if it is neither revoked nor expired at `now`;
    /// `reminders`, when given, replace the ones still to send. Returns the link as stored now,
    /// or `None` when it does not exist (or is revoked or expired).
    async fn update_link(
        &self,
        id: &LinkId,
        update: &LinkUpdate,
        reminders: Option<&[Reminder]>,
        now: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError>;

    /// Fires at most `limit` reminders due at `now`: deletes them and writes the messages
    /// `build` makes for each, in one transaction, so that each fires once across the cluster
    /// and across restarts. Returns how many fired.
    async fn fire_reminders(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        build: ReminderMessages<'_>,
    ) -> Result<usize, StoreError>;

    /// Marks at most `limit` links that expired by `now` (not revoked, not yet announced) as
    /// announced and writes the messages `build` makes for each, in one transaction.
    async fn announce_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        build: ExpiryMessages<'_>,
    ) -> Result<usize, StoreError>;

    /// Adds messages to the webhook outbox, due at once. A message id already there for the
    /// same endpoint is left as it is.
    async fn enqueue_webhooks(&self, messages: &[NewWebhook]) -> Result<(), StoreError>;

    /// Claims at most `limit` messages due at `now` and not leased, leases them until
    /// `lease_until` and counts the attempt. Two nodes never claim the same row at once.
    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Records how an attempt ended.
    async fn finish_webhook(&self, seq: i64, outcome: &WebhookOutcome) -> Result<(), StoreError>;

    /// How many messages wait and how many failed.
    async fn webhook_counts(&self) -> Result<OutboxCounts, StoreError>;

    /// Deletes failed messages given up before `before`; returns how many.
    async fn purge_webhooks(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// A shared, dynamically dispatched store.
pub type SharedStore = Arc<dyn LinkStore>;

/// How long a caller waits for a database connection before the store answers
/// [`StoreError::Unavailable`]: joins must fail fast when the store is down.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
