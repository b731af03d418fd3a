-- Where uAgents that registered with this server's Almanac routes (started with
-- agentverse=<skein>) said they are, until their registration lapses: an agent can then be
-- added by its address alone.
CREATE TABLE uagent_registrations (
    address     TEXT PRIMARY KEY,
    endpoint    TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX uagent_registrations_by_expiry ON uagent_registrations (expires_at);
