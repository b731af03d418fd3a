//! Webhooks: the events a collaboration sends to its URL, and the record of each delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secrets::Secret;

use super::{CollaborationStatus, EndReason};

/// What happened to a collaboration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    Started,
    Ended,
    SummaryReady,
}

impl WebhookEvent {
    /// The event's `type`, as receivers see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Started => "collaboration.started",
            Self::Ended => "collaboration.ended",
            Self::SummaryReady => "collaboration.summary_ready",
        }
    }

    /// The body sent for this event: Standard Webhooks' `{type, timestamp, data}`.
    pub fn payload(self, data: &CollaborationSnapshot, at: DateTime<Utc>) -> String {
        serde_json::json!({"type": self.name(), "timestamp": at, "data": data}).to_string()
    }
}

/// A collaboration as a webhook tells of it: where it stands, not who said what.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CollaborationSnapshot {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub objective: String,
    pub status: CollaborationStatus,
    pub end_reason: Option<EndReason>,
    pub message_count: u32,
    pub tokens_used: u64,
    /// What its model calls have cost, in US dollars, by the server's price table.
    pub cost_usd: f64,
    /// The team that started it, if one did.
    pub team_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub headline: Option<String>,
    pub summary: Option<String>,
    pub outcome: Option<super::Outcome>,
    pub advisory_message: Option<String>,
    pub error_message: Option<String>,
}

/// An account's webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub account_id: Uuid,
    /// Where events go for collaborations that name no `webhook_url`.
    pub default_url: Option<String>,
    /// The `whsec_…` secret every delivery of the account is signed with.
    pub secret: Secret,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: attempts go on.
    Pending,
    Delivered,
    /// Given up on, after attempts over the whole retry window.
    Failed,
}

/// One event on its way to one URL, and how its attempts went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The `webhook-id` of every attempt.
    pub id: Uuid,
    pub collaboration_id: Uuid,
    pub event: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last attempt, if it answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery claimed for an attempt: what to send, and the secret to sign it with.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    /// The claim this attempt runs under: its outcome is recorded only while it holds.
    pub claimed_until: DateTime<Utc>,
    pub account_id: Uuid,
    pub url: String,
    pub payload: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub secret: Secret,
    /// The trace the webhook was written in, continued by its delivery.
    pub traceparent: Option<String>,
}

/// How an attempt went, and what comes next.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}
text_enum!(DeliveryStatus);
