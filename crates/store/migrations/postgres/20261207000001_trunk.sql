-- The trunk between nodes (#16): where the other nodes dial this node's trunk (host:port), empty
-- when it runs none. Written at registration with the rest of the node's advert.

ALTER TABLE cluster_nodes ADD COLUMN trunk_addr TEXT NOT NULL DEFAULT '';
