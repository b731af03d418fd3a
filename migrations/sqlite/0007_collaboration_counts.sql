-- How many collaborations each account has in each status, kept by triggers in the same
-- transaction as the change. A list's total is then read from one row per status instead
-- of counting the account's collaborations on every page (tens of microseconds per
-- thousand). Lists filtered by agent, channel or source still count.
CREATE TABLE collaboration_counts (
    account_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, status)
) WITHOUT ROWID;

INSERT INTO collaboration_counts (account_id, status, n)
    SELECT account_id, status, COUNT(*) FROM collaborations GROUP BY account_id, status;

CREATE TRIGGER collaboration_counted AFTER INSERT ON collaborations
BEGIN
    INSERT INTO collaboration_counts (account_id, status, n) VALUES (NEW.account_id, NEW.status, 1)
        ON CONFLICT (account_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER collaboration_uncounted AFTER DELETE ON collaborations
BEGIN
    UPDATE collaboration_counts SET n = n - 1
        WHERE account_id = OLD.account_id AND status = OLD.status;
END;

CREATE TRIGGER collaboration_recounted AFTER UPDATE OF status ON collaborations
    WHEN OLD.status <> NEW.status
BEGIN
    UPDATE collaboration_counts SET n = n - 1
        WHERE account_id = OLD.account_id AND status = OLD.status;
    INSERT INTO collaboration_counts (account_id, status, n) VALUES (NEW.account_id, NEW.status, 1)
        ON CONFLICT (account_id, status) DO UPDATE SET n = n + 1;
END;
