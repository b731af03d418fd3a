-- Where a collaboration stands in its account's list: the feed revision of its `created`
-- change (0021), so newer is higher, per account, in the order creates were stored. The
-- rows already here are numbered 0, -1, -2 … newest first, below every revision to come.
ALTER TABLE collaborations ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
UPDATE collaborations SET ordinal = 1 - ranked.n
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id) AS n
          FROM collaborations) AS ranked
    WHERE collaborations.id = ranked.id;

-- Lists read newest first off these, as 0006's did by creation time.
DROP INDEX collaborations_by_account;
DROP INDEX collaborations_by_account_status;
CREATE INDEX collaborations_by_account ON collaborations (account_id, ordinal DESC, id);
CREATE INDEX collaborations_by_account_status
    ON collaborations (account_id, status, ordinal DESC, id);

-- How many collaborations of each status an account has in each run of 4096 ordinals,
-- kept by triggers in the same transaction as the change. A page deep in a list finds the
-- run it starts in by adding these up, newest first, and skips at most one run's rows,
-- where an OFFSET would step over every row before the page.
CREATE TABLE collaboration_tallies (
    account_id TEXT NOT NULL,
    bucket     INTEGER NOT NULL,   -- ordinal >> 12
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, bucket, status)
) WITHOUT ROWID;

INSERT INTO collaboration_tallies (account_id, bucket, status, n)
    SELECT account_id, ordinal >> 12, status, COUNT(*) FROM collaborations
    GROUP BY account_id, ordinal >> 12, status;

CREATE TRIGGER tallied AFTER INSERT ON collaborations
BEGIN
    INSERT INTO collaboration_tallies (account_id, bucket, status, n)
        VALUES (NEW.account_id, NEW.ordinal >> 12, NEW.status, 1)
        ON CONFLICT (account_id, bucket, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER untallied AFTER DELETE ON collaborations
BEGIN
    UPDATE collaboration_tallies SET n = n - 1
        WHERE account_id = OLD.account_id AND bucket = OLD.ordinal >> 12 AND status = OLD.status;
END;

CREATE TRIGGER retallied AFTER UPDATE OF status ON collaborations
    WHEN OLD.status <> NEW.status
BEGIN
    UPDATE collaboration_tallies SET n = n - 1
        WHERE account_id = OLD.account_id AND bucket = OLD.ordinal >> 12 AND status = OLD.status;
    INSERT INTO collaboration_tallies (account_id, bucket, status, n)
        VALUES (NEW.account_id, NEW.ordinal >> 12, NEW.status, 1)
        ON CONFLICT (account_id, bucket, status) DO UPDATE SET n = n + 1;
END;

-- A process renews its leases every few seconds: off this index, rather than a walk over
-- every collaboration the database holds. Only running (or unsummarized) ones hold one.
CREATE INDEX collaborations_by_lease_owner ON collaborations (lease_owner)
    WHERE lease_owner IS NOT NULL;
