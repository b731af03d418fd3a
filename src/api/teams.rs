//! `/teams`: saved rosters with the settings to run them, and `POST /teams/{id}/collaborations`
//! to start one on an objective. The same teams answer as one agent over A2A
//! ([`super::a2a`]), MCP ([`super::mcp`]) and uAgents; every surface starts a run through
//! [`start`], so the checks and the quotas are the same wherever the run comes from.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiJson, ApiPath, ApiQuery, AppState, PageJson, PageParams,
    auth::Caller,
    check, check_len,
    collaborations::{CollaborationView, CreateCollaboration, created_response},
};
use crate::{
    domain::{
        AgentKind, AgentRef, ApiKey, Collaboration, FieldError, Page, Strategy, Team, TeamDefaults,
        TeamMember,
    },
    error::AppError,
    store::CollaborationFilter,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/teams", get(list).post(create))
        .route("/teams/{team}", get(read).patch(update).delete(remove))
        .route("/teams/{team}/collaborations", get(runs).post(run))
}

/// What a team runs with when neither it nor the run says.
const DEFAULT_MESSAGE_CAP: u32 = 20;
const DEFAULT_TIMEOUT_WINDOW: u32 = 120;

/// A team as it is created, and as a `PATCH` is merged into before it is checked again.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub(super) struct TeamInput {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    /// UUID or address of the principal (manager) agent.
    pub(super) principal: String,
    /// UUIDs or addresses of the participants: at least one, distinct, not the principal.
    pub(super) participants: Vec<String>,
    /// Default 20 (or the server's limit, if lower).
    #[serde(default)]
    pub(super) message_cap: Option<i64>,
    /// Seconds without a new message before a run ends; default 120.
    #[serde(default)]
    pub(super) timeout_window: Option<i64>,
    /// `manager` (default) or `round_robin`.
    #[serde(default)]
    pub(super) strategy: Option<String>,
    /// Whether the judge ends a run once the objective is met (default true).
    #[serde(default)]
    pub(super) evaluate_objective_completion: Option<bool>,
    #[serde(default)]
    pub(super) token_budget: Option<i64>,
    #[serde(default)]
    pub(super) cost_budget_usd: Option<f64>,
    #[serde(default)]
    pub(super) allow_interjections: Option<bool>,
    /// A ChatMessage sent to the team's address starts a run, answered with its summary
    /// (default false: anyone who knows the address could spend the account's budget).
    #[serde(default)]
    pub(super) answers_uagents: Option<bool>,
}

/// A member as a team shows it: the agent as it is now, or, once deleted, the name it had.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct MemberView {
    pub(super) id: Uuid,
    pub(super) name: String,
    /// Absent once the agent has been deleted.
    pub(super) address: Option<String>,
    pub(super) kind: Option<AgentKind>,
    /// The agent no longer exists: the team cannot run until it is edited.
    pub(super) deleted: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct TeamView {
    pub(super) id: Uuid,
    /// The uAgents address the team answers at (a ChatMessage to it starts a run).
    pub(super) address: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) principal: MemberView,
    pub(super) participants: Vec<MemberView>,
    pub(super) message_cap: u32,
    pub(super) timeout_window: u32,
    pub(super) strategy: Strategy,
    pub(super) evaluate_objective_completion: bool,
    pub(super) token_budget: Option<u64>,
    pub(super) cost_budget_usd: Option<f64>,
    pub(super) allow_interjections: bool,
    pub(super) answers_uagents: bool,
    /// Its A2A agent card: any A2A client can delegate to the team through it.
    pub(super) a2a_card_url: String,
    /// The A2A JSON-RPC endpoint the card names.
    pub(super) a2a_url: String,
    /// This server's MCP endpoint, where the team is a tool's argument.
    pub(super) mcp_url: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

/// The base URL clients reach this server at: `SKEIN_PUBLIC_URL` when set, else the
/// request's own `Host` (over `https` when a proxy says it forwarded one).
pub(super) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.uagents.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The views of an account's `teams`, their members looked up as they are now, all of them
/// in one query.
pub(super) async fn views(
    state: &AppState,
    base: &str,
    teams: Vec<Team>,
) -> Result<Vec<TeamView>, AppError> {
    let Some(account_id) = teams.first().map(|team| team.account_id) else {
        return Ok(Vec::new());
    };
    let ids: Vec<AgentRef> = teams
        .iter()
        .flat_map(Team::members)
        .map(|m| AgentRef::Id(m.id))
        .collect();
    let agents = state.store.get_agents(account_id, &ids).await?;
    Ok(teams
        .into_iter()
        .map(|team| view_of(&agents, base, team))
        .collect())
}

/// The team's view, its members looked up as they are now.
pub(super) async fn view(state: &AppState, base: &str, team: Team) -> Result<TeamView, AppError> {
    Ok(views(state, base, vec![team]).await?.remove(0))
}

fn view_of(agents: &[crate::domain::Agent], base: &str, team: Team) -> TeamView {
    let member = |m: &TeamMember| match agents.iter().find(|a| a.id == m.id) {
        Some(agent) => MemberView {
            id: agent.id,
            name: agent.name.clone(),
            address: Some(agent.address.to_string()),
            kind: Some(agent.spec.kind()),
            deleted: false,
        },
        None => MemberView {
            id: m.id,
            name: m.name.clone(),
            address: None,
            kind: None,
            deleted: true,
        },
    };
    let a2a_url = format!("{base}/a2a/teams/{}", team.id);
    TeamView {
        id: team.id,
        address: team.address.to_string(),
        principal: member(&team.principal),
        participants: team.participants.iter().map(member).collect(),
        name: team.name,
        description: team.description,
        message_cap: team.defaults.message_cap,
        timeout_window: team.defaults.timeout_window,
        strategy: team.defaults.strategy,
        evaluate_objective_completion: team.defaults.evaluate_objective_completion,
        token_budget: team.defaults.token_budget,
        cost_budget_usd: team
            .defaults
            .cost_budget_micros
            .map(crate::domain::event::usd),
        allow_interjections: team.defaults.allow_interjections,
        answers_uagents: team.answers_uagents,
        a2a_card_url: format!("{a2a_url}/.well-known/agent-card.json"),
        a2a_url,
        mcp_url: format!("{base}/mcp"),
        created_at: team.created_at,
        updated_at: team.updated_at,
    }
}

/// A team's name, description, roster and defaults, checked: the roster as a collaboration's
/// is, against the account's agents as they are now.
struct ValidTeam {
    name: String,
    description: Option<String>,
    members: Vec<TeamMember>,
    defaults: TeamDefaults,
    answers_uagents: bool,
}

impl ValidTeam {
    /// The team as `saved_by` saves it (its runs over uAgents are started as that key).
    fn saved(
        self,
        id: Uuid,
        account_id: Uuid,
        address: crate::domain::AgentAddress,
        saved_by: Uuid,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Team {
        let mut members = self.members.into_iter();
        Team {
            id,
            account_id,
            address,
            name: self.name,
            description: self.description,
            principal: members.next().expect("a roster has a principal"),
            participants: members.collect(),
            defaults: self.defaults,
            answers_uagents: self.answers_uagents,
            saved_by,
            created_at,
            updated_at,
        }
    }
}

impl TeamInput {
    async fn validate(self, state: &AppState, account_id: Uuid) -> Result<ValidTeam, AppError> {
        let limits = &state.config.limits;
        let mut errors = Vec::new();
        let name = self.name.trim().to_owned();
        let answers_uagents = self.answers_uagents.unwrap_or(false);
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
        // The roster and the settings are checked as a collaboration's would be.
        let as_run = CreateCollaboration {
            principal: self.principal,
            participants: self.participants,
            message_cap: self
                .message_cap
                .unwrap_or(i64::from(DEFAULT_MESSAGE_CAP.min(limits.max_message_cap))),
            timeout_window: self.timeout_window.unwrap_or(i64::from(
                DEFAULT_TIMEOUT_WINDOW.min(limits.max_timeout_window),
            )),
            objective: None,
            evaluate_objective_completion: self.evaluate_objective_completion,
            source: None,
            strategy: self.strategy,
            webhook_url: None,
            token_budget: self.token_budget,
            cost_budget_usd: self.cost_budget_usd,
            podcast: None,
            allow_interjections: self.allow_interjections,
        };
        let valid = match as_run.validate(limits) {
            Ok(valid) => Some(valid),
            Err(AppError::Validation(found)) => {
                errors.extend(found);
                None
            }
            Err(other) => return Err(other),
        };
        check(errors)?;
        let valid = valid.expect("checked above");
        let (agents, errors) = state.engine.roster(account_id, &valid).await?;
        check(errors)?;
        Ok(ValidTeam {
            name,
            description: self.description,
            members: agents
                .iter()
                .map(|agent| TeamMember {
                    id: agent.id,
                    name: agent.name.clone(),
                })
                .collect(),
            defaults: TeamDefaults {
                message_cap: valid.message_cap,
                timeout_window: valid.timeout_window,
                strategy: valid.strategy,
                evaluate_objective_completion: valid.evaluate_objective_completion,
                token_budget: valid.token_budget,
                cost_budget_micros: valid.cost_budget_micros,
                allow_interjections: valid.allow_interjections,
            },
            answers_uagents,
        })
    }
}

impl From<&Team> for TeamInput {
    fn from(team: &Team) -> Self {
        Self {
            name: team.name.clone(),
            description: team.description.clone(),
            principal: team.principal.id.to_string(),
            participants: team.participants.iter().map(|m| m.id.to_string()).collect(),
            message_cap: Some(i64::from(team.defaults.message_cap)),
            timeout_window: Some(i64::from(team.defaults.timeout_window)),
            strategy: Some(team.defaults.strategy.name()),
            evaluate_objective_completion: Some(team.defaults.evaluate_objective_completion),
            token_budget: team.defaults.token_budget.map(|b| b as i64),
            cost_budget_usd: team
                .defaults
                .cost_budget_micros
                .map(crate::domain::event::usd),
            allow_interjections: Some(team.defaults.allow_interjections),
            answers_uagents: Some(team.answers_uagents),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = TeamInput,
    responses((status = 201, body = TeamView), (status = 422, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<TeamInput>,
) -> Result<impl IntoResponse, AppError> {
    let valid = input.validate(&state, caller.account_id).await?;
    let id = Uuid::now_v7();
    let now = crate::domain::now();
    let address = state
        .engine
        .remote()
        .identities
        .for_team(id)
        .address()
        .clone();
    let team = valid.saved(id, caller.account_id, address, caller.key.id, now, now);
    state.store.insert_team(&team).await?;
    let location = format!("/api/v1/teams/{id}");
    let view = view(&state, &base_url(&state, &headers), team).await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(view),
    ))
}

/// The caller's team named by UUID or address.
pub(super) async fn find(state: &AppState, account_id: Uuid, team: &str) -> Result<Team, AppError> {
    let reference = AgentRef::parse(team).map_err(|_| AppError::NotFound("team"))?;
    state
        .store
        .get_team(account_id, &reference)
        .await?
        .ok_or(AppError::NotFound("team"))
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", params(PageParams),
    responses((status = 200, description = "`{items, meta}` of teams, newest first"), (status = 422, body = crate::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<TeamView>, AppError> {
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let (teams, total) = state.store.list_teams(caller.account_id, page).await?;
    let views = views(&state, &base_url(&state, &headers), teams).await?;
    Ok(PageJson(Page::new(views, total, page)))
}

#[utoipa::path(get, path = "/api/v1/teams/{team}", tag = "teams",
    params(("team" = String, Path, description = "UUID or address")),
    responses((status = 200, body = TeamView), (status = 404, body = crate::error::Problem)))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<TeamView>, AppError> {
    let team = find(&state, caller.account_id, &team).await?;
    Ok(Json(view(&state, &base_url(&state, &headers), team).await?))
}

#[utoipa::path(patch, path = "/api/v1/teams/{team}", tag = "teams",
    params(("team" = String, Path, description = "UUID or address")),
    responses((status = 200, body = TeamView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(team): ApiPath<String>,
    ApiJson(patch): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<TeamView>, AppError> {
    let current = find(&state, caller.account_id, &team).await?;
    if let Some(address) = patch.get("address")
        && address.as_str() != Some(current.address.as_str())
    {
        return Err(AppError::invalid(
            "address",
            "a team's address cannot change",
        ));
    }
    // Merge the patch over the team as it is, then check the result as a whole.
    let mut merged = serde_json::to_value(TeamInput::from(&current))
        .map_err(|e| AppError::Internal(e.into()))?;
    let object = merged.as_object_mut().expect("an input is an object");
    for (field, value) in patch {
        if field != "address" {
            object.insert(field, value);
        }
    }
    let input: TeamInput = serde_path_to_error::deserialize(merged)
        .map_err(|e| AppError::invalid(e.path().to_string(), e.inner().to_string()))?;
    let valid = input.validate(&state, caller.account_id).await?;
    let updated = valid.saved(
        current.id,
        current.account_id,
        current.address,
        caller.key.id,
        current.created_at,
        crate::domain::now(),
    );
    if !state.store.update_team(&updated).await? {
        return Err(AppError::NotFound("team"));
    }
    Ok(Json(
        view(&state, &base_url(&state, &headers), updated).await?,
    ))
}

/// Deleting a team keeps its collaborations (they still show its `team_id`).
#[utoipa::path(delete, path = "/api/v1/teams/{team}", tag = "teams",
    params(("team" = String, Path, description = "UUID or address")),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let team = find(&state, caller.account_id, &team).await?;
    if state.store.delete_team(caller.account_id, team.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("team"))
    }
}

/// A run of a team: the objective, and whatever of the team's defaults it changes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct RunTeam {
    pub(crate) objective: String,
    #[serde(default)]
    pub(crate) message_cap: Option<i64>,
    #[serde(default)]
    pub(crate) timeout_window: Option<i64>,
    #[serde(default)]
    pub(crate) strategy: Option<String>,
    #[serde(default)]
    pub(crate) evaluate_objective_completion: Option<bool>,
    #[serde(default)]
    pub(crate) token_budget: Option<i64>,
    #[serde(default)]
    pub(crate) cost_budget_usd: Option<f64>,
    #[serde(default)]
    pub(crate) allow_interjections: Option<bool>,
    #[serde(default)]
    pub(crate) webhook_url: Option<String>,
    /// `FLOCKX`, `ASI1`, `flockx`, `asi_one` or `fetch_business`.
    #[serde(default)]
    pub(crate) source: Option<String>,
    #[serde(default)]
    pub(crate) podcast: Option<bool>,
    /// The conversation the run belongs to (an A2A `contextId`): set by the surfaces that
    /// have one, never by a REST request.
    #[serde(skip)]
    pub(crate) context_id: Option<Uuid>,
}

impl RunTeam {
    pub(crate) fn objective(objective: impl Into<String>) -> Self {
        Self {
            objective: objective.into(),
            ..Self::default()
        }
    }
}

/// A run whose summary has not come this long after it ended is answered without one.
const SUMMARY_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Whether a run has its answer: stopped or failed, or completed with its summary, or
/// without one long enough after it ended that none is coming.
pub(crate) fn answered(run: &Collaboration) -> bool {
    run.status != crate::domain::CollaborationStatus::Running
        && (run.status != crate::domain::CollaborationStatus::Completed
            || run.summary.is_some()
            || run
                .ended_at
                .is_some_and(|at| Utc::now() - at > SUMMARY_GRACE))
}

/// The objective with how the conversation's last run ended, when it has one: a team asked
/// a follow-up (over A2A or uAgents, in the same conversation) knows what it answered.
pub(crate) async fn with_earlier(
    state: &AppState,
    team: &Team,
    context_id: Uuid,
    objective: String,
) -> Result<String, crate::store::StoreError> {
    let filter = CollaborationFilter {
        team_id: Some(team.id),
        context_id: Some(context_id),
        ..Default::default()
    };
    let (last, _) = state
        .store
        .list_collaborations(
            team.account_id,
            &filter,
            crate::domain::PageRequest { page: 1, size: 1 },
        )
        .await?;
    let Some(summary) = last.first().and_then(|c| c.summary.as_deref()) else {
        return Ok(objective);
    };
    let room = state
        .config
        .limits
        .max_objective_chars
        .saturating_sub(objective.chars().count() + 80);
    if room < 40 {
        return Ok(objective);
    }
    let earlier: String = summary.chars().take(room).collect();
    Ok(format!(
        "{objective}\n\n(Earlier in this conversation the team concluded: {earlier})"
    ))
}

/// The end of `text` that fits in `max` characters: a message longer than an objective
/// may be keeps its most recent part, after an ellipsis.
pub(crate) fn most_recent(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(count - max.saturating_sub(1)).collect();
    format!("…{kept}")
}

/// Starts a collaboration from `team` as `key`: the team's roster and defaults with the
/// run's changes over them, checked and counted against the account's quotas as any create
/// is. A member deleted since the team was saved is a 409 naming it.
pub(crate) async fn start(
    state: &AppState,
    key: &ApiKey,
    team: &Team,
    run: RunTeam,
) -> Result<Collaboration, AppError> {
    let ids: Vec<AgentRef> = team.members().map(|m| AgentRef::Id(m.id)).collect();
    let agents = state.store.get_agents(team.account_id, &ids).await?;
    let lost: Vec<String> = team
        .members()
        .filter(|m| !agents.iter().any(|a| a.id == m.id))
        .map(|m| format!("`{}` ({})", m.name, m.id))
        .collect();
    if !lost.is_empty() {
        return Err(AppError::Conflict(format!(
            "the team cannot run: its member {} has been deleted; edit the team's roster",
            lost.join(", ")
        )));
    }
    if run.objective.trim().is_empty() {
        return Err(AppError::Validation(vec![FieldError::new(
            "objective",
            "must not be empty",
        )]));
    }
    let defaults = &team.defaults;
    let context_id = run.context_id;
    let request = CreateCollaboration {
        principal: team.principal.id.to_string(),
        participants: team.participants.iter().map(|m| m.id.to_string()).collect(),
        message_cap: run.message_cap.unwrap_or(i64::from(defaults.message_cap)),
        timeout_window: run
            .timeout_window
            .unwrap_or(i64::from(defaults.timeout_window)),
        objective: Some(run.objective),
        evaluate_objective_completion: Some(
            run.evaluate_objective_completion
                .unwrap_or(defaults.evaluate_objective_completion),
        ),
        source: run.source,
        strategy: Some(run.strategy.unwrap_or_else(|| defaults.strategy.name())),
        webhook_url: run.webhook_url,
        token_budget: run.token_budget.or(defaults.token_budget.map(|b| b as i64)),
        cost_budget_usd: run
            .cost_budget_usd
            .or(defaults.cost_budget_micros.map(crate::domain::event::usd)),
        podcast: run.podcast,
        allow_interjections: Some(
            run.allow_interjections
                .unwrap_or(defaults.allow_interjections),
        ),
    };
    let mut valid = request.validate(&state.config.limits)?;
    valid.team_id = Some(team.id);
    valid.context_id = context_id;
    Ok(state.engine.create(key, valid).await?)
}

#[utoipa::path(post, path = "/api/v1/teams/{team}/collaborations", tag = "teams",
    params(("team" = String, Path, description = "UUID or address")),
    request_body = RunTeam,
    responses((status = 201, body = CollaborationView), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem, description = "A member was deleted, or too many are running"),
        (status = 422, body = crate::error::Problem)))]
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(run): ApiJson<RunTeam>,
) -> Result<impl IntoResponse, AppError> {
    let team = find(&state, caller.account_id, &team).await?;
    let created = start(&state, &caller.key, &team, run).await?;
    Ok(created_response(created))
}

#[utoipa::path(get, path = "/api/v1/teams/{team}/collaborations", tag = "teams",
    params(("team" = String, Path, description = "UUID or address"), PageParams),
    responses((status = 200, description = "`{items, meta}` of the team's collaborations, newest first"),
        (status = 404, body = crate::error::Problem)))]
async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(team): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<CollaborationView>, AppError> {
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let team = find(&state, caller.account_id, &team).await?;
    let filter = CollaborationFilter {
        team_id: Some(team.id),
        ..Default::default()
    };
    let (items, total) = state
        .store
        .list_collaborations(caller.account_id, &filter, page)
        .await?;
    Ok(PageJson(
        Page::new(items, total, page).map(CollaborationView::from),
    ))
}
