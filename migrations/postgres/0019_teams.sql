-- Teams: a saved roster with defaults, run as one agent. The roster is kept as JSON
-- (`[{"id", "name"}…]`, principal first) rather than by foreign key: an agent can be deleted
-- while a team names it, and the team then refuses to run, naming the member it lost.
CREATE TABLE teams (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address      text NOT NULL,
    name         text NOT NULL,
    description  text,
    members      text NOT NULL,
    defaults     text NOT NULL,             -- JSON: the run settings, as serde wrote them
    -- Whether a ChatMessage to the team's address starts a run, and the key such runs are
    -- started as (the one that last saved the team).
    answers_uagents  boolean NOT NULL DEFAULT false,
    saved_by_key     uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (address)
);
CREATE INDEX teams_by_account ON teams (account_id, created_at DESC, id);

-- The team a collaboration was started from. Not a foreign key: a team may be deleted and
-- its collaborations kept.
ALTER TABLE collaborations ADD COLUMN team_id uuid;
-- The conversation a team's run belongs to (an A2A `contextId`, a uAgents session): runs
-- in one conversation are listed together, and a new one starts from the last one's answer.
ALTER TABLE collaborations ADD COLUMN context_id uuid;
CREATE INDEX collaborations_by_team ON collaborations (account_id, team_id, created_at DESC, id)
    WHERE team_id IS NOT NULL;
