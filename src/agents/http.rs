//! `http` agents: a program elsewhere that takes the turn over HTTP.
//!
//! Each turn is one `POST` of a [`TurnRequest`] to the agent's endpoint, answered with a
//! [`TurnReply`]. Requests are signed the Standard Webhooks way ([`crate::signing`]) under
//! the agent's `whsec_…` secret, so the agent can check that Skein sent them; `webhook-id`
//! is the turn id, the same on every retry, so the agent can recognise one. 429, 5xx,
//! timeouts and connection failures are retried with backoff; an answer that is not a turn
//! is not, since asking again would get the same.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AgentError, Completion, INSTRUCTION, ReadError, Remote, TurnContext, error_excerpt, read_json,
    retry, transient,
};
use crate::secrets::Secret;
use crate::{
    domain::{Agent, Sender},
    signing,
};

/// What Skein POSTs to an `http` agent's endpoint for each turn.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnRequest {
    /// Always `turn`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The same on every retry of this turn; also sent as `webhook-id`.
    pub turn_id: Uuid,
    pub collaboration_id: Uuid,
    pub objective: String,
    /// The agent being asked: its own identity.
    pub agent: Sender,
    /// Everyone in the collaboration, the principal first.
    pub roster: Vec<RosterMember>,
    /// The most recent messages, oldest first.
    pub transcript: Vec<TranscriptLine>,
    /// Older messages, folded into a few lines; empty while everything fits the transcript.
    pub synopsis: String,
    /// What to do with the turn.
    pub instruction: String,
    /// To the manager after the conversation went in circles: what repeats. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RosterMember {
    #[serde(flatten)]
    pub agent: Sender,
    /// `principal` or `participant`.
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptLine {
    /// The message's place in the channel.
    pub seq: i64,
    pub sender: Sender,
    pub content: String,
}

/// What an `http` agent answers: its message.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnReply {
    pub content: String,
}

impl TurnRequest {
    pub fn new(context: &TurnContext) -> Self {
        Self {
            kind: "turn".into(),
            turn_id: context.turn_id,
            collaboration_id: context.collaboration_id,
            objective: context.objective.clone(),
            agent: context.speaker.clone(),
            roster: context
                .roster
                .iter()
                .enumerate()
                .map(|(i, member)| RosterMember {
                    agent: member.clone(),
                    role: if i == 0 { "principal" } else { "participant" }.into(),
                })
                .collect(),
            transcript: context
                .window
                .iter()
                .map(|line| TranscriptLine {
                    seq: line.seq,
                    sender: line.sender.clone(),
                    content: line.content.clone(),
                })
                .collect(),
            synopsis: context.synopsis.clone(),
            instruction: INSTRUCTION.into(),
            notice: context.notice.clone(),
        }
    }
}

pub(super) async fn speak(
    agent: &Agent,
    endpoint: &str,
    context: &TurnContext,
    remote: &Remote,
) -> Result<Completion, AgentError> {
    let secret = agent.secret.as_ref().map(Secret::expose).ok_or_else(|| {
        AgentError::Misconfigured(format!("{} has no signing secret", agent.name))
    })?;
    let url = remote
        .outbound
        .check(endpoint)
        .await
        .map_err(|e| AgentError::Unreachable(format!("its endpoint {e}")))?;
    let body = serde_json::to_vec(&TurnRequest::new(context)).expect("a turn serializes");
    let id = context.turn_id.to_string();
    let settings = &remote.settings;
    let mut attempt = 0;
    loop {
        let mut request = remote
            .outbound
            .request(Method::POST, url.clone())
            .map_err(|e| AgentError::Unreachable(format!("its endpoint {e}")))?
            .timeout(settings.turn_timeout)
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in signing::headers(secret, &id, &body) {
            request = request.header(name, value);
        }
        let (failure, wait) = match request.send().await {
            Ok(response) if response.status().is_success() => {
                match read_json::<TurnReply>(response).await {
                    Ok(reply) => {
                        return Ok(Completion {
                            content: reply.content,
                            ..Completion::default()
                        });
                    }
                    Err(ReadError::Invalid(why)) => {
                        let why = why.replace("the JSON expected", "{\"content\": \"…\"}");
                        return Err(AgentError::BadReply(why));
                    }
                    Err(ReadError::Broken(why)) => (why, None),
                }
            }
            Ok(response) => {
                let status = response.status();
                let wait = retry::retry_after(response.headers());
                let text = error_excerpt(response).await;
                let failure = format!("its endpoint answered {status}: {text}");
                if !transient(status) {
                    return Err(AgentError::BadReply(failure));
                }
                (failure, wait)
            }
            Err(error) if error.is_timeout() => (
                format!(
                    "its endpoint did not answer within {} s",
                    settings.turn_timeout.as_secs_f32()
                ),
                None,
            ),
            Err(error) => (format!("its endpoint could not be reached: {error}"), None),
        };
        let delay = remote.backoff(attempt).max(wait.unwrap_or_default());
        if attempt >= settings.max_retries || delay > retry::LONGEST_RETRY_AFTER {
            let tries = attempt + 1;
            return Err(AgentError::Unreachable(format!(
                "{failure} (after {tries} {})",
                if tries == 1 { "try" } else { "tries" }
            )));
        }
        tracing::warn!(agent = %agent.name, attempt, failure, "remote agent turn failed; retrying");
        tokio::time::sleep(delay).await;
        retry::noted();
        attempt += 1;
    }
}
