-- SQLite keeps each API key's running count here (see its 0008) and reads one row for the
-- cap. PostgreSQL keeps counting, off the (created_by_key, status) index, under the key's
-- advisory lock: a counter row would add a row lock to every status change.
-- This migration is empty so that both backends keep the same history.
SELECT 1;
