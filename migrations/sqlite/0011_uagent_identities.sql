-- The addresses Skein speaks to uAgents as, one per collaboration that has a uAgent in it, so
-- that an agent's reply (addressed to one of them) finds its collaboration on any server.
-- The keys themselves are derived from the server's secret key and never stored.
CREATE TABLE uagent_identities (
    address           TEXT PRIMARY KEY,
    collaboration_id  TEXT NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE
);
CREATE INDEX uagent_identities_by_collaboration ON uagent_identities (collaboration_id);
