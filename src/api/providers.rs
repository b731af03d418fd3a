//! `/providers`: the model providers this server is configured with, so that a client (the
//! web UI's agent form, a script) can offer real choices for an `llm` agent. Names and
//! default models only: base URLs and keys are the operator's and never leave the server.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::{AppState, auth::Caller};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/providers", get(list))
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
