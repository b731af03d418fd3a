-- The running cap is per account now, read off collaboration_counts (0007); the per-key
-- running counts of 0008 are no longer read.
DROP TRIGGER running_counted;
DROP TRIGGER running_uncounted;
DROP TRIGGER running_recounted;
DROP TABLE running_counts;
