-- Leases: which process runs a collaboration. A collaboration needs a runner while it is
-- running and, once ended, until its summary is stored. The holder renews `lease_expires_at`
-- well before it passes; a process that stops renewing loses the lease to whoever claims it
-- next. `lease_epoch` grows with every claim: the runner's writes carry owner and epoch, and
-- the database refuses them once either has changed (fencing).
ALTER TABLE collaborations ADD COLUMN lease_owner TEXT;
ALTER TABLE collaborations ADD COLUMN lease_expires_at TEXT;
ALTER TABLE collaborations ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;

-- What the claim scan reads: only rows that still need a runner.
CREATE INDEX collaborations_needing_runner ON collaborations (lease_expires_at)
    WHERE status = 'running' OR summary IS NULL;
