//! `/agents`: create, list, read, update and delete the account's agents.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiJson, ApiPath, ApiQuery, AppState, PageJson, PageParams, auth::Caller, check, check_len,
};
use crate::{
    agents::tools::{self, Credentials},
    domain::{
        Agent, AgentAddress, AgentRef, AgentSpec, CollaborationStatus, FieldError, Page,
        PageRequest,
    },
    error::AppError,
    signing,
    store::CollaborationFilter,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/agents", get(list).post(create))
        .route("/agents/{agent}", get(read).patch(update).delete(remove))
        .route("/agents/{agent}/tools", get(list_tools))
        .route("/agents/{agent}/check", axum::routing::post(check_agent))
}

/// An agent as the API shows it: common fields plus its kind's settings, flat.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AgentView {
    pub(super) id: Uuid,
    pub(super) address: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    #[serde(flatten)]
    pub(super) spec: AgentSpec,
    /// An `http` agent's signing secret (`whsec_…`): only in the response that created it.
    /// Keep it: the agent checks Skein's signatures with it, and it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) secret: Option<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl From<Agent> for AgentView {
    fn from(agent: Agent) -> Self {
        Self {
            id: agent.id,
            address: agent.address.to_string(),
            name: agent.name,
            description: agent.description,
            spec: agent.spec,
            secret: None,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

impl AgentView {
    /// The view with the secret shown: for the one response that created it.
    fn revealing(agent: Agent) -> Self {
        let secret = agent.secret.as_ref().map(|s| s.expose().to_owned());
        Self {
            secret,
            ..agent.into()
        }
    }
}

/// Create (and, merged over the current agent, update) request. Kind-specific fields are
/// optional here and checked against the kind in [`AgentInput::validate`].
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub(super) struct AgentInput {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    /// `llm`, `scripted`, `http`, `a2a`, `human` or `uagent`.
    pub(super) kind: String,
    /// An existing `agent1q…` address; generated when absent. A `uagent`'s own address,
    /// required for that kind.
    #[serde(default)]
    pub(super) address: Option<String>,
    #[serde(default)]
    pub(super) provider: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) system_prompt: Option<String>,
    #[serde(default)]
    pub(super) temperature: Option<f32>,
    #[serde(default)]
    pub(super) max_tokens: Option<u32>,
    #[serde(default)]
    pub(super) replies: Option<Vec<String>>,
    #[serde(default)]
    pub(super) delay_ms: Option<u64>,
    /// `http`: the URL each turn is POSTed to. `uagent`: its `/submit` URL (optional when
    /// the server has an Almanac, `SKEIN_ALMANAC_URL`).
    #[serde(default)]
    pub(super) endpoint: Option<String>,
    /// `a2a`: the agent card's URL, or the agent's base URL (its card is then looked up
    /// at `/.well-known/agent-card.json`, then `/.well-known/agent.json`).
    #[serde(default)]
    pub(super) card_url: Option<String>,
    /// `llm`: MCP servers (streamable HTTP) whose tools the model may call in its turn.
    #[serde(default)]
    pub(super) tools: Option<Vec<ToolServerInput>>,
    /// `a2a`: headers sent with every request to the agent, its card's included
    /// (credentials: stored sealed, never shown again).
    #[serde(default)]
    pub(super) headers: Option<BTreeMap<String, String>>,
    /// `a2a`: a bearer token, sent as `Authorization: Bearer …` (another Skein's API key,
    /// for a team there).
    #[serde(default)]
    pub(super) bearer: Option<String>,
    /// As views show it; ignored here. Without `headers` or `bearer`, an `a2a` agent keeps
    /// the credentials it has while its card URL stays the same.
    #[serde(default)]
    pub(super) credential_headers: Option<Vec<String>>,
}

/// An MCP server for an `llm` agent. Its credentials (`headers`, `bearer`) are stored sealed
/// and never shown again: views list only the names of the headers that carry them.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub(super) struct ToolServerInput {
    /// The server's streamable-HTTP endpoint, e.g. `https://tools.example/mcp`.
    pub(super) url: String,
    /// What tool events call the server; its URL's host when absent.
    #[serde(default)]
    pub(super) name: Option<String>,
    /// Headers sent with every request to the server (credentials).
    #[serde(default)]
    pub(super) headers: Option<BTreeMap<String, String>>,
    /// A bearer token, sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub(super) bearer: Option<String>,
    /// The tools the agent may call; every tool the server offers when absent.
    #[serde(default)]
    pub(super) allow: Option<Vec<String>>,
    /// As views show it; ignored here. A server sent without `headers` or `bearer` keeps the
    /// credentials stored for the same URL, so a view can be sent back as it is.
    #[serde(default)]
    pub(super) credential_headers: Option<Vec<String>>,
}

struct ValidAgent {
    name: String,
    description: Option<String>,
    address: Option<AgentAddress>,
    spec: AgentSpec,
    tool_credentials: Option<crate::secrets::Secret>,
}

impl AgentInput {
    /// Checks the input as a whole; `current` is the agent a PATCH changes, whose stored
    /// tool credentials carry over to servers given again without new ones.
    async fn validate(
        self,
        state: &AppState,
        current: Option<&Agent>,
    ) -> Result<ValidAgent, AppError> {
        let limits = &state.config.limits;
        let models = state.engine.models();
        let mut errors = Vec::new();
        let name = self.name.trim().to_owned();
        check_len(&mut errors, "name", &name, 1, limits.max_name_chars);
        if let Some(description) = &self.description {
            check_len(
                &mut errors,
                "description",
                description,
                0,
                limits.max_prompt_chars,
            );
        }
        // Every field given is checked for its form, whichever kind uses it.
        self.check_form(&mut errors, limits);
        let address = match self.address.as_deref().map(AgentAddress::parse) {
            Some(Ok(address)) => Some(address),
            Some(Err(e)) => {
                errors.push(FieldError::new("address", e.to_string()));
                None
            }
            None => None,
        };
        let mut tool_credentials = None;
        let spec = match self.kind.as_str() {
            "llm" => {
                let (tools, credentials) =
                    tool_servers(state, &mut errors, self.tools.unwrap_or_default(), current).await;
                tool_credentials = credentials.seal();
                let provider = match self.provider {
                    Some(p) => Some(p),
                    None if models.has("default") => Some("default".to_owned()),
                    None if models.names().len() == 1 => models.names().pop(),
                    None => None,
                };
                match provider {
                    _ if models.is_empty() => errors.push(FieldError::new(
                        "kind",
                        "no model provider is configured, so llm agents cannot be created; set \
                         SKEIN_LLM_BASE_URL (or OPENAI_API_KEY / FLOCK_LLM_API_KEY), or use a scripted agent",
                    )),
                    None => errors.push(FieldError::new(
                        "provider",
                        format!("name one of the configured providers: {}", models.names().join(", ")),
                    )),
                    Some(ref p) if !models.has(p) => errors.push(FieldError::new(
                        "provider",
                        format!("`{p}` is not configured; configured: {}", models.names().join(", ")),
                    )),
                    Some(_) => {}
                }
                let model = self
                    .model
                    .or_else(|| provider.as_deref().and_then(|p| models.default_model(p)));
                if model.is_none() {
                    errors.push(FieldError::new(
                        "model",
                        "is required (the provider has no default model)",
                    ));
                }
                AgentSpec::Llm {
                    provider: provider.unwrap_or_default(),
                    model: model.unwrap_or_default(),
                    system_prompt: self.system_prompt,
                    temperature: self.temperature,
                    max_tokens: self.max_tokens,
                    tools,
                }
            }
            "scripted" => {
                let replies = self.replies.unwrap_or_default();
                if replies.is_empty() {
                    errors.push(FieldError::new(
                        "replies",
                        "a scripted agent needs at least one reply",
                    ));
                }
                let delay_ms = self.delay_ms.unwrap_or(0);
                AgentSpec::Scripted { replies, delay_ms }
            }
            "http" => AgentSpec::Http {
                endpoint: remote_url(state, &mut errors, "endpoint", self.endpoint).await,
            },
            "a2a" => {
                let card_url = remote_url(state, &mut errors, "card_url", self.card_url).await;
                let mut headers = credential_headers(&mut errors, "", self.headers, self.bearer);
                if headers.is_empty()
                    && let Some(agent) = current
                    && let AgentSpec::A2a { card_url: kept, .. } = &agent.spec
                    && *kept == card_url
                {
                    headers = Credentials::open(agent.tool_credentials.as_ref())
                        .0
                        .first()
                        .cloned()
                        .unwrap_or_default();
                }
                let credential_headers = headers.keys().cloned().collect();
                tool_credentials = Credentials(vec![headers]).seal();
                AgentSpec::A2a {
                    card_url,
                    credential_headers,
                }
            }
            "human" => AgentSpec::Human,
            "uagent" => AgentSpec::Uagent {
                endpoint: uagent_endpoint(
                    state,
                    &mut errors,
                    address.as_ref(),
                    self.address.is_some(),
                    self.endpoint,
                )
                .await,
            },
            other => {
                errors.push(FieldError::new(
                    "kind",
                    format!(
                        "`{other}` is not a kind; use `llm`, `scripted`, `http`, `a2a`, `human` or `uagent`"
                    ),
                ));
                AgentSpec::Scripted {
                    replies: Vec::new(),
                    delay_ms: 0,
                }
            }
        };
        check(errors)?;
        Ok(ValidAgent {
            name,
            description: self.description,
            address,
            spec,
            tool_credentials,
        })
    }
}

impl AgentInput {
    /// The form of every field given, whether or not its kind uses it: a value out of
    /// range is refused, not quietly ignored.
    fn check_form(&self, errors: &mut Vec<FieldError>, limits: &crate::config::Limits) {
        if let Some(model) = &self.model {
            check_len(errors, "model", model, 1, 200);
        }
        if let Some(prompt) = &self.system_prompt {
            check_len(errors, "system_prompt", prompt, 0, limits.max_prompt_chars);
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            errors.push(FieldError::new("temperature", "must be between 0 and 2"));
        }
        if let Some(tokens) = self.max_tokens
            && !(1..=MAX_TOKENS_PER_TURN).contains(&tokens)
        {
            errors.push(FieldError::new(
                "max_tokens",
                format!("must be between 1 and {MAX_TOKENS_PER_TURN}"),
            ));
        }
        for (i, reply) in self.replies.iter().flatten().enumerate() {
            check_len(
                errors,
                &format!("replies[{i}]"),
                reply.trim(),
                1,
                limits.max_content_chars,
            );
        }
        if self.delay_ms.is_some_and(|delay| delay > 60_000) {
            errors.push(FieldError::new("delay_ms", "must be at most 60000"));
        }
        for (field, url) in [("endpoint", &self.endpoint), ("card_url", &self.card_url)] {
            if url
                .as_ref()
                .is_some_and(|url| url.chars().count() > MAX_URL_CHARS)
            {
                errors.push(FieldError::new(
                    field,
                    format!("must be at most {MAX_URL_CHARS} characters"),
                ));
            }
        }
    }
}

/// Most MCP servers one agent may have, headers per server, and names in an allow-list.
const MAX_TOOL_SERVERS: usize = 8;
const MAX_TOOL_HEADERS: usize = 16;
const MAX_ALLOWED_TOOLS: usize = 128;

/// Headers a tool server's settings may not set: the transport's own.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

/// An `llm` agent's tool servers, checked: their form, the outbound guard, and that each
/// can be reached and offers every tool its allow-list names. With them, their credentials
/// (given now, or kept from `current` for a server given again without any).
/// Credentials to send as headers (a remote's `headers`, and `bearer` as `Authorization`),
/// checked; each problem is recorded under `prefix` + the field's name.
fn credential_headers(
    errors: &mut Vec<FieldError>,
    prefix: &str,
    given: Option<BTreeMap<String, String>>,
    bearer: Option<String>,
) -> BTreeMap<String, String> {
    let field = |name: &str| format!("{prefix}{name}");
    let mut headers = BTreeMap::new();
    for (header, value) in given.unwrap_or_default() {
        let lower = header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err()
            || RESERVED_HEADERS.contains(&lower.as_str())
        {
            errors.push(FieldError::new(
                field("headers"),
                format!("`{header}` is not a header these settings may set"),
            ));
        } else if http::HeaderValue::from_str(&value).is_err() || value.len() > 4096 {
            errors.push(FieldError::new(
                field("headers"),
                format!("the value of `{header}` is not a valid header value (at most 4096 bytes)"),
            ));
        } else {
            headers.insert(header, value);
        }
    }
    if let Some(bearer) = bearer {
        if http::HeaderValue::from_str(&bearer).is_err() || bearer.is_empty() || bearer.len() > 4096
        {
            errors.push(FieldError::new(
                field("bearer"),
                "must be a token of 1 to 4096 visible characters",
            ));
        } else {
            headers.insert("Authorization".to_owned(), format!("Bearer {bearer}"));
        }
    }
    if headers.len() > MAX_TOOL_HEADERS {
        errors.push(FieldError::new(
            field("headers"),
            format!("at most {MAX_TOOL_HEADERS} headers"),
        ));
    }
    headers
}

async fn tool_servers(
    state: &AppState,
    errors: &mut Vec<FieldError>,
    inputs: Vec<ToolServerInput>,
    current: Option<&Agent>,
) -> (Vec<crate::domain::ToolServer>, Credentials) {
    use crate::domain::ToolServer;
    if inputs.len() > MAX_TOOL_SERVERS {
        errors.push(FieldError::new(
            "tools",
            format!("at most {MAX_TOOL_SERVERS} MCP servers"),
        ));
        return (Vec::new(), Credentials::default());
    }
    let (kept_servers, kept) = match current.map(|agent| (&agent.spec, agent)) {
        Some((AgentSpec::Llm { tools, .. }, agent)) => (
            tools.clone(),
            Credentials::open(agent.tool_credentials.as_ref()),
        ),
        _ => (Vec::new(), Credentials::default()),
    };
    let before = errors.len();
    let mut servers = Vec::new();
    let mut credentials = Credentials::default();
    for (i, input) in inputs.into_iter().enumerate() {
        let field = |name: &str| format!("tools[{i}].{name}");
        let url = input.url.trim().to_owned();
        let parsed = match state.outbound.check(&url).await {
            _ if url.chars().count() > MAX_URL_CHARS => {
                errors.push(FieldError::new(
                    field("url"),
                    format!("must be at most {MAX_URL_CHARS} characters"),
                ));
                None
            }
            Ok(parsed) => Some(parsed),
            Err(e) => {
                errors.push(FieldError::new(field("url"), e.to_string()));
                None
            }
        };
        let name = input
            .name
            .map(|n| n.trim().to_owned())
            .or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|u| u.host_str().map(str::to_owned))
            })
            .unwrap_or_default();
        check_len(errors, &field("name"), &name, 1, 100);
        let mut headers =
            credential_headers(errors, &format!("tools[{i}]."), input.headers, input.bearer);
        if headers.is_empty()
            && let Some(at) = kept_servers.iter().position(|s| s.url == url)
        {
            headers = kept.0.get(at).cloned().unwrap_or_default();
        }
        let allow = input.allow.map(|names| {
            names
                .into_iter()
                .map(|n| n.trim().to_owned())
                .collect::<Vec<_>>()
        });
        if let Some(names) = &allow {
            if names.len() > MAX_ALLOWED_TOOLS {
                errors.push(FieldError::new(
                    field("allow"),
                    format!("at most {MAX_ALLOWED_TOOLS} tool names"),
                ));
            }
            for (j, name) in names.iter().enumerate() {
                check_len(errors, &format!("tools[{i}].allow[{j}]"), name, 1, 200);
            }
        }
        servers.push(ToolServer {
            url,
            name,
            allow,
            credential_headers: headers.keys().cloned().collect(),
        });
        credentials.0.push(headers);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, server) in servers.iter().enumerate() {
        if !seen.insert(server.name.as_str()) {
            errors.push(FieldError::new(
                format!("tools[{i}].name"),
                format!(
                    "another server of this agent is named `{}`; give each its own name",
                    server.name
                ),
            ));
        }
    }
    // Only a form that holds is worth a call to the servers.
    if errors.len() == before {
        reach_tool_servers(state, errors, &servers, &credentials).await;
    }
    (servers, credentials)
}

/// Reaches each server as a turn would, and checks its allow-list against what it offers.
async fn reach_tool_servers(
    state: &AppState,
    errors: &mut Vec<FieldError>,
    servers: &[crate::domain::ToolServer],
    credentials: &Credentials,
) {
    let settings = &state.engine.remote().tools;
    for (i, server) in servers.iter().enumerate() {
        let headers = Credentials(vec![credentials.0[i].clone()]);
        let unfiltered = crate::domain::ToolServer {
            allow: None,
            ..server.clone()
        };
        match tools::list(
            std::slice::from_ref(&unfiltered),
            &headers,
            &state.outbound,
            settings,
        )
        .await
        {
            Err(e) => errors.push(FieldError::new(format!("tools[{i}].url"), e.to_string())),
            Ok(offered) => {
                for name in server.allow.iter().flatten() {
                    if !offered.iter().any(|o| &o.tool.name == name) {
                        let names: Vec<&str> =
                            offered.iter().map(|o| o.tool.name.as_str()).collect();
                        errors.push(FieldError::new(
                            format!("tools[{i}].allow"),
                            format!(
                                "`{name}` is not a tool of this server; it offers: {}",
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// A remote agent's URL: required, at most [`MAX_URL_CHARS`], and one the outbound guard
/// lets through.
async fn remote_url(
    state: &AppState,
    errors: &mut Vec<FieldError>,
    field: &str,
    url: Option<String>,
) -> String {
    let Some(url) = url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) else {
        errors.push(FieldError::new(field, "is required for this kind"));
        return String::new();
    };
    if url.chars().count() <= MAX_URL_CHARS
        && let Err(e) = state.outbound.check(&url).await
    {
        errors.push(FieldError::new(field, e.to_string()));
    }
    url
}

const MAX_URL_CHARS: usize = 2048;

/// The most `max_tokens` an agent may ask of its model in one turn: beyond any model's
/// output window, and within the 32-bit integer the API document promises.
pub(super) const MAX_TOKENS_PER_TURN: u32 = 1_000_000;

/// A uAgent's endpoint: optional with an Almanac to ask, and, when given, one where the
/// agent answers uAgents' readiness probe for its address (a down agent is refused now,
/// not at its first turn).
async fn uagent_endpoint(
    state: &AppState,
    errors: &mut Vec<FieldError>,
    address: Option<&AgentAddress>,
    address_given: bool,
    endpoint: Option<String>,
) -> Option<String> {
    if !address_given {
        errors.push(FieldError::new(
            "address",
            "is required for a uagent: the agent's own agent1q… address",
        ));
    }
    let endpoint = endpoint
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    // Without one, where the agent registered with this server, if it did.
    let registered = match (&endpoint, address) {
        (None, Some(address)) => state
            .store
            .registered_uagent(address.as_str(), crate::domain::now())
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reading a uAgent registration failed"
                );
                None
            }),
        _ => None,
    };
    let Some(endpoint) = endpoint.or(registered) else {
        if state.config.uagents.almanac_url.is_none() && address.is_some() {
            errors.push(FieldError::new(
                "endpoint",
                "is required for a uagent unless it registered with this server \
                 (agentverse=<this server>) or the server has an Almanac (SKEIN_ALMANAC_URL)",
            ));
        }
        return None;
    };
    if endpoint.chars().count() > MAX_URL_CHARS {
        return Some(endpoint);
    }
    if let Err(e) = state.outbound.check(&endpoint).await {
        errors.push(FieldError::new("endpoint", e.to_string()));
    } else if let Some(address) = address
        && let Err(why) =
            crate::agents::uagent::probe(state.engine.remote(), &endpoint, address).await
    {
        errors.push(FieldError::new("endpoint", why));
    }
    Some(endpoint)
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = AgentInput,
    responses((status = 201, body = AgentView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<AgentInput>,
) -> Result<impl IntoResponse, AppError> {
    let valid = input.validate(&state, None).await?;
    let now = crate::domain::now();
    let secret = matches!(valid.spec, AgentSpec::Http { .. }).then(signing::new_secret);
    let agent = Agent {
        id: Uuid::now_v7(),
        account_id: caller.account_id,
        address: valid.address.unwrap_or_else(AgentAddress::generate),
        name: valid.name,
        description: valid.description,
        spec: valid.spec,
        secret,
        tool_credentials: valid.tool_credentials,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_agent(&agent).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        format!("/api/v1/agents/{}", agent.id)
            .parse()
            .expect("a path is a header value"),
    );
    Ok((
        StatusCode::CREATED,
        headers,
        Json(AgentView::revealing(agent)),
    ))
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageParams),
    responses((status = 200, description = "`{items, meta}`")))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<AgentView>, AppError> {
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let (agents, total) = state.store.list_agents(caller.account_id, page).await?;
    Ok(PageJson(
        Page::new(agents, total, page).map(AgentView::from),
    ))
}

async fn find(state: &AppState, caller: &Caller, reference: &str) -> Result<Agent, AppError> {
    let reference = AgentRef::parse(reference).map_err(|_| AppError::NotFound("agent"))?;
    state
        .store
        .get_agent(caller.account_id, &reference)
        .await?
        .ok_or(AppError::NotFound("agent"))
}

#[utoipa::path(get, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "UUID or address")),
    responses((status = 200, body = AgentView), (status = 404, body = crate::error::Problem)))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentView>, AppError> {
    Ok(Json(find(&state, &caller, &agent).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "UUID or address")),
    responses((status = 200, body = AgentView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
    ApiJson(patch): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<AgentView>, AppError> {
    let current = find(&state, &caller, &agent).await?;
    if let Some(address) = patch.get("address")
        && address.as_str() != Some(current.address.as_str())
    {
        return Err(AppError::invalid(
            "address",
            "an agent's address cannot change",
        ));
    }
    // Merge the patch over the agent as it is, then validate the result as a whole.
    let mut merged = serde_json::to_value(AgentView::from(current.clone()))
        .map_err(|e| AppError::Internal(e.into()))?;
    let object = merged.as_object_mut().expect("a view is an object");
    if patch
        .get("kind")
        .is_some_and(|k| k.as_str() != Some(current.spec.kind().as_str()))
    {
        // A new kind starts from a clean slate of kind-specific settings.
        for key in [
            "provider",
            "model",
            "system_prompt",
            "temperature",
            "max_tokens",
            "replies",
            "delay_ms",
            "endpoint",
            "card_url",
            "tools",
            "credential_headers",
        ] {
            object.remove(key);
        }
    }
    object.extend(patch);
    let input: AgentInput = serde_path_to_error::deserialize(merged)
        .map_err(|e| AppError::invalid(e.path().to_string(), e.inner().to_string()))?;
    let valid = input.validate(&state, Some(&current)).await?;
    if valid.spec.kind() != current.spec.kind() && takes_part_now(&state, &current).await? {
        // A runner treats each member by the kind it had when it started: a person must not
        // become a program (or the reverse) under its feet.
        return Err(AppError::Conflict(
            "the agent takes part in a running collaboration; its kind can change once that has ended"
                .into(),
        ));
    }
    // An agent that becomes `http` gets its secret now, shown in this response only.
    let new_secret = matches!(valid.spec, AgentSpec::Http { .. }) && current.secret.is_none();
    let updated = Agent {
        name: valid.name,
        description: valid.description,
        spec: valid.spec,
        tool_credentials: valid.tool_credentials,
        secret: if new_secret {
            Some(signing::new_secret())
        } else {
            current.secret.clone()
        },
        updated_at: crate::domain::now(),
        ..current
    };
    state.store.update_agent(&updated).await?;
    Ok(Json(if new_secret {
        AgentView::revealing(updated)
    } else {
        updated.into()
    }))
}

/// The tools an agent can call now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AgentTools {
    /// What its model is offered: each server's tools after its allow-list (with `all`,
    /// every tool of its servers, each saying whether the allow-list lets it through).
    items: Vec<AgentTool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AgentTool {
    #[serde(flatten)]
    offered: tools::Offered,
    /// Whether the server's allow-list lets the model call it.
    allowed: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ToolsQuery {
    /// List every tool of the agent's servers, not only those its allow-lists let through.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/api/v1/agents/{agent}/tools", tag = "agents",
    params(("agent" = String, Path, description = "UUID or address"), ToolsQuery),
    responses((status = 200, body = AgentTools), (status = 404, body = crate::error::Problem),
        (status = 502, description = "A tool server could not be reached", body = crate::error::Problem)))]
async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(query): ApiQuery<ToolsQuery>,
) -> Result<Json<AgentTools>, AppError> {
    let agent = find(&state, &caller, &agent).await?;
    let AgentSpec::Llm { tools: servers, .. } = &agent.spec else {
        return Ok(Json(AgentTools { items: Vec::new() }));
    };
    let listed: Vec<crate::domain::ToolServer> = if query.all {
        servers
            .iter()
            .map(|server| crate::domain::ToolServer {
                allow: None,
                ..server.clone()
            })
            .collect()
    } else {
        servers.clone()
    };
    let credentials = Credentials::open(agent.tool_credentials.as_ref());
    let offered = tools::list(
        &listed,
        &credentials,
        &state.outbound,
        &state.engine.remote().tools,
    )
    .await
    .map_err(|e| AppError::BadGateway(e.to_string()))?;
    let items = offered
        .into_iter()
        .map(|offered| {
            let allowed = servers
                .iter()
                .find(|server| server.name == offered.tool.server)
                .and_then(|server| server.allow.as_ref())
                .is_none_or(|allow| allow.contains(&offered.tool.name));
            AgentTool { offered, allowed }
        })
        .collect();
    Ok(Json(AgentTools { items }))
}

/// Whether a uAgent is up now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AgentCheck {
    /// It answered uAgents' readiness probe for its address.
    ready: bool,
    /// Where it was found: its own endpoint, or the one the Almanac gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Asks a `uagent` whether it is up, the way its first turn will: its endpoint (or the
/// Almanac's answer) and uAgents' readiness probe for its address.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/check", tag = "agents",
    params(("agent" = String, Path, description = "UUID or address")),
    responses((status = 200, body = AgentCheck), (status = 404, body = crate::error::Problem),
        (status = 409, description = "The agent is not a uagent", body = crate::error::Problem)))]
async fn check_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentCheck>, AppError> {
    let agent = find(&state, &caller, &agent).await?;
    let AgentSpec::Uagent { endpoint } = &agent.spec else {
        // The request is fine; the agent is of a kind that has nothing to check.
        return Err(AppError::Conflict(
            "only a uagent can be checked: other kinds are reached when their turn comes".into(),
        ));
    };
    let checked =
        crate::agents::uagent::check(state.engine.remote(), &agent.address, endpoint.as_deref())
            .await;
    Ok(Json(match checked {
        Ok(endpoint) => AgentCheck {
            ready: true,
            endpoint: Some(endpoint),
            detail: None,
        },
        Err(detail) => AgentCheck {
            ready: false,
            endpoint: None,
            detail: Some(detail),
        },
    }))
}

/// Whether the agent is in a collaboration that is running now.
async fn takes_part_now(state: &AppState, agent: &Agent) -> Result<bool, AppError> {
    let filter = CollaborationFilter {
        agent: Some(agent.id),
        status: Some(CollaborationStatus::Running),
        ..Default::default()
    };
    let (_, running) = state
        .store
        .list_collaborations(agent.account_id, &filter, PageRequest { page: 1, size: 1 })
        .await?;
    Ok(running > 0)
}

#[utoipa::path(delete, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "UUID or address")),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let agent = find(&state, &caller, &agent).await?;
    if state
        .store
        .delete_agent(caller.account_id, agent.id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("agent"))
    }
}
