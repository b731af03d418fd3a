//! Agents speak: given a turn's context, produce one message.
//!
//! One module per kind behind [`speak`]. This layer knows nothing of channels, seqs or the
//! store: the engine hands it a [`TurnContext`] and persists whatever comes back.

mod llm;
pub mod models;
mod scripted;

use crate::domain::{Agent, AgentSpec, Sender};

pub use models::{Completion, Delta, ModelError, ModelRef, Models};

/// What an agent is told when it gets the turn.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub objective: String,
    /// Principal first.
    pub roster: Vec<Sender>,
    /// Older turns, folded; empty while the whole transcript fits the window.
    pub synopsis: String,
    /// The most recent turns, verbatim and in order.
    pub window: Vec<Line>,
    /// How many messages this agent has spoken before (scripted agents cycle by it).
    pub spoken_before: usize,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub sender: Sender,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Misconfigured(String),
}

/// Runs one turn of `agent`. `on_delta` sees streamed text as it is produced.
pub async fn speak(
    agent: &Agent,
    context: &TurnContext,
    models: &Models,
    on_delta: &(dyn Fn(Delta<'_>) + Send + Sync),
) -> Result<Completion, AgentError> {
    match &agent.spec {
        AgentSpec::Scripted { replies, delay_ms } => {
            Ok(scripted::speak(replies, *delay_ms, context).await)
        }
        AgentSpec::Llm { .. } => llm::speak(agent, context, models, on_delta).await,
    }
}
