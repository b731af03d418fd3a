//! `/channels`: metadata, history by `seq`, WebSocket tickets and the live stream.

use axum::{
    Extension, Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Duration, Utc};
use futures::future::Either;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiJson, ApiPath, ApiQuery, AppState,
    auth::{self, Caller, Reader},
    check,
};
use crate::{
    domain::{
        AgentKind, AgentRef, CollaborationStatus, ErrorCode, FieldError, Scope, Sender, StoredEvent,
    },
    error::AppError,
    live::{
        Refusal,
        session::{self, Session, Speak, Speech, StreamSettings},
        upgrade::Upgrade,
    },
    store::ChannelInfo,
};

pub(super) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/channels/{id}", get(read))
        .route("/channels/{id}/messages", get(history).post(post_message))
        .route("/channels/{id}/websocket_tickets", post(ticket))
        .route(
            "/channels/{id}/stream",
            get(stream).layer(Extension(speaker(state.clone()))),
        )
}

const TICKET_LIFETIME_SECS: i64 = 60;
const MAX_HISTORY_PAGE: i64 = 500;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ChannelView {
    pub(super) id: Uuid,
    pub(super) collaboration_id: Uuid,
    pub(super) status: CollaborationStatus,
    pub(super) last_seq: i64,
    pub(super) created_at: DateTime<Utc>,
}

async fn find(state: &AppState, account_id: Uuid, id: &str) -> Result<ChannelInfo, AppError> {
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("channel"))?;
    state
        .store
        .get_channel(account_id, id)
        .await?
        .ok_or(AppError::NotFound("channel"))
}

#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "channels", params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = ChannelView), (status = 404, body = crate::error::Problem)))]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ChannelView>, AppError> {
    let channel = find(&state, caller.account_id, &id).await?;
    Ok(Json(ChannelView {
        id: channel.id,
        collaboration_id: channel.collaboration_id,
        status: channel.status,
        last_seq: channel.last_seq,
        created_at: channel.created_at,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// Only events with a greater `seq` (default 0: from the start).
    #[param(minimum = 0)]
    pub(super) after_seq: Option<i64>,
    /// 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub(super) limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct History {
    /// Stored events exactly as the stream sends them.
    pub(super) items: Vec<serde_json::Value>,
    /// Pass as `after_seq` to read on.
    pub(super) next_after_seq: i64,
}

#[utoipa::path(get, path = "/api/v1/channels/{id}/messages", tag = "channels", params(("id" = String, Path, description = "Channel id"), HistoryParams),
    responses((status = 200, body = History), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, AppError> {
    let mut errors = Vec::new();
    let after_seq = params.after_seq.unwrap_or(0);
    if after_seq < 0 {
        errors.push(FieldError::new("after_seq", "must be 0 or more"));
    }
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_PAGE}"),
        ));
    }
    check(errors)?;
    let channel = find(&state, caller.account_id, &id).await?;
    let events = state
        .store
        .read_events(channel.id, after_seq, limit as u32)
        .await?;
    let next_after_seq = events.last().map_or(after_seq, |e| e.seq);
    // The stored frames are JSON already: written into the page as they are, not parsed
    // and written again (a page of large messages would be held three times over).
    let size: usize = events.iter().map(|e| e.frame.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.frame.as_bytes());
    }
    body.extend_from_slice(format!("],\"next_after_seq\":{next_after_seq}}}").as_bytes());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct PostMessage {
    /// UUID or address of a human participant of the collaboration.
    pub(super) sender: String,
    pub(super) content: String,
}

/// A human participant speaks: as their turn when the engine is waiting for them, else as
/// an interjection when the collaboration allows those (`allow_interjections`). Answers the
/// stored message, exactly as the stream sends it.
#[utoipa::path(post, path = "/api/v1/channels/{id}/messages", tag = "channels", params(("id" = String, Path, description = "Channel id")), request_body = PostMessage,
    responses((status = 201, description = "The stored `message` event"), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem, description = "Not running, or not this person's turn and interjections are off"),
              (status = 422, body = crate::error::Problem)))]
async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(message): ApiJson<PostMessage>,
) -> Result<impl IntoResponse, AppError> {
    let channel = find(&state, caller.account_id, &id).await?;
    let event = speak_as_human(&state, &channel, Some(&message.sender), &message.content).await?;
    let frame: serde_json::Value =
        serde_json::from_str(&event.frame).map_err(|e| AppError::Internal(e.into()))?;
    Ok((StatusCode::CREATED, Json(frame)))
}

/// Posts `content` into `channel` as one of its collaboration's human participants: the
/// one `sender` names, or, without a name, the only one there is. Shared by the REST route
/// and the WebSocket `message` frame.
pub(super) async fn speak_as_human(
    state: &AppState,
    channel: &ChannelInfo,
    sender: Option<&str>,
    content: &str,
) -> Result<StoredEvent, AppError> {
    let mut errors = Vec::new();
    super::check_len(
        &mut errors,
        "content",
        content,
        1,
        state.config.limits.max_content_chars,
    );
    if content.trim().is_empty() && errors.is_empty() {
        errors.push(FieldError::new("content", "must not be blank"));
    }
    check(errors)?;
    let collaboration = state
        .store
        .get_collaboration(channel.account_id, channel.collaboration_id)
        .await?
        .ok_or(AppError::NotFound("channel"))?;
    let humans: Vec<Sender> = collaboration
        .roster()
        .into_iter()
        .filter(|member| member.kind == AgentKind::Human)
        .collect();
    let speaker = match sender {
        Some(sender) => {
            let reference = AgentRef::parse(sender).map_err(|e| AppError::invalid("sender", e))?;
            humans
                .into_iter()
                .find(|human| match &reference {
                    AgentRef::Id(id) => human.id == *id,
                    AgentRef::Address(address) => human.address == address.as_str(),
                })
                .ok_or_else(|| {
                    AppError::invalid(
                        "sender",
                        format!("`{sender}` is not a human participant of this collaboration"),
                    )
                })?
        }
        None => match <[Sender; 1]>::try_from(humans) {
            Ok([only]) => only,
            Err(humans) if humans.is_empty() => {
                return Err(AppError::invalid(
                    "sender",
                    "this collaboration has no human participant",
                ));
            }
            Err(_) => {
                return Err(AppError::invalid(
                    "sender",
                    "this collaboration has several human participants: name the one you speak as",
                ));
            }
        },
    };
    state
        .engine
        .post(collaboration.id, speaker, content.to_owned())
        .await
        .map_err(|refusal| AppError::Conflict(refusal.to_string()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Ticket {
    pub(super) value: String,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) channel_id: Uuid,
}

#[utoipa::path(post, path = "/api/v1/channels/{id}/websocket_tickets", tag = "channels", params(("id" = String, Path, description = "Channel id")),
    responses((status = 201, body = Ticket), (status = 404, body = crate::error::Problem)))]
async fn ticket(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, AppError> {
    let channel = find(&state, caller.account_id, &id).await?;
    let value = auth::new_secret("wst_");
    let expires_at = crate::domain::now() + Duration::seconds(TICKET_LIFETIME_SECS);
    state
        .store
        .insert_ticket(
            &auth::hash_secret(&value),
            &caller.key,
            channel.id,
            expires_at,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Ticket {
            value,
            expires_at,
            channel_id: channel.id,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamParams {
    /// Replay stored events with a greater `seq` first (default 0: everything).
    #[param(minimum = 0)]
    pub(super) after_seq: Option<i64>,
    /// A single-use ticket, for browsers that cannot set headers on a WebSocket.
    pub(super) ticket: Option<String>,
}

/// Upgrades to the live stream. A bad channel, ticket or key still completes the upgrade
/// and is then closed with 1008 before any frame, so browsers can see why. A page from an
/// origin that is neither this server's nor allowed is refused before the upgrade (403), as
/// is a key already at its cap of open streams (429).
#[utoipa::path(get, path = "/api/v1/channels/{id}/stream", tag = "channels", params(("id" = String, Path, description = "Channel id"), StreamParams),
    responses((status = 101, description = "WebSocket: hello, stored events after after_seq, then live frames"),
              (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
async fn stream(
    State(state): State<AppState>,
    Extension(speak): Extension<Speak>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<StreamParams>,
    parts: Parts,
    upgrade: Upgrade,
) -> Response {
    if !origin_allowed(&parts.headers, &state.config.allowed_origins) {
        return AppError::Forbidden(
            "pages from this origin may not open streams; see SKEIN_ALLOWED_ORIGINS".into(),
        )
        .into_response();
    }
    let address = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if params.ticket.is_some()
        && let Some(address) = address
        && let Err(refused) = state.auth_failures.check(address)
    {
        return *refused;
    }
    let admitted = match admit(&state, &id, &params, &parts).await {
        Ok((channel, caller)) => match state.streams.admit(caller.key.account_id, caller.key.id) {
            Ok(pass) => Ok((channel, caller, pass)),
            Err(Refusal::AtLimit(max)) => {
                return AppError::TooManyRequests(format!(
                    "this account already has {max} streams open, the limit \
                     (SKEIN_MAX_STREAMS_PER_ACCOUNT); close one first"
                ))
                .into_response();
            }
            Err(Refusal::Revoked) => Err("the API key was revoked"),
        },
        Err(reason) => Err(reason),
    };
    let websocket = &state.config.websocket;
    let settings = StreamSettings {
        ping_interval: websocket.ping_interval,
        max_message_bytes: websocket.max_message_bytes,
        queued_frames: websocket.buffered_frames,
        queued_bytes: websocket.buffered_bytes,
    };
    // The session is made now, so that the upgrade's task, which lives as long as the
    // stream, holds one pointer to it rather than everything it is made from.
    let session = admitted.map(|(channel, caller, pass)| {
        Box::new(Session {
            speak,
            may_write: caller.require(Scope::Write).is_ok(),
            store: state.store.clone(),
            hub: state.hub.clone(),
            channel,
            after_seq: params.after_seq.unwrap_or(0).max(0),
            settings,
            shutdown: state.shutdown.clone(),
            pass,
        })
    });
    upgrade.on_upgrade(state.hub.tasks(), move |upgraded| match session {
        Ok(session) => Either::Left(session.run(upgraded)),
        // Boxed: a refusal's future would otherwise set the size of every stream's task.
        Err(reason) => Either::Right(Box::pin(session::refuse(upgraded, reason, settings))),
    })
}

/// How a stream's viewer speaks with a `{"type":"message"}` frame: as a human participant,
/// if its key may write. The error is a code and a message for an `error` frame. Made once
/// and shared by every stream, so that an open stream holds a pointer to it and no more.
fn speaker(state: AppState) -> Speak {
    std::sync::Arc::new(move |speech: Speech| {
        let state = state.clone();
        Box::pin(async move {
            if !speech.may_write {
                return Err((ErrorCode::Forbidden, auth::lacks(Scope::Write).to_string()));
            }
            // Each message costs what a request does, and counts as one.
            if state.rate_limits.check(speech.channel.account_id).is_err() {
                return Err((
                    ErrorCode::RateLimited,
                    "this account is over its request rate; wait a moment".to_owned(),
                ));
            }
            let (channel, sender) = (&speech.channel, speech.sender.as_deref());
            match speak_as_human(&state, channel, sender, &speech.content).await {
                Ok(_) => Ok(()),
                Err(AppError::Validation(errors)) => Err((
                    ErrorCode::Invalid,
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                )),
                Err(AppError::Conflict(reason)) => Err((ErrorCode::Refused, reason)),
                Err(AppError::Internal(error)) => {
                    tracing::error!(error = format!("{error:#}"), "posting from a stream failed");
                    Err((ErrorCode::Internal, "an internal error occurred".to_owned()))
                }
                Err(other) => Err((ErrorCode::Refused, other.to_string())),
            }
        })
    })
}

/// A browser's `Origin` must be this server (the `Host` it asked for) or a configured one,
/// compared as origins are: scheme and host in any case, and a port that is the scheme's
/// default the same as none. Programs send no `Origin` and are let through: they
/// authenticate with a key or ticket.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else {
        return false;
    };
    if allowed
        .iter()
        .filter_map(|allowed| Origin::parse(allowed))
        .any(|allowed| allowed == origin)
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.and_then(|host| Origin::parse(&format!("{}://{host}", origin.scheme)))
        .is_some_and(|this_server| this_server == origin)
}

/// An origin as RFC 6454 compares them.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let url = url::Url::parse(text.trim()).ok()?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || url.query().is_some() {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// Checks the ticket or key and the channel: the channel and the caller the stream runs
/// under, or the close reason.
async fn admit(
    state: &AppState,
    id: &str,
    params: &StreamParams,
    parts: &Parts,
) -> Result<(ChannelInfo, Caller), &'static str> {
    let channel_id = Uuid::parse_str(id).map_err(|_| "unknown channel")?;
    let caller = if let Some(ticket) = &params.ticket {
        let credential = state
            .store
            .redeem_ticket(&auth::hash_secret(ticket), channel_id)
            .await
            .map_err(|_| "internal error")?;
        let Some(credential) = credential else {
            if let Some(info) = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            {
                state.auth_failures.failed(info.0.ip());
            }
            return Err("invalid, used or expired ticket");
        };
        Caller::from(credential)
    } else {
        // The gate has looked the key up already.
        match parts.extensions.get::<Caller>() {
            Some(caller) => caller.clone(),
            None if auth::bearer(&parts.headers).is_some() => return Err("invalid API key"),
            None => return Err("a ticket or an API key is required"),
        }
    };
    let channel = state
        .store
        .get_channel(caller.account_id, channel_id)
        .await
        .map_err(|_| "internal error")?
        .ok_or("unknown channel")?;
    Ok((channel, caller))
}
