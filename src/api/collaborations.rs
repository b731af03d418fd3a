//! `/collaborations`: the flockx collaborations API, plus stop and Skein's extensions.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiJson, ApiPath, ApiQuery, AppState, PageJson, PageParams, auth::Caller, check, check_len,
};
use crate::{
    config::Limits,
    domain::{
        AgentRef, Collaboration, CollaborationStatus, EndReason, FieldError, Page, Sender, Source,
        Strategy, ValidCollaboration,
    },
    engine::{CreateError, StopOutcome},
    error::AppError,
    store::CollaborationFilter,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/collaborations", get(list).post(create))
        .route("/collaborations/{id}", get(read).delete(remove))
        .route("/collaborations/{id}/stop", post(stop))
        .route("/collaborations/{id}/audio", get(audio))
}

const MAX_URL_CHARS: usize = 2048;

pub(super) const DEFAULT_OBJECTIVE: &str = "Plan a night out with my friends";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct CreateCollaboration {
    /// UUID or address of the principal (manager) agent.
    pub(super) principal: String,
    /// UUIDs or addresses of the participants: at least one, distinct, not the principal.
    pub(super) participants: Vec<String>,
    pub(super) message_cap: i64,
    /// Seconds without a new message before the collaboration ends.
    pub(super) timeout_window: i64,
    #[serde(default)]
    pub(super) objective: Option<String>,
    #[serde(default)]
    pub(super) evaluate_objective_completion: Option<bool>,
    /// `FLOCKX`, `ASI1`, `flockx`, `asi_one` or `fetch_business`.
    #[serde(default)]
    pub(super) source: Option<String>,
    /// `manager` (default) or `round_robin`.
    #[serde(default)]
    pub(super) strategy: Option<String>,
    #[serde(default)]
    pub(super) webhook_url: Option<String>,
    #[serde(default)]
    pub(super) token_budget: Option<i64>,
    /// A budget in US dollars: when the collaboration's model calls have cost this much (by
    /// the server's price table), it ends with `end_reason: "cost_budget"`.
    #[serde(default)]
    pub(super) cost_budget_usd: Option<f64>,
    #[serde(default)]
    pub(super) podcast: Option<bool>,
    #[serde(default)]
    pub(super) allow_interjections: Option<bool>,
}

/// A collaboration: every flockx field, exactly named, then Skein's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CollaborationView {
    pub(super) id: Uuid,
    pub(super) objective: String,
    pub(super) started_at: DateTime<Utc>,
    pub(super) message_cap: u32,
    pub(super) timeout_window: u32,
    pub(super) evaluate_objective_completion: bool,
    pub(super) channel_id: Uuid,
    pub(super) principal_agent_id: Uuid,
    pub(super) ended_at: Option<DateTime<Utc>>,
    pub(super) summary: Option<String>,
    pub(super) error_message: Option<String>,
    pub(super) advisory_message: Option<String>,
    pub(super) audio_url: Option<String>,
    pub(super) headline: Option<String>,
    /// What it came to, written with the summary: decisions, action items (owner and
    /// task) and open questions; `note` says when no model wrote it.
    pub(super) outcome: Option<crate::domain::Outcome>,
    pub(super) status: CollaborationStatus,
    pub(super) end_reason: Option<EndReason>,
    pub(super) principal: Sender,
    pub(super) participants: Vec<Sender>,
    pub(super) message_count: u32,
    pub(super) tokens_used: u64,
    /// What its model calls have cost so far, in US dollars, by the server's price table
    /// (models it has no price for count as 0).
    pub(super) cost_usd: f64,
    pub(super) source: Option<Source>,
    pub(super) strategy: Strategy,
    pub(super) webhook_url: Option<String>,
    pub(super) token_budget: Option<u64>,
    pub(super) cost_budget_usd: Option<f64>,
    pub(super) podcast: bool,
    pub(super) allow_interjections: bool,
    /// For a fork: the collaboration it was forked from, and the last `seq` it copied.
    pub(super) forked_from: Option<crate::domain::ForkedFrom>,
    /// The team it was started from, if one started it.
    pub(super) team_id: Option<Uuid>,
    /// The conversation with the team it belongs to (an A2A `contextId`).
    pub(super) context_id: Option<Uuid>,
    pub(super) created_at: DateTime<Utc>,
}

impl From<Collaboration> for CollaborationView {
    fn from(c: Collaboration) -> Self {
        Self {
            id: c.id,
            objective: c.objective,
            started_at: c.started_at,
            message_cap: c.message_cap,
            timeout_window: c.timeout_window,
            evaluate_objective_completion: c.evaluate_objective_completion,
            channel_id: c.channel_id,
            principal_agent_id: c.principal.id,
            ended_at: c.ended_at,
            summary: c.summary,
            error_message: c.error_message,
            advisory_message: c.advisory_message,
            audio_url: c.audio_url,
            headline: c.headline,
            outcome: c.outcome,
            status: c.status,
            end_reason: c.end_reason,
            principal: c.principal,
            participants: c.participants,
            message_count: c.message_count,
            tokens_used: c.tokens_used,
            cost_usd: crate::domain::event::usd(c.cost_micros),
            source: c.source,
            strategy: c.strategy,
            webhook_url: c.webhook_url,
            token_budget: c.token_budget,
            cost_budget_usd: c.cost_budget_micros.map(crate::domain::event::usd),
            podcast: c.podcast,
            allow_interjections: c.allow_interjections,
            forked_from: c.forked_from,
            team_id: c.team_id,
            context_id: c.context_id,
            created_at: c.created_at,
        }
    }
}

/// Parses an optional enum field, recording a readable error.
fn parse_choice<T: std::str::FromStr>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
    allowed: &str,
) -> Option<T> {
    let value = value?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                format!("`{value}` is not one of {allowed}"),
            ));
            None
        }
    }
}

impl CreateCollaboration {
    /// Checks everything that can be checked without the store, reporting every problem.
    pub(super) fn validate(self, limits: &Limits) -> Result<ValidCollaboration, AppError> {
        let mut errors = Vec::new();
        if self.participants.is_empty() {
            errors.push(FieldError::new(
                "participants",
                "at least one participant is required",
            ));
        }
        // A roster past the limit is not looked at further.
        let listed = if self.participants.len() > limits.max_participants {
            errors.push(FieldError::new(
                "participants",
                format!("at most {} participants", limits.max_participants),
            ));
            &[][..]
        } else {
            &self.participants[..]
        };
        let mut reference = |field: String, given: &str| match AgentRef::parse(given) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                errors.push(FieldError::new(field, message));
                None
            }
        };
        let principal = reference("principal".into(), &self.principal);
        let participants: Vec<Option<AgentRef>> = listed
            .iter()
            .enumerate()
            .map(|(i, given)| reference(format!("participants[{i}]"), given))
            .collect();
        if !(1..=i64::from(limits.max_message_cap)).contains(&self.message_cap) {
            errors.push(FieldError::new(
                "message_cap",
                format!("must be between 1 and {}", limits.max_message_cap),
            ));
        }
        if !(1..=i64::from(limits.max_timeout_window)).contains(&self.timeout_window) {
            errors.push(FieldError::new(
                "timeout_window",
                format!(
                    "must be between 1 and {} seconds",
                    limits.max_timeout_window
                ),
            ));
        }
        let objective = self
            .objective
            .as_deref()
            .map_or(DEFAULT_OBJECTIVE.to_owned(), |o| o.trim().to_owned());
        check_len(
            &mut errors,
            "objective",
            &objective,
            1,
            limits.max_objective_chars,
        );
        let source = parse_choice::<Source>(
            &mut errors,
            "source",
            self.source.as_deref(),
            "FLOCKX, ASI1, flockx, asi_one, fetch_business",
        );
        let strategy = parse_choice::<Strategy>(
            &mut errors,
            "strategy",
            self.strategy.as_deref(),
            "manager, round_robin",
        )
        .unwrap_or(Strategy::Manager);
        if let Some(url) = &self.webhook_url
            && url.chars().count() > MAX_URL_CHARS
        {
            errors.push(FieldError::new(
                "webhook_url",
                format!("must be at most {MAX_URL_CHARS} characters"),
            ));
        }
        if let Some(budget) = self.token_budget
            && budget < 1
        {
            errors.push(FieldError::new("token_budget", "must be at least 1"));
        }
        if let Some(budget) = self.cost_budget_usd
            && !(budget.is_finite()
                && (MIN_COST_BUDGET_USD..=MAX_COST_BUDGET_USD).contains(&budget))
        {
            errors.push(FieldError::new(
                "cost_budget_usd",
                format!(
                    "must be between {MIN_COST_BUDGET_USD} and {MAX_COST_BUDGET_USD} (US dollars)"
                ),
            ));
        }
        check(errors)?;
        Ok(ValidCollaboration {
            principal: principal.expect("checked above"),
            participants: participants.into_iter().flatten().collect(),
            message_cap: self.message_cap as u32,
            timeout_window: self.timeout_window as u32,
            objective,
            evaluate_objective_completion: self.evaluate_objective_completion.unwrap_or(true),
            source,
            strategy,
            webhook_url: self.webhook_url,
            token_budget: self.token_budget.map(|b| b as u64),
            cost_budget_micros: self.cost_budget_usd.map(crate::domain::event::micros),
            podcast: self.podcast.unwrap_or(false),
            allow_interjections: self.allow_interjections.unwrap_or(true),
            fork: None,
            team_id: None,
            context_id: None,
        })
    }
}

/// A cost budget is at least a millionth of a dollar (what costs are counted in) and at
/// most a million dollars.
pub(super) const MIN_COST_BUDGET_USD: f64 = 0.000_001;
pub(super) const MAX_COST_BUDGET_USD: f64 = 1_000_000.0;

impl From<CreateError> for AppError {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::Invalid(errors) => Self::Validation(errors),
            CreateError::Store(error) => error.into(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/collaborations", tag = "collaborations", request_body = CreateCollaboration,
    responses((status = 201, body = CollaborationView), (status = 400, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateCollaboration>,
) -> Result<impl IntoResponse, AppError> {
    let request = request.validate(&state.config.limits)?;
    let created = state.engine.create(&caller.key, request).await?;
    Ok(created_response(created))
}

/// 201 with the collaboration and its `Location`.
pub(super) fn created_response(created: Collaboration) -> impl IntoResponse {
    let location = format!("/api/v1/collaborations/{}", created.id);
    let headers = [(
        header::LOCATION,
        HeaderValue::try_from(location).expect("a path is a header value"),
    )];
    (
        StatusCode::CREATED,
        headers,
        Json(CollaborationView::from(created)),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// 1-based page number.
    #[param(minimum = 1, maximum = 4294967295_i64)]
    pub(super) page: Option<i64>,
    /// Items per page, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub(super) size: Option<i64>,
    /// UUID or address of an agent taking part (as principal or participant).
    #[param(min_length = 1, max_length = 200)]
    pub(super) agent: Option<String>,
    #[param(format = Uuid)]
    pub(super) channel_id: Option<String>,
    /// `running`, `completed`, `failed` or `cancelled`.
    #[param(value_type = Option<CollaborationStatus>)]
    pub(super) status: Option<String>,
    /// `FLOCKX`, `ASI1`, `flockx`, `asi_one` or `fetch_business`.
    #[param(value_type = Option<SourceName>)]
    pub(super) source: Option<String>,
    /// UUID or address of the team that started it.
    #[param(min_length = 1, max_length = 200)]
    pub(super) team: Option<String>,
    /// The conversation a team's run belongs to: an A2A `contextId`, a uAgent's session,
    /// or the id of the collaboration that delegated to the team.
    #[param(format = Uuid)]
    pub(super) context_id: Option<String>,
}

/// How a request may name a collaboration's source: flockx's names and Skein's.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms, non_camel_case_types)]
pub(super) enum SourceName {
    FLOCKX,
    ASI1,
    flockx,
    asi_one,
    fetch_business,
}

#[utoipa::path(get, path = "/api/v1/collaborations", tag = "collaborations", params(ListParams),
    responses((status = 200, description = "`{items, meta: {total, page, size, has_next, has_previous}}`"), (status = 422, body = crate::error::Problem)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<PageJson<CollaborationView>, AppError> {
    let mut errors = Vec::new();
    let page = PageParams {
        page: params.page,
        size: params.size,
    }
    .parse(&mut errors);
    let mut filter = CollaborationFilter {
        status: parse_choice(
            &mut errors,
            "status",
            params.status.as_deref(),
            "running, completed, failed, cancelled",
        ),
        source: parse_choice(
            &mut errors,
            "source",
            params.source.as_deref(),
            "FLOCKX, ASI1, flockx, asi_one, fetch_business",
        ),
        ..Default::default()
    };
    if let Some(context) = &params.context_id {
        match Uuid::parse_str(context) {
            Ok(id) => filter.context_id = Some(id),
            Err(_) => errors.push(FieldError::new("context_id", "must be a UUID")),
        }
    }
    if let Some(channel) = &params.channel_id {
        match Uuid::parse_str(channel) {
            Ok(id) => filter.channel_id = Some(id),
            Err(_) => errors.push(FieldError::new("channel_id", "must be a UUID")),
        }
    }
    let mut matches_none = false;
    if let Some(agent) = &params.agent {
        match AgentRef::parse(agent) {
            Ok(reference) => match state.store.get_agent(caller.account_id, &reference).await? {
                Some(agent) => filter.agent = Some(agent.id),
                None => matches_none = true,
            },
            Err(message) => errors.push(FieldError::new("agent", message)),
        }
    }
    if let Some(team) = &params.team {
        match AgentRef::parse(team) {
            Ok(reference) => match state.store.get_team(caller.account_id, &reference).await? {
                Some(team) => filter.team_id = Some(team.id),
                None => matches_none = true,
            },
            Err(message) => errors.push(FieldError::new("team", message)),
        }
    }
    check(errors)?;
    if matches_none {
        // An agent (or team) the account does not have is in none of its collaborations.
        return Ok(PageJson(Page::new(Vec::new(), 0, page)));
    }
    let (items, total) = state
        .store
        .list_collaborations(caller.account_id, &filter, page)
        .await?;
    Ok(PageJson(
        Page::new(items, total, page).map(CollaborationView::from),
    ))
}

pub(super) async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Collaboration, AppError> {
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("collaboration"))?;
    state
        .store
        .get_collaboration(caller.account_id, id)
        .await?
        .ok_or(AppError::NotFound("collaboration"))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{id}", tag = "collaborations", params(("id" = String, Path, description = "Collaboration id")),
    responses((status = 200, body = CollaborationView), (status = 404, body = crate::error::Problem)))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CollaborationView>, AppError> {
    Ok(Json(find(&state, &caller, &id).await?.into()))
}

/// The podcast (`podcast: true`), once made: `audio/wav`, with `Range` requests answered 206
/// so players can seek.
#[utoipa::path(get, path = "/api/v1/collaborations/{id}/audio", tag = "collaborations", params(("id" = String, Path, description = "Collaboration id")),
    responses((status = 200, description = "The podcast as audio/wav", content_type = "audio/wav"),
              (status = 206, description = "The requested range of it"),
              (status = 404, body = crate::error::Problem, description = "No such collaboration, or no podcast (yet)")))]
async fn audio(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let collaboration = find(&state, &caller, &id).await?;
    let path = state.engine.podcast_file(collaboration.id);
    if collaboration.audio_url.is_none() || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(AppError::NotFound("podcast"));
    }
    let served = tower::ServiceExt::oneshot(tower_http::services::ServeFile::new(path), request)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(served.map(axum::body::Body::new))
}

#[utoipa::path(post, path = "/api/v1/collaborations/{id}/stop", tag = "collaborations", params(("id" = String, Path, description = "Collaboration id")),
    responses((status = 200, body = CollaborationView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CollaborationView>, AppError> {
    let collaboration = find(&state, &caller, &id).await?;
    let already = |c: &Collaboration| {
        AppError::Conflict(format!(
            "the collaboration has already ended ({})",
            c.status.name()
        ))
    };
    if collaboration.status != CollaborationStatus::Running {
        return Err(already(&collaboration));
    }
    let outcome = state.engine.stop(&collaboration).await?;
    let current = find(&state, &caller, &id).await?;
    match outcome {
        StopOutcome::Stopped => Ok(Json(current.into())),
        StopOutcome::NotRunning => Err(already(&current)),
    }
}

#[utoipa::path(delete, path = "/api/v1/collaborations/{id}", tag = "collaborations", params(("id" = String, Path, description = "Collaboration id")),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let collaboration = find(&state, &caller, &id).await?;
    if !state
        .engine
        .delete(caller.account_id, &collaboration)
        .await?
    {
        return Err(AppError::NotFound("collaboration"));
    }
    Ok(StatusCode::NO_CONTENT)
}
