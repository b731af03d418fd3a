-- Teams: a saved roster with defaults, run as one agent. The roster is kept as JSON
-- (`[{"id", "name"}…]`, principal first) rather than by foreign key: an agent can be deleted
-- while a team names it, and the team then refuses to run, naming the member it lost.
CREATE TABLE teams (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    members      TEXT NOT NULL,
    defaults     TEXT NOT NULL,             -- JSON: the run settings, as serde wrote them
    -- Whether a ChatMessage to the team's address starts a run, and the key such runs are
    -- started as (the one that last saved the team).
    answers_uagents  INTEGER NOT NULL DEFAULT 0,
    saved_by_key     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (address)
);
CREATE INDEX teams_by_account ON teams (account_id, created_at DESC, id);

-- The team a collaboration was started from. Not a foreign key: a team may be deleted and
-- its collaborations kept.
ALTER TABLE collaborations ADD COLUMN team_id TEXT;
-- The conversation a team's run belongs to (an A2A `contextId`, a uAgents session): runs
-- in one conversation are listed together, and a new one starts from the last one's answer.
ALTER TABLE collaborations ADD COLUMN context_id TEXT;
CREATE INDEX collaborations_by_team ON collaborations (account_id, team_id, created_at DESC, id)
    WHERE team_id IS NOT NULL;
