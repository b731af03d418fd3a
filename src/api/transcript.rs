//! `GET /collaborations/{id}/transcript`: the whole record of a collaboration as one
//! document a person can archive or paste: what it was for, who took part, every stored
//! event (messages, verdicts, the ending, the summary) in `seq` order.
//!
//! A channel may hold a thousand messages of twenty thousand characters: the document is
//! streamed a page of events at a time (pages are bounded in bytes, see
//! [`crate::store::PAGE_BYTES`]), never built whole in memory.

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::Deserialize;

use super::{
    ApiPath, ApiQuery, AppState, auth::Caller, collaborations::CollaborationView,
    collaborations::find,
};
use crate::{
    domain::{
        Collaboration, EventBody, FieldError, Outcome, Sender, StoredEvent,
        event::Role,
        figures::{MemberFigures, Tally},
    },
    error::AppError,
    store::Store,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/collaborations/{id}/transcript", get(transcript))
        .route("/collaborations/{id}/figures", get(figures))
}

/// Each member's figures, principal first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Figures {
    pub(super) members: Vec<MemberFigures>,
}

/// How each member did: turns, tokens, time per turn, read from the channel's messages.
#[utoipa::path(get, path = "/api/v1/collaborations/{id}/figures", tag = "collaborations",
    params(("id" = String, Path, description = "Collaboration id")),
    responses((status = 200, body = Figures), (status = 404, body = crate::error::Problem)))]
async fn figures(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Figures>, AppError> {
    let collaboration = find(&state, &caller, &id).await?;
    let mut tally = Tally::new(collaboration.roster());
    let mut pages = std::pin::pin!(events(state.store.clone(), collaboration.channel_id));
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AppError::Internal(e.into()))?;
        for body in page.iter().filter_map(StoredEvent::body) {
            tally.add(&body);
        }
    }
    Ok(axum::Json(Figures {
        members: tally.finish(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TranscriptParams {
    /// `json` (the default) or `markdown`.
    #[param(value_type = Option<TranscriptFormat>)]
    pub(super) format: Option<String>,
}

/// The forms a transcript comes in.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub(super) enum TranscriptFormat {
    json,
    markdown,
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Markdown,
}

#[utoipa::path(get, path = "/api/v1/collaborations/{id}/transcript", tag = "collaborations",
    params(("id" = String, Path, description = "Collaboration id"), TranscriptParams),
    responses((status = 200, description = "`json`: `{collaboration, events, figures}`, the events exactly as the stream sends them; `markdown`: a document for people",
               content(("application/json"), ("text/markdown"))),
              (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn transcript(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<TranscriptParams>,
) -> Result<Response, AppError> {
    let format = match params.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("markdown") => Format::Markdown,
        Some(other) => {
            return Err(AppError::Validation(vec![FieldError::new(
                "format",
                format!("`{other}` is not a format; use `json` or `markdown`"),
            )]));
        }
    };
    let collaboration = find(&state, &caller, &id).await?;
    let (head, content_type) = match format {
        Format::Json => {
            let view = serde_json::to_string(&CollaborationView::from(collaboration.clone()))
                .expect("a collaboration serializes");
            (
                format!("{{\"collaboration\":{view},\"events\":["),
                "application/json",
            )
        }
        Format::Markdown => (
            markdown_head(&collaboration),
            "text/markdown; charset=utf-8",
        ),
    };
    // The figures are added up as the events go by, and close the document.
    let tally = Arc::new(Mutex::new(Some(Tally::new(collaboration.roster()))));
    let counted = tally.clone();
    let pages = events(state.store.clone(), collaboration.channel_id);
    let mut first = true;
    let body = pages.map(move |page| {
        page.map(|events| {
            let mut text = String::new();
            let mut tally = counted.lock().expect("the tally is never poisoned");
            for event in &events {
                let body = event.body();
                if let (Some(tally), Some(body)) = (tally.as_mut(), &body) {
                    tally.add(body);
                }
                match (format, body) {
                    (Format::Json, _) => {
                        // Every frame as stored, whether or not this server reads its type.
                        if !first {
                            text.push(',');
                        }
                        text.push_str(&event.frame);
                    }
                    (Format::Markdown, Some(body)) => markdown_event(event.seq, body, &mut text),
                    (Format::Markdown, None) => {}
                }
                first = false;
            }
            Bytes::from(text)
        })
    });
    let tail = futures::stream::once(async move {
        let figures = tally
            .lock()
            .expect("the tally is never poisoned")
            .take()
            .map(Tally::finish)
            .unwrap_or_default();
        let text = match format {
            Format::Json => format!(
                "],\"figures\":{}}}",
                serde_json::to_string(&figures).expect("figures serialize")
            ),
            Format::Markdown => markdown_figures(&figures),
        };
        Ok(Bytes::from(text))
    });
    let document = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(body)
        .chain(tail);
    let mut response = Body::from_stream(document).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// The channel's stored events, a page at a time, in `seq` order. A store error ends the
/// document early (the client sees it cut off, never a wrong one).
fn events(
    store: std::sync::Arc<dyn Store>,
    channel_id: uuid::Uuid,
) -> impl futures::Stream<Item = Result<Vec<StoredEvent>, std::io::Error>> + Send {
    futures::stream::unfold(Some(0i64), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.read_events(channel_id, after, PAGE_EVENTS).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let next = events.last().map(|event| event.seq);
                    Some((Ok(events), next))
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "reading a transcript failed");
                    Some((
                        Err(std::io::Error::other("the transcript could not be read")),
                        None,
                    ))
                }
            }
        }
    })
}

const PAGE_EVENTS: u32 = 500;

/// What the collaboration was for, and who took part.
fn markdown_head(collaboration: &Collaboration) -> String {
    let member = |sender: &Sender| {
        format!(
            "{} ({}, `{}`)",
            sender.name,
            sender.kind.as_str(),
            sender.address
        )
    };
    let participants: Vec<String> = collaboration.participants.iter().map(member).collect();
    let mut status = collaboration.status.name().to_owned();
    if let Some(reason) = collaboration.end_reason {
        status.push_str(&format!(": {}", reason.describe()));
    }
    let mut text = format!(
        "# {}\n\n\
         - Collaboration: `{}`\n\
         - Status: {status}\n\
         - Started: {}\n",
        one_line(&collaboration.objective),
        collaboration.id,
        collaboration.started_at.to_rfc3339(),
    );
    if let Some(ended) = collaboration.ended_at {
        text.push_str(&format!("- Ended: {}\n", ended.to_rfc3339()));
    }
    text.push_str(&format!(
        "- Principal: {}\n\
         - Participants: {}\n\
         - Messages: {} of {} · tokens used: {} · cost: ${:.6}\n\n\
         ## Transcript\n\n",
        member(&collaboration.principal),
        participants.join(", "),
        collaboration.message_count,
        collaboration.message_cap,
        collaboration.tokens_used,
        crate::domain::event::usd(collaboration.cost_micros),
    ));
    text
}

/// One stored event as Markdown. Agents' words are quoted, line by line, so that nothing
/// they wrote can pass for the document's own headings.
fn markdown_event(seq: i64, body: EventBody, text: &mut String) {
    match body {
        EventBody::Message {
            sender,
            role,
            content,
            created_at,
            ..
        } => {
            let kind = match role {
                Role::Human => "person",
                Role::Agent | Role::System => sender.kind.as_str(),
            };
            text.push_str(&format!(
                "**{}** ({kind}) · {} · #{seq}\n\n",
                one_line(&sender.name),
                created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            ));
            quote(&content, text);
        }
        EventBody::Verdict {
            met,
            reason,
            judged_seq,
            ..
        } => {
            let ruling = if met {
                "the objective is met"
            } else {
                "not met yet"
            };
            text.push_str(&format!(
                "_The judge, on the messages up to #{judged_seq}: {ruling}. {}_ · #{seq}\n\n",
                one_line(&reason)
            ));
        }
        EventBody::ToolCall {
            sender,
            tool,
            arguments,
            ..
        } => {
            text.push_str(&format!(
                "_{} called `{}`{}_ · #{seq}\n\n",
                one_line(&sender.name),
                one_line(&tool.name),
                if tool.server.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", one_line(&tool.server))
                },
            ));
            fenced(
                &serde_json::to_string_pretty(&arguments).unwrap_or_default(),
                text,
            );
        }
        EventBody::ToolResult {
            tool,
            ok,
            content,
            ms,
            interrupted,
            ..
        } => {
            let how = match (ok, interrupted) {
                (_, true) => "was interrupted",
                (true, false) => "answered",
                (false, false) => "failed",
            };
            text.push_str(&format!(
                "_`{}` {how} in {ms} ms_ · #{seq}\n\n",
                one_line(&tool.name)
            ));
            fenced(&content, text);
        }
        EventBody::Nudge { to, reason, .. } => {
            text.push_str(&format!(
                "_Skein nudged {}: the conversation is going in circles ({})._ · #{seq}\n\n",
                one_line(&to.name),
                one_line(&reason)
            ));
        }
        EventBody::Status {
            status,
            end_reason,
            advisory_message,
            error_message,
            ..
        } => {
            let why = end_reason.map(|reason| format!(": {}", reason.describe()));
            text.push_str(&format!(
                "---\n\n**Ended** ({}{}) · #{seq}\n\n",
                status.name(),
                why.unwrap_or_default()
            ));
            for note in [advisory_message, error_message].into_iter().flatten() {
                quote(&note, text);
            }
        }
        EventBody::Summary {
            headline,
            summary,
            outcome,
            ..
        } => {
            text.push_str(&format!("## Summary\n\n### {}\n\n", one_line(&headline)));
            quote(&summary, text);
            if let Some(outcome) = outcome {
                markdown_outcome(&outcome, text);
            }
        }
    }
}

/// Text shown as it is, in a fence longer than any run of backticks inside it, so that it
/// cannot end the block early.
fn fenced(content: &str, text: &mut String) {
    let longest = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    text.push_str(&format!("{fence}\n{}\n{fence}\n\n", content.trim_end()));
}

/// Each member's figures, as a table.
fn markdown_figures(figures: &[MemberFigures]) -> String {
    let mut text = String::from(
        "## Figures\n\n| member | turns | tokens (prompts, answers) | cost | time per turn \
         (median, 95th percentile) | retries (failed turns) | tool calls (failed) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for member in figures {
        let time = member.latency_ms.as_ref().map_or("–".to_owned(), |l| {
            format!(
                "{:.1} s, {:.1} s",
                l.p50 as f64 / 1000.0,
                l.p95 as f64 / 1000.0
            )
        });
        text.push_str(&format!(
            "| {} | {} | {} ({}, {}) | ${:.6} | {time} | {} ({}) | {} ({}) |\n",
            one_line(&member.agent.name).replace('|', "\\|"),
            member.turns,
            member.tokens,
            member.input_tokens,
            member.output_tokens,
            member.cost_usd,
            member.retries,
            member.failures,
            member.tool_calls,
            member.tool_failures,
        ));
    }
    text
}

/// Decisions, action items and open questions, as lists; the lists that are empty are left
/// out, and a note says when no model wrote them.
fn markdown_outcome(outcome: &Outcome, text: &mut String) {
    let mut list = |title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        text.push_str(&format!("#### {title}\n\n"));
        for item in items {
            text.push_str(&format!("- {}\n", one_line(&item)));
        }
        text.push('\n');
    };
    list("Decisions", outcome.decisions.clone());
    list(
        "Action items",
        outcome
            .action_items
            .iter()
            .map(|item| format!("{}: {}", item.owner, item.task))
            .collect(),
    );
    list("Open questions", outcome.open_questions.clone());
    if let Some(note) = &outcome.note {
        text.push_str(&format!("_{}_\n\n", one_line(note)));
    }
}

fn quote(content: &str, text: &mut String) {
    for line in content.lines() {
        text.push_str("> ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
}

fn one_line(text: &str) -> String {
    crate::agents::quote::one_line(text)
}
