//! The REST API (`/api/v1`) and the few routes outside it, one file per resource.
//!
//! Handlers parse input into domain types with the extractors here, call the store or the
//! engine, and render views. Every failure is an [`AppError`], so every error body is
//! problem+json, including the ones axum would otherwise write itself (unknown route, wrong
//! method, a body that is too large or not JSON).

mod a2a;
mod agents;
pub mod auth;
mod channels;
mod collaborations;
mod docs;
mod events;
mod forks;
mod health;
mod idempotency;
mod keys;
mod mcp;
mod providers;
pub mod rate_limit;
mod teams;
mod transcript;
mod uagents;
mod web;
mod webhooks;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    trace::TraceLayer,
};

use crate::{
    config::Config,
    domain::{FieldError, Page, PageRequest, paging::MAX_PAGE_SIZE},
    engine::Engine,
    error::{AppError, Problem},
    live::{Hub, Streams},
    outbound::Outbound,
    store::Store,
    tasks::Tasks,
};

use self::rate_limit::RateLimits;
pub use idempotency::RETENTION_HOURS as IDEMPOTENCY_HOURS;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub hub: Arc<Hub>,
    pub config: Arc<Config>,
    pub rate_limits: Arc<RateLimits>,
    /// Failed authentications per client address.
    pub auth_failures: Arc<rate_limit::AuthFailures>,
    /// Keys recently found, so most requests skip the store to authenticate.
    pub keys: Arc<auth::KeyCache>,
    /// Open WebSocket streams per key.
    pub streams: Arc<Streams>,
    /// Where keys revoked here are announced to the other processes, in a cluster.
    pub revocations: Option<crate::cluster::Revocations>,
    /// The client for user-supplied URLs, and their check.
    pub outbound: Outbound,
    /// Cancelled when the server shuts down; WebSocket sessions close with 1001 on it.
    pub shutdown: CancellationToken,
    /// The server's background tasks: requests that outlive their client run here, and
    /// `/ready` reads which essential workers have failed.
    pub tasks: Tasks,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let request_timeout = state.config.connections.request_timeout;
    let v1 = Router::new()
        .merge(collaborations::router())
        .merge(forks::router())
        .merge(transcript::router())
        .merge(agents::router())
        .merge(channels::router(&state))
        .merge(keys::router())
        .merge(providers::router())
        .merge(webhooks::router())
        .merge(teams::router())
        .merge(events::router())
        // The last layer runs first: authenticate and rate-limit, then idempotency.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth::gate));
    let cors = cors(&state.config.allowed_origins);
    Router::new()
        .nest("/api/v1", v1)
        .merge(health::router())
        .merge(docs::router(&state.config))
        .merge(uagents::router())
        // Teams as agents, authenticated as the REST API is.
        .merge(
            a2a::router()
                .merge(mcp::router(state.clone()))
                .layer(middleware::from_fn_with_state(state.clone(), auth::gate)),
        )
        .merge(web::router())
        .fallback(|| async { AppError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this method is not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(request_timeout, in_time))
        .layer(middleware::from_fn(count_request))
        // The span names the path only: a query string can carry a WebSocket ticket. A
        // caller's `traceparent` is continued (see `crate::traces`).
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let span = tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    otel.name = %request.method(),
                    otel.kind = "server",
                    http.request.method = %request.method(),
                    url.path = %request.uri().path(),
                );
                crate::traces::continue_from(&span, request.headers());
                span
            }),
        )
        .layer(CatchPanicLayer::custom(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an internal error occurred; it has been logged",
            )
            .into_response()
        }))
        .layer(tower::util::option_layer(cors))
        .with_state(state)
}

/// Every request is answered within the timeout: a body that trickles in, or work that
/// hangs, ends in a 408 instead of holding its connection. (A WebSocket stream is answered
/// when it opens; what it streams afterwards is not a request.)
async fn in_time(
    axum::extract::State(timeout): axum::extract::State<std::time::Duration>,
    request: Request,
    next: middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request was not answered within {} seconds",
                timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Counts a request by its route as declared (`/api/v1/agents/{agent}`), never its path, so
/// ids cannot multiply the series.
async fn count_request(request: Request, next: middleware::Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = crate::telemetry::method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::telemetry::http_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// Cross-origin browser access for the configured origins only; none by default.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let exposed = [
        "location",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "idempotent-replayed",
    ];
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-idempotency-key"),
        ])
        .expose_headers(exposed.map(HeaderName::from_static));
    Some(layer)
}

/// A page of a list as JSON, written into a buffer sized for it at once. axum's `Json`
/// starts with 128 bytes and doubles as it goes: for a 20 KB page of collaborations that
/// was eight reallocations and their copies, about 12% of a list request's CPU.
pub struct PageJson<T>(pub Page<T>);

impl<T: Serialize> IntoResponse for PageJson<T> {
    fn into_response(self) -> Response {
        /// Enough for most items of every list (a collaboration is about 1 KB).
        const ITEM_BYTES: usize = 1024;
        let mut body = Vec::with_capacity(256 + self.0.items.len() * ITEM_BYTES);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => {
                let json = HeaderValue::from_static("application/json");
                ([(header::CONTENT_TYPE, json)], body).into_response()
            }
            Err(error) => AppError::Internal(error.into()).into_response(),
        }
    }
}

/// A JSON body: 413 when too large, 400 when not a JSON object, 422 naming the field when
/// a value has the wrong type or a required field is missing.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let limit = request.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge(limit)
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(AppError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.inner().to_string();
                let field = match message.strip_prefix("missing field `") {
                    Some(rest) => rest.trim_end_matches('`').to_owned(),
                    None if path == "." => "body".to_owned(),
                    None => path,
                };
                AppError::Validation(vec![FieldError::new(field, message)])
            })
    }
}

/// A path parameter whose rejection is problem+json.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for AppError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}

/// The configured body limit, made visible to [`ApiJson`] so its 413 can say the number.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query parameters; a value of the wrong type is a 422.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let field = error.path().to_string();
                AppError::invalid(
                    if field == "." { "query".into() } else { field },
                    error.inner().to_string(),
                )
            })
    }
}

/// `page` and `size` as flockx takes them.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number.
    #[param(minimum = 1, maximum = 4294967295_i64)]
    pub page: Option<i64>,
    /// Items per page, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub size: Option<i64>,
}

impl PageParams {
    pub fn parse(&self, errors: &mut Vec<FieldError>) -> PageRequest {
        let mut request = PageRequest::default();
        match self.page {
            Some(page) if page < 1 || page > i64::from(u32::MAX) => {
                errors.push(FieldError::new("page", "must be 1 or more"))
            }
            Some(page) => request.page = page as u32,
            None => {}
        }
        match self.size {
            Some(size) if !(1..=i64::from(MAX_PAGE_SIZE)).contains(&size) => errors.push(
                FieldError::new("size", format!("must be between 1 and {MAX_PAGE_SIZE}")),
            ),
            Some(size) => request.size = size as u32,
            None => {}
        }
        request
    }
}

/// Turns collected field errors into a 422, or passes.
pub fn check(errors: Vec<FieldError>) -> Result<(), AppError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// Checks a text field's length in characters.
pub fn check_len(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) {
    let len = value.chars().count();
    if len < min {
        errors.push(FieldError::new(
            field,
            if min == 1 {
                "must not be empty".into()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    } else if len > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}
