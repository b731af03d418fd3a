//! Teams as A2A 1.0 agents: `/a2a/teams/{team}` speaks the protocol's JSON-RPC binding and
//! `/a2a/teams/{team}/.well-known/agent-card.json` is the team's card.
//!
//! A task is a collaboration of the team: its id is the collaboration's, its `contextId`
//! the conversation it belongs to (the caller's, or a new one). `SendMessage` starts one with
//! the message's text as its objective (a run in a conversation that had one before is told
//! how the last one ended); `GetTask`, `ListTasks` and `CancelTask` read and stop them;
//! `SendStreamingMessage` and `SubscribeToTask` stream the channel as server-sent events:
//! the task, a `statusUpdate` per message (working, the message as the agent's), an
//! `artifactUpdate` per artifact (the summary as text, the outcome as data), then the final
//! status. Auth is the account's API key as a bearer token, as for the REST API: a caller
//! sees only its own account's teams and tasks, and every run counts against its quotas.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    ApiPath, AppState,
    auth::Caller,
    teams::{self, RunTeam},
};
use crate::{
    domain::{Collaboration, CollaborationStatus, EventBody, PageRequest, Scope, Team},
    engine::StopOutcome,
    error::AppError,
    live::{Following, Nudge, Refusal, StreamPass},
    store::CollaborationFilter,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/a2a/teams/{team}", post(rpc))
        .route("/a2a/teams/{team}/.well-known/agent-card.json", get(card))
}

/// The protocol version served.
const VERSION: &str = "1.0";
/// How long a stream (or a blocking send) waits for a nudge from the account's feed (a
/// message stored, a lasting change) before it looks at the store anyway: a nudge lost
/// between processes costs this much delay, never an update.
const STREAM_LOOK: Duration = Duration::from_secs(2);
/// The most events a stream reads at once.
const STREAM_BATCH: u32 = 200;
/// The longest a `ListTasks` page.
const MAX_PAGE_SIZE: u32 = 100;

/// A JSON-RPC error as A2A words them.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn parse(message: impl Into<String>) -> Self {
        Self::new(-32700, message)
    }
    fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(-32600, message)
    }
    fn method_not_found(method: &str) -> Self {
        Self::new(-32601, format!("method `{method}` is not served"))
    }
    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }
    fn task_not_found() -> Self {
        Self::new(-32001, "no such task")
    }
    fn not_cancelable(state: &str) -> Self {
        Self::new(-32002, format!("the task has already ended ({state})"))
    }
    fn unsupported(message: impl Into<String>) -> Self {
        Self::new(-32004, message)
    }
}

impl From<AppError> for RpcError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Validation(errors) => Self::invalid_params(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AppError::Conflict(message) | AppError::Forbidden(message) => {
                Self::invalid_request(message)
            }
            AppError::NotFound(what) => Self::invalid_params(format!("no such {what}")),
            other => {
                tracing::error!(error = format!("{other:#}"), "an A2A request failed");
                Self::new(-32603, "an internal error occurred; it has been logged")
            }
        }
    }
}

impl From<crate::store::StoreError> for RpcError {
    fn from(error: crate::store::StoreError) -> Self {
        AppError::from(error).into()
    }
}

fn reply(id: &Value, outcome: Result<Value, RpcError>) -> Response {
    Json(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": error.code, "message": error.message}}),
    })
    .into_response()
}

/// The caller's team, or the REST API's 401/403/404 for this route.
async fn team_of(
    state: &AppState,
    caller: Option<&Caller>,
    team: &str,
    scope: Scope,
) -> Result<(Caller, Team), AppError> {
    let caller = caller.cloned().ok_or(AppError::Unauthorized)?;
    caller.require(scope)?;
    let team = teams::find(state, caller.account_id, team).await?;
    Ok((caller, team))
}

async fn card(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let (_, team) = team_of(&state, caller.as_deref(), &team, Scope::Read).await?;
    let base = teams::base_url(&state, &headers);
    let view = teams::view(&state, &base, team.clone()).await?;
    let roster: Vec<String> = std::iter::once(&view.principal)
        .chain(&view.participants)
        .map(|m| m.name.clone())
        .collect();
    let description = team.description.clone().unwrap_or_else(|| {
        format!(
            "A team of agents ({}) working together on an objective.",
            roster.join(", ")
        )
    });
    Ok(Json(json!({
        "name": team.name,
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "provider": {"organization": "Skein", "url": base},
        "supportedInterfaces": [{
            "url": view.a2a_url,
            "protocolBinding": "JSONRPC",
            "protocolVersion": VERSION,
        }],
        "capabilities": {"streaming": true, "pushNotifications": false},
        "securitySchemes": {
            "skein_api_key": {"httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "bearerFormat": "sk_…",
                "description": "A Skein API key of the team's account",
            }},
        },
        "securityRequirements": [{"schemes": {"skein_api_key": {"list": []}}}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [{
            "id": "collaborate",
            "name": format!("{} on an objective", team.name),
            "description": format!(
                "Send an objective: {} discuss it in a live channel, up to {} messages, and \
                 answer with a summary (text) and an outcome (decisions, action items, open \
                 questions; data).",
                roster.join(", "),
                team.defaults.message_cap
            ),
            "tags": ["team", "collaboration", "skein"],
            "examples": ["Plan a product launch for next month"],
        }],
    })))
}

async fn rpc(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    ApiPath(team): ApiPath<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reply(&Value::Null, Err(RpcError::parse("the body is not JSON")));
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let (Some(method), Some("2.0")) = (
        request.get("method").and_then(Value::as_str),
        request.get("jsonrpc").and_then(Value::as_str),
    ) else {
        return reply(
            &id,
            Err(RpcError::invalid_request(
                "not a JSON-RPC 2.0 request (`jsonrpc` and `method` are required)",
            )),
        );
    };
    let scope = match method {
        "GetTask" | "ListTasks" | "SubscribeToTask" => Scope::Read,
        _ => Scope::Write,
    };
    let (caller, team) = match team_of(&state, caller.as_deref(), &team, scope).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let params = request.get("params").cloned().unwrap_or(json!({}));
    if !params.is_object() {
        return reply(
            &id,
            Err(RpcError::invalid_params("`params` must be an object")),
        );
    }
    let outcome = match method {
        "SendMessage" => send(&state, &caller, &team, &params).await,
        "GetTask" => task_by_id(&state, &team, &params)
            .await
            .map(|c| task(&c, None)),
        "CancelTask" => cancel(&state, &team, &params).await,
        "ListTasks" => list(&state, &team, &params).await,
        "SendStreamingMessage" => match started(&state, &caller, &team, &params).await {
            Ok(collaboration) => return stream(state, id, &caller, collaboration),
            Err(error) => Err(error),
        },
        "SubscribeToTask" => match task_by_id(&state, &team, &params).await {
            Ok(collaboration) if terminal(&collaboration) => Err(RpcError::unsupported(
                "the task has ended: read it with GetTask",
            )),
            Ok(collaboration) => return stream(state, id, &caller, collaboration),
            Err(error) => Err(error),
        },
        other => Err(RpcError::method_not_found(other)),
    };
    reply(&id, outcome)
}

/// The text of a message's parts, one line per text part.
fn text_of(message: &Value) -> String {
    message["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Starts the run a `SendMessage` or `SendStreamingMessage` asks for.
async fn started(
    state: &AppState,
    caller: &Caller,
    team: &Team,
    params: &Value,
) -> Result<Collaboration, RpcError> {
    let message = &params["message"];
    if !message.is_object() {
        return Err(RpcError::invalid_params("`message` is required"));
    }
    if message.get("taskId").is_some_and(|t| !t.is_null()) {
        return Err(RpcError::unsupported(
            "a team's task takes no further messages: send without `taskId` to start \
             another (the same `contextId` continues the conversation)",
        ));
    }
    // A long message (a parent collaboration's transcript, say) keeps its most recent part.
    let objective = teams::most_recent(&text_of(message), state.config.limits.max_objective_chars);
    if objective.is_empty() {
        return Err(RpcError::invalid_params(
            "the message has no text part: its text is the team's objective",
        ));
    }
    let context_id = match message["contextId"].as_str() {
        Some(given) => Uuid::parse_str(given).map_err(|_| {
            RpcError::invalid_params("`contextId` must be one this server gave (a UUID)")
        })?,
        None => Uuid::new_v4(),
    };
    let objective = teams::with_earlier(state, team, context_id, objective).await?;
    let run = RunTeam {
        context_id: Some(context_id),
        ..RunTeam::objective(objective)
    };
    Ok(teams::start(state, &caller.key, team, run).await?)
}

async fn send(
    state: &AppState,
    caller: &Caller,
    team: &Team,
    params: &Value,
) -> Result<Value, RpcError> {
    let collaboration = started(state, caller, team, params).await?;
    let configuration = &params["configuration"];
    let history = configuration["historyLength"].as_u64();
    if configuration["returnImmediately"].as_bool() == Some(true) {
        return Ok(json!({"task": task(&collaboration, history)}));
    }
    // Blocking, as A2A asks by default: wait for the run to end, within the request's time
    // (a long run is answered working; the caller follows it with GetTask).
    let until = tokio::time::Instant::now() + state.config.connections.request_timeout * 2 / 3;
    let mut following = state.hub.feed().follow(team.account_id);
    let mut current = state
        .store
        .get_collaboration(team.account_id, collaboration.id)
        .await?
        .unwrap_or(collaboration);
    while !terminal(&current) && tokio::time::Instant::now() < until {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        nudged(&mut following, current.id, left).await;
        current = state
            .store
            .get_collaboration(team.account_id, current.id)
            .await?
            .ok_or_else(RpcError::task_not_found)?;
    }
    Ok(json!({"task": task(&current, history)}))
}

/// The team's collaboration a request's `id` names.
async fn task_by_id(
    state: &AppState,
    team: &Team,
    params: &Value,
) -> Result<Collaboration, RpcError> {
    let id = params["id"]
        .as_str()
        .ok_or_else(|| RpcError::invalid_params("`id` is required"))?;
    let id = Uuid::parse_str(id).map_err(|_| RpcError::task_not_found())?;
    state
        .store
        .get_collaboration(team.account_id, id)
        .await?
        .filter(|c| c.team_id == Some(team.id))
        .ok_or_else(RpcError::task_not_found)
}

async fn cancel(state: &AppState, team: &Team, params: &Value) -> Result<Value, RpcError> {
    let collaboration = task_by_id(state, team, params).await?;
    if collaboration.status != CollaborationStatus::Running {
        return Err(RpcError::not_cancelable(
            collaboration.status.name().as_str(),
        ));
    }
    let stopped = state
        .engine
        .stop(&collaboration)
        .await
        .map_err(|e| RpcError::from(AppError::Internal(e)))?;
    let current = task_by_id(state, team, params).await?;
    match stopped {
        StopOutcome::Stopped => Ok(task(&current, None)),
        StopOutcome::NotRunning => Err(RpcError::not_cancelable(current.status.name().as_str())),
    }
}

async fn list(state: &AppState, team: &Team, params: &Value) -> Result<Value, RpcError> {
    let mut filter = CollaborationFilter {
        team_id: Some(team.id),
        ..Default::default()
    };
    if let Some(context) = params["contextId"].as_str() {
        filter.context_id =
            Some(Uuid::parse_str(context).map_err(|_| {
                RpcError::invalid_params("`contextId` must be one this server gave")
            })?);
    }
    if let Some(wanted) = params["status"].as_str() {
        filter.status = Some(match wanted {
            "TASK_STATE_WORKING" => CollaborationStatus::Running,
            "TASK_STATE_COMPLETED" => CollaborationStatus::Completed,
            "TASK_STATE_FAILED" => CollaborationStatus::Failed,
            "TASK_STATE_CANCELED" => CollaborationStatus::Cancelled,
            // No task of a team is ever in another state.
            _ => {
                return Ok(
                    json!({"tasks": [], "nextPageToken": "", "pageSize": 0, "totalSize": 0}),
                );
            }
        });
    }
    let size = match params["pageSize"].as_u64() {
        Some(size) if !(1..=u64::from(MAX_PAGE_SIZE)).contains(&size) => {
            return Err(RpcError::invalid_params(format!(
                "`pageSize` must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Some(size) => size as u32,
        None => 50,
    };
    let page = match params["pageToken"].as_str().filter(|t| !t.is_empty()) {
        Some(token) => token
            .parse::<u32>()
            .ok()
            .filter(|page| *page >= 1)
            .ok_or_else(|| RpcError::invalid_params("`pageToken` is not one this server gave"))?,
        None => 1,
    };
    let request = PageRequest { page, size };
    let (items, total) = state
        .store
        .list_collaborations(team.account_id, &filter, request)
        .await?;
    let with_artifacts = params["includeArtifacts"].as_bool() == Some(true);
    let mut tasks = Vec::with_capacity(items.len());
    for collaboration in &items {
        let mut task = task(collaboration, Some(0));
        if !with_artifacts && let Some(task) = task.as_object_mut() {
            task.remove("artifacts");
        }
        tasks.push(task);
    }
    let more = u64::from(page) * u64::from(size) < total;
    Ok(json!({
        "tasks": tasks,
        "nextPageToken": if more { (page + 1).to_string() } else { String::new() },
        "pageSize": size,
        "totalSize": total,
    }))
}

/// Whether a run is over as a task (see [`teams::answered`]).
fn terminal(collaboration: &Collaboration) -> bool {
    teams::answered(collaboration)
}

fn state_of(collaboration: &Collaboration) -> &'static str {
    if !terminal(collaboration) {
        return "TASK_STATE_WORKING";
    }
    match collaboration.status {
        CollaborationStatus::Running => "TASK_STATE_WORKING",
        CollaborationStatus::Completed => "TASK_STATE_COMPLETED",
        CollaborationStatus::Failed => "TASK_STATE_FAILED",
        CollaborationStatus::Cancelled => "TASK_STATE_CANCELED",
    }
}

fn agent_message(context_id: Uuid, task_id: Uuid, text: &str) -> Value {
    json!({
        "messageId": Uuid::new_v4(),
        "contextId": context_id,
        "taskId": task_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    })
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A collaboration's status as a task's: its end in words once it ended.
fn status(collaboration: &Collaboration, context_id: Uuid) -> Value {
    let state = state_of(collaboration);
    let mut status = json!({
        "state": state,
        "timestamp": timestamp(collaboration.ended_at.unwrap_or(collaboration.started_at)),
    });
    if state != "TASK_STATE_WORKING" {
        let said = match (
            collaboration.end_reason,
            &collaboration.advisory_message,
            &collaboration.error_message,
        ) {
            (_, _, Some(error)) => error.clone(),
            (_, Some(advisory), None) => advisory.clone(),
            (Some(reason), None, None) => reason.describe().to_owned(),
            (None, None, None) => "ended".to_owned(),
        };
        status["message"] = agent_message(context_id, collaboration.id, &said);
    }
    status
}

/// The artifacts of a run that ended with a summary: the summary as text, the outcome as
/// data.
fn artifacts(collaboration: &Collaboration) -> Vec<Value> {
    let Some(summary) = &collaboration.summary else {
        return Vec::new();
    };
    let text = match &collaboration.headline {
        Some(headline) => format!("{headline}\n\n{summary}"),
        None => summary.clone(),
    };
    let mut artifacts = vec![json!({
        "artifactId": format!("{}-summary", collaboration.id),
        "name": "summary",
        "description": "What the team concluded",
        "parts": [{"text": text, "mediaType": "text/plain"}],
    })];
    if let Some(outcome) = &collaboration.outcome {
        artifacts.push(json!({
            "artifactId": format!("{}-outcome", collaboration.id),
            "name": "outcome",
            "description": "Decisions, action items (owner and task) and open questions",
            "parts": [{"data": outcome, "mediaType": "application/json"}],
        }));
    }
    artifacts
}

/// A collaboration as an A2A task, with its last `history` messages (all by default).
fn task(collaboration: &Collaboration, history: Option<u64>) -> Value {
    let context_id = collaboration.context_id.unwrap_or(collaboration.id);
    let mut task = json!({
        "id": collaboration.id,
        "contextId": context_id,
        "status": status(collaboration, context_id),
        "artifacts": artifacts(collaboration),
        "metadata": {
            "skein": {
                "collaborationId": collaboration.id,
                "channelId": collaboration.channel_id,
                "teamId": collaboration.team_id,
                "messageCount": collaboration.message_count,
                "endReason": collaboration.end_reason,
                "costUsd": crate::domain::event::usd(collaboration.cost_micros),
            }
        },
    });
    // The objective is the one message the caller sent; the channel is read with the
    // stream, or over the REST API.
    if history != Some(0) {
        task["history"] = json!([{
            "messageId": collaboration.id,
            "contextId": context_id,
            "taskId": collaboration.id,
            "role": "ROLE_USER",
            "parts": [{"text": collaboration.objective}],
        }]);
    }
    task
}

/// The run as server-sent events, until it is over: each is a JSON-RPC response to the
/// request `id`. The channel is read from the store, so a stream follows a run whichever
/// process of a cluster runs it.
fn stream(state: AppState, id: Value, caller: &Caller, collaboration: Collaboration) -> Response {
    // Under the account's cap on open streams, and closed when the key is revoked.
    let pass = match state.streams.admit(caller.account_id, caller.key.id) {
        Ok(pass) => pass,
        Err(Refusal::AtLimit(limit)) => {
            return reply(
                &id,
                Err(RpcError::invalid_request(format!(
                    "this account has {limit} streams open, its limit: close one first"
                ))),
            );
        }
        Err(Refusal::Revoked) => return AppError::Unauthorized.into_response(),
    };
    let context_id = collaboration.context_id.unwrap_or(collaboration.id);
    let event = move |result: Value| {
        Event::default().data(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
    };
    struct Follow {
        state: AppState,
        collaboration: Collaboration,
        after: i64,
        first: bool,
        done: bool,
        ended_seen: bool,
        pending: std::collections::VecDeque<Value>,
        pass: StreamPass,
        following: Following,
    }
    let following = state.hub.feed().follow(collaboration.account_id);
    let follow = Follow {
        state,
        collaboration,
        after: 0,
        first: true,
        done: false,
        ended_seen: false,
        pending: Default::default(),
        pass,
        following,
    };
    let updates = futures::stream::unfold(follow, move |mut f| async move {
        loop {
            if let Some(next) = f.pending.pop_front() {
                return Some((next, f));
            }
            if f.done || f.pass.ended.is_cancelled() {
                return None;
            }
            if f.first {
                f.first = false;
                f.pending
                    .push_back(json!({"task": task(&f.collaboration, None)}));
                continue;
            }
            let events = f
                .state
                .store
                .read_events(f.collaboration.channel_id, f.after, STREAM_BATCH)
                .await
                .ok()?;
            for event in &events {
                let seq = event.seq;
                f.after = seq;
                if let Some(EventBody::Message {
                    sender, content, ..
                }) = event.body()
                {
                    f.pending.push_back(json!({"statusUpdate": {
                        "taskId": f.collaboration.id,
                        "contextId": context_id,
                        "status": {
                            "state": "TASK_STATE_WORKING",
                            "message": agent_message(context_id, f.collaboration.id,
                                &format!("{}: {content}", sender.name)),
                        },
                        "metadata": {"skein": {"seq": seq, "sender": sender}},
                    }}));
                }
            }
            // More may be stored already: read on before looking at the status.
            if !events.is_empty() {
                continue;
            }
            let current = f
                .state
                .store
                .get_collaboration(f.collaboration.account_id, f.collaboration.id)
                .await
                .ok()??;
            // Once it has ended, what was stored up to the end is read to the last event
            // before the final status goes out.
            if terminal(&current) && !f.ended_seen {
                f.ended_seen = true;
                continue;
            }
            if terminal(&current) {
                for artifact in artifacts(&current) {
                    f.pending.push_back(json!({"artifactUpdate": {
                        "taskId": current.id,
                        "contextId": context_id,
                        "artifact": artifact,
                        "lastChunk": true,
                    }}));
                }
                f.pending.push_back(json!({"statusUpdate": {
                    "taskId": current.id,
                    "contextId": context_id,
                    "status": status(&current, context_id),
                }}));
                f.done = true;
                continue;
            }
            f.collaboration = current;
            nudged(&mut f.following, f.collaboration.id, STREAM_LOOK).await;
        }
    });
    Sse::new(futures::StreamExt::map(updates, move |result| {
        Ok::<_, std::convert::Infallible>(event(result))
    }))
    .keep_alive(KeepAlive::default())
    .into_response()
}

/// Waits until the account's feed says something of `collaboration_id` may have changed (a
/// message of it was stored, or a lasting change of the account), or at most `longest`.
async fn nudged(following: &mut Following, collaboration_id: Uuid, longest: Duration) {
    let about_it = async {
        loop {
            match following.next().await {
                Nudge::Changed => return,
                Nudge::Messages {
                    collaboration_id: id,
                    ..
                } if id == collaboration_id => return,
                Nudge::Messages { .. } => {}
            }
        }
    };
    let _ = tokio::time::timeout(longest.min(STREAM_LOOK), about_it).await;
}
