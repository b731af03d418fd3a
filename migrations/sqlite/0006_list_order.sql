-- Collaborations are listed newest first with the id breaking ties, often filtered by
-- status. With the id (and the status) in the index, a page is read straight off it instead
-- of visiting, or sorting, every row of the account.
DROP INDEX collaborations_by_account;
CREATE INDEX collaborations_by_account ON collaborations (account_id, created_at DESC, id);
CREATE INDEX collaborations_by_account_status
    ON collaborations (account_id, status, created_at DESC, id);
