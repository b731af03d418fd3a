//! `/collaborations`: the flockx collaborations API, plus stop and Skein's extensions.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
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
    domain::{
        Agent, AgentRef, Collaboration, CollaborationStatus, EndReason, FieldError,
        NewCollaboration, Page, Sender, Source, Strategy,
    },
    engine::StopOutcome,
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
    pub(super) status: CollaborationStatus,
    pub(super) end_reason: Option<EndReason>,
    pub(super) principal: Sender,
    pub(super) participants: Vec<Sender>,
    pub(super) message_count: u32,
    pub(super) tokens_used: u64,
    pub(super) source: Option<Source>,
    pub(super) strategy: Strategy,
    pub(super) webhook_url: Option<String>,
    pub(super) token_budget: Option<u64>,
    pub(super) podcast: bool,
    pub(super) allow_interjections: bool,
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
            status: c.status,
            end_reason: c.end_reason,
            principal: c.principal,
            participants: c.participants,
            message_count: c.message_count,
            tokens_used: c.tokens_used,
            source: c.source,
            strategy: c.strategy,
            webhook_url: c.webhook_url,
            token_budget: c.token_budget,
            podcast: c.podcast,
            allow_interjections: c.allow_interjections,
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

#[utoipa::path(post, path = "/api/v1/collaborations", tag = "collaborations", request_body = CreateCollaboration,
    responses((status = 201, body = CollaborationView), (status = 400, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateCollaboration>,
) -> Result<impl IntoResponse, AppError> {
    let limits = &state.config.limits;
    let mut errors = Vec::new();

    if request.participants.is_empty() {
        errors.push(FieldError::new(
            "participants",
            "at least one participant is required",
        ));
    }
    // A roster past the limit is not looked up at all.
    let listed = if request.participants.len() > limits.max_participants {
        errors.push(FieldError::new(
            "participants",
            format!("at most {} participants", limits.max_participants),
        ));
        &[][..]
    } else {
        &request.participants[..]
    };
    // The roster: every reference must parse and name one of the caller's agents, and all
    // are looked up in one query. `None` is the principal's place, `Some(i)` a participant's.
    let mut named = Vec::new();
    let places = std::iter::once((None, &request.principal))
        .chain(listed.iter().enumerate().map(|(i, r)| (Some(i), r)));
    for (place, reference) in places {
        let field = place.map_or("principal".into(), |i| format!("participants[{i}]"));
        match AgentRef::parse(reference) {
            Ok(parsed) => named.push((place, field, reference, parsed)),
            Err(message) => errors.push(FieldError::new(field, message)),
        }
    }
    let refs: Vec<AgentRef> = named.iter().map(|(.., parsed)| parsed.clone()).collect();
    let found = state.store.get_agents(caller.account_id, &refs).await?;
    // The agents found, principal first: the new runner starts from them.
    let mut agents: Vec<Agent> = Vec::new();
    let mut principal_id = None;
    let mut participants = Vec::new();
    for (place, field, reference, parsed) in named {
        let Some(agent) = found.iter().find(|agent| agent.is(&parsed)) else {
            errors.push(FieldError::new(
                field,
                format!("no agent `{reference}` exists"),
            ));
            continue;
        };
        if place.is_none() {
            principal_id = Some(agent.id);
        } else if Some(agent.id) == principal_id {
            errors.push(FieldError::new(
                field,
                "the principal cannot also be a participant",
            ));
            continue;
        } else if participants.contains(&agent.id) {
            errors.push(FieldError::new(field, "this agent is listed twice"));
            continue;
        } else {
            participants.push(agent.id);
        }
        agents.push(agent.clone());
    }

    if !(1..=i64::from(limits.max_message_cap)).contains(&request.message_cap) {
        errors.push(FieldError::new(
            "message_cap",
            format!("must be between 1 and {}", limits.max_message_cap),
        ));
    }
    if !(1..=i64::from(limits.max_timeout_window)).contains(&request.timeout_window) {
        errors.push(FieldError::new(
            "timeout_window",
            format!(
                "must be between 1 and {} seconds",
                limits.max_timeout_window
            ),
        ));
    }
    let objective = request
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
        request.source.as_deref(),
        "FLOCKX, ASI1, flockx, asi_one, fetch_business",
    );
    let strategy = parse_choice::<Strategy>(
        &mut errors,
        "strategy",
        request.strategy.as_deref(),
        "manager, round_robin",
    )
    .unwrap_or(Strategy::Manager);
    if let Some(url) = &request.webhook_url {
        if url.chars().count() > MAX_URL_CHARS {
            errors.push(FieldError::new(
                "webhook_url",
                format!("must be at most {MAX_URL_CHARS} characters"),
            ));
        } else if let Err(error) = state.outbound.check(url).await {
            errors.push(FieldError::new("webhook_url", error.to_string()));
        } else if state
            .store
            .webhook_settings(caller.account_id)
            .await?
            .is_none()
        {
            // Deliveries are signed with the account's secret, which the user must have seen.
            errors.push(FieldError::new(
                "webhook_url",
                "set webhooks up first (PUT /api/v1/webhooks), to get the secret deliveries are signed with",
            ));
        }
    }
    if let Some(budget) = request.token_budget
        && budget < 1
    {
        errors.push(FieldError::new("token_budget", "must be at least 1"));
    }
    check(errors)?;

    let now = crate::domain::now();
    let new = NewCollaboration {
        id: Uuid::now_v7(),
        account_id: caller.account_id,
        channel_id: Uuid::now_v7(),
        objective,
        principal: principal_id.expect("checked above"),
        participants,
        message_cap: request.message_cap as u32,
        timeout_window: request.timeout_window as u32,
        evaluate_objective_completion: request.evaluate_objective_completion.unwrap_or(true),
        source,
        strategy,
        webhook_url: request.webhook_url,
        token_budget: request.token_budget.map(|b| b as u64),
        podcast: request.podcast.unwrap_or(false),
        allow_interjections: request.allow_interjections.unwrap_or(true),
        created_by: caller.key.id,
        created_at: now,
    };
    let lease = state
        .store
        .insert_collaboration(
            &new,
            state.config.rate_limits.max_running_per_key,
            Some(state.engine.lease_to()),
        )
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a new collaboration came unleased")))?;
    // As stored: the store tests hold the two the same.
    let created = new.started(&agents);
    // Run here at once, from what is at hand. Should the client go away first and drop
    // this handler, the next lease renewal finds the lease held with no runner and starts
    // one, which reads the collaboration from the store.
    state.engine.launch_created(lease, created.clone(), agents);
    crate::telemetry::collaboration_started();
    tracing::info!(collaboration = %new.id, "collaboration created");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        format!("/api/v1/collaborations/{}", new.id)
            .parse()
            .expect("a path is a header value"),
    );
    Ok((
        StatusCode::CREATED,
        headers,
        Json(CollaborationView::from(created)),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ListParams {
    /// 1-based page number.
    pub(super) page: Option<i64>,
    /// Items per page, 1–100 (default 50).
    pub(super) size: Option<i64>,
    /// UUID or address of an agent taking part (as principal or participant).
    pub(super) agent: Option<String>,
    pub(super) channel_id: Option<String>,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub(super) status: Option<String>,
    pub(super) source: Option<String>,
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
    if let Some(channel) = &params.channel_id {
        match Uuid::parse_str(channel) {
            Ok(id) => filter.channel_id = Some(id),
            Err(_) => errors.push(FieldError::new("channel_id", "must be a UUID")),
        }
    }
    let mut unknown_agent = false;
    if let Some(agent) = &params.agent {
        match AgentRef::parse(agent) {
            Ok(reference) => match state.store.get_agent(caller.account_id, &reference).await? {
                Some(agent) => filter.agent = Some(agent.id),
                None => unknown_agent = true,
            },
            Err(message) => errors.push(FieldError::new("agent", message)),
        }
    }
    check(errors)?;
    if unknown_agent {
        // An agent the account does not have takes part in none of its collaborations.
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

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Collaboration, AppError> {
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
    state.engine.halt(collaboration.id).await;
    if !state
        .store
        .delete_collaboration(caller.account_id, collaboration.id)
        .await?
    {
        return Err(AppError::NotFound("collaboration"));
    }
    state.hub.close(collaboration.channel_id);
    // Its podcast, if it had one, goes with it.
    match tokio::fs::remove_file(state.engine.podcast_file(collaboration.id)).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, "deleting a podcast file failed"),
    }
    tracing::info!(collaboration = %collaboration.id, "collaboration deleted");
    Ok(StatusCode::NO_CONTENT)
}
