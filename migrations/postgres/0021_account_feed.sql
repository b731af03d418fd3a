-- An account's feed: its collaborations' lasting changes (created, ended, summarized,
-- deleted), numbered 1, 2, 3 … per account with no gaps, so that `GET /events` resumes
-- exactly after the `Last-Event-ID` a client saw. The number is taken by bumping the
-- account's row, which holds its lock until the transaction commits: numbers commit in
-- order, and a reader never sees 12 before 11. Rows are kept for a day; a client further
-- behind is told to reload.
ALTER TABLE accounts ADD COLUMN feed_rev bigint NOT NULL DEFAULT 0;
CREATE TABLE account_feed (
    account_id        uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    rev               bigint NOT NULL,
    collaboration_id  uuid NOT NULL,   -- not a foreign key: a deletion is a change too
    change            text NOT NULL,
    at                timestamptz NOT NULL,
    PRIMARY KEY (account_id, rev)
);
CREATE INDEX account_feed_by_age ON account_feed (at);
