//! `uagent` agents: Fetch.ai uAgents, reached at their endpoint (or through an Almanac) and
//! spoken to in the standard chat protocol.
//!
//! A uAgent answers by sending a message of its own to Skein's `/submit`, not in the answer
//! to Skein's request, so a turn has two halves: [`ask`] sends the agent what it has not yet
//! heard, and the engine then waits for the agent's reply as it waits for a person's post
//! ([`crate::api::uagents`] hands it over). What the agent is sent on its first turn opens
//! with the objective and who takes part; later turns carry what was said since it last
//! spoke.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use super::{AgentError, INSTRUCTION, Remote, TurnContext, error_excerpt, transient};
use crate::{
    domain::{Agent, AgentAddress},
    uagents::{self, ChatAcknowledgement, ChatMessage, Envelope, Identity},
};

/// What the agent is told on its turn: plain text, one line per message.
pub fn prompt(context: &TurnContext) -> String {
    let mut text = String::new();
    // What it has said itself, and everything before, it has heard already.
    let own = context
        .window
        .iter()
        .rposition(|line| line.sender.id == context.speaker.id);
    if context.spoken_before == 0 {
        text.push_str(&format!("Objective: {}\n", context.objective));
        let members: Vec<String> = context
            .roster
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let role = if i == 0 { " (principal)" } else { "" };
                let you = if member.id == context.speaker.id {
                    " (you)"
                } else {
                    ""
                };
                format!("{}{role}{you}", member.name)
            })
            .collect();
        text.push_str(&format!("Taking part: {}\n", members.join(", ")));
        if !context.synopsis.is_empty() {
            text.push_str(&format!("Earlier: {}\n", context.synopsis));
        }
    }
    let unheard = own.map_or(&context.window[..], |at| &context.window[at + 1..]);
    for line in unheard {
        let words = super::quote::one_line(&line.content);
        text.push_str(&format!("{}: {words}\n", line.sender.name));
    }
    text.push('\n');
    text.push_str(INSTRUCTION);
    text
}

/// Sends the agent its turn, after uAgents' readiness probe on its first. Returns once the
/// agent has taken the message (200); its reply comes later, to `/submit`. 429, 5xx and
/// connection failures are retried; a 400 (the agent refused the envelope) is not, since it
/// would refuse it again.
pub async fn ask(
    agent: &Agent,
    endpoint: Option<&str>,
    context: &TurnContext,
    remote: &Remote,
) -> Result<(), AgentError> {
    let identity = remote
        .identities
        .for_collaboration(context.collaboration_id);
    let session = remote
        .identities
        .session(context.collaboration_id, &agent.address);
    let endpoint = resolve(remote, &agent.address, endpoint).await?;
    if context.spoken_before == 0 {
        // Before its first turn: is it up, and is it the agent we mean?
        probe(remote, &endpoint, &agent.address)
            .await
            .map_err(|why| AgentError::Unreachable(format!("it is not ready: {why}")))?;
    }
    let now = Utc::now();
    // The turn's trace context travels in a metadata item, never as a key of its own.
    let message = ChatMessage::text(&prompt(context), now).with_metadata(crate::traces::headers());
    let mut attempt = 0;
    loop {
        // Signed again each try: an envelope lives only for its own few seconds.
        let envelope = Envelope::signed(
            &identity,
            &agent.address,
            session,
            uagents::CHAT_MESSAGE,
            &message,
            Utc::now(),
        );
        let failure = match submit(remote, &endpoint, &envelope).await {
            Ok(()) => return Ok(()),
            Err(Submit::Refused(why)) => return Err(AgentError::BadReply(why)),
            Err(Submit::Failed(why)) => why,
        };
        let delay = remote.backoff(attempt);
        if attempt >= remote.settings.max_retries {
            let tries = attempt + 1;
            return Err(AgentError::Unreachable(format!(
                "{failure} (after {tries} {})",
                if tries == 1 { "try" } else { "tries" }
            )));
        }
        tracing::warn!(agent = %agent.name, attempt, failure, "uAgent turn not delivered; retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Acknowledges a chat message received from `agent`, as the chat protocol asks. A single
/// attempt: the agent does not wait for it, and a lost acknowledgement changes nothing.
pub async fn acknowledge(
    remote: &Remote,
    identity: &Identity,
    agent: &Agent,
    endpoint: Option<&str>,
    session: Uuid,
    msg_id: Uuid,
) {
    let now = Utc::now();
    let acknowledgement = ChatAcknowledgement {
        timestamp: now,
        acknowledged_msg_id: msg_id,
        metadata: None,
    };
    let sent = send(
        remote,
        identity,
        &agent.address,
        endpoint,
        session,
        uagents::CHAT_ACKNOWLEDGEMENT,
        &acknowledgement,
    )
    .await;
    if let Err(error) = sent {
        tracing::info!(agent = %agent.name, error, "a uAgent was not sent its acknowledgement");
    }
}

/// Sends `message` (of the schema `schema_digest`) from `identity` to the uAgent at `to`: at
/// `endpoint`, else where the Almanac says it is. Once; the error says why it did not go.
pub async fn send(
    remote: &Remote,
    identity: &Identity,
    to: &AgentAddress,
    endpoint: Option<&str>,
    session: Uuid,
    schema_digest: &str,
    message: &impl serde::Serialize,
) -> Result<(), String> {
    let envelope = Envelope::signed(identity, to, session, schema_digest, message, Utc::now());
    let endpoint = resolve(remote, to, endpoint)
        .await
        .map_err(|e| e.to_string())?;
    submit(remote, &endpoint, &envelope)
        .await
        .map_err(|e| e.to_string())
}

/// Whether the agent at `endpoint` is up and hosts `address`: uAgents' readiness probe.
pub async fn probe(remote: &Remote, endpoint: &str, address: &AgentAddress) -> Result<(), String> {
    let url = remote
        .outbound
        .check(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let request = remote
        .outbound
        .request(Method::HEAD, url)
        .map_err(|e| e.to_string())?
        .timeout(PROBE_TIMEOUT)
        .header("x-uagents-address", address.as_str());
    let response = request
        .send()
        .await
        .map_err(|e| format!("the agent could not be reached: {e}"))?;
    let status = response
        .headers()
        .get("x-uagents-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match (response.status(), status.as_str()) {
        (StatusCode::OK, "ready") => Ok(()),
        (StatusCode::OK, "not-ready") => Err(format!(
            "the agent there says it does not host {address} (x-uagents-status: not-ready)"
        )),
        (code, status) => Err(format!(
            "the agent did not answer uAgents' readiness probe (HTTP {code}, x-uagents-status: {})",
            if status.is_empty() { "none" } else { status }
        )),
    }
}

const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// When each collaboration's identity was last registered with the Almanac: registrations
/// are refreshed well before an Almanac lets them lapse, and not on every turn. Bounded:
/// past [`Registered::MOST`] entries, those due anyway are forgotten.
#[derive(Debug, Default)]
pub struct Registered(dashmap::DashMap<Uuid, std::time::Instant>);

impl Registered {
    const REFRESH: std::time::Duration = std::time::Duration::from_secs(30 * 60);
    const MOST: usize = 4096;

    /// Whether `collaboration_id`'s identity is due for registering; if so, it counts as
    /// registered from now.
    fn due(&self, collaboration_id: Uuid) -> bool {
        let now = std::time::Instant::now();
        if self.0.len() > Self::MOST {
            self.0
                .retain(|_, at| now.duration_since(*at) < Self::REFRESH);
        }
        match self.0.entry(collaboration_id) {
            dashmap::Entry::Occupied(at) if now.duration_since(*at.get()) < Self::REFRESH => false,
            entry => {
                entry.insert(now);
                true
            }
        }
    }
}

/// Registers the identity Skein speaks as in `collaboration_id` with the Almanac
/// (`SKEIN_ALMANAC_URL`), at this server's `/submit`, so that agents that look Skein up
/// there can answer. Without an Almanac, or when registered lately, nothing is sent. A
/// failure is logged: agents that find Skein another way still can.
pub async fn register(remote: &Remote, identity: &Identity, collaboration_id: Uuid) {
    let (Some(almanac), Some(public)) = (&remote.uagents.almanac_url, &remote.uagents.public_url)
    else {
        return;
    };
    if !remote.registered.due(collaboration_id) {
        return;
    }
    let url = format!("{}/v1/almanac/agents", almanac.trim_end_matches('/'));
    let body = uagents::attestation(identity, &format!("{public}/submit"), Utc::now());
    let sent = async {
        let url = remote
            .outbound
            .check(&url)
            .await
            .map_err(|e| e.to_string())?;
        let response = remote
            .outbound
            .request(Method::POST, url)
            .map_err(|e| e.to_string())?
            .timeout(PROBE_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("it answered {}", response.status()))
        }
    };
    if let Err(error) = sent.await {
        // Tried again at the next turn rather than in half an hour.
        remote.registered.0.remove(&collaboration_id);
        tracing::warn!(address = %identity.address(), error, "registering with the Almanac failed");
    }
}

/// Where the agent is: its own endpoint, else what the Almanac (`SKEIN_ALMANAC_URL`) says.
/// Whether the uAgent answers now, as its first turn would find it: where it was found (its
/// endpoint, or the Almanac's), or why it is not ready.
pub async fn check(
    remote: &Remote,
    address: &AgentAddress,
    endpoint: Option<&str>,
) -> Result<String, String> {
    let endpoint = resolve(remote, address, endpoint)
        .await
        .map_err(|e| e.to_string())?;
    probe(remote, &endpoint, address).await?;
    Ok(endpoint)
}

async fn resolve(
    remote: &Remote,
    address: &AgentAddress,
    endpoint: Option<&str>,
) -> Result<String, AgentError> {
    if let Some(endpoint) = endpoint {
        return Ok(endpoint.to_owned());
    }
    let Some(almanac) = &remote.uagents.almanac_url else {
        return Err(AgentError::Misconfigured(
            "it has no endpoint and no Almanac is configured (SKEIN_ALMANAC_URL)".into(),
        ));
    };
    let lookup = format!(
        "{}/v1/almanac/agents/{address}",
        almanac.trim_end_matches('/')
    );
    let unreachable = |why: String| AgentError::Unreachable(format!("the Almanac {why}"));
    let url = remote
        .outbound
        .check(&lookup)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let response = remote
        .outbound
        .request(Method::GET, url)
        .map_err(|e| unreachable(e.to_string()))?
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(format!("could not be reached: {e}")))?;
    if !response.status().is_success() {
        return Err(unreachable(format!(
            "does not know {address} (HTTP {})",
            response.status()
        )));
    }
    let record: AlmanacRecord = response
        .json()
        .await
        .map_err(|e| unreachable(format!("answered what is not an agent record: {e}")))?;
    record
        .endpoints
        .into_iter()
        .max_by_key(|endpoint| endpoint.weight)
        .map(|endpoint| endpoint.url)
        .ok_or_else(|| unreachable(format!("lists no endpoint for {address}")))
}

/// What an Almanac API answers for an address (the fields Skein reads).
#[derive(Debug, Deserialize)]
struct AlmanacRecord {
    #[serde(default)]
    endpoints: Vec<AlmanacEndpoint>,
}

#[derive(Debug, Deserialize)]
struct AlmanacEndpoint {
    url: String,
    #[serde(default)]
    weight: i64,
}

/// How one delivery of an envelope went wrong.
#[derive(Debug, thiserror::Error)]
enum Submit {
    /// The agent refused the envelope (400 with `{"error": …}`): sending it again would not help.
    #[error("{0}")]
    Refused(String),
    /// Down, busy or slow: another try may work.
    #[error("{0}")]
    Failed(String),
}

/// POSTs `envelope` to `endpoint`, asynchronously (never `x-uagents-connection: sync`,
/// which loses replies and can wedge the agent).
async fn submit(remote: &Remote, endpoint: &str, envelope: &Envelope) -> Result<(), Submit> {
    let url = remote
        .outbound
        .check(endpoint)
        .await
        .map_err(|e| Submit::Refused(format!("its endpoint {e}")))?;
    let response = remote
        .outbound
        .request(Method::POST, url)
        .map_err(|e| Submit::Refused(format!("its endpoint {e}")))?
        .timeout(remote.settings.turn_timeout.min(SUBMIT_TIMEOUT))
        .json(envelope)
        .send()
        .await
        .map_err(|e| Submit::Failed(format!("its endpoint could not be reached: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = error_excerpt(response).await;
    let failure = format!("its endpoint answered {status}: {text}");
    if transient(status) {
        Err(Submit::Failed(failure))
    } else {
        Err(Submit::Refused(failure))
    }
}

/// The agent only queues the message before it answers: a delivery that takes longer is
/// not going to succeed.
const SUBMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
