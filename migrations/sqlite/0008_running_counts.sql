-- How many collaborations each API key has running, kept by triggers in the same
-- transaction as the change. A create checks the key's cap by reading one row, where it
-- used to count the key's running collaborations off an index: a step per running
-- collaboration, in every create, inside the write lock.
CREATE TABLE running_counts (
    created_by_key TEXT PRIMARY KEY,
    n              INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO running_counts (created_by_key, n)
    SELECT created_by_key, COUNT(*) FROM collaborations
    WHERE status = 'running' AND created_by_key IS NOT NULL GROUP BY created_by_key;

CREATE TRIGGER running_counted AFTER INSERT ON collaborations
    WHEN NEW.status = 'running' AND NEW.created_by_key IS NOT NULL
BEGIN
    INSERT INTO running_counts (created_by_key, n) VALUES (NEW.created_by_key, 1)
        ON CONFLICT (created_by_key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER running_uncounted AFTER DELETE ON collaborations
    WHEN OLD.status = 'running' AND OLD.created_by_key IS NOT NULL
BEGIN
    UPDATE running_counts SET n = n - 1 WHERE created_by_key = OLD.created_by_key;
END;

CREATE TRIGGER running_recounted AFTER UPDATE OF status ON collaborations
    WHEN OLD.status <> NEW.status AND OLD.created_by_key IS NOT NULL
        AND 'running' IN (OLD.status, NEW.status)
BEGIN
    INSERT INTO running_counts (created_by_key, n)
        VALUES (NEW.created_by_key, CASE NEW.status WHEN 'running' THEN 1 ELSE 0 END)
        ON CONFLICT (created_by_key)
        DO UPDATE SET n = n + CASE NEW.status WHEN 'running' THEN 1 ELSE -1 END;
END;

-- The running counts above and the status counts of 0007 answer what these indexes were
-- for (the cap, and the metrics' count by status). Each was one more b-tree to write on
-- every create and every status change.
DROP INDEX collaborations_running_by_key;
DROP INDEX collaborations_by_status;
