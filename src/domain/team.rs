//! Teams: a saved roster with the settings to run it, started with one call and reachable as
//! one agent (over REST, A2A, MCP and uAgents).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AgentAddress, Strategy};

/// A member of a team as the team remembers it: its id, and its name when it was last saved,
/// so that a team whose agent was deleted can still say which one it lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMember {
    pub id: Uuid,
    pub name: String,
}

/// How a team runs unless the run says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamDefaults {
    pub message_cap: u32,
    pub timeout_window: u32,
    pub strategy: Strategy,
    pub evaluate_objective_completion: bool,
    #[serde(default)]
    pub token_budget: Option<u64>,
    /// In millionths of a dollar.
    #[serde(default)]
    pub cost_budget_micros: Option<u64>,
    pub allow_interjections: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: Uuid,
    pub account_id: Uuid,
    /// The uAgents address the team answers at: derived from the server's secret key and
    /// the team's id, so the server holds its key and every process agrees on it.
    pub address: AgentAddress,
    pub name: String,
    pub description: Option<String>,
    pub principal: TeamMember,
    /// At least one, in speaking order, never the principal.
    pub participants: Vec<TeamMember>,
    pub defaults: TeamDefaults,
    /// A ChatMessage to the team's address starts a run (off unless asked for: anyone who
    /// knows the address could then spend the account's budget).
    pub answers_uagents: bool,
    /// The API key that last saved the team: runs a uAgent starts are started as it.
    pub saved_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Team {
    /// Principal first, then participants.
    pub fn members(&self) -> impl Iterator<Item = &TeamMember> {
        std::iter::once(&self.principal).chain(&self.participants)
    }
}
