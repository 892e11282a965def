-- Web sign-in (OpenID Connect): server-side sessions and the logins under way.
-- Times are milliseconds since the Unix epoch (UTC).

-- A signed-in browser. The cookie carries a random secret; only its SHA-256 is stored, so a copy
-- of the database does not sign anyone in. Sign-out deletes the row.
CREATE TABLE sessions (
    id_hash    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    name       TEXT,
    csrf       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- A login sent to the provider and not back yet: the PKCE verifier and nonce, found by the
-- `state` the callback brings. Taken (deleted) once.
CREATE TABLE oidc_logins (
    state      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    verifier   TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    return_to  TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX oidc_logins_expires_at_idx ON oidc_logins (expires_at);
