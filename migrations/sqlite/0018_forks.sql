-- A fork's origin: the collaboration it was forked from and the last seq it copied. Not a
-- foreign key: the original may be deleted, and the fork keeps its copied history.
ALTER TABLE collaborations ADD COLUMN forked_from TEXT;
ALTER TABLE collaborations ADD COLUMN forked_at_seq INTEGER;
