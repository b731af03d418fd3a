-- Where a collaboration stands in its account's list: the feed revision of its `created`
-- change (0021), so newer is higher, per account, in the order creates were stored. The
-- rows already here are numbered 0, -1, -2 … newest first, below every revision to come.
ALTER TABLE collaborations ADD COLUMN ordinal bigint NOT NULL DEFAULT 0;
UPDATE collaborations SET ordinal = 1 - ranked.n
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id) AS n
          FROM collaborations) AS ranked
    WHERE collaborations.id = ranked.id;

-- Lists read newest first off these, as 0006's did by creation time. A page deep in a list
-- still steps over the rows before it, but in the index alone (see `list_collaborations`):
-- PostgreSQL keeps no per-account tallies (see 0007), as SQLite does.
DROP INDEX collaborations_by_account;
DROP INDEX collaborations_by_account_status;
CREATE INDEX collaborations_by_account ON collaborations (account_id, ordinal DESC, id);
CREATE INDEX collaborations_by_account_status
    ON collaborations (account_id, status, ordinal DESC, id);

-- A process renews its leases every few seconds: off this index, rather than a walk over
-- every collaboration the database holds. Only running (or unsummarized) ones hold one.
CREATE INDEX collaborations_by_lease_owner ON collaborations (lease_owner)
    WHERE lease_owner IS NOT NULL;
