-- SQLite keeps per-account counts of collaborations by status here (see its 0007), so a
-- list's total is not counted on every page. PostgreSQL does not: a counter row per account
-- would put every insert and every status change for that account, from every process,
-- in line for one row lock. Lists count instead, off the (account_id, status, ...) index.
-- This migration is empty so that both backends keep the same history.
SELECT 1;
