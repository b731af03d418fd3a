//! `a2a` agents: remote agents that speak Google's Agent2Agent protocol (JSON-RPC binding).
//!
//! The agent is found through its card: the registered URL when it names a `.json` file
//! (`…/agent-card.json` falling back to `…/agent.json`), else the base URL's
//! `/.well-known/agent-card.json`, then `/.well-known/agent.json`. Cards are kept for
//! [`crate::config::RemoteAgentSettings::card_ttl`]. Skein speaks the version the card
//! declares, preferring 1.0:
//!
//! - **1.0**: a `supportedInterfaces` entry with `protocolBinding` `JSONRPC` and a 1.x
//!   `protocolVersion`; methods `SendMessage`, `GetTask`, `CancelTask`; header
//!   `A2A-Version: 1.0`; roles `ROLE_USER`/`ROLE_AGENT`; parts `{"text": …}`; a send answers
//!   `{"message": …}` or `{"task": …}`, task states are `TASK_STATE_*`.
//! - **0.3**: a top-level `url` and a 0.x `protocolVersion`; methods `message/send`,
//!   `tasks/get`, `tasks/cancel`; parts `{"kind": "text", "text": …}`; a send answers the
//!   message or task itself, told apart by `kind`.
//!
//! Each turn is one message with `contextId` = the collaboration id and `messageId` = the
//! turn id (the same on a retry), carrying the transcript lines the agent has not seen (those
//! since it last spoke), one text part each, `Name: text`; its first turn opens with the
//! collaboration's frame. A `Message` reply is the turn. A `Task` is asked about again every
//! `poll_interval` until it completes (its artifacts' text, else its status message, is the
//! turn), asks for input (its question is the turn), or fails, is rejected or cancelled (a
//! participant error). A task still open when the turn is abandoned (the collaboration
//! stopped or went quiet) is cancelled.
//!
//! Every URL, the card's own endpoint included, goes through the outbound guard.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    AgentError, Completion, INSTRUCTION, ReadError, Remote, TurnContext, excerpt, read_json, retry,
    transient,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V03,
}

/// What a card told us: where to send, and in which version.
#[derive(Debug, Clone)]
struct Card {
    endpoint: Url,
    version: Version,
    /// The agent's credentials, sent with every call (not part of what is cached).
    headers: Arc<BTreeMap<String, String>>,
}

/// Agent cards already fetched, by registered URL, with when they were fetched.
#[derive(Clone)]
pub struct Cards {
    ttl: Duration,
    cached: Arc<DashMap<String, (tokio::time::Instant, Card)>>,
}

impl Cards {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: Arc::default(),
        }
    }
}

/// Tasks an agent left waiting for input, by collaboration and agent: its next turn
/// continues that task rather than starting another.
pub type InputRequests = Arc<DashMap<(Uuid, Uuid), String>>;

pub(super) async fn speak(
    card_url: &str,
    headers: &BTreeMap<String, String>,
    context: &TurnContext,
    remote: &Remote,
) -> Result<Completion, AgentError> {
    let spoken = converse(card_url, headers, context, remote).await;
    if let Err(AgentError::Unreachable(_)) = spoken {
        // The card may be out of date (the agent moved): read it again next time.
        remote.cards.cached.remove(card_url);
    }
    spoken
}

async fn converse(
    card_url: &str,
    headers: &BTreeMap<String, String>,
    context: &TurnContext,
    remote: &Remote,
) -> Result<Completion, AgentError> {
    let card = card(card_url, headers, remote).await?;
    let client = Client {
        remote,
        card: &card,
    };
    let mut message = client.message(context);
    let key = (context.collaboration_id, context.speaker.id);
    if let Some((_, task)) = remote.input_requests.remove(&key) {
        message["taskId"] = task.into();
    }
    let (method, params) = match card.version {
        Version::V1 => (
            "SendMessage",
            json!({"message": message, "configuration": {"returnImmediately": true}}),
        ),
        Version::V03 => (
            "message/send",
            json!({"message": message, "configuration": {"blocking": false}}),
        ),
    };
    let result = send(remote, &card, method, params).await?;
    let mut task = match client.reply(result)? {
        Reply::Message(message) => return turn(text_of(&message)),
        Reply::Task(task) => task,
    };
    let id = task["id"]
        .as_str()
        .ok_or_else(|| AgentError::BadReply("its task has no id".into()))?
        .to_owned();
    // Cancelled if this turn is dropped before the task ends.
    let mut open = OpenTask {
        remote: remote.clone(),
        card: card.clone(),
        id: id.clone(),
        done: false,
    };
    loop {
        let state = task_state(&task);
        match state.as_str() {
            "completed" => {
                open.done = true;
                let artifacts: Vec<String> = task["artifacts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text_of)
                    .filter(|t| !t.is_empty())
                    .collect();
                let text = if artifacts.is_empty() {
                    text_of(&task["status"]["message"])
                } else {
                    artifacts.join("\n")
                };
                return turn(text);
            }
            "input_required" => {
                open.done = true;
                remote.input_requests.insert(key, id.clone());
                return turn(text_of(&task["status"]["message"]));
            }
            "submitted" | "working" => {}
            // Failed, rejected, cancelled, wanting authentication, or a state we cannot read.
            _ => {
                open.done = true;
                let why = text_of(&task["status"]["message"]);
                let state = if state.is_empty() {
                    "unspecified"
                } else {
                    &state
                };
                return Err(AgentError::BadReply(format!(
                    "its task ended {}{}",
                    state.replace('_', " "),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", excerpt(&why, 300))
                    }
                )));
            }
        }
        tokio::time::sleep(remote.settings.poll_interval).await;
        let method = match card.version {
            Version::V1 => "GetTask",
            Version::V03 => "tasks/get",
        };
        let result = client.call(method, json!({"id": id})).await?;
        task = match client.reply(result)? {
            Reply::Task(task) => task,
            Reply::Message(message) => {
                open.done = true;
                return turn(text_of(&message));
            }
        };
    }
}

/// Sends the turn's message from a task of its own. A turn dropped while the agent is still
/// answering (the collaboration was stopped) would otherwise never learn the id of the task
/// the answer opens, and could not cancel it: the task is cancelled when the answer comes.
async fn send(
    remote: &Remote,
    card: &Card,
    method: &'static str,
    params: Value,
) -> Result<Value, AgentError> {
    let (answer, answered) = oneshot::channel();
    let tasks = remote.tasks.clone();
    let (remote, card) = (remote.clone(), card.clone());
    tasks.spawn("a2a send", async move {
        let client = Client {
            remote: &remote,
            card: &card,
        };
        let result = client.call(method, params).await;
        let Err(Ok(unwanted)) = answer.send(result) else {
            return;
        };
        if let Ok(Reply::Task(task)) = client.reply(unwanted)
            && let Some(id) = task["id"].as_str()
        {
            let open = matches!(
                task_state(&task).as_str(),
                "submitted" | "working" | "input_required"
            );
            // Dropped at once: cancelled if it is still open.
            drop(OpenTask {
                remote: remote.clone(),
                card: card.clone(),
                id: id.to_owned(),
                done: !open,
            });
        }
    });
    answered
        .await
        .map_err(|_| AgentError::Unreachable("the request to the agent was lost".into()))?
}

fn turn(text: String) -> Result<Completion, AgentError> {
    if text.trim().is_empty() {
        return Err(AgentError::BadReply("it answered with no text".into()));
    }
    Ok(Completion {
        content: text,
        ..Completion::default()
    })
}

/// The card for `card_url`, from the cache while it is fresh.
async fn card(
    card_url: &str,
    headers: &BTreeMap<String, String>,
    remote: &Remote,
) -> Result<Card, AgentError> {
    let cards = &remote.cards;
    let headers = Arc::new(headers.clone());
    if let Some(entry) = cards.cached.get(card_url)
        && entry.0.elapsed() < cards.ttl
    {
        return Ok(Card {
            headers,
            ..entry.1.clone()
        });
    }
    let card = fetch_card(card_url, &headers, remote).await?;
    cards.cached.insert(
        card_url.to_owned(),
        (
            tokio::time::Instant::now(),
            Card {
                headers: Arc::default(),
                ..card.clone()
            },
        ),
    );
    Ok(card)
}

/// Where a card may be, in the order to try.
fn card_locations(card_url: &str) -> Result<Vec<Url>, AgentError> {
    let url = Url::parse(card_url)
        .map_err(|_| AgentError::Misconfigured(format!("`{card_url}` is not a URL")))?;
    let locations = if url.path().ends_with(".json") {
        let mut fallback = url.clone();
        let path = url.path().replace("agent-card.json", "agent.json");
        fallback.set_path(&path);
        vec![url, fallback]
    } else {
        let base = if url.path().ends_with('/') {
            url
        } else {
            let mut with_slash = url.clone();
            with_slash.set_path(&format!("{}/", url.path()));
            with_slash
        };
        ["agent-card.json", "agent.json"]
            .iter()
            .filter_map(|name| base.join(&format!(".well-known/{name}")).ok())
            .collect()
    };
    let mut unique = Vec::new();
    for location in locations {
        if !unique.contains(&location) {
            unique.push(location);
        }
    }
    Ok(unique)
}

async fn fetch_card(
    card_url: &str,
    headers: &Arc<BTreeMap<String, String>>,
    remote: &Remote,
) -> Result<Card, AgentError> {
    let mut last = String::from("no card location to try");
    for location in card_locations(card_url)? {
        let url = remote
            .outbound
            .check(location.as_str())
            .await
            .map_err(|e| AgentError::Unreachable(format!("its card URL {e}")))?;
        let mut request = remote
            .outbound
            .request(Method::GET, url)
            .map_err(|e| AgentError::Unreachable(format!("its card URL {e}")))?
            .timeout(remote.settings.turn_timeout)
            .header("a2a-version", "1.0")
            .header("accept", "application/json");
        for (name, value) in headers.iter() {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                last = format!("its card at {location} could not be fetched: {error}");
                continue;
            }
        };
        if response.status() == StatusCode::NOT_FOUND {
            last = format!("no agent card at {location}");
            continue;
        }
        if !response.status().is_success() {
            last = format!("its card at {location} answered {}", response.status());
            continue;
        }
        // A page that is not a card (a web app's catch-all, say): try the next place.
        let Ok(card) = read_json::<Value>(response).await else {
            last = format!("what {location} serves is not an agent card");
            continue;
        };
        let (endpoint, version) = read_card(&card, &location)?;
        let endpoint = remote
            .outbound
            .check(endpoint.as_str())
            .await
            .map_err(|e| AgentError::Unreachable(format!("the endpoint its card names {e}")))?;
        return Ok(Card {
            endpoint,
            version,
            headers: headers.clone(),
        });
    }
    Err(AgentError::Unreachable(last))
}

/// The JSON-RPC endpoint and version a card declares, 1.0 preferred.
fn read_card(card: &Value, location: &Url) -> Result<(Url, Version), AgentError> {
    let join = |url: &str| {
        location
            .join(url)
            .map_err(|_| AgentError::BadReply(format!("its card names a bad URL `{url}`")))
    };
    let v1 = card["supportedInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|interface| {
            interface["protocolBinding"]
                .as_str()
                .is_none_or(|b| b.eq_ignore_ascii_case("JSONRPC"))
                && interface["protocolVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("1."))
        });
    if let Some(url) = v1.and_then(|interface| interface["url"].as_str()) {
        return Ok((join(url)?, Version::V1));
    }
    let transport = card["preferredTransport"].as_str().unwrap_or("JSONRPC");
    // 0.2 and earlier named their methods otherwise: only 0.3 is spoken.
    let old = card["protocolVersion"]
        .as_str()
        .is_some_and(|v| v == "0.3" || v.starts_with("0.3."));
    if let (Some(url), true, true) = (
        card["url"].as_str(),
        old,
        transport.eq_ignore_ascii_case("JSONRPC"),
    ) {
        return Ok((join(url)?, Version::V03));
    }
    Err(AgentError::BadReply(
        "its card offers neither an A2A 1.0 nor an A2A 0.3 JSON-RPC interface".into(),
    ))
}

enum Reply {
    Message(Value),
    Task(Value),
}

struct Client<'a> {
    remote: &'a Remote,
    card: &'a Card,
}

impl Client<'_> {
    /// This turn's message: the lines the agent has not seen, one part each.
    fn message(&self, context: &TurnContext) -> Value {
        let mut texts = Vec::new();
        if context.spoken_before == 0 {
            let members: Vec<String> = context
                .roster
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let role = if i == 0 { "principal" } else { "participant" };
                    format!("{} ({role})", s.name)
                })
                .collect();
            texts.push(format!(
                "You are {name} in a collaboration with {members}.\nObjective: {objective}\n{INSTRUCTION}",
                name = context.speaker.name,
                members = members.join(", "),
                objective = context.objective,
            ));
            if !context.synopsis.is_empty() {
                texts.push(format!("Earlier, in short:\n{}", context.synopsis));
            }
        }
        // What was said since this agent last spoke.
        let since = context
            .window
            .iter()
            .rposition(|line| line.sender.id == context.speaker.id)
            .map_or(0, |i| i + 1);
        texts.extend(
            context.window[since..]
                .iter()
                .map(|line| format!("{}: {}", line.sender.name, line.content)),
        );
        if texts.is_empty() {
            texts.push(format!("It is your turn, {}.", context.speaker.name));
        }
        match self.card.version {
            Version::V1 => json!({
                "messageId": context.turn_id,
                "contextId": context.collaboration_id,
                "role": "ROLE_USER",
                "parts": texts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>(),
            }),
            Version::V03 => json!({
                "kind": "message",
                "messageId": context.turn_id,
                "contextId": context.collaboration_id,
                "role": "user",
                "parts": texts.iter().map(|t| json!({"kind": "text", "text": t})).collect::<Vec<_>>(),
            }),
        }
    }

    /// A message or a task, whichever way this version wraps it.
    fn reply(&self, result: Value) -> Result<Reply, AgentError> {
        if let Some(message) = result.get("message") {
            return Ok(Reply::Message(message.clone()));
        }
        if let Some(task) = result.get("task") {
            return Ok(Reply::Task(task.clone()));
        }
        match result["kind"].as_str() {
            Some("message") => return Ok(Reply::Message(result)),
            Some("task") => return Ok(Reply::Task(result)),
            _ => {}
        }
        if result.get("status").is_some() {
            Ok(Reply::Task(result))
        } else if result.get("parts").is_some() {
            Ok(Reply::Message(result))
        } else {
            Err(AgentError::BadReply(format!(
                "its answer is neither a message nor a task: {}",
                excerpt(&result.to_string(), 200)
            )))
        }
    }

    /// One JSON-RPC call: the `result`, with 429, 5xx, timeouts and connection failures
    /// retried; a JSON-RPC error is the agent's answer and is not.
    async fn call(&self, method: &str, params: Value) -> Result<Value, AgentError> {
        let body =
            json!({"jsonrpc": "2.0", "id": Uuid::now_v7(), "method": method, "params": params});
        let settings = &self.remote.settings;
        let mut attempt = 0;
        loop {
            let mut request = self
                .remote
                .outbound
                .request(Method::POST, self.card.endpoint.clone())
                .map_err(|e| AgentError::Unreachable(format!("its endpoint {e}")))?
                .timeout(settings.turn_timeout)
                .json(&body);
            if self.card.version == Version::V1 {
                request = request.header("a2a-version", "1.0");
            }
            for (name, value) in self.card.headers.iter() {
                request = request.header(name, value);
            }
            let (failure, wait) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let answer: Value = match read_json(response).await {
                        Ok(answer) => answer,
                        Err(ReadError::Invalid(why)) => {
                            return Err(AgentError::BadReply(format!("{method}: {why}")));
                        }
                        Err(ReadError::Broken(why)) => {
                            return Err(AgentError::Unreachable(format!("{method}: {why}")));
                        }
                    };
                    if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
                        return Err(AgentError::BadReply(format!(
                            "it answered {method} with error {}: {}",
                            error["code"],
                            error["message"].as_str().unwrap_or("(no message)")
                        )));
                    }
                    return answer.get("result").cloned().ok_or_else(|| {
                        AgentError::BadReply(format!("its answer to {method} has no result"))
                    });
                }
                Ok(response) => {
                    let status = response.status();
                    let wait = retry::retry_after(response.headers());
                    let failure = format!("its endpoint answered {method} with {status}");
                    if !transient(status) {
                        return Err(AgentError::BadReply(failure));
                    }
                    (failure, wait)
                }
                Err(error) if error.is_timeout() => (
                    format!(
                        "its endpoint did not answer {method} within {} s",
                        settings.turn_timeout.as_secs_f32()
                    ),
                    None,
                ),
                Err(error) => (format!("its endpoint could not be reached: {error}"), None),
            };
            let delay = self.remote.backoff(attempt).max(wait.unwrap_or_default());
            if attempt >= settings.max_retries || delay > retry::LONGEST_RETRY_AFTER {
                return Err(AgentError::Unreachable(format!(
                    "{failure} (after {} tries)",
                    attempt + 1
                )));
            }
            tokio::time::sleep(delay).await;
            retry::noted();
            attempt += 1;
        }
    }
}

/// `completed`, `working`, `input_required`, … whichever spelling the version uses.
fn task_state(task: &Value) -> String {
    let state = task["status"]["state"].as_str().unwrap_or_default();
    let state = state.to_ascii_lowercase().replace('-', "_");
    state
        .strip_prefix("task_state_")
        .unwrap_or(&state)
        .to_owned()
}

/// The text parts of a message or an artifact, one per line.
fn text_of(holder: &Value) -> String {
    holder["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|part| part["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A task the agent is still working on. Dropped before it ended, it is cancelled: the
/// collaboration no longer wants its answer.
struct OpenTask {
    remote: Remote,
    card: Card,
    id: String,
    done: bool,
}

impl Drop for OpenTask {
    fn drop(&mut self) {
        if self.done || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (remote, card, id) = (self.remote.clone(), self.card.clone(), self.id.clone());
        self.remote
            .tasks
            .spawn("a2a task cancellation", async move {
                let client = Client {
                    remote: &remote,
                    card: &card,
                };
                let method = match card.version {
                    Version::V1 => "CancelTask",
                    Version::V03 => "tasks/cancel",
                };
                let cancelled = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.call(method, json!({"id": id})),
                )
                .await;
                if let Ok(Err(error)) = cancelled {
                    tracing::debug!(task = %id, %error, "cancelling an abandoned A2A task failed");
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_looked_up_at_the_well_known_card_paths() {
        let tried = |url: &str| -> Vec<String> {
            card_locations(url)
                .unwrap()
                .iter()
                .map(Url::to_string)
                .collect()
        };
        assert_eq!(
            tried("http://a.test:9/agents/x"),
            [
                "http://a.test:9/agents/x/.well-known/agent-card.json",
                "http://a.test:9/agents/x/.well-known/agent.json"
            ]
        );
        assert_eq!(
            tried("http://a.test/.well-known/agent-card.json"),
            [
                "http://a.test/.well-known/agent-card.json",
                "http://a.test/.well-known/agent.json"
            ]
        );
    }

    #[test]
    fn a_card_is_read_as_1_0_when_it_offers_it_and_as_0_3_otherwise() {
        let at = Url::parse("http://a.test/.well-known/agent-card.json").unwrap();
        let both = json!({
            "supportedInterfaces": [
                {"url": "http://a.test/v03", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
                {"url": "http://a.test/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
            ],
            "url": "http://a.test/v03", "protocolVersion": "0.3", "preferredTransport": "JSONRPC"
        });
        let (url, version) = read_card(&both, &at).unwrap();
        assert_eq!((url.as_str(), version), ("http://a.test/rpc", Version::V1));
        let old = json!({"url": "/rpc", "protocolVersion": "0.3.0"});
        let (url, version) = read_card(&old, &at).unwrap();
        assert_eq!((url.as_str(), version), ("http://a.test/rpc", Version::V03));
        let grpc_only = json!({"supportedInterfaces": [
            {"url": "http://a.test/g", "protocolBinding": "GRPC", "protocolVersion": "1.0"}]});
        assert!(read_card(&grpc_only, &at).is_err());
    }

    #[test]
    fn task_states_read_the_same_in_both_versions() {
        for (raw, read) in [
            ("TASK_STATE_COMPLETED", "completed"),
            ("TASK_STATE_INPUT_REQUIRED", "input_required"),
            ("input-required", "input_required"),
            ("canceled", "canceled"),
        ] {
            assert_eq!(task_state(&json!({"status": {"state": raw}})), read);
        }
    }
}
