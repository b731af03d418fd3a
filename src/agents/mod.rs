//! Agents speak: given a turn's context, produce one message.
//!
//! One module per kind behind [`speak`]. This layer knows nothing of channels, stores or
//! viewers: the engine hands it a [`TurnContext`] and persists whatever comes back. Humans
//! are the exception that proves it: they are not called but waited for, which is the
//! engine's business, so [`speak`] refuses them.

pub mod a2a;
pub mod http;
mod llm;
pub mod models;
pub mod quote;
mod retry;
pub(crate) use retry::counted as count_retries;
mod scripted;
mod sse;
pub mod tools;
pub mod uagent;

use std::time::Duration;

use uuid::Uuid;

use crate::{
    config::{RemoteAgentSettings, ToolSettings, UagentSettings},
    domain::{Agent, AgentSpec, EventBody, Sender},
    outbound::Outbound,
    tasks::Tasks,
    uagents::Identities,
};

pub use models::{Completion, Delta, ModelError, ModelRef, Models, Price, Spend, ToolCall};

/// Where a turn reports what happens while it runs: the text streamed so far, and the tool
/// calls it makes (stored and shown before it goes on).
#[async_trait::async_trait]
pub trait TurnSink: Send + Sync {
    fn delta(&self, delta: Delta<'_>);
    /// Stores and publishes a `tool_call` or `tool_result` event; false when the channel
    /// would not take it (the collaboration has ended, or its runner stops), and the turn
    /// must not go on.
    async fn record(&self, event: EventBody) -> bool;
}

/// What an agent is told when it gets the turn.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub collaboration_id: Uuid,
    /// The same on every attempt of this turn, so a remote agent can tell a retry.
    pub turn_id: Uuid,
    /// Who is speaking.
    pub speaker: Sender,
    pub objective: String,
    /// Principal first.
    pub roster: Vec<Sender>,
    /// Older turns, folded; empty while the whole transcript fits the window.
    pub synopsis: String,
    /// The most recent turns, verbatim and in order.
    pub window: Vec<Line>,
    /// How many messages this agent has spoken before (scripted agents cycle by it).
    pub spoken_before: usize,
    /// For the manager after a stall: what repeats, from Skein.
    pub notice: Option<String>,
}

/// One stored message of the transcript.
#[derive(Debug, Clone)]
pub struct Line {
    pub seq: i64,
    pub sender: Sender,
    pub content: String,
}

/// What every agent is asked to do with its turn.
pub const INSTRUCTION: &str = "Reply with your next message only, without prefixing your \
    name. Address someone with @name to hand them the turn. Keep it brief and move the \
    objective forward.";

/// How agents that live elsewhere are reached: the guarded client for user-supplied URLs,
/// the turn limits, what is kept of A2A agents between turns, and the tasks that carry calls
/// on after a turn was dropped (sends still in flight, cancellations of abandoned A2A tasks),
/// which shutdown waits for.
#[derive(Clone)]
pub struct Remote {
    pub outbound: Outbound,
    pub settings: RemoteAgentSettings,
    pub cards: a2a::Cards,
    pub input_requests: a2a::InputRequests,
    pub tasks: Tasks,
    /// Who Skein speaks to uAgents as, and how it finds them.
    pub identities: Identities,
    pub uagents: UagentSettings,
    /// When each collaboration's identity was last registered with the Almanac.
    pub registered: std::sync::Arc<uagent::Registered>,
    /// The bounds on `llm` agents' tool calls.
    pub tools: ToolSettings,
}

impl Remote {
    pub fn new(
        outbound: Outbound,
        settings: RemoteAgentSettings,
        uagents: UagentSettings,
        tools: ToolSettings,
        identities: Identities,
        tasks: &Tasks,
    ) -> Self {
        let cards = a2a::Cards::new(settings.card_ttl);
        Self {
            outbound,
            settings,
            cards,
            input_requests: a2a::InputRequests::default(),
            tasks: tasks.group(),
            identities,
            uagents,
            registered: std::sync::Arc::default(),
            tools,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        retry::backoff(self.settings.retry_base, self.settings.retry_max, attempt)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Misconfigured(String),
    /// A remote agent could not be reached or kept failing after its retries.
    #[error("{0}")]
    Unreachable(String),
    /// A remote agent answered, but not with a turn: retrying would get the same.
    #[error("{0}")]
    BadReply(String),
}

/// Runs one turn of `agent`, telling `sink` what happens as it happens.
pub async fn speak(
    agent: &Agent,
    context: &TurnContext,
    models: &Models,
    remote: &Remote,
    sink: &dyn TurnSink,
) -> Result<Completion, AgentError> {
    // Each kind's turn is boxed on its own: a turn is held for as long as the agent takes
    // (seconds, with a model), and inline every turn would hold the largest kind's, 13 KB
    // for an llm agent's, in every collaboration whatever its agents.
    match &agent.spec {
        AgentSpec::Scripted { replies, delay_ms } => {
            Ok(scripted::speak(replies, *delay_ms, context).await)
        }
        AgentSpec::Llm { .. } => Box::pin(llm::speak(agent, context, models, remote, sink)).await,
        AgentSpec::Http { endpoint } => {
            Box::pin(http::speak(agent, endpoint, context, remote)).await
        }
        AgentSpec::A2a { card_url, .. } => {
            // Its credentials, sealed with an llm agent's tool servers' (one set of headers).
            let headers = tools::Credentials::open(agent.tool_credentials.as_ref())
                .0
                .into_iter()
                .next()
                .unwrap_or_default();
            Box::pin(a2a::speak(card_url, &headers, context, remote)).await
        }
        AgentSpec::Human | AgentSpec::Uagent { .. } => Err(AgentError::Misconfigured(format!(
            "{} answers in its own time: the engine waits for its message",
            agent.name
        ))),
    }
}

/// The largest answer read from a remote agent; a larger one is refused, not buffered.
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Reads at most `max` bytes of a peer's answer: the bytes, and whether there was more.
/// A hostile peer cannot make Skein buffer an endless body.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// Why an answer could not be read.
enum ReadError {
    /// It broke off or went quiet: asking again may work.
    Broken(String),
    /// It arrived whole but is not what was asked for: asking again would get the same.
    Invalid(String),
}

/// A peer's answer as JSON, refused when larger than [`MAX_REPLY_BYTES`].
async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ReadError> {
    let (bytes, more) = read_capped(response, MAX_REPLY_BYTES)
        .await
        .map_err(|e| ReadError::Broken(format!("its answer broke off: {e}")))?;
    if more {
        return Err(ReadError::Invalid(format!(
            "its answer is larger than {MAX_REPLY_BYTES} bytes"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        ReadError::Invalid(format!(
            "its answer is not the JSON expected: {}",
            excerpt(&String::from_utf8_lossy(&bytes), 200)
        ))
    })
}

/// Whether a status is worth asking again after: the peer is busy, down or slow.
fn transient(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The start of an error answer, for the message that quotes it.
async fn error_excerpt(response: reqwest::Response) -> String {
    match read_capped(response, 4096).await {
        Ok((bytes, _)) => excerpt(&String::from_utf8_lossy(&bytes), 200),
        Err(_) => String::new(),
    }
}

/// At most `max` characters of a peer's answer, for an error message.
fn excerpt(text: &str, max: usize) -> String {
    let single_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if single_line.chars().count() <= max {
        return single_line;
    }
    let cut: String = single_line.chars().take(max).collect();
    format!("{cut}…")
}
