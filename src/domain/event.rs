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
    },
    Status {
        status: CollaborationStatus,
        end_reason: Option<EndReason>,
        advisory_message: Option<String>,
        error_message: Option<String>,
        ended_at: Option<DateTime<Utc>>,
    },
    Summary {
        headline: String,
        summary: String,
        created_at: DateTime<Utc>,
    },
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Status { .. } => "status",
            Self::Summary { .. } => "summary",
        }
    }

    /// The frame as sent and stored: this body plus its `seq`.
    pub fn to_frame(&self, seq: i64) -> String {
        let mut value = serde_json::to_value(self).expect("event bodies serialize");
        value
            .as_object_mut()
            .expect("a tagged enum serializes to an object")
            .insert("seq".into(), seq.into());
        value.to_string()
    }
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
