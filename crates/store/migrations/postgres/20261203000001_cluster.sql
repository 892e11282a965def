-- The cluster: node registry (leases) and room placement. PostgreSQL only: SQLite is the
-- single-node store and has no cluster. Times are milliseconds since the Unix epoch, taken from
-- the database's clock (every node compares leases against the same clock).

CREATE TABLE cluster_nodes (
    node_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- Bumped each time the node registers again after losing its lease (or restarting):
    -- placements made under an older epoch are stale.
    epoch         BIGINT           NOT NULL,
    region        TEXT             NOT NULL,
    http_url      TEXT             NOT NULL,
    media_addrs   TEXT             NOT NULL,
    draining      BOOLEAN          NOT NULL DEFAULT FALSE,
    participants  BIGINT           NOT NULL DEFAULT 0,
    rooms         BIGINT           NOT NULL DEFAULT 0,
    busy_ratio    DOUBLE PRECISION NOT NULL DEFAULT 0,
    registered_at BIGINT           NOT NULL,
    heartbeat_at  BIGINT           NOT NULL,
    lease_until   BIGINT           NOT NULL
);

-- One home per live call: the node (and its epoch) that hosts the room of a link.
CREATE TABLE cluster_rooms (
    link_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    node_id      TEXT COLLATE "C" NOT NULL,
    epoch        BIGINT           NOT NULL,
    participants BIGINT           NOT NULL DEFAULT 0,
    placed_at    BIGINT           NOT NULL,
    updated_at   BIGINT           NOT NULL
);

CREATE INDEX cluster_rooms_node_idx ON cluster_rooms (node_id, epoch);
