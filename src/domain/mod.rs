//! Skein's vocabulary, as validated types.
//!
//! Everything that arrives over the API is parsed into these types once, at the edge
//! (`api/`); the store, the engine and the live hub trust them. Nothing here does I/O.

/// Serde-backed conversions between the small enums and their wire names, which are also
/// how the store keeps them.
macro_rules! text_enum {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The wire name, as serde writes it.
            pub fn name(&self) -> String {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => s,
                    _ => unreachable!("unit variants serialize to strings"),
                }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                serde_json::from_value(serde_json::Value::String(s.to_owned()))
                    .map_err(|_| format!("`{s}` is not a valid value"))
            }
        }
    )*};
}

pub mod access;
pub mod address;
pub mod agent;
pub mod collaboration;
pub mod event;
pub mod feed;
pub mod figures;
pub mod paging;
pub mod team;
pub mod webhook;

pub use access::{Account, ApiKey, NewKey, Scope};
pub use address::AgentAddress;
pub use agent::{Agent, AgentKind, AgentRef, AgentSpec, ToolServer};
pub use collaboration::{
    ActionItem, Collaboration, CollaborationStatus, EndReason, Ending, Fork, ForkedFrom,
    NewCollaboration, Outcome, Source, Strategy, Synopsis, ValidCollaboration,
};
pub use event::{ErrorCode, EventBody, Frame, Sender, StoredEvent, ToolRef};
pub use paging::{Page, PageRequest};
pub use team::{Team, TeamDefaults, TeamMember};

/// A field-level validation problem, reported in a 422's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The current time, to the microsecond: as precise as every backend stores it (PostgreSQL
/// keeps microseconds), so a time echoed in a response, written into a frame and read back
/// from the database is the same time.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
}
