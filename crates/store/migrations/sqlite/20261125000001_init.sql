-- Call links, blocks and call logs. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE links (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL,
    creator       TEXT    NOT NULL,
    title         TEXT,
    scheduled_at  INTEGER,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT
);

CREATE INDEX links_expires_at_idx ON links (expires_at);

CREATE TABLE blocks (
    blocker    TEXT    NOT NULL,
    blocked    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker, blocked)
);

CREATE TABLE call_log (
    user_id          TEXT    NOT NULL,
    link_id          TEXT    NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    role             TEXT    NOT NULL,
    last_joined_at   INTEGER,
    last_activity_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, link_id)
);

CREATE INDEX call_log_user_activity_idx ON call_log (user_id, last_activity_at DESC);
-- Lets the cascade from a purged link find its call-log rows without a full scan.
CREATE INDEX call_log_link_idx ON call_log (link_id);
