//! One collaboration's life: open, turns until an end condition, the closing status, the
//! summary.
//!
//! Every await that may be cut short (a turn, the judge, the summarizer) sits in a `select!`
//! with the shutdown token and the control channel; every write to the store happens after
//! that `select!` has finished, never inside a branch that could be cancelled half-way.

use std::{collections::HashMap, future::Future, pin::pin, time::Duration};

use chrono::Utc;
use serde_json::json;
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

use super::{Control, Inner, auxiliary_model, context, judge, speaker, summary};
use crate::{
    agents::{self, Delta, Line, ModelRef},
    domain::{
        Agent, Collaboration, CollaborationStatus, EndReason, Ending, EventBody, Sender,
        event::Role,
    },
    store::StoreResult,
};

/// Everything a runner knows, rebuilt from the store when it starts.
struct State {
    collaboration: Collaboration,
    /// The channel's last stored seq; deltas are stamped with it (see [`crate::live::Frame`]).
    last_seq: i64,
    agents: HashMap<Uuid, Agent>,
    roster: Vec<Sender>,
    transcript: Vec<Line>,
    aux: Option<ModelRef>,
}

/// How driving the collaboration came to a halt.
enum Exit {
    Ended(Ending, Option<tokio::sync::oneshot::Sender<()>>),
    /// Shutdown, deletion or a store that would not take writes: write nothing more.
    Halted,
}

/// A finished turn, not yet stored.
struct Turn {
    turn_id: Uuid,
    sender: Sender,
    content: String,
    tokens: u64,
}

pub(super) async fn run(inner: &Inner, id: Uuid, mut control: mpsc::Receiver<Control>) {
    let mut state = match load(inner, id).await {
        Ok(Some(state)) if state.collaboration.status == CollaborationStatus::Running => state,
        Ok(_) => return,
        Err(error) => {
            tracing::error!(collaboration = %id, error = format!("{error:#}"), "cannot load collaboration");
            return;
        }
    };
    let Exit::Ended(ending, ack) = drive(inner, &mut state, &mut control).await else {
        return;
    };
    let Some(event) = persist("end", || inner.store.finish_collaboration(id, &ending))
        .await
        .flatten()
    else {
        return;
    };
    inner
        .hub
        .publish_event(state.collaboration.channel_id, &event);
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
    tracing::info!(collaboration = %id, reason = ?ending.reason, "collaboration ended");
    let collaboration = &mut state.collaboration;
    collaboration.status = ending.reason.status();
    collaboration.end_reason = Some(ending.reason);
    collaboration.advisory_message = ending.advisory_message.clone();
    collaboration.error_message = ending.error_message.clone();
    summarize(inner, &state, ending.reason, Some(&mut control)).await;
}

/// Writes the summary of an ended collaboration that has none (after a crash or a stop
/// without a runner).
pub(super) async fn summarize_only(inner: &Inner, id: Uuid) {
    match load(inner, id).await {
        Ok(Some(state)) if state.collaboration.summary.is_none() => {
            if let Some(reason) = state.collaboration.end_reason {
                summarize(inner, &state, reason, None).await;
            }
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(collaboration = %id, error = format!("{error:#}"), "cannot load collaboration")
        }
    }
}

async fn load(inner: &Inner, id: Uuid) -> anyhow::Result<Option<State>> {
    let Some(collaboration) = inner.store.collaboration(id).await? else {
        return Ok(None);
    };
    let roster = collaboration.roster();
    let ids: Vec<Uuid> = roster.iter().map(|s| s.id).collect();
    let agents: HashMap<Uuid, Agent> = inner
        .store
        .agents_by_id(&ids)
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    let mut transcript = Vec::new();
    let mut after = 0;
    // Rebuilt from the store, not from memory: this is also how a restart resumes.
    loop {
        let events = inner
            .store
            .read_events(collaboration.channel_id, after, 500)
            .await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        transcript.extend(events.iter().filter_map(|e| match e.body() {
            Some(EventBody::Message {
                sender, content, ..
            }) => Some(Line { sender, content }),
            _ => None,
        }));
    }
    let aux = auxiliary_model(
        &inner.models,
        agents.get(&collaboration.principal.id).map(|a| &a.spec),
    );
    Ok(Some(State {
        collaboration,
        last_seq: after,
        agents,
        roster,
        transcript,
        aux,
    }))
}

async fn drive(inner: &Inner, state: &mut State, control: &mut mpsc::Receiver<Control>) -> Exit {
    // The inactivity clock starts when this runner does: time the server was down is not
    // the agents' silence.
    let mut last_activity = Instant::now();
    let window = Duration::from_secs(u64::from(state.collaboration.timeout_window));
    // A resumed collaboration may have stopped between a message and its verdict.
    let mut unjudged = !state.transcript.is_empty();
    loop {
        if unjudged
            && state.collaboration.evaluate_objective_completion
            && let Some(aux) = state.aux.clone()
        {
            let verdict = tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => return Exit::Halted,
                request = control.recv() => return on_control(request),
                verdict = judge::judge(&inner.models, &aux, &state.collaboration.objective, &state.transcript) => verdict,
            };
            match verdict {
                Ok((verdict, tokens)) => {
                    add_tokens(inner, state, tokens).await;
                    if verdict.met {
                        let advisory = format!("The objective was judged met: {}", verdict.reason);
                        return ended(EndReason::ObjectiveMet, Some(advisory), None, None);
                    }
                }
                Err(error) => tracing::warn!(%error, "the objective judge failed; carrying on"),
            }
            // The judge's time is not the agents' silence either.
            last_activity = Instant::now();
        }
        let collaboration = &state.collaboration;
        if collaboration.message_count >= collaboration.message_cap {
            let advisory = if collaboration.evaluate_objective_completion {
                "The message cap was reached before the objective was met."
            } else {
                "The message cap was reached; the objective was not evaluated."
            };
            return ended(EndReason::MessageCap, Some(advisory.into()), None, None);
        }
        if let Some(budget) = collaboration.token_budget
            && collaboration.tokens_used >= budget
        {
            let advisory =
                format!("The token budget of {budget} was spent before the objective was met.");
            return ended(EndReason::TokenBudget, Some(advisory), None, None);
        }
        let turn = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => return Exit::Halted,
            request = control.recv() => return on_control(request),
            _ = tokio::time::sleep_until(last_activity + window) => {
                let advisory = format!(
                    "No message arrived within the {}-second inactivity window.",
                    state.collaboration.timeout_window
                );
                return ended(EndReason::InactivityTimeout, Some(advisory), None, None);
            }
            turn = take_turn(inner, state) => turn,
        };
        let turn = match turn {
            Ok(turn) => turn,
            Err(message) => return ended(EndReason::Error, None, Some(message), None),
        };
        if !record(inner, state, turn).await {
            return Exit::Halted;
        }
        last_activity = Instant::now();
        unjudged = true;
    }
}

fn ended(
    reason: EndReason,
    advisory_message: Option<String>,
    error_message: Option<String>,
    ack: Option<tokio::sync::oneshot::Sender<()>>,
) -> Exit {
    Exit::Ended(
        Ending {
            reason,
            advisory_message,
            error_message,
            ended_at: Utc::now(),
        },
        ack,
    )
}

fn on_control(request: Option<Control>) -> Exit {
    match request {
        Some(Control::Stop(ack)) => ended(EndReason::Cancelled, None, None, Some(ack)),
        Some(Control::Delete(ack)) => {
            let _ = ack.send(());
            Exit::Halted
        }
        None => Exit::Halted,
    }
}

async fn take_turn(inner: &Inner, state: &State) -> Result<Turn, String> {
    let collaboration = &state.collaboration;
    let choice = speaker::next(
        collaboration.strategy,
        &state.roster,
        &state.transcript,
        &collaboration.objective,
        &inner.models,
        state.aux.as_ref(),
    )
    .await;
    let sender = state.roster[choice.index].clone();
    let agent = state
        .agents
        .get(&sender.id)
        .ok_or_else(|| format!("agent {} no longer exists", sender.name))?;
    let context = context::build(
        &collaboration.objective,
        &state.roster,
        &state.transcript,
        &sender,
        &inner.settings,
    );
    let turn_id = Uuid::now_v7();
    let channel_id = collaboration.channel_id;
    let on_delta = |delta: Delta<'_>| {
        let frame = match delta {
            Delta::Text(text) => {
                json!({"type": "delta", "turn_id": turn_id, "sender": &sender, "text": text})
            }
            // Viewers drop the text they have of this turn and start it again.
            Delta::Restart => {
                json!({"type": "delta", "turn_id": turn_id, "sender": &sender, "text": "", "restart": true})
            }
        };
        inner
            .hub
            .publish_delta(channel_id, state.last_seq, frame.to_string());
    };
    let span = tracing::info_span!("turn", collaboration = %collaboration.id, agent = %sender.name, %turn_id);
    let completion = tracing::Instrument::instrument(
        agents::speak(agent, &context, &inner.models, &on_delta),
        span,
    )
    .await
    .map_err(|e| format!("{} failed: {e}", sender.name))?;
    if completion.content.trim().is_empty() {
        return Err(format!("{} returned an empty message", sender.name));
    }
    Ok(Turn {
        turn_id,
        sender,
        content: completion.content,
        tokens: completion.tokens + choice.tokens,
    })
}

/// Stores a turn, then publishes it. False if the store would not take it.
async fn record(inner: &Inner, state: &mut State, turn: Turn) -> bool {
    let body = EventBody::Message {
        id: Uuid::now_v7(),
        turn_id: turn.turn_id,
        sender: turn.sender.clone(),
        role: Role::Agent,
        content: turn.content.clone(),
        created_at: Utc::now(),
    };
    let id = state.collaboration.id;
    // `None` inside: the collaboration is no longer running, so the turn is not wanted.
    let Some(event) = persist("message", || {
        inner.store.append_message(id, &body, turn.tokens)
    })
    .await
    .flatten() else {
        return false;
    };
    inner
        .hub
        .publish_event(state.collaboration.channel_id, &event);
    state.last_seq = event.seq;
    state.collaboration.message_count += 1;
    state.collaboration.tokens_used += turn.tokens;
    state.transcript.push(Line {
        sender: turn.sender,
        content: turn.content,
    });
    true
}

async fn add_tokens(inner: &Inner, state: &mut State, tokens: u64) {
    if tokens == 0 {
        return;
    }
    let id = state.collaboration.id;
    if persist("tokens", || inner.store.add_tokens(id, tokens))
        .await
        .is_some()
    {
        state.collaboration.tokens_used += tokens;
    }
}

async fn summarize(
    inner: &Inner,
    state: &State,
    reason: EndReason,
    mut control: Option<&mut mpsc::Receiver<Control>>,
) {
    let collaboration = &state.collaboration;
    let mut writing = pin!(summary::write(
        &inner.models,
        state.aux.as_ref(),
        collaboration,
        reason,
        &state.transcript
    ));
    let (summary, tokens) = loop {
        let request = async {
            match control.as_mut() {
                Some(control) => control.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => return,
            request = request => match request {
                // Deleted while summarizing: nothing left to write to.
                Some(Control::Delete(ack)) => { let _ = ack.send(()); return; }
                // Already ended: dropping the ack tells the caller so.
                Some(Control::Stop(_)) => continue,
                None => control = None,
            },
            written = &mut writing => break written,
        }
    };
    let id = collaboration.id;
    if tokens > 0 {
        persist("tokens", || inner.store.add_tokens(id, tokens)).await;
    }
    let stored = persist("summary", || {
        inner
            .store
            .record_summary(id, &summary.headline, &summary.summary)
    })
    .await
    .flatten();
    if let Some(event) = stored {
        inner.hub.publish_event(collaboration.channel_id, &event);
    }
}

/// Runs a store write, retrying a few times with backoff: a busy or briefly unreachable
/// database should not cost a turn. `None` once it has given up (the error is logged); the
/// collaboration then stays as stored and is resumed by the next start.
async fn persist<T, F, Fut>(what: &str, write: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    for attempt in 0..5u32 {
        match write().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::error!(
                    what,
                    attempt,
                    error = format!("{error:#}"),
                    "store write failed"
                );
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
        }
    }
    None
}
