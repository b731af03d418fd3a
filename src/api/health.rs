//! Liveness, readiness and metrics, outside `/api/v1` and without auth.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::{domain::CollaborationStatus, error::Problem, telemetry};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// Prometheus text format. Stored counts are read now; the rest was counted as it happened.
/// With `SKEIN_METRICS_TOKEN` set, only a request bearing it is answered.
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Problem> {
    if let Some(token) = &state.config.metrics_token {
        // Compared as digests: the time taken says nothing of how much of it matched.
        let digest = |text: &str| Sha256::digest(text.as_bytes());
        let offered = super::auth::bearer(&headers).map(|offered| digest(&offered));
        if offered != Some(digest(token.expose_secret())) {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the metrics need their bearer token (SKEIN_METRICS_TOKEN)",
            ));
        }
    }
    let counted = state.store.count_by_status().await.map_err(|error| {
        tracing::warn!(
            error = format!("{error:#}"),
            "counting collaborations failed"
        );
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not reachable",
        )
    })?;
    let statuses = [
        CollaborationStatus::Running,
        CollaborationStatus::Completed,
        CollaborationStatus::Failed,
        CollaborationStatus::Cancelled,
    ];
    // Every status, so a gauge falls back to 0 rather than keep its last count.
    telemetry::collaborations(
        statuses
            .iter()
            .map(|status| {
                let count = counted
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                (status.name(), count)
            })
            .collect(),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::handle().render(),
    ))
}

/// The process is up and serving.
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers, and every essential background worker is running.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let failed = state.tasks.failed();
    if !failed.is_empty() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("background workers have stopped: {}", failed.join(", ")),
        ));
    }
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
