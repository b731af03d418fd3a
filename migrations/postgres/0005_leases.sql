-- Leases: which process runs a collaboration. A collaboration needs a runner while it is
-- running and, once ended, until its summary is stored. The holder renews `lease_expires_at`
-- well before it passes; a process that stops renewing loses the lease to whoever claims it
-- next. `lease_epoch` grows with every claim: the runner's writes carry owner and epoch, and
-- the database refuses them once either has changed (fencing). Expiry is judged by the
-- database's clock, so the processes' clocks need not agree.
ALTER TABLE collaborations ADD COLUMN lease_owner uuid;
ALTER TABLE collaborations ADD COLUMN lease_expires_at timestamptz;
ALTER TABLE collaborations ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;

-- What the claim scan reads: only rows that still need a runner.
CREATE INDEX collaborations_needing_runner ON collaborations (lease_expires_at)
    WHERE status = 'running' OR summary IS NULL;
