//! Collaborations: a principal and participants working on an objective in one channel.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Agent, AgentRef, Sender, webhook::CollaborationSnapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CollaborationStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    MessageCap,
    InactivityTimeout,
    ObjectiveMet,
    Cancelled,
    TokenBudget,
    /// The money budget (`cost_budget_usd`) was spent.
    CostBudget,
    /// The conversation went in circles after the manager was nudged.
    Stalled,
    Error,
}

impl EndReason {
    /// The status a collaboration ends in for this reason.
    pub fn status(self) -> CollaborationStatus {
        match self {
            Self::Cancelled => CollaborationStatus::Cancelled,
            Self::Error => CollaborationStatus::Failed,
            _ => CollaborationStatus::Completed,
        }
    }

    /// A sentence for people: why the collaboration ended.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MessageCap => "the message cap was reached",
            Self::InactivityTimeout => "nobody spoke within the inactivity window",
            Self::ObjectiveMet => "the objective was judged complete",
            Self::Cancelled => "it was stopped by a user",
            Self::TokenBudget => "the token budget was spent",
            Self::CostBudget => "the cost budget was spent",
            Self::Stalled => "the conversation stalled",
            Self::Error => "an agent failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The addressed agent speaks next, else a selector model picks, else round robin.
    Manager,
    RoundRobin,
}

/// The application a collaboration came from. flockx spells these `FLOCKX`/`ASI1`; the
/// lower-case names are accepted too and are what Skein returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[serde(alias = "FLOCKX")]
    Flockx,
    #[serde(alias = "ASI1", alias = "asi1")]
    AsiOne,
    #[serde(alias = "FETCH_BUSINESS")]
    FetchBusiness,
}

text_enum!(CollaborationStatus, EndReason, Strategy, Source);

/// A create request as the API parsed it: every field checked that can be checked without
/// the store. Whether the roster's agents exist (and are distinct agents, however named)
/// and whether webhooks are set up are the engine's to find out, as it creates.
#[derive(Debug, Clone)]
pub struct ValidCollaboration {
    pub principal: AgentRef,
    /// At least one, in speaking order, within the server's limit.
    pub participants: Vec<AgentRef>,
    pub message_cap: u32,
    pub timeout_window: u32,
    /// Trimmed, not empty.
    pub objective: String,
    pub evaluate_objective_completion: bool,
    pub source: Option<Source>,
    pub strategy: Strategy,
    /// Within the length limit; not yet checked against the outbound guard.
    pub webhook_url: Option<String>,
    pub token_budget: Option<u64>,
    /// In millionths of a dollar.
    pub cost_budget_micros: Option<u64>,
    pub podcast: bool,
    pub allow_interjections: bool,
    /// Set when the collaboration is a fork of another.
    pub fork: Option<Fork>,
    /// Set when a team started it.
    pub team_id: Option<Uuid>,
    /// The conversation with the team it belongs to (an A2A `contextId`), if any.
    pub context_id: Option<Uuid>,
}

/// Where a fork comes from, and what it copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Fork {
    pub from: Uuid,
    pub at_seq: i64,
    /// The copied events' bodies, in order; each gets the next `seq` of the new channel.
    pub events: Vec<serde_json::Value>,
}

/// The origin of a fork, as a collaboration shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForkedFrom {
    pub collaboration_id: Uuid,
    pub at_seq: i64,
}

/// A validated create request, ready to store.
#[derive(Debug, Clone)]
pub struct NewCollaboration {
    pub id: Uuid,
    pub account_id: Uuid,
    pub channel_id: Uuid,
    pub objective: String,
    pub principal: Uuid,
    /// In speaking order; never contains the principal, never repeats.
    pub participants: Vec<Uuid>,
    pub message_cap: u32,
    pub timeout_window: u32,
    pub evaluate_objective_completion: bool,
    pub source: Option<Source>,
    pub strategy: Strategy,
    pub webhook_url: Option<String>,
    pub token_budget: Option<u64>,
    pub cost_budget_micros: Option<u64>,
    pub podcast: bool,
    pub allow_interjections: bool,
    /// A fork: where it came from, and the events it starts with (the original's, up to
    /// `at_seq`, each marked as copied), stored with it as its channel's first events.
    pub fork: Option<Fork>,
    /// The team that started it, if one did.
    pub team_id: Option<Uuid>,
    pub context_id: Option<Uuid>,
    /// The API key that started it: the cap on running collaborations is per key.
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
}

impl NewCollaboration {
    /// The collaboration as the store holds it once inserted: running, nothing said yet.
    /// `roster` is its agents, principal first then participants in order; it is never
    /// empty.
    pub fn started(&self, roster: &[Agent]) -> Collaboration {
        let (principal, participants) = roster
            .split_first()
            .expect("a collaboration has a principal");
        Collaboration {
            id: self.id,
            account_id: self.account_id,
            channel_id: self.channel_id,
            objective: self.objective.clone(),
            principal: principal.sender(),
            participants: participants.iter().map(Agent::sender).collect(),
            message_cap: self.message_cap,
            timeout_window: self.timeout_window,
            evaluate_objective_completion: self.evaluate_objective_completion,
            source: self.source,
            strategy: self.strategy,
            webhook_url: self.webhook_url.clone(),
            token_budget: self.token_budget,
            cost_budget_micros: self.cost_budget_micros,
            podcast: self.podcast,
            allow_interjections: self.allow_interjections,
            forked_from: self.fork.as_ref().map(|fork| ForkedFrom {
                collaboration_id: fork.from,
                at_seq: fork.at_seq,
            }),
            team_id: self.team_id,
            context_id: self.context_id,
            synopsis: None,
            status: CollaborationStatus::Running,
            end_reason: None,
            headline: None,
            summary: None,
            outcome: None,
            error_message: None,
            advisory_message: None,
            audio_url: None,
            message_count: 0,
            tokens_used: 0,
            cost_micros: 0,
            started_at: self.created_at,
            ended_at: None,
            created_at: self.created_at,
        }
    }

    /// What a webhook tells of it once inserted (the `started` event).
    pub fn snapshot(&self) -> CollaborationSnapshot {
        CollaborationSnapshot {
            id: self.id,
            channel_id: self.channel_id,
            objective: self.objective.clone(),
            status: CollaborationStatus::Running,
            end_reason: None,
            message_count: 0,
            tokens_used: 0,
            cost_usd: 0.0,
            team_id: self.team_id,
            started_at: self.created_at,
            ended_at: None,
            headline: None,
            summary: None,
            outcome: None,
            advisory_message: None,
            error_message: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Collaboration {
    pub id: Uuid,
    pub account_id: Uuid,
    pub channel_id: Uuid,
    pub objective: String,
    pub principal: Sender,
    pub participants: Vec<Sender>,
    pub message_cap: u32,
    pub timeout_window: u32,
    pub evaluate_objective_completion: bool,
    pub source: Option<Source>,
    pub strategy: Strategy,
    pub webhook_url: Option<String>,
    pub token_budget: Option<u64>,
    /// In millionths of a dollar.
    pub cost_budget_micros: Option<u64>,
    pub podcast: bool,
    pub allow_interjections: bool,
    pub forked_from: Option<ForkedFrom>,
    /// The team it was started from, if any.
    pub team_id: Option<Uuid>,
    /// The conversation with the team it belongs to, if any.
    pub context_id: Option<Uuid>,
    /// The model-written synopsis of its older turns, once one was written.
    pub synopsis: Option<Synopsis>,
    pub status: CollaborationStatus,
    pub end_reason: Option<EndReason>,
    pub headline: Option<String>,
    pub summary: Option<String>,
    pub outcome: Option<Outcome>,
    pub error_message: Option<String>,
    pub advisory_message: Option<String>,
    pub audio_url: Option<String>,
    pub message_count: u32,
    pub tokens_used: u64,
    /// What its model calls cost, in millionths of a dollar, by the price table.
    pub cost_micros: u64,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Collaboration {
    /// Principal first, then participants: the round-robin order.
    pub fn roster(&self) -> Vec<Sender> {
        std::iter::once(self.principal.clone())
            .chain(self.participants.iter().cloned())
            .collect()
    }
}

/// What agents are told of the turns that have left their window, as a model wrote it:
/// everything up to `through_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synopsis {
    pub text: String,
    pub through_seq: i64,
}

/// What a collaboration came to, as the summarizer reads the transcript: what was decided,
/// who is to do what, and what is still open. Empty lists are an answer too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub decisions: Vec<String>,
    pub action_items: Vec<ActionItem>,
    pub open_questions: Vec<String>,
    /// Said when no model wrote it (none is configured, or it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionItem {
    pub owner: String,
    pub task: String,
}

/// How a collaboration ended, written once together with its `status` event.
#[derive(Debug, Clone)]
pub struct Ending {
    pub reason: EndReason,
    pub advisory_message: Option<String>,
    pub error_message: Option<String>,
    pub ended_at: DateTime<Utc>,
    /// The `seq` of the verdict that ended it, when the judge did.
    pub verdict_seq: Option<i64>,
    /// For an error: the member whose turn failed, when one did.
    pub failed_agent: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flockx_source_spellings_are_accepted() {
        for (given, canonical) in [
            ("FLOCKX", Source::Flockx),
            ("flockx", Source::Flockx),
            ("ASI1", Source::AsiOne),
            ("asi_one", Source::AsiOne),
            ("fetch_business", Source::FetchBusiness),
        ] {
            assert_eq!(given.parse::<Source>().unwrap(), canonical, "{given}");
        }
        assert!("myspace".parse::<Source>().is_err());
        assert_eq!(Source::AsiOne.name(), "asi_one");
    }
}
