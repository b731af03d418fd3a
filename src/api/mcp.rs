//! `/mcp`: Skein as an MCP server (streamable HTTP, the official Rust SDK's server
//! transport), so that an MCP client (Claude, Cursor, an agent framework) can hand work to a
//! team and read what it came to.
//!
//! Requests are authenticated as the REST API's are (the account's key as a bearer token,
//! the same rate limits), and see only that account's teams, agents and collaborations. The
//! server is stateless: any process of a cluster answers any request. A run takes minutes,
//! so `start_collaboration` answers at once with the collaboration's id; the client then
//! polls `get_collaboration`, which can wait (`wait_seconds`, sending progress
//! notifications as messages arrive when the call carries a progress token) for the end.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
        PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    AppState,
    auth::Caller,
    collaborations::{CollaborationView, CreateCollaboration},
    teams::{self, RunTeam},
};
use crate::{
    domain::{Collaboration, CollaborationStatus, EventBody, PageRequest, Scope},
    engine::StopOutcome,
    error::AppError,
};

/// The longest `get_collaboration` waits for a run to end, within the request's time.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting call looks again.
const POLL: Duration = Duration::from_millis(250);
/// The most transcript lines `get_collaboration` returns.
const MAX_TRANSCRIPT: u32 = 200;

pub(super) fn router(state: AppState) -> Router<AppState> {
    let config = StreamableHttpServerConfig::default()
        // Stateless: any process answers any request, and nothing is held between them.
        .with_legacy_session_mode(false)
        // Every request carries a key, so a page a browser was tricked into cannot call
        // (DNS rebinding is what the default loopback-only host check guards against).
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.config.limits.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    let handler = Skein { state };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn(signed_in))
}

/// Refuses a request without a valid key before MCP sees it, as the REST API refuses one.
async fn signed_in(request: Request, next: Next) -> Response {
    if request.extensions().get::<Caller>().is_none() {
        return AppError::Unauthorized.into_response();
    }
    next.run(request).await
}

#[derive(Clone)]
struct Skein {
    state: AppState,
}

/// A tool's failure: the model reads it and can try otherwise.
fn refused(message: impl Into<String>) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": message.into()}))
}

impl From<AppError> for CallToolResult {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Validation(errors) => CallToolResult::structured_error(json!({
                "error": "the arguments are invalid",
                "errors": errors,
            })),
            AppError::NotFound(what) => refused(format!("no such {what}")),
            AppError::Conflict(message) | AppError::Forbidden(message) => refused(message),
            other => {
                tracing::error!(error = format!("{other:#}"), "an MCP tool call failed");
                refused("an internal error occurred; it has been logged")
            }
        }
    }
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("a schema is an object"),
    }
}

fn tools() -> Vec<Tool> {
    let id = json!({"type": "string", "description": "A collaboration's id"});
    vec![
        Tool::new(
            "list_teams",
            "The account's teams: saved rosters of agents that work on an objective together.",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "list_agents",
            "The account's agents, with their kind (llm, scripted, http, a2a, human, uagent).",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "start_collaboration",
            "Start agents working on an objective: a team (by id or address), or a principal \
             and participants (agent ids or addresses). Answers at once with the \
             collaboration's id; follow it with get_collaboration.",
            schema(json!({
                "type": "object",
                "properties": {
                    "objective": {"type": "string", "description": "What the agents are to achieve"},
                    "team": {"type": "string", "description": "A team's id or address"},
                    "principal": {"type": "string", "description": "Without a team: the manager agent"},
                    "participants": {"type": "array", "items": {"type": "string"},
                                     "description": "Without a team: the other agents"},
                    "message_cap": {"type": "integer", "minimum": 1},
                },
                "required": ["objective"],
            })),
        ),
        Tool::new(
            "get_collaboration",
            "A collaboration's status, end reason, summary and outcome (decisions, action \
             items, open questions), and with transcript=true its messages. wait_seconds (at \
             most 20) waits for it to end first, reporting progress as messages arrive.",
            schema(json!({
                "type": "object",
                "properties": {
                    "id": id,
                    "transcript": {"type": "boolean"},
                    "wait_seconds": {"type": "integer", "minimum": 0, "maximum": 20},
                },
                "required": ["id"],
            })),
        ),
        Tool::new(
            "post_message",
            "Speak in a running collaboration as one of its human participants.",
            schema(json!({
                "type": "object",
                "properties": {
                    "id": id,
                    "content": {"type": "string"},
                    "sender": {"type": "string",
                               "description": "The human participant's id or address (optional when there is one)"},
                },
                "required": ["id", "content"],
            })),
        ),
        Tool::new(
            "stop_collaboration",
            "Stop a running collaboration; it ends as cancelled, with a summary.",
            schema(json!({"type": "object", "properties": {"id": id}, "required": ["id"]})),
        ),
    ]
}

impl ServerHandler for Skein {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("skein", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Skein runs teams of AI agents on an objective in a live channel. Start one \
                 with start_collaboration, then follow it with get_collaboration \
                 (wait_seconds) until its status is no longer running; its summary and \
                 outcome are the answer.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("no API key", None))?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let scope = match request.name.as_ref() {
            "list_teams" | "list_agents" | "get_collaboration" => Scope::Read,
            _ => Scope::Write,
        };
        if let Err(error) = caller.require(scope) {
            return Ok(CallToolResult::from(error).into());
        }
        let outcome = match request.name.as_ref() {
            "list_teams" => self.list_teams(&caller).await,
            "list_agents" => self.list_agents(&caller).await,
            "start_collaboration" => self.start(&caller, &arguments).await,
            "get_collaboration" => self.read(&caller, &arguments, &context).await,
            "post_message" => self.post(&caller, &arguments).await,
            "stop_collaboration" => self.stop(&caller, &arguments).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool `{other}`"),
                    None,
                ));
            }
        };
        Ok(outcome
            .map(CallToolResult::structured)
            .unwrap_or_else(CallToolResult::from)
            .into())
    }
}

fn text<'a>(arguments: &'a Value, field: &str) -> Option<&'a str> {
    arguments[field]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn required<'a>(arguments: &'a Value, field: &'static str) -> Result<&'a str, AppError> {
    text(arguments, field).ok_or_else(|| AppError::invalid(field, "is required"))
}

/// What a client is told of a collaboration: its view, and what to do next.
fn described(collaboration: Collaboration) -> Value {
    let running = collaboration.status == CollaborationStatus::Running;
    let mut view =
        serde_json::to_value(CollaborationView::from(collaboration)).expect("a view serializes");
    if running {
        view["next"] = json!(
            "still running: call get_collaboration with wait_seconds to wait for its summary"
        );
    }
    view
}

impl Skein {
    async fn list_teams(&self, caller: &Caller) -> Result<Value, AppError> {
        let state = &self.state;
        let (teams, total) = state
            .store
            .list_teams(caller.account_id, PageRequest { page: 1, size: 100 })
            .await?;
        // The URLs of a team's view are not told here: this is not an HTTP request's answer.
        let base = "";
        let mut items = Vec::with_capacity(teams.len());
        for view in teams::views(state, base, teams).await? {
            items.push(json!({
                "id": view.id, "name": view.name, "description": view.description,
                "address": view.address,
                "members": std::iter::once(&view.principal).chain(&view.participants)
                    .map(|m| json!({"name": m.name, "kind": m.kind, "deleted": m.deleted}))
                    .collect::<Vec<_>>(),
                "message_cap": view.message_cap,
            }));
        }
        Ok(json!({"teams": items, "total": total}))
    }

    async fn list_agents(&self, caller: &Caller) -> Result<Value, AppError> {
        let (agents, total) = self
            .state
            .store
            .list_agents(caller.account_id, PageRequest { page: 1, size: 100 })
            .await?;
        let items: Vec<Value> = agents
            .iter()
            .map(|a| {
                json!({"id": a.id, "name": a.name, "kind": a.spec.kind(),
                       "address": a.address.as_str(), "description": a.description})
            })
            .collect();
        Ok(json!({"agents": items, "total": total}))
    }

    async fn start(&self, caller: &Caller, arguments: &Value) -> Result<Value, AppError> {
        let state = &self.state;
        let objective = required(arguments, "objective")?.to_owned();
        let message_cap = arguments["message_cap"].as_i64();
        let created = match text(arguments, "team") {
            Some(team) => {
                let team = teams::find(state, caller.account_id, team).await?;
                let run = RunTeam {
                    message_cap,
                    ..RunTeam::objective(objective)
                };
                teams::start(state, &caller.key, &team, run).await?
            }
            None => {
                let principal = text(arguments, "principal").ok_or_else(|| {
                    AppError::invalid("team", "name a team, or a principal and participants")
                })?;
                let participants = arguments["participants"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let limits = &state.config.limits;
                let request = CreateCollaboration {
                    principal: principal.to_owned(),
                    participants,
                    message_cap: message_cap.unwrap_or(i64::from(20.min(limits.max_message_cap))),
                    timeout_window: i64::from(120.min(limits.max_timeout_window)),
                    objective: Some(objective),
                    evaluate_objective_completion: None,
                    source: None,
                    strategy: None,
                    webhook_url: None,
                    token_budget: None,
                    cost_budget_usd: None,
                    podcast: None,
                    allow_interjections: None,
                };
                let valid = request.validate(&state.config.limits)?;
                state.engine.create(&caller.key, valid).await?
            }
        };
        Ok(described(created))
    }

    async fn find(&self, caller: &Caller, arguments: &Value) -> Result<Collaboration, AppError> {
        let id = required(arguments, "id")?;
        let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("collaboration"))?;
        self.state
            .store
            .get_collaboration(caller.account_id, id)
            .await?
            .ok_or(AppError::NotFound("collaboration"))
    }

    async fn read(
        &self,
        caller: &Caller,
        arguments: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, AppError> {
        let mut current = self.find(caller, arguments).await?;
        let wait = Duration::from_secs(arguments["wait_seconds"].as_u64().unwrap_or(0))
            .min(MAX_WAIT)
            .min(self.state.config.connections.request_timeout * 2 / 3);
        let until = tokio::time::Instant::now() + wait;
        let progress = context.meta.get_progress_token();
        let mut reported = None;
        // Ended, with its summary written (or no summary coming).
        let done = |c: &Collaboration| {
            c.status != CollaborationStatus::Running
                && (c.summary.is_some() || c.status != CollaborationStatus::Completed)
        };
        while !done(&current) && tokio::time::Instant::now() < until && !context.ct.is_cancelled() {
            if let Some(token) = &progress
                && reported != Some(current.message_count)
            {
                reported = Some(current.message_count);
                let mut note =
                    ProgressNotificationParam::new(token.clone(), f64::from(current.message_count));
                note.total = Some(f64::from(current.message_cap));
                note.message = Some(format!(
                    "{} of at most {} messages",
                    current.message_count, current.message_cap
                ));
                let _ = context.peer.notify_progress(note).await;
            }
            tokio::time::sleep(POLL).await;
            current = self.find(caller, arguments).await?;
        }
        let channel_id = current.channel_id;
        let mut view = described(current);
        if arguments["transcript"].as_bool() == Some(true) {
            let events = self
                .state
                .store
                .read_events(channel_id, 0, MAX_TRANSCRIPT)
                .await?;
            let lines: Vec<Value> = events
                .iter()
                .filter_map(|event| match event.body()? {
                    EventBody::Message {
                        sender, content, ..
                    } => Some(json!({"seq": event.seq, "sender": sender.name, "content": content})),
                    _ => None,
                })
                .collect();
            view["transcript"] = json!(lines);
        }
        Ok(view)
    }

    async fn post(&self, caller: &Caller, arguments: &Value) -> Result<Value, AppError> {
        let collaboration = self.find(caller, arguments).await?;
        let content = required(arguments, "content")?;
        let channel = self
            .state
            .store
            .get_channel(caller.account_id, collaboration.channel_id)
            .await?
            .ok_or(AppError::NotFound("collaboration"))?;
        let event = super::channels::speak_as_human(
            &self.state,
            &channel,
            text(arguments, "sender"),
            content,
        )
        .await?;
        serde_json::from_str(&event.frame).map_err(|e| AppError::Internal(e.into()))
    }

    async fn stop(&self, caller: &Caller, arguments: &Value) -> Result<Value, AppError> {
        let collaboration = self.find(caller, arguments).await?;
        let ended = || {
            AppError::Conflict(format!(
                "the collaboration has already ended ({})",
                collaboration.status.name()
            ))
        };
        if collaboration.status != CollaborationStatus::Running {
            return Err(ended());
        }
        match self.state.engine.stop(&collaboration).await? {
            StopOutcome::Stopped => Ok(described(self.find(caller, arguments).await?)),
            StopOutcome::NotRunning => Err(ended()),
        }
    }
}
