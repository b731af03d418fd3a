-- Skein's first schema: tenants, their keys, agents, collaborations and the channel log.
-- Every table that holds tenant data carries account_id so that every query can be scoped.
-- Timestamps are RFC 3339 UTC text; ids are UUID text.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Keys are stored as a SHA-256 hash; the secret itself is shown once and never stored.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_prefix    TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,            -- space separated: read write admin
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    kind         TEXT NOT NULL,
    spec         TEXT NOT NULL,             -- JSON: the kind-specific settings
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (account_id, address)
);

CREATE TABLE collaborations (
    id                             TEXT PRIMARY KEY,
    account_id                     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id                     TEXT NOT NULL UNIQUE,
    objective                      TEXT NOT NULL,
    principal_agent_id             TEXT NOT NULL,
    message_cap                    INTEGER NOT NULL,
    timeout_window                 INTEGER NOT NULL,
    evaluate_objective_completion  INTEGER NOT NULL,
    source                         TEXT,
    strategy                       TEXT NOT NULL,
    webhook_url                    TEXT,
    token_budget                   INTEGER,
    podcast                        INTEGER NOT NULL DEFAULT 0,
    allow_interjections            INTEGER NOT NULL DEFAULT 1,
    status                         TEXT NOT NULL,
    end_reason                     TEXT,
    headline                       TEXT,
    summary                        TEXT,
    error_message                  TEXT,
    advisory_message               TEXT,
    audio_url                      TEXT,
    message_count                  INTEGER NOT NULL DEFAULT 0,
    tokens_used                    INTEGER NOT NULL DEFAULT 0,
    started_at                     TEXT NOT NULL,
    ended_at                       TEXT,
    created_at                     TEXT NOT NULL
);
CREATE INDEX collaborations_by_account ON collaborations (account_id, created_at DESC);
CREATE INDEX collaborations_by_status ON collaborations (status);

-- The roster, in speaking order. Agents referenced here keep their rows: deleting an agent
-- that a collaboration used is refused (409) rather than rewriting history.
CREATE TABLE collaboration_participants (
    collaboration_id  TEXT NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL REFERENCES agents(id),
    position          INTEGER NOT NULL,
    PRIMARY KEY (collaboration_id, position)
);
CREATE INDEX participants_by_agent ON collaboration_participants (agent_id);

-- last_seq is the channel's counter: bumped in the same transaction that inserts the event,
-- so seq values are dense and a reader never sees N+1 committed before N.
CREATE TABLE channels (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    collaboration_id  TEXT NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    last_seq          INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL
);

-- Each stored event is kept as the exact JSON frame the stream sends, so history and live
-- delivery can never disagree.
CREATE TABLE events (
    channel_id  TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    frame       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (channel_id, seq)
);

-- Single-use WebSocket tickets for browsers, stored hashed.
CREATE TABLE websocket_tickets (
    ticket_hash  TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id   TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);
