//! `POST /collaborations/{id}/fork`: a new collaboration whose channel begins with the
//! original's conversation up to a `seq`, then goes on live, with the same roster and
//! settings unless the request changes them. The original is not touched.

use axum::{Router, extract::State, response::IntoResponse, routing::post};
use serde::Deserialize;

use super::{
    ApiJson, ApiPath, AppState,
    auth::Caller,
    collaborations::{CreateCollaboration, created_response, find},
};
use crate::{
    domain::{Collaboration, FieldError, Fork},
    error::AppError,
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/collaborations/{id}/fork", post(fork))
}

/// The most events a fork copies: a longer conversation is forked from nearer its start.
const MAX_COPIED: usize = 10_000;

/// What a fork changes of the original; every field but `at_seq` is optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ForkCollaboration {
    /// The last `seq` of the original's channel the fork starts from (its messages and tool
    /// calls up to there are copied).
    pub(super) at_seq: i64,
    #[serde(default)]
    pub(super) principal: Option<String>,
    #[serde(default)]
    pub(super) participants: Option<Vec<String>>,
    #[serde(default)]
    pub(super) objective: Option<String>,
    /// Messages the fork may add to what it copied.
    #[serde(default)]
    pub(super) message_cap: Option<i64>,
    #[serde(default)]
    pub(super) timeout_window: Option<i64>,
    #[serde(default)]
    pub(super) strategy: Option<String>,
    #[serde(default)]
    pub(super) evaluate_objective_completion: Option<bool>,
    #[serde(default)]
    pub(super) token_budget: Option<i64>,
    #[serde(default)]
    pub(super) cost_budget_usd: Option<f64>,
    #[serde(default)]
    pub(super) allow_interjections: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/collaborations/{id}/fork", tag = "collaborations",
    params(("id" = String, Path, description = "The collaboration to fork")),
    request_body = ForkCollaboration,
    responses((status = 201, body = super::collaborations::CollaborationView), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ForkCollaboration>,
) -> Result<impl IntoResponse, AppError> {
    let original = find(&state, &caller, &id).await?;
    let at_seq = input.at_seq;
    let request = merged(&original, input);
    let mut valid = request.validate(&state.config.limits)?;
    let events = copied(&state, &original, at_seq).await?;
    valid.fork = Some(Fork {
        from: original.id,
        at_seq,
        events,
    });
    let created = state.engine.create(&caller.key, valid).await?;
    Ok(created_response(created))
}

/// The create request a fork makes: the original's roster and settings, with the
/// request's changes over them. It is checked as any create is.
fn merged(original: &Collaboration, input: ForkCollaboration) -> CreateCollaboration {
    CreateCollaboration {
        principal: input
            .principal
            .unwrap_or_else(|| original.principal.id.to_string()),
        participants: input.participants.unwrap_or_else(|| {
            original
                .participants
                .iter()
                .map(|p| p.id.to_string())
                .collect()
        }),
        message_cap: input.message_cap.unwrap_or(i64::from(original.message_cap)),
        timeout_window: input
            .timeout_window
            .unwrap_or(i64::from(original.timeout_window)),
        objective: Some(
            input
                .objective
                .unwrap_or_else(|| original.objective.clone()),
        ),
        evaluate_objective_completion: Some(
            input
                .evaluate_objective_completion
                .unwrap_or(original.evaluate_objective_completion),
        ),
        source: original.source.map(|s| s.name().to_owned()),
        strategy: Some(
            input
                .strategy
                .unwrap_or_else(|| original.strategy.name().to_owned()),
        ),
        webhook_url: original.webhook_url.clone(),
        token_budget: input
            .token_budget
            .or(original.token_budget.map(|b| b as i64)),
        cost_budget_usd: input
            .cost_budget_usd
            .or(original.cost_budget_micros.map(crate::domain::event::usd)),
        podcast: Some(false),
        allow_interjections: Some(
            input
                .allow_interjections
                .unwrap_or(original.allow_interjections),
        ),
    }
}

/// The original's messages and tool calls up to `at_seq`, each marked as copied with its
/// original `seq`. A tool call whose result comes after `at_seq` is left out with it: the
/// fork never starts with a call that has no answer.
async fn copied(
    state: &AppState,
    original: &Collaboration,
    at_seq: i64,
) -> Result<Vec<serde_json::Value>, AppError> {
    let refuse = |message: String| AppError::Validation(vec![FieldError::new("at_seq", message)]);
    if at_seq < 1 {
        return Err(refuse("must be at least 1".into()));
    }
    let mut kept = Vec::new();
    let mut after = 0;
    let mut last_seq = 0;
    'read: loop {
        let events = state
            .store
            .read_events(original.channel_id, after, 500)
            .await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in events {
            last_seq = event.seq;
            if event.seq > at_seq {
                break 'read;
            }
            let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&event.frame) else {
                continue;
            };
            if !matches!(
                body["type"].as_str(),
                Some("message" | "tool_call" | "tool_result")
            ) {
                continue;
            }
            if kept.len() == MAX_COPIED {
                return Err(refuse(format!(
                    "a fork copies at most {MAX_COPIED} events; fork from an earlier seq"
                )));
            }
            if let Some(object) = body.as_object_mut() {
                object.remove("seq");
                object.insert(
                    "copied".into(),
                    serde_json::json!({"collaboration_id": original.id, "seq": event.seq}),
                );
            }
            kept.push(body);
        }
    }
    if at_seq > last_seq {
        return Err(refuse(format!(
            "the collaboration's channel ends at seq {last_seq}"
        )));
    }
    let answered: std::collections::HashSet<String> = kept
        .iter()
        .filter(|e| e["type"] == "tool_result")
        .filter_map(|e| e["call_id"].as_str().map(str::to_owned))
        .collect();
    kept.retain(|e| {
        e["type"] != "tool_call"
            || e["call_id"]
                .as_str()
                .is_some_and(|id| answered.contains(id))
    });
    Ok(kept)
}
