//! `GET /events`: the account's collaborations changing, as Server-Sent Events, so that a
//! list (the web UI's, a dashboard's) stays current without polling.
//!
//! Lasting changes (`created`, `ended`, `summarized`, `deleted`) come from the account's
//! stored feed, each with its number as the event `id`: a client that reconnects with
//! `Last-Event-ID` gets exactly those it missed, in order, whichever process it reaches. A
//! client further behind than the feed keeps (a day) gets `reset`, and reloads its list.
//! A running collaboration's message count comes as `messages`, without an `id`: only the
//! latest matters, and the next one (or its `ended`) brings it up to date.
//!
//! The stream waits on the feed's nudges, not on a timer; it still looks at the store every
//! [`LOOK_EVERY`], so that a nudge lost between processes costs a delay, never a change.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{AppState, auth::Caller, collaborations::CollaborationView};
use crate::{
    domain::{
        FieldError,
        feed::{Change, ChangeKind},
    },
    error::AppError,
    live::{Following, Nudge, Refusal, StreamPass},
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

/// Changes read from the store at once.
const FEED_PAGE: u32 = 100;
/// How often the stream looks at the store without being nudged.
const LOOK_EVERY: Duration = Duration::from_secs(30);
/// How long a client waits before reconnecting after the stream broke (the SSE `retry`).
const RETRY: Duration = Duration::from_secs(2);

/// The data of a `created`, `ended`, `summarized` or `deleted` event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ChangeEvent {
    /// Its number in the account's feed; also the event's `id`.
    rev: i64,
    change: ChangeKind,
    collaboration_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
    /// The collaboration as it is when the event is sent (it may have changed again
    /// since); `null` once it is deleted.
    collaboration: Option<CollaborationView>,
}

/// Streams the account's collaborations changing.
///
/// Events: `ready` (data `{"rev"}`: caught up; its `id` is where a reconnect resumes),
/// `created`, `ended`, `summarized`, `deleted` (data: a change, `id`: its `rev`),
/// `messages` (data `{"collaboration_id", "message_count"}`, no `id`), and `reset` (data
/// `{"rev"}`: the changes after `Last-Event-ID` are no longer kept; reload the list, then go
/// on from `rev`). Open streams count against the account's cap on streams, as WebSockets do.
#[utoipa::path(get, path = "/api/v1/events", tag = "collaborations",
    params(("Last-Event-ID" = Option<i64>, Header, description = "The `id` of the last event seen: the stream starts with the changes after it.", minimum = 0)),
    responses(
        (status = 200, description = "A stream of Server-Sent Events (see above)", content_type = "text/event-stream", body = ChangeEvent),
        (status = 422, body = crate::error::Problem),
        (status = 429, body = crate::error::Problem)))]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            Some(rev) if rev >= 0 => Some(rev),
            _ => {
                return Err(AppError::Validation(vec![FieldError::new(
                    "Last-Event-ID",
                    "must be the id of an event this stream sent: a whole number, 0 or more",
                )]));
            }
        },
    };
    let pass = match state.streams.admit(caller.account_id, caller.key.id) {
        Ok(pass) => pass,
        Err(Refusal::AtLimit(max)) => {
            return Err(AppError::TooManyRequests(format!(
                "this account already has {max} streams open, the limit \
                 (SKEIN_MAX_STREAMS_PER_ACCOUNT); close one first"
            )));
        }
        Err(Refusal::Revoked) => return Err(AppError::Unauthorized),
    };
    // Following before the first read: a change stored meanwhile is nudged, not missed.
    let following = state.hub.feed().follow(caller.account_id);
    let stream = Stream {
        account_id: caller.account_id,
        state,
        following,
        pass,
        resume,
        rev: None,
        behind: false,
        pending: VecDeque::from([Event::default().retry(RETRY)]),
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, Infallible>(event), stream))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Stream {
    state: AppState,
    account_id: Uuid,
    following: Following,
    /// Its `ended` fires when the key is revoked or the server shuts down.
    pass: StreamPass,
    /// The `Last-Event-ID` the client came back with.
    resume: Option<i64>,
    /// The last change queued (or, starting afresh, where the feed stood); `None` until
    /// the stream has started.
    rev: Option<i64>,
    /// The last page read was full: read on before waiting for a nudge.
    behind: bool,
    pending: VecDeque<Event>,
}

impl Stream {
    /// The next event to send; `None` ends the stream (the key was revoked, the server is
    /// shutting down, or the store failed: the client reconnects and resumes).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.pass.ended.is_cancelled() {
                return None;
            }
            if self.rev.is_none() {
                self.start().await.ok()?;
                continue;
            }
            if self.behind {
                self.read_on().await.ok()?;
                continue;
            }
            let nudge = tokio::select! {
                nudge = self.following.next() => nudge,
                () = tokio::time::sleep(LOOK_EVERY) => Nudge::Changed,
                () = self.pass.ended.cancelled() => return None,
            };
            match nudge {
                Nudge::Changed => self.read_on().await.ok()?,
                Nudge::Messages {
                    collaboration_id,
                    message_count,
                } => self.pending.push_back(Event::default().event("messages").data(
                    json!({"collaboration_id": collaboration_id, "message_count": message_count})
                        .to_string(),
                )),
            }
        }
    }

    /// Where the stream starts: after `Last-Event-ID` (what was missed, a page at a time,
    /// then `ready`), or at the feed's latest change.
    async fn start(&mut self) -> Result<(), AppError> {
        match self.resume {
            Some(after) => {
                self.rev = Some(after);
                self.read_on().await?;
                if self.behind {
                    // More than a page missed: `ready` comes once it is all sent.
                    return Ok(());
                }
            }
            None => {
                let page = self.state.store.account_feed(self.account_id, 0, 0).await?;
                self.rev = Some(page.latest);
            }
        }
        self.ready();
        Ok(())
    }

    /// Queues a page of the changes after the last one queued, or `reset` if they are no
    /// longer kept.
    async fn read_on(&mut self) -> Result<(), AppError> {
        let was_behind = self.behind;
        let rev = self.rev.expect("started");
        let page = self
            .state
            .store
            .account_feed(self.account_id, rev, FEED_PAGE)
            .await?;
        self.behind = page.changes.len() == FEED_PAGE as usize;
        if page.gap {
            self.behind = false;
            self.rev = Some(page.latest);
            self.pending.push_back(
                Event::default()
                    .event("reset")
                    .id(page.latest.to_string())
                    .data(json!({"rev": page.latest}).to_string()),
            );
            return Ok(());
        }
        for change in page.changes {
            self.rev = Some(change.rev);
            let event = self.change_event(change).await?;
            self.pending.push_back(event);
        }
        if was_behind && !self.behind && self.resume.take().is_some() {
            self.ready();
        }
        Ok(())
    }

    /// Tells the client it has caught up, and where it stands.
    fn ready(&mut self) {
        self.resume = None;
        let rev = self.rev.expect("started");
        self.pending.push_back(
            Event::default()
                .event("ready")
                .id(rev.to_string())
                .data(json!({"rev": rev}).to_string()),
        );
    }

    async fn change_event(&self, change: Change) -> Result<Event, AppError> {
        let collaboration = match change.kind {
            ChangeKind::Deleted => None,
            _ => self
                .state
                .store
                .get_collaboration(self.account_id, change.collaboration_id)
                .await?
                .map(CollaborationView::from),
        };
        let data = ChangeEvent {
            rev: change.rev,
            change: change.kind,
            collaboration_id: change.collaboration_id,
            at: change.at,
            collaboration,
        };
        Ok(Event::default()
            .event(change.kind.name())
            .id(change.rev.to_string())
            .data(serde_json::to_string(&data).expect("a change serializes")))
    }
}
