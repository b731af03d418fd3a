-- Each message event keeps its id in a column of its own, unique in its channel, so that a
-- write retried after an ambiguous failure (the commit may have happened) finds the message
-- it stored instead of storing it twice. Events written before this have none.
ALTER TABLE events ADD COLUMN message_id TEXT;
CREATE UNIQUE INDEX events_message_once ON events (channel_id, message_id);
