-- Scheduled calls (planned length, reminders), the lobby flag, and the webhook outbox.
-- Times and durations are milliseconds (times since the Unix epoch, UTC).

ALTER TABLE links ADD COLUMN duration_ms INTEGER;
-- 1: joiners wait in a lobby until the creator admits them.
ALTER TABLE links ADD COLUMN require_approval INTEGER NOT NULL DEFAULT 0;
-- 1 once `link.expired` was put in the outbox (or would have been, with no webhook configured).
ALTER TABLE links ADD COLUMN expiry_announced INTEGER NOT NULL DEFAULT 0;

CREATE INDEX links_expiry_announced_idx ON links (expiry_announced, expires_at);

-- A reminder still to send for a scheduled link, `offset_ms` before its start. Firing one deletes
-- its row and writes its webhook messages in the same transaction: once per cluster.
CREATE TABLE reminders (
    link_id   TEXT    NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    offset_ms INTEGER NOT NULL,
    fire_at   INTEGER NOT NULL,
    PRIMARY KEY (link_id, offset_ms)
);

CREATE INDEX reminders_fire_at_idx ON reminders (fire_at);

-- One webhook message for one endpoint. Delivered rows are deleted; a row whose retries ran out
-- stays as `failed` for the operator (purged after a week).
CREATE TABLE webhook_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    failed_at       INTEGER
);

CREATE UNIQUE INDEX webhook_outbox_msg_idx ON webhook_outbox (msg_id, endpoint);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (failed_at, next_attempt_at);
