-- Webhooks. Each account may name a default URL for collaborations that name none, and has
-- one signing secret (Standard Webhooks), kept here because Skein signs with it and shown to
-- the user only when it is made.
CREATE TABLE webhook_settings (
    account_id   uuid PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    default_url  text,
    secret       text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- The outbox: one row per event to deliver, written in the same transaction as the change
-- that makes the event happen, so no event can be lost between the two. The id is the
-- webhook-id, the same on every attempt. There is no foreign key to collaborations: the
-- record of what was sent outlives a deleted collaboration.
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY,
    account_id        uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    collaboration_id  uuid NOT NULL,
    event             text NOT NULL,            -- collaboration.started | .ended | .summary_ready
    url               text NOT NULL,
    payload           text NOT NULL,            -- the exact body sent (and signed), on every attempt
    status            text NOT NULL,            -- pending | delivered | failed
    attempts          bigint NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,     -- also the claim of an attempt in progress
    last_attempt_at   timestamptz,
    last_status       bigint,                   -- the receiver's HTTP status, if it answered
    last_error        text,
    created_at        timestamptz NOT NULL,
    delivered_at      timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_account ON webhook_deliveries (account_id, created_at DESC);
