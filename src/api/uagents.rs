//! Where uAgents reach Skein: `POST /submit` takes their signed envelopes (the replies to
//! what Skein asked them), `HEAD /submit` answers their readiness probe, and a small Almanac
//! API (`/v1/almanac/agents…`) tells an agent started with `agentverse=<this server>` where
//! Skein's identities are, and takes its registration.
//!
//! Everything is checked before anything is believed: the envelope's signature (see
//! [`crate::uagents::Envelope::verify`]), that its target is an identity Skein speaks as,
//! that its sender is a uAgent of that collaboration, and that the session is theirs. A
//! refusal is a 400 with `{"error": …}`, as uAgents answer; nothing changes.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::net::SocketAddr;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use crate::{
    agents::uagent,
    domain::{Agent, AgentAddress, AgentKind, AgentSpec, Collaboration, CollaborationStatus, Team},
    engine::PostRefusal,
    uagents::{self, ChatMessage, Envelope, ErrorMessage},
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/submit", post(submit).head(readiness))
        .route("/v1/almanac/agents", post(register))
        .route("/v1/almanac/agents/{address}", get(lookup))
        .route("/v1/almanac/agents/{address}/status", post(status))
}

/// A refusal as uAgents word theirs.
fn refused(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

fn accepted() -> Response {
    Json(json!({})).into_response()
}

/// An envelope for one of Skein's identities. Answered at once with 200 `{}`; what it
/// carries goes to the collaboration's runner, wherever it runs. An envelope refused is a
/// failed authentication: an address that keeps sending them is throttled like one that
/// keeps trying keys.
async fn submit(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = state.auth_failures.check(client.ip()) {
        return *refusal;
    }
    let response = take(&state, &headers, &body).await;
    if response.status() == StatusCode::BAD_REQUEST {
        state.auth_failures.failed(client.ip());
    }
    response
}

async fn take(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json {
        return refused(StatusCode::BAD_REQUEST, "invalid content-type");
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "contents do not match envelope schema",
        );
    };
    let sender = match envelope.verify(Utc::now()) {
        Ok(sender) => sender,
        Err(error) => return refused(StatusCode::BAD_REQUEST, error),
    };
    if let Ok(target) = AgentAddress::parse(&envelope.target) {
        match state.store.team_by_address(&target).await {
            Ok(Some(team)) => return to_team(state, &envelope, &sender, team).await,
            Ok(None) => {}
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "looking up a team failed");
                return refused(StatusCode::SERVICE_UNAVAILABLE, "try again later");
            }
        }
    }
    let (collaboration, agent) = match route(state, &envelope, &sender).await {
        Ok(routed) => routed,
        Err(response) => return response,
    };
    let collaboration_id = collaboration.id;
    match envelope.schema_digest.as_str() {
        uagents::CHAT_MESSAGE => {
            let Ok(message) = envelope.message::<ChatMessage>() else {
                return refused(StatusCode::BAD_REQUEST, "the payload is not a ChatMessage");
            };
            // A replay is taken once, whichever server it reaches.
            match state.store.hear_uagent_message(message.msg_id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(msg_id = %message.msg_id, "a chat message heard before; ignored");
                    return accepted();
                }
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "noting a uAgent's message failed"
                    );
                    return refused(StatusCode::SERVICE_UNAVAILABLE, "try again later");
                }
            }
            acknowledge(
                state,
                &agent,
                collaboration_id,
                envelope.session,
                message.msg_id,
            );
            let words = message.words();
            if words.trim().is_empty() {
                return accepted();
            }
            let words = crate::engine::within_limit(words, state.config.limits.max_content_chars);
            match state
                .engine
                .post(collaboration_id, agent.sender(), words.clone())
                .await
            {
                Ok(_) => {}
                // No runner holds it just now (a restart, a server that died and whose lease
                // has not yet run out): kept for the runner that resumes it.
                Err(PostRefusal::NotRunning)
                    if collaboration.status == CollaborationStatus::Running =>
                {
                    let kept = state
                        .store
                        .keep_uagent_reply(collaboration_id, agent.id, message.msg_id, &words)
                        .await;
                    if !matches!(kept, Ok(true)) {
                        tracing::warn!(agent = %agent.name, ?kept, "a uAgent's reply could not be kept");
                    }
                }
                // Said out of turn, or after the end: the channel does not take it, and the
                // agent has no use for knowing.
                Err(refusal) => {
                    tracing::info!(agent = %agent.name, %refusal, "a uAgent's message was not taken");
                }
            }
        }
        uagents::ERROR_MESSAGE => {
            let error = envelope
                .message::<ErrorMessage>()
                .map(|m| m.error)
                .unwrap_or_else(|_| "an error it did not describe".into());
            let why = format!("{} answered with an error: {error}", agent.name);
            if let Err(refusal) = state
                .engine
                .fail_turn(collaboration_id, agent.sender(), why)
                .await
            {
                tracing::info!(agent = %agent.name, %refusal, error, "a uAgent's error was not taken");
            }
        }
        uagents::CHAT_ACKNOWLEDGEMENT => {
            tracing::debug!(agent = %agent.name, "a uAgent acknowledged its turn");
        }
        other => {
            tracing::debug!(agent = %agent.name, schema = other, "a uAgent message of an unknown schema; ignored");
        }
    }
    accepted()
}

/// A uAgent's message to a team's address. A ChatMessage starts a run of the team with its
/// text as the objective, in the conversation its session names (a later message in the
/// same session is told what the last run concluded); it is acknowledged at once, and
/// answered with a ChatMessage of the summary when the run has ended, or an ErrorMessage
/// saying why it could not start. The run is started as the key that last saved the team,
/// and counts against the account's quotas like any other.
async fn to_team(
    state: &AppState,
    envelope: &Envelope,
    sender: &AgentAddress,
    team: Team,
) -> Response {
    if !team.answers_uagents {
        return refused(
            StatusCode::BAD_REQUEST,
            "this team does not take messages from uAgents",
        );
    }
    if envelope.schema_digest != uagents::CHAT_MESSAGE {
        // The acknowledgement of its answer, or what the team has no use for.
        return accepted();
    }
    let Ok(message) = envelope.message::<ChatMessage>() else {
        return refused(StatusCode::BAD_REQUEST, "the payload is not a ChatMessage");
    };
    match state.store.hear_uagent_message(message.msg_id).await {
        Ok(true) => {}
        Ok(false) => return accepted(),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "noting a uAgent's message failed"
            );
            return refused(StatusCode::SERVICE_UNAVAILABLE, "try again later");
        }
    }
    let words = message.words();
    let objective =
        super::teams::most_recent(words.trim(), state.config.limits.max_objective_chars);
    let started = if objective.is_empty() {
        Err("the message has no text: its text is the team's objective".to_owned())
    } else {
        start_for_uagent(state, &team, envelope.session, objective).await
    };
    let answer = Answer {
        state: state.clone(),
        identity: {
            let identities = &state.engine.remote().identities;
            // The one the team was written to; the current key's when that one was dropped.
            identities
                .team_at(team.id, &team.address)
                .unwrap_or_else(|| identities.for_team(team.id))
        },
        to: sender.clone(),
        session: envelope.session,
        endpoint: state
            .store
            .registered_uagent(sender.as_str(), crate::domain::now())
            .await
            .ok()
            .flatten(),
    };
    let msg_id = message.msg_id;
    state.tasks.spawn("team answer to a uAgent", async move {
        answer.acknowledge(msg_id).await;
        match started {
            Ok(collaboration) => answer.summary_of(collaboration).await,
            Err(why) => answer.error(why).await,
        }
    });
    accepted()
}

/// Starts the team's run for a uAgent, as the key that last saved the team.
async fn start_for_uagent(
    state: &AppState,
    team: &Team,
    session: Uuid,
    objective: String,
) -> Result<Collaboration, String> {
    let key = state
        .store
        .get_key(team.account_id, team.saved_by)
        .await
        .map_err(|e| e.to_string())?
        .filter(|key| key.revoked_at.is_none())
        .ok_or("the key that saved this team has been revoked: save the team again")?;
    let objective = super::teams::with_earlier(state, team, session, objective)
        .await
        .map_err(|e| e.to_string())?;
    let run = super::teams::RunTeam {
        context_id: Some(session),
        ..super::teams::RunTeam::objective(objective)
    };
    super::teams::start(state, &key, team, run)
        .await
        .map_err(|error| error.to_string())
}

/// Where and as whom a team answers the uAgent that wrote to it.
struct Answer {
    state: AppState,
    identity: uagents::Identity,
    to: AgentAddress,
    session: Uuid,
    endpoint: Option<String>,
}

/// How often a team's answer looks whether its run has ended, and how long it waits.
const ANSWER_POLL: std::time::Duration = std::time::Duration::from_secs(1);
const ANSWER_WAIT: chrono::TimeDelta = chrono::TimeDelta::hours(6);

impl Answer {
    async fn send(&self, schema: &str, message: &impl serde::Serialize) {
        let remote = self.state.engine.remote();
        if let Err(error) = uagent::send(
            remote,
            &self.identity,
            &self.to,
            self.endpoint.as_deref(),
            self.session,
            schema,
            message,
        )
        .await
        {
            tracing::info!(to = %self.to, error, "a team's answer to a uAgent was not sent");
        }
    }

    async fn acknowledge(&self, msg_id: Uuid) {
        let acknowledgement = uagents::ChatAcknowledgement {
            timestamp: Utc::now(),
            acknowledged_msg_id: msg_id,
            metadata: None,
        };
        self.send(uagents::CHAT_ACKNOWLEDGEMENT, &acknowledgement)
            .await;
    }

    async fn error(&self, why: String) {
        self.send(uagents::ERROR_MESSAGE, &ErrorMessage { error: why })
            .await;
    }

    /// Waits for the run to end and be summarized, then sends the summary.
    async fn summary_of(&self, started: Collaboration) {
        let give_up = Utc::now() + ANSWER_WAIT;
        let ended = loop {
            tokio::time::sleep(ANSWER_POLL).await;
            let current = match self
                .state
                .store
                .get_collaboration(started.account_id, started.id)
                .await
            {
                Ok(Some(current)) => current,
                // Deleted meanwhile: there is nothing to answer with.
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "reading a team's run failed");
                    continue;
                }
            };
            if super::teams::answered(&current) {
                break current;
            }
            if Utc::now() > give_up {
                return;
            }
        };
        let text = match (&ended.headline, &ended.summary) {
            (Some(headline), Some(summary)) => format!("{headline}\n\n{summary}"),
            (None, Some(summary)) => summary.clone(),
            _ => format!(
                "The team's run ended ({}) without a summary.",
                ended.status.name()
            ),
        };
        let message = ChatMessage::text(&text, Utc::now()).with_metadata(vec![
            ("collaboration_id".into(), ended.id.to_string()),
            ("status".into(), ended.status.name()),
        ]);
        self.send(uagents::CHAT_MESSAGE, &message).await;
    }
}

/// The collaboration an envelope belongs to (as stored just now), and the uAgent that sent
/// it: its target must be the identity Skein speaks as there, its sender one of its
/// uAgents, its session theirs.
async fn route(
    state: &AppState,
    envelope: &Envelope,
    sender: &AgentAddress,
) -> Result<(Collaboration, Agent), Response> {
    let unroutable = || refused(StatusCode::BAD_REQUEST, "unable to route envelope");
    let internal = |error: crate::store::StoreError| {
        tracing::error!(
            error = format!("{error:#}"),
            "reading a uAgent's collaboration failed"
        );
        refused(StatusCode::SERVICE_UNAVAILABLE, "try again later")
    };
    let collaboration_id = state
        .store
        .identity_collaboration(&envelope.target)
        .await
        .map_err(internal)?
        .ok_or_else(unroutable)?;
    // The identity is derived from the server key: one no key of this server gives is not
    // ours (a key dropped after its rotation), and neither is its session.
    let session = state
        .engine
        .remote()
        .identities
        .session_at(collaboration_id, &envelope.target, sender)
        .ok_or_else(unroutable)?;
    let collaboration = state
        .store
        .collaboration_unscoped(collaboration_id)
        .await
        .map_err(internal)?
        .ok_or_else(unroutable)?;
    let member = collaboration
        .roster()
        .into_iter()
        .find(|member| member.kind == AgentKind::Uagent && member.address == sender.as_str())
        .ok_or_else(|| {
            refused(
                StatusCode::BAD_REQUEST,
                "the sender is not a uAgent of this collaboration",
            )
        })?;
    if envelope.session != session {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "the session is not this agent's",
        ));
    }
    let agent = state
        .store
        .agents_unscoped(&[member.id])
        .await
        .map_err(internal)?
        .pop()
        .ok_or_else(unroutable)?;
    Ok((collaboration, agent))
}

/// The chat protocol acknowledges every message; sent after this request is answered.
fn acknowledge(
    state: &AppState,
    agent: &Agent,
    collaboration_id: Uuid,
    session: Uuid,
    msg_id: Uuid,
) {
    let remote = state.engine.remote().clone();
    let agent = agent.clone();
    state.tasks.spawn("uagent acknowledgement", async move {
        let identity = remote.identities.for_collaboration(collaboration_id);
        let endpoint = match &agent.spec {
            AgentSpec::Uagent { endpoint } => endpoint.clone(),
            _ => None,
        };
        uagent::acknowledge(
            &remote,
            &identity,
            &agent,
            endpoint.as_deref(),
            session,
            msg_id,
        )
        .await;
    });
}

/// uAgents' readiness probe: Skein is ready for the identities it speaks as.
async fn readiness(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let status = match headers
        .get("x-uagents-address")
        .and_then(|v| v.to_str().ok())
    {
        None => "indeterminate",
        Some(address) => match is_ours(&state, address).await {
            Ok(true) => "ready",
            _ => "not-ready",
        },
    };
    ([("x-uagents-status", status)], StatusCode::OK).into_response()
}

/// Whether `address` is one Skein answers at: a collaboration's identity, or a team that
/// takes uAgents' messages.
async fn is_ours(state: &AppState, address: &str) -> Result<bool, crate::store::StoreError> {
    if state.store.identity_collaboration(address).await?.is_some() {
        return Ok(true);
    }
    let Ok(address) = AgentAddress::parse(address) else {
        return Ok(false);
    };
    Ok(state
        .store
        .team_by_address(&address)
        .await?
        .is_some_and(|team| team.answers_uagents))
}

/// Where one of Skein's identities is, as an Almanac API answers: this server's `/submit`.
async fn lookup(State(state): State<AppState>, Path(address): Path<String>) -> Response {
    match is_ours(&state, &address).await {
        Ok(true) => {
            let public = state
                .config
                .uagents
                .public_url
                .as_deref()
                .unwrap_or_default();
            // Valid for a day; asked again on every message, so never stale in practice.
            let expiry = Utc::now() + chrono::Duration::days(1);
            Json(json!({
                "address": address,
                "endpoints": [{"url": format!("{public}/submit"), "weight": 1}],
                "expiry": expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }))
            .into_response()
        }
        Ok(false) => refused(StatusCode::NOT_FOUND, "not found"),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "an Almanac lookup failed");
            refused(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}

/// An agent's registration (`POST /v1/almanac/agents`), signed by the agent. Skein checks
/// the signature and keeps where the agent says it is for a few hours, so that it can be
/// added by its address alone (see `api::agents`).
#[derive(Debug, Deserialize)]
struct Attestation {
    #[serde(alias = "agent_address")]
    agent_identifier: String,
    signature: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

async fn register(State(state): State<AppState>, body: Bytes) -> Response {
    let Ok(attestation) = serde_json::from_slice::<Attestation>(&body) else {
        return refused(StatusCode::BAD_REQUEST, "not an agent registration");
    };
    let address = attestation
        .agent_identifier
        .rsplit("://")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut signed = attestation.rest.clone();
    signed.insert(
        "agent_identifier".into(),
        attestation.agent_identifier.into(),
    );
    if let Err(error) = uagents::verify_attestation(&address, &signed, &attestation.signature) {
        return refused(StatusCode::BAD_REQUEST, error);
    }
    // Where it says it is: its heaviest endpoint, if it reads as an HTTP URL.
    let endpoint = signed
        .get("endpoints")
        .and_then(|endpoints| endpoints.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["url"].as_str()?, e["weight"].as_i64().unwrap_or(0))))
        .filter(|(url, _)| {
            url.len() <= 2048 && (url.starts_with("http://") || url.starts_with("https://"))
        })
        .max_by_key(|(_, weight)| *weight)
        .map(|(url, _)| url.to_owned());
    if let Some(endpoint) = endpoint {
        let until = Utc::now() + chrono::Duration::hours(REGISTRATION_HOURS);
        match state
            .store
            .register_uagent(&address, &endpoint, until)
            .await
        {
            Ok(true) => tracing::debug!(address, endpoint, "a uAgent registered"),
            Ok(false) => tracing::warn!(address, "a uAgent registration was not kept: too many"),
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "keeping a uAgent registration failed"
                );
                return refused(StatusCode::SERVICE_UNAVAILABLE, "try again later");
            }
        }
    }
    accepted()
}

/// How long a registration holds: uAgents register again every hour.
const REGISTRATION_HOURS: i64 = 3;

/// An agent saying it is active: taken, and nothing kept.
async fn status() -> Response {
    accepted()
}
