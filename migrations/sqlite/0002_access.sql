-- Access control: operator accounts, keys managed by the server's configuration, tickets
-- bound to the key that asked for them, who started a collaboration, and idempotency keys.

-- The operator account is the one the server's own admin key belongs to: only its admin
-- keys may create and list accounts. The first account ever created is that account.
ALTER TABLE accounts ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET operator = 1
 WHERE id = (SELECT id FROM accounts ORDER BY created_at LIMIT 1);

-- A key that comes from SKEIN_ADMIN_KEY or admin.key: rotated there, not revoked over the API.
ALTER TABLE api_keys ADD COLUMN from_config INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET from_config = 1
 WHERE name = 'admin' AND account_id IN (SELECT id FROM accounts WHERE operator = 1);
CREATE INDEX api_keys_by_account ON api_keys (account_id, created_at DESC);

-- Tickets live 60 seconds, so the old ones can go: every ticket now names its key, and a
-- revoked key's tickets stop working with it.
DROP TABLE websocket_tickets;
CREATE TABLE websocket_tickets (
    ticket_hash  TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key_id       TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    channel_id   TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);

-- The key that started a collaboration: the cap on running collaborations is per key.
ALTER TABLE collaborations ADD COLUMN created_by_key TEXT;
CREATE INDEX collaborations_running_by_key ON collaborations (created_by_key, status);

-- One row per (account, Idempotency-Key). `status` is NULL while the first request is in
-- flight. The stored response is encrypted with a key derived from the caller's API key
-- and the idempotency key, neither of which is stored: a response that carries a new secret
-- (a created API key) is then not readable from the database.
CREATE TABLE idempotency_keys (
    account_id       TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           INTEGER,
    response         BLOB,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
