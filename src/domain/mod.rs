//! Skein's vocabulary, as validated types.
//!
//! Everything that arrives over the API is parsed into these types once, at the edge
//! (`api/`); the store, the engine and the live hub trust them. Nothing here does I/O.

pub mod address;
pub mod agent;
pub mod collaboration;
pub mod event;
pub mod paging;

pub use address::AgentAddress;
pub use agent::{Agent, AgentKind, AgentRef, AgentSpec};
pub use collaboration::{
    Collaboration, CollaborationStatus, EndReason, Ending, NewCollaboration, Source, Strategy,
};
pub use event::{EventBody, Sender, StoredEvent};
pub use paging::{Page, PageRequest};

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
