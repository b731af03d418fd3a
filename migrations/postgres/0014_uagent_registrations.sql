-- Where uAgents that registered with this server's Almanac routes (started with
-- agentverse=<skein>) said they are, until their registration lapses: an agent can then be
-- added by its address alone.
CREATE TABLE uagent_registrations (
    address     text PRIMARY KEY,
    endpoint    text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX uagent_registrations_by_expiry ON uagent_registrations (expires_at);
