-- An account's feed: its collaborations' lasting changes (created, ended, summarized,
-- deleted), numbered 1, 2, 3 … per account with no gaps, so that `GET /events` resumes
-- exactly after the `Last-Event-ID` a client saw. Rows are kept for a day; a client further
-- behind is told to reload.
ALTER TABLE accounts ADD COLUMN feed_rev INTEGER NOT NULL DEFAULT 0;
CREATE TABLE account_feed (
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    rev               INTEGER NOT NULL,
    collaboration_id  TEXT NOT NULL,   -- not a foreign key: a deletion is a change too
    change            TEXT NOT NULL,
    at                TEXT NOT NULL,
    PRIMARY KEY (account_id, rev)
);
CREATE INDEX account_feed_by_age ON account_feed (at);
