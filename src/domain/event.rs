//! Channel events: what is stored with a `seq` and sent to viewers.
//!
//! An event is stored as the exact JSON frame the WebSocket sends (`type`, `seq`, …), so the
//! history endpoint and the live stream can never disagree about an event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AgentKind, CollaborationStatus, EndReason};

/// Who spoke: the identity shown with every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sender {
    pub id: Uuid,
    pub address: String,
    pub name: String,
    pub kind: AgentKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Human,
    System,
}

/// Which tool: the MCP server (as the agent's settings name it) and the tool's own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolRef {
    pub server: String,
    pub name: String,
}

/// The body of a stored event; the store adds `seq` when it assigns one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Message {
        id: Uuid,
        /// The turn that produced this message; `delta` frames of the turn carry the same id.
        turn_id: Uuid,
        sender: Sender,
        role: Role,
        content: String,
        created_at: DateTime<Utc>,
        /// Model tokens the turn cost (the speaker's own calls), and of them those of the
        /// prompts and those of the answers.
        #[serde(default, skip_serializing_if = "is_zero")]
        tokens: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        input_tokens: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        output_tokens: u64,
        /// What those tokens cost, in US dollars, by the server's price table.
        #[serde(default, skip_serializing_if = "is_nothing")]
        cost_usd: f64,
        /// How long the turn took, from the speaker being given it to its message: absent
        /// for a person's interjection, which was no one's turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
        /// Attempts its turn made again (a model call, a remote agent's request) before it
        /// came: absent when none.
        #[serde(default, skip_serializing_if = "is_zero32")]
        retries: u32,
    },
    Status {
        status: CollaborationStatus,
        end_reason: Option<EndReason>,
        advisory_message: Option<String>,
        error_message: Option<String>,
        ended_at: Option<DateTime<Utc>>,
        /// For `objective_met`: the `seq` of the verdict that ended it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verdict_seq: Option<i64>,
        /// For `error`: the member whose turn failed, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_agent: Option<Uuid>,
    },
    /// What the objective judge concluded about the transcript up to `judged_seq`: stored
    /// each time it runs, so that how a collaboration was judged can be audited.
    Verdict {
        met: bool,
        reason: String,
        judged_seq: i64,
        created_at: DateTime<Utc>,
    },
    /// An agent's model called a tool during its turn: stored before the call is made, so
    /// that a call the server never saw answered is known (see `ToolResult::interrupted`).
    ToolCall {
        turn_id: Uuid,
        /// Pairs the call with its result (the model's own id for the call).
        call_id: String,
        sender: Sender,
        tool: ToolRef,
        arguments: serde_json::Value,
        created_at: DateTime<Utc>,
    },
    /// What the tool answered, or why it did not.
    ToolResult {
        turn_id: Uuid,
        call_id: String,
        tool: ToolRef,
        ok: bool,
        /// The result as the model saw it (bounded; a cut says so).
        content: String,
        ms: u64,
        /// The call never got its answer: the server stopped, or the turn was dropped.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        created_at: DateTime<Utc>,
    },
    /// The conversation goes in circles: the manager is told so (and given the next turn).
    Nudge {
        to: Sender,
        reason: String,
        created_at: DateTime<Utc>,
    },
    Summary {
        headline: String,
        summary: String,
        /// Absent from summaries stored before outcomes were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<super::Outcome>,
        created_at: DateTime<Utc>,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn is_nothing(cost: &f64) -> bool {
    *cost == 0.0
}

/// Millionths of a dollar, as costs are counted, in dollars, as they are shown.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Dollars in millionths, rounded.
pub fn micros(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

impl EventBody {
    /// What a message cost, in millionths of a dollar (nothing for other events).
    pub fn cost_micros(&self) -> u64 {
        match self {
            Self::Message { cost_usd, .. } => micros(*cost_usd),
            _ => 0,
        }
    }

    /// A message's own id: stored beside it, unique in its channel, so that no write can
    /// store it twice.
    pub fn message_id(&self) -> Option<Uuid> {
        match self {
            Self::Message { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Status { .. } => "status",
            Self::Verdict { .. } => "verdict",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::Nudge { .. } => "nudge",
            Self::Summary { .. } => "summary",
        }
    }

    /// The frame as sent and stored: this body plus its `seq`.
    pub fn to_frame(&self, seq: i64) -> String {
        Frame::Event { seq, body: self }.text()
    }
}

/// Every frame a viewer of a channel can receive, serialized in one place ([`Frame::text`]).
/// Stored events are written once, when they are stored, and sent as stored; the others
/// are made as they happen and never stored.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    /// The stream's first frame: where the channel stands.
    Hello {
        channel_id: Uuid,
        collaboration_id: Uuid,
        status: CollaborationStatus,
        last_seq: i64,
    },
    /// Who speaks now. Ephemeral, like a delta.
    Turn { turn_id: Uuid, sender: &'a Sender },
    /// Text of a turn in progress; `restart` drops the text so far (the model's stream
    /// broke and starts over).
    Delta {
        turn_id: Uuid,
        sender: &'a Sender,
        text: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// A frame the viewer sent was refused.
    Error { code: ErrorCode, message: &'a str },
    /// A stored event: its body, with its `type`, and its `seq`.
    #[serde(untagged)]
    Event {
        seq: i64,
        #[serde(flatten)]
        body: &'a EventBody,
    },
}

impl Frame<'_> {
    /// The frame's JSON text.
    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("frames serialize")
    }
}

/// Why a frame a viewer sent was refused (the `code` of an `error` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object of a known `type`, or missing what its type needs.
    BadFrame,
    /// The stream's key may not write.
    Forbidden,
    /// The key is over its request rate.
    RateLimited,
    /// The message breaks a rule (its length, who may send it).
    Invalid,
    /// The collaboration does not take it now (not running, not this person's turn).
    Refused,
    Internal,
}

/// An event as stored: its `seq` and its frame, already serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub frame: String,
}

impl StoredEvent {
    /// Parses the frame back into a body (the engine rebuilds its transcript this way).
    pub fn body(&self) -> Option<EventBody> {
        serde_json::from_str(&self.frame).ok()
    }
}
