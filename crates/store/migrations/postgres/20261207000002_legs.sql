-- Legs of calls that span nodes (#16): a node other than the call's home (cluster_rooms) that
-- serves some of the call's participants (a join from its region), under the epoch it was
-- registered with. A leg row of a node whose lease ended or which registered again under another
-- epoch is dead: its participants rejoin, and garbage collection drops it.

CREATE TABLE cluster_legs (
    link_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    -- Participants connected there, as of its last reconciliation.
    participants BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (link_id, node_id)
);
CREATE INDEX cluster_legs_node_idx ON cluster_legs (node_id, epoch);
