-- Access control: operator accounts, keys managed by the server's configuration, tickets
-- bound to the key that asked for them, who started a collaboration, and idempotency keys.

-- The operator account is the one the server's own admin key belongs to: only its admin
-- keys may create and list accounts. The first account ever created is that account.
ALTER TABLE accounts ADD COLUMN operator boolean NOT NULL DEFAULT false;
UPDATE accounts SET operator = true
 WHERE id = (SELECT id FROM accounts ORDER BY created_at LIMIT 1);

-- A key that comes from SKEIN_ADMIN_KEY or admin.key: rotated there, not revoked over the API.
ALTER TABLE api_keys ADD COLUMN from_config boolean NOT NULL DEFAULT false;
UPDATE api_keys SET from_config = true
 WHERE name = 'admin' AND account_id IN (SELECT id FROM accounts WHERE operator);
CREATE INDEX api_keys_by_account ON api_keys (account_id, created_at DESC);

-- Tickets live 60 seconds, so the old ones can go: every ticket now names its key, and a
-- revoked key's tickets stop working with it.
DROP TABLE websocket_tickets;
CREATE TABLE websocket_tickets (
    ticket_hash  text PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key_id       uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    channel_id   uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);

-- The key that started a collaboration: the cap on running collaborations is per key.
ALTER TABLE collaborations ADD COLUMN created_by_key uuid;
CREATE INDEX collaborations_running_by_key ON collaborations (created_by_key, status);

-- One row per (account, Idempotency-Key). `status` is NULL while the first request is in
-- flight. The stored response is encrypted with a key derived from the caller's API key
-- and the idempotency key, neither of which is stored: a response that carries a new secret
-- (a created API key) is then not readable from the database.
CREATE TABLE idempotency_keys (
    account_id       uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    request_hash     text NOT NULL,
    status           bigint,
    response         bytea,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
