-- Collaborations are listed newest first with the id breaking ties: with the id in the
-- index, a page is read straight off it instead of sorting every row of the account.
DROP INDEX collaborations_by_account;
CREATE INDEX collaborations_by_account ON collaborations (account_id, created_at DESC, id);
