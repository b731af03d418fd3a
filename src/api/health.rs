//! Liveness and readiness, outside `/api/v1` and without auth.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use super::AppState;
use crate::error::Problem;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The process is up and serving.
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "readiness check failed");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not reachable",
            ))
        }
    }
}
