-- The model-written synopsis of a collaboration's older turns, and the seq of the last
-- message it covers: kept so that a runner resuming it goes on from it.
ALTER TABLE collaborations ADD COLUMN synopsis TEXT;
ALTER TABLE collaborations ADD COLUMN synopsis_seq INTEGER;
