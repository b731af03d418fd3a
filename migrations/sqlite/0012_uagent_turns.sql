-- The chat messages taken from uAgents lately, by msg_id, so that a replayed envelope is
-- taken once whichever server it reaches; forgotten long after their envelopes expire.
CREATE TABLE uagent_heard (
    msg_id    TEXT PRIMARY KEY,
    heard_at  TEXT NOT NULL
);
CREATE INDEX uagent_heard_by_age ON uagent_heard (heard_at);

-- What each collaboration last asked each of its uAgents (the seq of its last message then), so a
-- runner that resumes after a restart waits for the reply already on its way instead of
-- asking again; and the replies that arrived while no runner held the collaboration, kept
-- for the one that resumes it.
CREATE TABLE uagent_asks (
    collaboration_id  TEXT NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL,
    after_seq         INTEGER NOT NULL,
    asked_at          TEXT NOT NULL,
    PRIMARY KEY (collaboration_id, agent_id)
);
CREATE TABLE uagent_replies (
    msg_id            TEXT PRIMARY KEY,
    collaboration_id  TEXT NOT NULL REFERENCES collaborations(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL,
    content           TEXT NOT NULL,
    received_at       TEXT NOT NULL
);
CREATE INDEX uagent_replies_by_agent ON uagent_replies (collaboration_id, agent_id, received_at);
