-- Skein's first schema: tenants, their keys, agents, collaborations and the channel log.
-- Every table that holds tenant data carries account_id so that every query can be scoped.
-- Counters are bigint, as SQLite's INTEGER, so both backends read them as the same type.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Keys are stored as a SHA-256 hash; the secret itself is shown once and never stored.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          text NOT NULL,
    key_prefix    text NOT NULL,
    key_hash      text NOT NULL UNIQUE,
    scopes        text NOT NULL,            -- space separated: read write admin
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE TABLE agents (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address      text NOT NULL,
    name         text NOT NULL,
    description  text,
    kind         text NOT NULL,
    spec         text NOT NULL,             -- JSON: the kind-specific settings, as serde wrote them
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (account_id, address)
);

CREATE TABLE collaborations (
    id                             uuid PRIMARY KEY,
    account_id                     uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id                     uuid NOT NULL UNIQUE,
    objective                      text NOT NULL,
    principal_agent_id             uuid NOT NULL,
    message_cap                    bigint NOT NULL,
    timeout_window                 bigint NOT NULL,
    evaluate_objective_completion  boolean NOT NULL,
    source                         text,
    strategy                       text NOT NULL,
    webhook_url                    text,
    token_budget                   bigint,
    podcast                        boolean NOT NULL DEFAULT false,
    allow_interjections            boolean NOT NULL DEFAULT true,
    status                         text NOT NULL,
    end_reason                     text,
    headline                       text,
    summary                        text,
    error_message                  text,
    advisory_message               text,
    audio_url                      text,
    message_count                  bigint NOT NULL DEFAULT 0,
    tokens_used                    bigint NOT NULL DEFAULT 0,
    started_at                     timestamptz NOT NULL,
    ended_at                       timestamptz,
    created_at                     timestamptz NOT NULL
);
CREATE INDEX collaborations_by_account ON collaborations (account_id, created_at DESC);
CREATE INDEX collaborations_by_status ON collaborations (status);

-- The roster, in speaking order. Agents referenced here keep their rows: deleting an agent
-- that a collaboration used is refused (409) rather than rewriting history.
CREATE TABLE collaboration_participants (
    collaboration_id  uuid NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    agent_id          uuid NOT NULL REFERENCES agents(id),
    position          bigint NOT NULL,
    PRIMARY KEY (collaboration_id, position)
);
CREATE INDEX participants_by_agent ON collaboration_participants (agent_id);

-- last_seq is the channel's counter: bumped in the same transaction that inserts the event,
-- so the row lock serializes writers, seq values are dense and a reader never sees N+1
-- committed before N.
CREATE TABLE channels (
    id                uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    collaboration_id  uuid NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    last_seq          bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL
);

-- Each stored event is kept as the exact JSON frame the stream sends, so history and live
-- delivery can never disagree: text, not jsonb, which would reorder its keys.
CREATE TABLE events (
    channel_id  uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    frame       text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (channel_id, seq)
);

-- Single-use WebSocket tickets for browsers, stored hashed.
CREATE TABLE websocket_tickets (
    ticket_hash  text PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id   uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
