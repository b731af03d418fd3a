-- What a collaboration came to, as its summarizer read it (decisions, action items, open
-- questions), as JSON; written with the summary.
ALTER TABLE collaborations ADD COLUMN outcome text;
