//! What the two backends share: the SQL text (both drivers accept `$n` parameters and the same
//! `ON CONFLICT` / `RETURNING` forms), row decoding, time conversion and error mapping.

use std::time::Duration;

use callrelay_links::{add_duration, Link, LinkId, LinkKind, LinkStatus, Revocation, UserId};
use chrono::{DateTime, Utc};
use sqlx::error::ErrorKind;
use sqlx::migrate::MigrateError;

use crate::{
    CallLogEntry, DueReminder, JoinOutcome, LoginAttempt, NewWebhook, Role, Session, StoreError,
    WebhookDelivery,
};

/// The columns of `links`, in the order [`LinkRow`] reads them.
macro_rules! link_columns {
    () => {
        "id, kind, creator, title, scheduled_at, created_at, last_used_at, expires_at, \
         revoked_at, revoke_reason, duration_ms, require_approval"
    };
}

pub(crate) const PING: &str = "SELECT 1";

pub(crate) const INSERT_LINK: &str = concat!(
    "INSERT INTO links (",
    link_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);

/// `$1` creator, `$2` link, `$3` creation time.
pub(crate) const INSERT_CREATOR_LOG: &str = "INSERT INTO call_log \
     (user_id, link_id, role, last_joined_at, last_activity_at) \
     VALUES ($1, $2, 'creator', NULL, $3)";

pub(crate) const GET_LINK: &str = concat!("SELECT ", link_columns!(), " FROM links WHERE id = $1");

/// `$1` link, `$2` now, `$3` now + ttl. Renews only a link neither revoked nor expired at `now`.
///
/// Joins may reach the database out of order (several nodes, a slow request): a join older than
/// the last recorded use does not move `last_used_at` (nor the expiry computed from it) backwards.
/// Both assignments read the row as it was before the update.
pub(crate) const RENEW_LINK: &str = concat!(
    "UPDATE links SET \
     last_used_at = CASE WHEN last_used_at > $2 THEN last_used_at ELSE $2 END, \
     expires_at = CASE WHEN last_used_at > $2 THEN expires_at ELSE $3 END \
     WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING ",
    link_columns!()
);

/// `$1` user, `$2` link, `$3` role, `$4` join time. Keeps an existing entry's role, and never
/// moves its times backwards.
pub(crate) const UPSERT_JOIN_LOG: &str = "INSERT INTO call_log \
     (user_id, link_id, role, last_joined_at, last_activity_at) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (user_id, link_id) DO UPDATE SET \
     last_joined_at = CASE \
         WHEN call_log.last_joined_at IS NULL OR call_log.last_joined_at < excluded.last_joined_at \
         THEN excluded.last_joined_at ELSE call_log.last_joined_at END, \
     last_activity_at = CASE \
         WHEN call_log.last_activity_at < excluded.last_activity_at \
         THEN excluded.last_activity_at ELSE call_log.last_activity_at END";

/// `$1` link, `$2` now, `$3` reason. The first revocation's time and reason stay.
pub(crate) const REVOKE_LINK: &str = concat!(
    "UPDATE links SET \
     revoke_reason = CASE WHEN revoked_at IS NULL THEN $3 ELSE revoke_reason END, \
     revoked_at = COALESCE(revoked_at, $2) \
     WHERE id = $1 \
     RETURNING ",
    link_columns!()
);

pub(crate) const BLOCK: &str = "INSERT INTO blocks (blocker, blocked, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (blocker, blocked) DO NOTHING";

pub(crate) const UNBLOCK: &str = "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2";

/// Byte order in both backends (PostgreSQL's identifier columns use the "C" collation).
pub(crate) const BLOCKED_BY: &str =
    "SELECT blocked FROM blocks WHERE blocker = $1 ORDER BY blocked";

pub(crate) const IS_BLOCKED: &str = "SELECT 1 FROM blocks WHERE blocker = $1 AND blocked = $2";

/// `$1` user, `$2` limit.
pub(crate) const CALL_LOG: &str = "SELECT \
     l.id, l.kind, l.creator, l.title, l.scheduled_at, l.created_at, l.last_used_at, \
     l.expires_at, l.revoked_at, l.revoke_reason, l.duration_ms, l.require_approval, \
     c.role, c.last_joined_at, c.last_activity_at \
     FROM call_log c JOIN links l ON l.id = c.link_id \
     WHERE c.user_id = $1 \
     ORDER BY c.last_activity_at DESC, c.link_id DESC \
     LIMIT $2";

/// `$1` the latest expiry that may be purged (`now - grace`). Call-log rows go by cascade.
pub(crate) const PURGE_EXPIRED: &str = "DELETE FROM links WHERE expires_at <= $1";

pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id_hash, user_id, name, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// `$1` hash, `$2` now.
pub(crate) const GET_SESSION: &str = "SELECT id_hash, user_id, name, csrf, created_at, expires_at \
     FROM sessions WHERE id_hash = $1 AND expires_at > $2";

pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";

pub(crate) const INSERT_LOGIN: &str = "INSERT INTO oidc_logins \
     (state, verifier, nonce, return_to, expires_at) VALUES ($1, $2, $3, $4, $5)";

pub(crate) const TAKE_LOGIN: &str = "DELETE FROM oidc_logins WHERE state = $1 \
     RETURNING state, verifier, nonce, return_to, expires_at";

/// `$1` now.
pub(crate) const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
/// `$1` now.
pub(crate) const PURGE_LOGINS: &str = "DELETE FROM oidc_logins WHERE expires_at <= $1";

/// `$1` link, `$2` offset, `$3` when due.
pub(crate) const INSERT_REMINDER: &str =
    "INSERT INTO reminders (link_id, offset_ms, fire_at) VALUES ($1, $2, $3)";

/// `$1` link.
pub(crate) const DELETE_REMINDERS: &str = "DELETE FROM reminders WHERE link_id = $1";

/// `$1` link, `$2` title, `$3` scheduled start, `$4` duration, `$5` now.
pub(crate) const UPDATE_LINK: &str = concat!(
    "UPDATE links SET title = $2, scheduled_at = $3, duration_ms = $4 \
     WHERE id = $1 AND revoked_at IS NULL AND expires_at > $5 \
     RETURNING ",
    link_columns!()
);

/// `$1` now, `$2` limit. The outer condition is checked again on each row, so two nodes racing
/// delete (and fire) each reminder once.
pub(crate) const TAKE_DUE_REMINDERS: &str = "DELETE FROM reminders \
     WHERE fire_at <= $1 AND (link_id, offset_ms) IN \
     (SELECT link_id, offset_ms FROM reminders WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2) \
     RETURNING link_id, offset_ms, fire_at";

/// `$1` now, `$2` limit.
pub(crate) const ANNOUNCE_EXPIRED: &str = concat!(
    "UPDATE links SET expiry_announced = 1 \
     WHERE expiry_announced = 0 AND revoked_at IS NULL AND expires_at <= $1 AND id IN \
     (SELECT id FROM links WHERE expiry_announced = 0 AND revoked_at IS NULL \
      AND expires_at <= $1 ORDER BY expires_at LIMIT $2) \
     RETURNING ",
    link_columns!()
);

/// `$1` id, `$2` endpoint, `$3` type, `$4` body, `$5` created (and first due).
pub(crate) const INSERT_WEBHOOK: &str = "INSERT INTO webhook_outbox \
     (msg_id, endpoint, event_type, body, created_at, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (msg_id, endpoint) DO NOTHING";

/// `$1` now, `$2` lease end, `$3` limit. As with reminders, the outer condition makes a row
/// claimed by one node invisible to the other's update.
pub(crate) const CLAIM_WEBHOOKS: &str = "UPDATE webhook_outbox \
     SET lease_until = $2, attempts = attempts + 1 \
     WHERE failed_at IS NULL AND next_attempt_at <= $1 AND lease_until <= $1 AND seq IN \
     (SELECT seq FROM webhook_outbox WHERE failed_at IS NULL AND next_attempt_at <= $1 \
      AND lease_until <= $1 ORDER BY next_attempt_at, seq LIMIT $3) \
     RETURNING seq, msg_id, endpoint, event_type, body, created_at, attempts";

pub(crate) const DELETE_WEBHOOK: &str = "DELETE FROM webhook_outbox WHERE seq = $1";

/// `$1` seq, `$2` next attempt, `$3` error.
pub(crate) const RETRY_WEBHOOK: &str = "UPDATE webhook_outbox \
     SET next_attempt_at = $2, lease_until = 0, last_error = $3 WHERE seq = $1";

/// `$1` seq, `$2` now, `$3` error.
pub(crate) const FAIL_WEBHOOK: &str = "UPDATE webhook_outbox \
     SET failed_at = $2, lease_until = 0, last_error = $3 WHERE seq = $1";

pub(crate) const COUNT_WEBHOOKS: &str = "SELECT \
     CAST(COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) \
     FROM webhook_outbox";

/// `$1` the latest give-up time to delete.
pub(crate) const PURGE_WEBHOOKS: &str =
    "DELETE FROM webhook_outbox WHERE failed_at IS NOT NULL AND failed_at <= $1";

/// A `reminders` row taken because it fell due.
#[derive(sqlx::FromRow)]
pub(crate) struct ReminderRow {
    pub(crate) link_id: String,
    pub(crate) offset_ms: i64,
    pub(crate) fire_at: i64,
}

impl ReminderRow {
    pub(crate) fn into_due(self, link: Link) -> Result<DueReminder, StoreError> {
        Ok(DueReminder {
            link,
            offset: Duration::from_millis(
                u64::try_from(self.offset_ms)
                    .map_err(|e| StoreError::Corrupt(format!("reminders.offset_ms: {e}")))?,
            ),
            fire_at: from_millis(self.fire_at, "reminders.fire_at")?,
        })
    }
}

/// A `webhook_outbox` row claimed for delivery.
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    seq: i64,
    msg_id: String,
    endpoint: String,
    event_type: String,
    body: String,
    created_at: i64,
    attempts: i64,
}

impl WebhookRow {
    pub(crate) fn into_delivery(self) -> Result<WebhookDelivery, StoreError> {
        Ok(WebhookDelivery {
            seq: self.seq,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            message: NewWebhook {
                msg_id: self.msg_id,
                endpoint: self.endpoint,
                event_type: self.event_type,
                body: self.body,
                created_at: from_millis(self.created_at, "webhook_outbox.created_at")?,
            },
        })
    }
}

/// A `sessions` row.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id_hash: String,
    user_id: String,
    name: Option<String>,
    csrf: String,
    created_at: i64,
    expires_at: i64,
}

impl SessionRow {
    pub(crate) fn into_session(self) -> Result<Session, StoreError> {
        Ok(Session {
            user: UserId::parse(&self.user_id)
                .map_err(|e| StoreError::Corrupt(format!("sessions.user_id: {e}")))?,
            id_hash: self.id_hash,
            name: self.name,
            csrf: self.csrf,
            created_at: from_millis(self.created_at, "sessions.created_at")?,
            expires_at: from_millis(self.expires_at, "sessions.expires_at")?,
        })
    }
}

/// An `oidc_logins` row.
#[derive(sqlx::FromRow)]
pub(crate) struct LoginRow {
    state: String,
    verifier: String,
    nonce: String,
    return_to: String,
    expires_at: i64,
}

impl LoginRow {
    pub(crate) fn into_login(self) -> Result<LoginAttempt, StoreError> {
        Ok(LoginAttempt {
            state: self.state,
            verifier: self.verifier,
            nonce: self.nonce,
            return_to: self.return_to,
            expires_at: from_millis(self.expires_at, "oidc_logins.expires_at")?,
        })
    }
}

/// How many times `record_join` re-tries when the link changed between its conditional update and
/// the read that explains a refusal (only possible with joins from clocks that disagree).
pub(crate) const JOIN_ATTEMPTS: usize = 3;

/// A `links` row as stored.
#[derive(sqlx::FromRow)]
pub(crate) struct LinkRow {
    id: String,
    kind: String,
    creator: String,
    title: Option<String>,
    scheduled_at: Option<i64>,
    created_at: i64,
    last_used_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    duration_ms: Option<i64>,
    require_approval: i64,
}

impl LinkRow {
    /// Decodes the row into the domain type; anything that does not fit is [`StoreError::Corrupt`].
    pub(crate) fn into_link(self) -> Result<Link, StoreError> {
        let id =
            LinkId::parse(&self.id).map_err(|e| StoreError::Corrupt(format!("links.id: {e}")))?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("links.{what} of {id}: {e}"))
        };
        let kind: LinkKind = self.kind.parse().map_err(|e| corrupt("kind", &e))?;
        let creator = UserId::parse(&self.creator).map_err(|e| corrupt("creator", &e))?;
        let revoked = match self.revoked_at {
            Some(at) => Some(Revocation {
                at: from_millis(at, "links.revoked_at")?,
                reason: self.revoke_reason.unwrap_or_default(),
            }),
            None => None,
        };
        Ok(Link {
            id,
            kind,
            creator,
            title: self.title,
            scheduled_at: self
                .scheduled_at
                .map(|t| from_millis(t, "links.scheduled_at"))
                .transpose()?,
            duration: self
                .duration_ms
                .map(|ms| {
                    u64::try_from(ms)
                        .map(Duration::from_millis)
                        .map_err(|e| corrupt("duration_ms", &e))
                })
                .transpose()?,
            require_approval: self.require_approval != 0,
            created_at: from_millis(self.created_at, "links.created_at")?,
            last_used_at: from_millis(self.last_used_at, "links.last_used_at")?,
            expires_at: from_millis(self.expires_at, "links.expires_at")?,
            revoked,
        })
    }
}

/// Decodes an optional row.
pub(crate) fn decode_opt(row: Option<LinkRow>) -> Result<Option<Link>, StoreError> {
    row.map(LinkRow::into_link).transpose()
}

/// A call-log row joined with its link.
#[derive(sqlx::FromRow)]
pub(crate) struct CallLogRow {
    #[sqlx(flatten)]
    link: LinkRow,
    role: String,
    last_joined_at: Option<i64>,
    last_activity_at: i64,
}

impl CallLogRow {
    pub(crate) fn into_entry(self) -> Result<CallLogEntry, StoreError> {
        let role = match self.role.as_str() {
            "creator" => Role::Creator,
            "participant" => Role::Participant,
            other => return Err(StoreError::Corrupt(format!("call_log.role: {other:?}"))),
        };
        Ok(CallLogEntry {
            link: self.link.into_link()?,
            role,
            last_joined_at: self
                .last_joined_at
                .map(|t| from_millis(t, "call_log.last_joined_at"))
                .transpose()?,
            last_activity_at: from_millis(self.last_activity_at, "call_log.last_activity_at")?,
        })
    }
}

/// Decodes a user id read from the `blocks` table.
pub(crate) fn decode_user(s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|e| StoreError::Corrupt(format!("blocks.blocked: {e}")))
}

/// A timestamp as stored: milliseconds since the Unix epoch.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored timestamp back into a `DateTime`.
fn from_millis(ms: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {ms} is out of range")))
}

/// A duration in milliseconds, saturating.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The stored expiry of a link renewed at `now` for `ttl`.
pub(crate) fn renewed_expiry(now: DateTime<Utc>, ttl: Duration) -> i64 {
    millis(add_duration(now, ttl))
}

/// The latest expiry that [`crate::LinkStore::purge_expired`] deletes at `now`.
pub(crate) fn purge_threshold(now: DateTime<Utc>, grace: Duration) -> i64 {
    millis(now).saturating_sub(duration_millis(grace))
}

/// The call-log role of `user` in `link`.
pub(crate) fn role_of(link: &Link, user: &UserId) -> Role {
    if link.creator == *user {
        Role::Creator
    } else {
        Role::Participant
    }
}

/// Why a join's conditional update touched no row, from the link as read after it.
/// `None`: the link is joinable after all (it was renewed in between), so the join should retry.
pub(crate) fn refusal(link: Option<&Link>, now: DateTime<Utc>) -> Option<JoinOutcome> {
    match link.map(|l| l.status(now)) {
        None => Some(JoinOutcome::NotFound),
        Some(LinkStatus::Revoked) => Some(JoinOutcome::Revoked),
        Some(LinkStatus::Expired) => Some(JoinOutcome::Expired),
        Some(LinkStatus::Active) => None,
    }
}

/// The error `record_join` gives when the link kept changing under it.
pub(crate) fn join_did_not_settle() -> StoreError {
    StoreError::Database(format!(
        "record_join: the link changed concurrently {JOIN_ATTEMPTS} times in a row"
    ))
}

/// Maps a driver error onto [`StoreError`].
///
/// Unreachable, timed out, closed or crashed → `Unavailable`; a unique key taken → `Conflict`;
/// a value that does not decode → `Corrupt`; everything else → `Database`.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        sqlx::Error::PoolClosed => StoreError::Unavailable("the connection pool is closed".into()),
        sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable("the database connection worker crashed".into())
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("i/o error: {e}")),
        sqlx::Error::Tls(e) => StoreError::Unavailable(format!("tls error: {e}")),
        sqlx::Error::Database(db) => {
            let message = db.message().to_owned();
            if db.kind() == ErrorKind::UniqueViolation {
                StoreError::Conflict(message)
            } else if db_unavailable(db.as_ref()) {
                StoreError::Unavailable(message)
            } else {
                StoreError::Database(message)
            }
        }
        e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
            StoreError::Corrupt(e.to_string())
        }
        sqlx::Error::Migrate(e) => map_migrate_err(*e),
        e => StoreError::Database(e.to_string()),
    }
}

/// Maps a migration error onto [`StoreError`].
pub(crate) fn map_migrate_err(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => map_err(e),
        MigrateError::ExecuteMigration(e, version) => match map_err(e) {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("migration {version}: {m}"))
            }
            other => StoreError::Database(format!("migration {version}: {other}")),
        },
        e => StoreError::Database(format!("migrations: {e}")),
    }
}

/// Whether a database error means "not reachable or not answering now" rather than "wrong".
fn db_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        // Class 08: connection exception; 53300: too many connections;
        // 57P01..57P03: the server is shutting down or starting up.
        code.starts_with("08") || matches!(&*code, "53300" | "57P01" | "57P02" | "57P03")
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary result codes: BUSY, LOCKED (the busy timeout elapsed), IOERR, CANTOPEN.
        code.parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 14))
    } else {
        false
    }
}

/// The [`crate::LinkStore`] implementation, written once for both backends: the SQL above is
/// shared, only the pools and the statement that begins a write transaction differ.
///
/// `read` and `write` name the store's pool fields for reads and for writes; `begin` is the pool
/// method call that starts a write transaction.
macro_rules! link_store_impl {
    ($store:ty, $backend:literal, read: $read:ident, write: $write:ident, begin: $($begin:tt)+) => {
        const _: () = {
            use std::time::Duration;

            /// Writes webhook messages to the outbox inside the open transaction `tx`.
            macro_rules! insert_webhooks {
                ($tx:ident, $messages:expr) => {
                    for m in $messages.iter() {
                        sqlx::query(c::INSERT_WEBHOOK)
                            .bind(m.msg_id.as_str())
                            .bind(m.endpoint.as_str())
                            .bind(m.event_type.as_str())
                            .bind(m.body.as_str())
                            .bind(c::millis(m.created_at))
                            .execute(&mut *$tx)
                            .await
                            .map_err(map_err)?;
                    }
                };
            }

            use callrelay_links::{Link, LinkId, UserId};
            use chrono::{DateTime, Utc};

            use $crate::common::{
                self as c, map_err, CallLogRow, LinkRow, LoginRow, ReminderRow, SessionRow,
                WebhookRow,
            };
            use $crate::{
                CallLogEntry, ExpiryMessages, JoinOutcome, LinkStore, LinkUpdate, LoginAttempt,
                NewWebhook, OutboxCounts, Reminder, ReminderMessages, Session, StoreError,
                WebhookDelivery, WebhookOutcome,
            };

            #[async_trait::async_trait]
            impl LinkStore for $store {
                fn backend(&self) -> &'static str {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query(c::PING).execute(&self.$read).await.map_err(map_err)?;
                    Ok(())
                }

                async fn close(&self) {
                    <$store>::close(self).await
                }

                async fn create_link_with_reminders(
                    &self,
                    link: &Link,
                    reminders: &[Reminder],
                ) -> Result<(), StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    sqlx::query(c::INSERT_LINK)
                        .bind(link.id.as_str())
                        .bind(link.kind.as_str())
                        .bind(link.creator.as_str())
                        .bind(link.title.as_deref())
                        .bind(link.scheduled_at.map(c::millis))
                        .bind(c::millis(link.created_at))
                        .bind(c::millis(link.last_used_at))
                        .bind(c::millis(link.expires_at))
                        .bind(link.revoked.as_ref().map(|r| c::millis(r.at)))
                        .bind(link.revoked.as_ref().map(|r| r.reason.as_str()))
                        .bind(link.duration.map(c::duration_millis))
                        .bind(i64::from(link.require_approval))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    sqlx::query(c::INSERT_CREATOR_LOG)
                        .bind(link.creator.as_str())
                        .bind(link.id.as_str())
                        .bind(c::millis(link.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    for r in reminders {
                        sqlx::query(c::INSERT_REMINDER)
                            .bind(link.id.as_str())
                            .bind(c::duration_millis(r.offset))
                            .bind(c::millis(r.fire_at))
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                    }
                    tx.commit().await.map_err(map_err)
                }

                async fn get_link(&self, id: &LinkId) -> Result<Option<Link>, StoreError> {
                    let row = sqlx::query_as::<_, LinkRow>(c::GET_LINK)
                        .bind(id.as_str())
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(map_err)?;
                    c::decode_opt(row)
                }

                async fn record_join(
                    &self,
                    id: &LinkId,
                    user: &UserId,
                    now: DateTime<Utc>,
                    ttl: Duration,
                ) -> Result<JoinOutcome, StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    for _ in 0..c::JOIN_ATTEMPTS {
                        let renewed = sqlx::query_as::<_, LinkRow>(c::RENEW_LINK)
                            .bind(id.as_str())
                            .bind(c::millis(now))
                            .bind(c::renewed_expiry(now, ttl))
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        if let Some(row) = renewed {
                            let link = row.into_link()?;
                            sqlx::query(c::UPSERT_JOIN_LOG)
                                .bind(user.as_str())
                                .bind(id.as_str())
                                .bind(c::role_of(&link, user).as_str())
                                .bind(c::millis(now))
                                .execute(&mut *tx)
                                .await
                                .map_err(map_err)?;
                            tx.commit().await.map_err(map_err)?;
                            return Ok(JoinOutcome::Renewed(link));
                        }
                        // Nothing renewed: say why, from the link as it is now. Nothing was
                        // written, so returning drops (rolls back) the transaction.
                        let current = sqlx::query_as::<_, LinkRow>(c::GET_LINK)
                            .bind(id.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        if let Some(outcome) = c::refusal(c::decode_opt(current)?.as_ref(), now) {
                            return Ok(outcome);
                        }
                    }
                    Err(c::join_did_not_settle())
                }

                async fn revoke_link(
                    &self,
                    id: &LinkId,
                    reason: &str,
                    now: DateTime<Utc>,
                ) -> Result<Option<Link>, StoreError> {
                    let row = sqlx::query_as::<_, LinkRow>(c::REVOKE_LINK)
                        .bind(id.as_str())
                        .bind(c::millis(now))
                        .bind(reason)
                        .fetch_optional(&self.$write)
                        .await
                        .map_err(map_err)?;
                    c::decode_opt(row)
                }

                async fn block(
                    &self,
                    blocker: &UserId,
                    blocked: &UserId,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(c::BLOCK)
                        .bind(blocker.as_str())
                        .bind(blocked.as_str())
                        .bind(c::millis(now))
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(())
                }

                async fn unblock(
                    &self,
                    blocker: &UserId,
                    blocked: &UserId,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(c::UNBLOCK)
                        .bind(blocker.as_str())
                        .bind(blocked.as_str())
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<UserId>, StoreError> {
                    let rows: Vec<String> = sqlx::query_scalar(c::BLOCKED_BY)
                        .bind(blocker.as_str())
                        .fetch_all(&self.$read)
                        .await
                        .map_err(map_err)?;
                    rows.iter().map(|s| c::decode_user(s)).collect()
                }

                async fn is_blocked(
                    &self,
                    blocker: &UserId,
                    blocked: &UserId,
                ) -> Result<bool, StoreError> {
                    let row = sqlx::query(c::IS_BLOCKED)
                        .bind(blocker.as_str())
                        .bind(blocked.as_str())
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(map_err)?;
                    Ok(row.is_some())
                }

                async fn call_log(
                    &self,
                    user: &UserId,
                    limit: u32,
                ) -> Result<Vec<CallLogEntry>, StoreError> {
                    let rows = sqlx::query_as::<_, CallLogRow>(c::CALL_LOG)
                        .bind(user.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&self.$read)
                        .await
                        .map_err(map_err)?;
                    rows.into_iter().map(CallLogRow::into_entry).collect()
                }

                async fn purge_expired(
                    &self,
                    now: DateTime<Utc>,
                    grace: Duration,
                ) -> Result<u64, StoreError> {
                    let done = sqlx::query(c::PURGE_EXPIRED)
                        .bind(c::purge_threshold(now, grace))
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected())
                }

                async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
                    sqlx::query(c::INSERT_SESSION)
                        .bind(session.id_hash.as_str())
                        .bind(session.user.as_str())
                        .bind(session.name.as_deref())
                        .bind(session.csrf.as_str())
                        .bind(c::millis(session.created_at))
                        .bind(c::millis(session.expires_at))
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(())
                }

                async fn get_session(
                    &self,
                    id_hash: &str,
                    now: DateTime<Utc>,
                ) -> Result<Option<Session>, StoreError> {
                    let row = sqlx::query_as::<_, SessionRow>(c::GET_SESSION)
                        .bind(id_hash)
                        .bind(c::millis(now))
                        .fetch_optional(&self.$read)
                        .await
                        .map_err(map_err)?;
                    row.map(SessionRow::into_session).transpose()
                }

                async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query(c::DELETE_SESSION)
                        .bind(id_hash)
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn put_login(&self, login: &LoginAttempt) -> Result<(), StoreError> {
                    sqlx::query(c::INSERT_LOGIN)
                        .bind(login.state.as_str())
                        .bind(login.verifier.as_str())
                        .bind(login.nonce.as_str())
                        .bind(login.return_to.as_str())
                        .bind(c::millis(login.expires_at))
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(())
                }

                async fn take_login(
                    &self,
                    state: &str,
                    now: DateTime<Utc>,
                ) -> Result<Option<LoginAttempt>, StoreError> {
                    let row = sqlx::query_as::<_, LoginRow>(c::TAKE_LOGIN)
                        .bind(state)
                        .fetch_optional(&self.$write)
                        .await
                        .map_err(map_err)?;
                    let login = row.map(LoginRow::into_login).transpose()?;
                    Ok(login.filter(|l| l.expires_at > now))
                }

                async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    let sessions = sqlx::query(c::PURGE_SESSIONS)
                        .bind(c::millis(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let logins = sqlx::query(c::PURGE_LOGINS)
                        .bind(c::millis(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    Ok(sessions.rows_affected() + logins.rows_affected())
                }

                async fn update_link(
                    &self,
                    id: &LinkId,
                    update: &LinkUpdate,
                    reminders: Option<&[Reminder]>,
                    now: DateTime<Utc>,
                ) -> Result<Option<Link>, StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    let row = sqlx::query_as::<_, LinkRow>(c::UPDATE_LINK)
                        .bind(id.as_str())
                        .bind(update.title.as_deref())
                        .bind(update.scheduled_at.map(c::millis))
                        .bind(update.duration.map(c::duration_millis))
                        .bind(c::millis(now))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let Some(link) = c::decode_opt(row)? else {
                        return Ok(None);
                    };
                    if let Some(reminders) = reminders {
                        sqlx::query(c::DELETE_REMINDERS)
                            .bind(id.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        for r in reminders {
                            sqlx::query(c::INSERT_REMINDER)
                                .bind(id.as_str())
                                .bind(c::duration_millis(r.offset))
                                .bind(c::millis(r.fire_at))
                                .execute(&mut *tx)
                                .await
                                .map_err(map_err)?;
                        }
                    }
                    tx.commit().await.map_err(map_err)?;
                    Ok(Some(link))
                }

                async fn fire_reminders(
                    &self,
                    now: DateTime<Utc>,
                    limit: u32,
                    build: ReminderMessages<'_>,
                ) -> Result<usize, StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    let rows = sqlx::query_as::<_, ReminderRow>(c::TAKE_DUE_REMINDERS)
                        .bind(c::millis(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let fired = rows.len();
                    let mut messages = Vec::new();
                    for row in rows {
                        let link = sqlx::query_as::<_, LinkRow>(c::GET_LINK)
                            .bind(row.link_id.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        if let Some(link) = c::decode_opt(link)? {
                            messages.extend(build(&row.into_due(link)?));
                        }
                    }
                    insert_webhooks!(tx, messages);
                    tx.commit().await.map_err(map_err)?;
                    Ok(fired)
                }

                async fn announce_expired(
                    &self,
                    now: DateTime<Utc>,
                    limit: u32,
                    build: ExpiryMessages<'_>,
                ) -> Result<usize, StoreError> {
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    let rows = sqlx::query_as::<_, LinkRow>(c::ANNOUNCE_EXPIRED)
                        .bind(c::millis(now))
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    let announced = rows.len();
                    let mut messages = Vec::new();
                    for row in rows {
                        messages.extend(build(&row.into_link()?));
                    }
                    insert_webhooks!(tx, messages);
                    tx.commit().await.map_err(map_err)?;
                    Ok(announced)
                }

                async fn enqueue_webhooks(&self, messages: &[NewWebhook]) -> Result<(), StoreError> {
                    if messages.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.$write.$($begin)+.await.map_err(map_err)?;
                    insert_webhooks!(tx, messages);
                    tx.commit().await.map_err(map_err)
                }

                async fn claim_webhooks(
                    &self,
                    now: DateTime<Utc>,
                    lease_until: DateTime<Utc>,
                    limit: u32,
                ) -> Result<Vec<WebhookDelivery>, StoreError> {
                    let rows = sqlx::query_as::<_, WebhookRow>(c::CLAIM_WEBHOOKS)
                        .bind(c::millis(now))
                        .bind(c::millis(lease_until))
                        .bind(i64::from(limit))
                        .fetch_all(&self.$write)
                        .await
                        .map_err(map_err)?;
                    let mut claimed = rows
                        .into_iter()
                        .map(WebhookRow::into_delivery)
                        .collect::<Result<Vec<_>, _>>()?;
                    claimed.sort_by_key(|d| d.seq);
                    Ok(claimed)
                }

                async fn finish_webhook(
                    &self,
                    seq: i64,
                    outcome: &WebhookOutcome,
                ) -> Result<(), StoreError> {
                    let q = match outcome {
                        WebhookOutcome::Delivered => sqlx::query(c::DELETE_WEBHOOK).bind(seq),
                        WebhookOutcome::Retry { at, error } => sqlx::query(c::RETRY_WEBHOOK)
                            .bind(seq)
                            .bind(c::millis(*at))
                            .bind(error.as_str()),
                        WebhookOutcome::Failed { at, error } => sqlx::query(c::FAIL_WEBHOOK)
                            .bind(seq)
                            .bind(c::millis(*at))
                            .bind(error.as_str()),
                    };
                    q.execute(&self.$write).await.map_err(map_err)?;
                    Ok(())
                }

                async fn webhook_counts(&self) -> Result<OutboxCounts, StoreError> {
                    let (pending, failed): (i64, i64) = sqlx::query_as(c::COUNT_WEBHOOKS)
                        .fetch_one(&self.$read)
                        .await
                        .map_err(map_err)?;
                    Ok(OutboxCounts {
                        pending: u64::try_from(pending).unwrap_or(0),
                        failed: u64::try_from(failed).unwrap_or(0),
                    })
                }

                async fn purge_webhooks(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                    let done = sqlx::query(c::PURGE_WEBHOOKS)
                        .bind(c::millis(before))
                        .execute(&self.$write)
                        .await
                        .map_err(map_err)?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}
pub(crate) use link_store_impl;
