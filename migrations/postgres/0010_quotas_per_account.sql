-- The running cap is per account now, counted off collaborations_by_account_status (0006)
-- under the account's advisory lock; the per-key index is no longer read.
DROP INDEX collaborations_running_by_key;
