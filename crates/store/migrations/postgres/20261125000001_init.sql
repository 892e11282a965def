-- Call links, blocks and call logs. Times are milliseconds since the Unix epoch (UTC).
-- Identifier columns use the "C" collation so that they sort by bytes, as in SQLite and in Rust.

CREATE TABLE links (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind          TEXT             NOT NULL,
    creator       TEXT COLLATE "C" NOT NULL,
    title         TEXT,
    scheduled_at  BIGINT,
    created_at    BIGINT           NOT NULL,
    last_used_at  BIGINT           NOT NULL,
    expires_at    BIGINT           NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT
);

CREATE INDEX links_expires_at_idx ON links (expires_at);

CREATE TABLE blocks (
    blocker    TEXT COLLATE "C" NOT NULL,
    blocked    TEXT COLLATE "C" NOT NULL,
    created_at BIGINT           NOT NULL,
    PRIMARY KEY (blocker, blocked)
);

CREATE TABLE call_log (
    user_id          TEXT COLLATE "C" NOT NULL,
    link_id          TEXT COLLATE "C" NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    role             TEXT             NOT NULL,
    last_joined_at   BIGINT,
    last_activity_at BIGINT           NOT NULL,
    PRIMARY KEY (user_id, link_id)
);

CREATE INDEX call_log_user_activity_idx ON call_log (user_id, last_activity_at DESC);
-- Lets the cascade from a purged link find its call-log rows without a full scan.
CREATE INDEX call_log_link_idx ON call_log (link_id);
