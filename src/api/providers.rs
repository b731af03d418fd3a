//! `/providers`: the model providers this server is configured with, so that a client (the
//! web UI's agent form, a script) can offer real choices for an `llm` agent. Names and
//! default models only: base URLs and keys are the operator's and never leave the server.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::{ApiPath, AppState, auth::Caller};
use crate::{agents::ModelError, error::AppError};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/providers", get(list))
        .route("/providers/{name}/models", get(models))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ModelList {
    /// The provider's models, by id, sorted (at most 1000).
    items: Vec<ModelView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ModelView {
    id: String,
}

/// What the provider says it offers (its OpenAI-compatible `/models`), for the agent form's
/// model picker. Asked each time: a provider's list changes without telling anyone.
#[utoipa::path(get, path = "/api/v1/providers/{name}/models", tag = "agents",
    params(("name" = String, Path, description = "A configured provider's name")),
    responses((status = 200, body = ModelList), (status = 404, body = crate::error::Problem),
        (status = 502, description = "The provider did not answer with its models", body = crate::error::Problem)))]
async fn models(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ModelList>, AppError> {
    match state.engine.models().list_models(&name).await {
        Ok(ids) => Ok(Json(ModelList {
            items: ids.into_iter().map(|id| ModelView { id }).collect(),
        })),
        Err(ModelError::UnknownProvider(_)) => Err(AppError::NotFound("provider")),
        Err(error) => Err(AppError::BadGateway(format!(
            "the provider did not list its models: {error}"
        ))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ProviderView {
    /// What an `llm` agent's `provider` field names.
    name: String,
    /// The model an agent of this provider gets when it names none.
    default_model: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ProviderList {
    items: Vec<ProviderView>,
}

/// The configured providers, by name. Empty when none is: then only `scripted` agents
/// can be created.
#[utoipa::path(get, path = "/api/v1/providers", tag = "agents",
    responses((status = 200, body = ProviderList)))]
async fn list(State(state): State<AppState>, _caller: Caller) -> Json<ProviderList> {
    let models = state.engine.models();
    let items = models
        .names()
        .into_iter()
        .map(|name| ProviderView {
            default_model: models.default_model(&name),
            name,
        })
        .collect();
    Json(ProviderList { items })
}
