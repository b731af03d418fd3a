//! `/webhooks`: where an account's collaboration events go, the secret they are signed
//! with, and the record of every delivery.
//!
//! The secret is shown when it is made (the first `PUT`, or `POST /webhooks/secret`) and
//! never again. Setting webhooks up needs the `admin` scope, like managing keys: the secret
//! is how receivers trust Skein.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiQuery, AppState, PageJson, PageParams, auth::Caller, check};
use crate::{
    domain::{
        FieldError, Page, Scope,
        webhook::{Delivery, WebhookSettings},
    },
    error::AppError,
    signing,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(read).put(put))
        .route("/webhooks/secret", post(rotate))
        .route("/webhooks/deliveries", get(deliveries))
}

const MAX_URL_CHARS: usize = 2048;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WebhookSettingsView {
    /// Where events go for collaborations that name no `webhook_url`.
    default_url: Option<String>,
    /// The first characters of the secret, to tell which one is in use.
    secret_prefix: String,
    /// The `whsec_…` signing secret: only in the response that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl WebhookSettingsView {
    fn new(settings: WebhookSettings, reveal: bool) -> Self {
        Self {
            default_url: settings.default_url,
            secret_prefix: settings.secret.expose().chars().take(12).collect(),
            secret: reveal.then(|| settings.secret.expose().to_owned()),
            created_at: settings.created_at,
            updated_at: settings.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct PutWebhooks {
    /// Where events go for collaborations that name no `webhook_url`; null for nowhere.
    #[serde(default)]
    default_url: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookSettingsView), (status = 404, body = crate::error::Problem, description = "Not set up yet")))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookSettingsView>, AppError> {
    let settings = state
        .store
        .webhook_settings(caller.account_id)
        .await?
        .ok_or(AppError::NotFound("webhook settings"))?;
    Ok(Json(WebhookSettingsView::new(settings, false)))
}

/// Sets the default URL. The first time, it also makes the account's signing secret and
/// answers 201 with it, the only time it is shown.
#[utoipa::path(put, path = "/api/v1/webhooks", tag = "webhooks", request_body = PutWebhooks,
    responses((status = 200, body = WebhookSettingsView), (status = 201, body = WebhookSettingsView, description = "Set up, with the secret")))]
async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<PutWebhooks>,
) -> Result<impl IntoResponse, AppError> {
    caller.require(Scope::Admin)?;
    let mut errors = Vec::new();
    let default_url = input
        .default_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    if let Some(url) = &default_url {
        if url.chars().count() > MAX_URL_CHARS {
            errors.push(FieldError::new(
                "default_url",
                format!("must be at most {MAX_URL_CHARS} characters"),
            ));
        } else if let Err(e) = state.outbound.check(url).await {
            errors.push(FieldError::new("default_url", e.to_string()));
        }
    }
    check(errors)?;
    let now = crate::domain::now();
    let fresh = WebhookSettings {
        account_id: caller.account_id,
        default_url: default_url.clone(),
        secret: signing::new_secret(),
        created_at: now,
        updated_at: now,
    };
    // Create, or change only the URL: a rotation running meanwhile keeps its new secret.
    let created = state.store.create_webhook_settings(&fresh).await?;
    if !created {
        state
            .store
            .set_webhook_default_url(caller.account_id, default_url.as_deref(), now)
            .await?;
    }
    let settings = settings_of(&state, caller.account_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(WebhookSettingsView::new(settings, created))))
}

async fn settings_of(
    state: &AppState,
    account_id: uuid::Uuid,
) -> Result<WebhookSettings, AppError> {
    state
        .store
        .webhook_settings(account_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("webhook settings vanished")))
}

/// Replaces the signing secret (making one if there was none) and shows the new one, this
/// once. Deliveries from now on, retries included, are signed with it.
#[utoipa::path(post, path = "/api/v1/webhooks/secret", tag = "webhooks",
    responses((status = 200, body = WebhookSettingsView)))]
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookSettingsView>, AppError> {
    caller.require(Scope::Admin)?;
    let now = crate::domain::now();
    let secret = signing::new_secret();
    let replaced = state
        .store
        .rotate_webhook_secret(caller.account_id, &secret, now)
        .await?;
    if !replaced {
        let fresh = WebhookSettings {
            account_id: caller.account_id,
            default_url: None,
            secret: secret.clone(),
            created_at: now,
            updated_at: now,
        };
        // Set up by someone else meanwhile: then rotate theirs.
        if !state.store.create_webhook_settings(&fresh).await? {
            state
                .store
                .rotate_webhook_secret(caller.account_id, &secret, now)
                .await?;
        }
    }
    let settings = settings_of(&state, caller.account_id).await?;
    Ok(Json(WebhookSettingsView::new(settings, true)))
}

/// Every delivery of the account, newest first: its event, URL, status and attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks", params(PageParams),
    responses((status = 200, description = "`{items, meta}` of deliveries")))]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<Delivery>, AppError> {
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let (items, total) = state
        .store
        .list_webhook_deliveries(caller.account_id, page)
        .await?;
    Ok(PageJson(Page::new(items, total, page)))
}
