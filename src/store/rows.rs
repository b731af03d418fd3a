//! Rows as both backends read them, and their conversions into domain types.
//!
//! The backends differ in how a UUID column decodes (hyphenated text in SQLite, `uuid` in
//! PostgreSQL), so every row is generic over its id type `Id`; everything else decodes to the
//! same Rust types on both, which is why the PostgreSQL schema uses `bigint` where SQLite has
//! `INTEGER`. Whatever a row means is then written once, here.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::{ChannelInfo, Credential, IdempotencyClaim, StoreError, StoreResult};
use crate::domain::{
    Account, Agent, AgentAddress, AgentKind, AgentSpec, ApiKey, Collaboration, Sender, Team,
    TeamMember,
    webhook::{
        AttemptOutcome, CollaborationSnapshot, Delivery, DeliveryStatus, DueDelivery, NextStep,
        WebhookSettings,
    },
};
use crate::secrets::{Secret, Vault};

pub(super) fn parse<T: FromStr<Err = String>>(text: &str) -> StoreResult<T> {
    text.parse().map_err(StoreError::Corrupt)
}

/// A stored secret, opened (see [`crate::secrets`]).
pub(super) fn open(vault: &Vault, stored: &str) -> StoreResult<Secret> {
    vault
        .open(stored)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn spec_json(spec: &AgentSpec) -> String {
    serde_json::to_string(spec).expect("agent specs serialize")
}

/// What an attempt's outcome writes: the delivery's status, when it is next due (or, once
/// settled, when it was), and when it was delivered.
pub(super) fn attempt_columns(
    outcome: &AttemptOutcome,
) -> (DeliveryStatus, DateTime<Utc>, Option<DateTime<Utc>>) {
    match outcome.next {
        NextStep::Delivered => (DeliveryStatus::Delivered, outcome.at, Some(outcome.at)),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending, at, None),
        NextStep::GiveUp => (DeliveryStatus::Failed, outcome.at, None),
    }
}

#[derive(FromRow)]
pub(super) struct AccountRow<Id> {
    id: Id,
    name: String,
    operator: bool,
    created_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> AccountRow<Id> {
    pub(super) fn into_domain(self) -> Account {
        Account {
            id: self.id.into(),
            name: self.name,
            operator: self.operator,
            created_at: self.created_at,
        }
    }
}

/// A key joined with its account's `operator` flag.
#[derive(FromRow)]
pub(super) struct KeyRow<Id> {
    id: Id,
    account_id: Id,
    name: String,
    key_prefix: String,
    scopes: String,
    from_config: bool,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    operator: bool,
}

impl<Id: Into<Uuid>> KeyRow<Id> {
    pub(super) fn into_credential(self) -> StoreResult<Credential> {
        let scopes = self
            .scopes
            .split_whitespace()
            .map(parse)
            .collect::<StoreResult<_>>()?;
        Ok(Credential {
            key: ApiKey {
                id: self.id.into(),
                account_id: self.account_id.into(),
                name: self.name,
                prefix: self.key_prefix,
                scopes,
                from_config: self.from_config,
                created_at: self.created_at,
                last_used_at: self.last_used_at,
                revoked_at: self.revoked_at,
            },
            operator: self.operator,
        })
    }

    pub(super) fn into_key(self) -> StoreResult<ApiKey> {
        self.into_credential().map(|c| c.key)
    }
}

/// An `Idempotency-Key` as stored.
#[derive(FromRow)]
pub(super) struct IdempotencyRow {
    request_hash: String,
    status: Option<i64>,
    response: Option<Vec<u8>>,
}

impl IdempotencyRow {
    /// What a new request with `request_hash` makes of this claim, which has not expired.
    pub(super) fn claim(self, request_hash: &str) -> StoreResult<IdempotencyClaim> {
        let Some(status) = self.status else {
            return Ok(IdempotencyClaim::InFlight);
        };
        if self.request_hash != request_hash {
            return Ok(IdempotencyClaim::Mismatch);
        }
        Ok(IdempotencyClaim::Completed {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("idempotent status {status}")))?,
            response: self.response.unwrap_or_default(),
        })
    }
}

#[derive(FromRow)]
pub(super) struct AgentRow<Id> {
    id: Id,
    account_id: Id,
    address: String,
    name: String,
    description: Option<String>,
    spec: String,
    secret: Option<String>,
    tool_credentials: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> AgentRow<Id> {
    pub(super) fn into_domain(self, vault: &Vault) -> StoreResult<Agent> {
        Ok(Agent {
            id: self.id.into(),
            account_id: self.account_id.into(),
            address: AgentAddress::parse(&self.address)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            name: self.name,
            description: self.description,
            spec: serde_json::from_str(&self.spec)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            secret: self.secret.as_deref().map(|s| open(vault, s)).transpose()?,
            tool_credentials: self
                .tool_credentials
                .as_deref()
                .map(|s| open(vault, s))
                .transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
pub(super) struct TeamRow<Id> {
    id: Id,
    account_id: Id,
    address: String,
    name: String,
    description: Option<String>,
    members: String,
    defaults: String,
    answers_uagents: bool,
    saved_by_key: Id,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> TeamRow<Id> {
    pub(super) fn into_domain(self) -> StoreResult<Team> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("a team: {e}"));
        let mut members: Vec<TeamMember> = serde_json::from_str(&self.members).map_err(corrupt)?;
        if members.len() < 2 {
            return Err(StoreError::Corrupt("a team without a participant".into()));
        }
        let principal = members.remove(0);
        Ok(Team {
            id: self.id.into(),
            account_id: self.account_id.into(),
            address: AgentAddress::parse(&self.address)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            name: self.name,
            description: self.description,
            principal,
            participants: members,
            defaults: serde_json::from_str(&self.defaults).map_err(corrupt)?,
            answers_uagents: self.answers_uagents,
            saved_by: self.saved_by_key.into(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A team's roster as its row keeps it: principal first.
pub(super) fn team_members(team: &Team) -> String {
    serde_json::to_string(&team.members().collect::<Vec<_>>()).expect("members serialize")
}

pub(super) fn team_defaults(team: &Team) -> String {
    serde_json::to_string(&team.defaults).expect("defaults serialize")
}

/// A collaboration's row with its roster, which the query folds into one JSON array of
/// `[position, id, address, name, kind]` (each backend's `rostered!` query), put in order
/// here: principal first, then the participants in speaking order.
/// One statement reads a collaboration whole, instead of one for the rows and one for the
/// rosters.
#[derive(FromRow)]
pub(super) struct RosteredRow<Id> {
    #[sqlx(flatten)]
    row: CollaborationRow<Id>,
    roster: String,
}

impl<Id: Into<Uuid>> RosteredRow<Id> {
    pub(super) fn into_domain(self) -> StoreResult<Collaboration> {
        let mut members: Vec<(u32, Uuid, String, String, AgentKind)> =
            serde_json::from_str(&self.roster)
                .map_err(|e| StoreError::Corrupt(format!("a roster: {e}")))?;
        members.sort_unstable_by_key(|(position, ..)| *position);
        let roster = members
            .into_iter()
            .map(|(_, id, address, name, kind)| Sender {
                id,
                address,
                name,
                kind,
            })
            .collect();
        self.row.into_domain(roster)
    }
}

/// A page's row: the collaboration, and how many collaborations the filter matches in all.
#[derive(FromRow)]
pub(super) struct ListedRow<Id> {
    #[sqlx(flatten)]
    pub(super) collaboration: RosteredRow<Id>,
    pub(super) total: i64,
}

#[derive(FromRow)]
pub(super) struct CollaborationRow<Id> {
    id: Id,
    account_id: Id,
    channel_id: Id,
    objective: String,
    principal_agent_id: Id,
    message_cap: i64,
    timeout_window: i64,
    evaluate_objective_completion: bool,
    source: Option<String>,
    strategy: String,
    webhook_url: Option<String>,
    token_budget: Option<i64>,
    cost_budget_micros: Option<i64>,
    podcast: bool,
    allow_interjections: bool,
    forked_from: Option<Id>,
    forked_at_seq: Option<i64>,
    team_id: Option<Id>,
    context_id: Option<Id>,
    synopsis: Option<String>,
    synopsis_seq: Option<i64>,
    status: String,
    end_reason: Option<String>,
    headline: Option<String>,
    summary: Option<String>,
    outcome: Option<String>,
    error_message: Option<String>,
    advisory_message: Option<String>,
    audio_url: Option<String>,
    message_count: i64,
    tokens_used: i64,
    cost_micros: i64,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> CollaborationRow<Id> {
    fn into_domain(self, mut roster: Vec<Sender>) -> StoreResult<Collaboration> {
        let id: Uuid = self.id.into();
        let principal_id: Uuid = self.principal_agent_id.into();
        if roster.first().map(|s| s.id) != Some(principal_id) {
            return Err(StoreError::Corrupt(format!(
                "collaboration {id} has no principal"
            )));
        }
        let principal = roster.remove(0);
        Ok(Collaboration {
            id,
            account_id: self.account_id.into(),
            channel_id: self.channel_id.into(),
            objective: self.objective,
            principal,
            participants: roster,
            message_cap: self.message_cap as u32,
            timeout_window: self.timeout_window as u32,
            evaluate_objective_completion: self.evaluate_objective_completion,
            source: self.source.as_deref().map(parse).transpose()?,
            strategy: parse(&self.strategy)?,
            webhook_url: self.webhook_url,
            token_budget: self.token_budget.map(|b| b as u64),
            cost_budget_micros: self.cost_budget_micros.map(|b| b as u64),
            podcast: self.podcast,
            allow_interjections: self.allow_interjections,
            forked_from: self
                .forked_from
                .zip(self.forked_at_seq)
                .map(|(from, at_seq)| crate::domain::ForkedFrom {
                    collaboration_id: from.into(),
                    at_seq,
                }),
            team_id: self.team_id.map(Into::into),
            context_id: self.context_id.map(Into::into),
            synopsis: self
                .synopsis
                .zip(self.synopsis_seq)
                .map(|(text, through_seq)| crate::domain::Synopsis { text, through_seq }),
            status: parse(&self.status)?,
            end_reason: self.end_reason.as_deref().map(parse).transpose()?,
            headline: self.headline,
            summary: self.summary,
            outcome: outcome(self.outcome.as_deref())?,
            error_message: self.error_message,
            advisory_message: self.advisory_message,
            audio_url: self.audio_url,
            message_count: self.message_count as u32,
            tokens_used: self.tokens_used as u64,
            cost_micros: self.cost_micros as u64,
            started_at: self.started_at,
            ended_at: self.ended_at,
            created_at: self.created_at,
        })
    }
}

/// A stored outcome, kept as JSON.
fn outcome(stored: Option<&str>) -> StoreResult<Option<crate::domain::Outcome>> {
    stored
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("a stored outcome does not read: {e}")))
        })
        .transpose()
}

/// A channel with its collaboration's status.
#[derive(FromRow)]
pub(super) struct ChannelRow<Id> {
    id: Id,
    account_id: Id,
    collaboration_id: Id,
    last_seq: i64,
    status: String,
    created_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> ChannelRow<Id> {
    pub(super) fn into_domain(self) -> StoreResult<ChannelInfo> {
        Ok(ChannelInfo {
            id: self.id.into(),
            account_id: self.account_id.into(),
            collaboration_id: self.collaboration_id.into(),
            last_seq: self.last_seq,
            status: parse(&self.status)?,
            created_at: self.created_at,
        })
    }
}

#[derive(FromRow)]
pub(super) struct WebhookSettingsRow<Id> {
    account_id: Id,
    default_url: Option<String>,
    secret: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<Id: Into<Uuid>> WebhookSettingsRow<Id> {
    pub(super) fn into_domain(self, vault: &Vault) -> StoreResult<WebhookSettings> {
        Ok(WebhookSettings {
            account_id: self.account_id.into(),
            default_url: self.default_url,
            secret: open(vault, &self.secret)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What a webhook tells of a collaboration, read in the event's own transaction, with where
/// to send it (the collaboration's own URL, else its account's default).
#[derive(FromRow)]
pub(super) struct SnapshotRow<Id> {
    pub(super) account_id: Id,
    pub(super) url: Option<String>,
    id: Id,
    channel_id: Id,
    objective: String,
    status: String,
    end_reason: Option<String>,
    message_count: i64,
    tokens_used: i64,
    cost_micros: i64,
    team_id: Option<Id>,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    headline: Option<String>,
    summary: Option<String>,
    outcome: Option<String>,
    advisory_message: Option<String>,
    error_message: Option<String>,
}

impl<Id: Into<Uuid>> SnapshotRow<Id> {
    pub(super) fn into_domain(self) -> StoreResult<CollaborationSnapshot> {
        Ok(CollaborationSnapshot {
            id: self.id.into(),
            channel_id: self.channel_id.into(),
            objective: self.objective,
            status: parse(&self.status)?,
            end_reason: self.end_reason.as_deref().map(parse).transpose()?,
            message_count: self.message_count as u32,
            tokens_used: self.tokens_used as u64,
            cost_usd: crate::domain::event::usd(self.cost_micros as u64),
            team_id: self.team_id.map(Into::into),
            started_at: self.started_at,
            ended_at: self.ended_at,
            headline: self.headline,
            summary: self.summary,
            outcome: outcome(self.outcome.as_deref())?,
            advisory_message: self.advisory_message,
            error_message: self.error_message,
        })
    }
}

/// A pending delivery with its account's signing secret.
#[derive(FromRow)]
pub(super) struct DueRow<Id> {
    pub(super) id: Id,
    account_id: Id,
    url: String,
    payload: String,
    attempts: i64,
    created_at: DateTime<Utc>,
    secret: String,
    traceparent: Option<String>,
}

impl<Id: Into<Uuid>> DueRow<Id> {
    pub(super) fn into_domain(
        self,
        claimed_until: DateTime<Utc>,
        vault: &Vault,
    ) -> StoreResult<DueDelivery> {
        Ok(DueDelivery {
            claimed_until,
            id: self.id.into(),
            account_id: self.account_id.into(),
            url: self.url,
            payload: self.payload,
            attempts: self.attempts as u32,
            created_at: self.created_at,
            secret: open(vault, &self.secret)?,
            traceparent: self.traceparent,
        })
    }
}

#[derive(FromRow)]
pub(super) struct DeliveryRow<Id> {
    id: Id,
    collaboration_id: Id,
    event: String,
    url: String,
    status: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

impl<Id: Into<Uuid>> DeliveryRow<Id> {
    pub(super) fn into_domain(self) -> StoreResult<Delivery> {
        let status: DeliveryStatus = parse(&self.status)?;
        Ok(Delivery {
            id: self.id.into(),
            collaboration_id: self.collaboration_id.into(),
            event: self.event,
            url: self.url,
            status,
            attempts: self.attempts as u32,
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(self.next_attempt_at),
            last_attempt_at: self.last_attempt_at,
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_at: self.created_at,
            delivered_at: self.delivered_at,
        })
    }
}
