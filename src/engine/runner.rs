//! One collaboration's life: open, turns until an end condition, the closing status, the
//! summary.
//!
//! Every await that may be cut short (the judge, the choice of speaker, a turn, the
//! summarizer) runs inside [`Driver::wait`], which also listens to the halt token, the
//! control channel and the inactivity clock; every write to the store happens after its
//! `select!` has finished, never inside a branch that could be cancelled half-way.
//!
//! People take part through [`Control::Post`]. A human's turn is a wait for their post; a
//! post from anyone else (any human, while an agent is thinking or another human is due) is
//! an interjection, stored at once where the collaboration allows it and seen by the next
//! turn. A turn still in flight when interjections reach the message cap is dropped, so the
//! cap holds.

use std::{
    collections::HashMap,
    future::Future,
    pin::{Pin, pin},
    sync::atomic::{AtomicI64, AtomicU32, Ordering},
    time::Duration,
};

use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Control, Crew, PostRefusal, auxiliary_model, context, judge, podcast, speaker, stall, summary,
    synopsis,
};
use crate::{
    agents::{self, Delta, Line, ModelRef, Spend},
    domain::{
        Agent, AgentKind, Collaboration, CollaborationStatus, EndReason, Ending, EventBody, Frame,
        Sender, StoredEvent, Strategy, ToolRef, event::Role,
    },
    store::{Lease, Spent, StoreError, StoreResult},
    telemetry,
};

/// Everything a runner knows, rebuilt from the store when it starts.
struct State {
    /// Carried by every write that must come from the collaboration's one runner.
    lease: Lease,
    /// Shutdown, or the lease was lost: write nothing more.
    halt: CancellationToken,
    collaboration: Collaboration,
    /// The channel's last stored seq; deltas are stamped with it (see [`crate::live::Frame`]).
    /// Atomic because a turn in flight reads it while a person's interjection moves it on.
    last_seq: AtomicI64,
    /// The messages stored so far (the collaboration's `message_count` moves on only once
    /// a phase is over, see [`Driver::absorb`]); atomic for the same reason as `last_seq`.
    stored_messages: AtomicU32,
    agents: HashMap<Uuid, Agent>,
    roster: Vec<Sender>,
    transcript: Vec<Line>,
    /// The last message the objective judge has ruled on (its latest verdict's
    /// `judged_seq`): a resumed collaboration is judged again only if something was said
    /// since.
    judged_seq: i64,
    aux: Option<ModelRef>,
    /// What agents did with tools, one line per result (see [`context::tool_note`]): the
    /// judge and the summarizer read them with the transcript, as data. The latest
    /// [`context::TOOL_NOTES_KEPT`].
    tool_notes: Vec<Line>,
    /// Tool calls stored without a result: a turn was cut off while they ran (found on
    /// resuming; the driver closes them).
    unanswered: Vec<OpenCall>,
    /// Whether the conversation goes in circles (see [`stall`]).
    watch: stall::Watch,
    /// What the manager is told on its next turn, after a nudge; and that the next turn is
    /// the manager's.
    notice: Option<String>,
    manager_next: bool,
    /// Spent on model calls between messages (choosing the speaker, the judge, the
    /// synopsis): counted in `collaboration` at once, and stored with the next message the
    /// runner writes, in its write, or on its own (see [`save_spend`]). A write of its own
    /// for each was a turn's costliest step after the model.
    unsaved: Spend,
}

/// A `tool_call` stored and not yet answered.
#[derive(Debug, Clone)]
struct OpenCall {
    turn_id: Uuid,
    call_id: String,
    sender: Sender,
    tool: ToolRef,
    arguments: serde_json::Value,
}

/// A tool event a turn asks the driver to store; `stored` says whether it was.
struct Record {
    body: EventBody,
    stored: tokio::sync::oneshot::Sender<bool>,
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
    spend: Spend,
    /// Attempts made again within the turn (a model call, a remote agent's request).
    retries: u32,
    /// When the agent's reply was in hand: the engine's own part of the turn runs from
    /// here to the message stored and published.
    replied: Instant,
}

/// Milliseconds since `started`, for a message's `ms`.
fn ms_since(started: Instant) -> Option<u64> {
    Some(started.elapsed().as_millis().try_into().unwrap_or(u64::MAX))
}

/// How waiting on a phase of the loop ended.
enum Wake<T> {
    Done(T),
    /// The person (or uAgent) whose turn it was spoke; their message is stored.
    Spoke(Line),
    /// The member whose turn it was reported that they cannot take it.
    Failed(String),
    /// Interjections reached the message cap: what the phase would give is not wanted.
    Capped,
    Exit(Exit),
}

/// What the process that has just created a collaboration holds of it: the runner
/// starts from this instead of reading it back.
pub(super) struct Known {
    pub(super) collaboration: Collaboration,
    pub(super) agents: Vec<Agent>,
}

/// Runs the collaboration under `lease`: its turns if it is running, then (or only, after
/// a crash between the two) its summary. `halt` stops it without writing anything more.
///
/// A runner's task lives as long as its collaboration, and a future is as large as its
/// largest phase. So each phase (loading, the turns, the summary) and each call that waits
/// on an agent is boxed, and only what runs now takes memory: a waiting runner's futures
/// take about 4 KiB, its task included, where this one alone took 17 KiB.
pub(super) async fn run(
    crew: &Crew,
    lease: Lease,
    known: Option<Known>,
    control: mpsc::Receiver<Control>,
    halt: CancellationToken,
) {
    let id = lease.collaboration_id;
    // One process's stint at the collaboration: its first, or a resumption after a restart
    // or a takeover, which starts a trace of its own (see `crate::traces`).
    let span = tracing::info_span!(
        "invoke_workflow",
        otel.name = "invoke_workflow skein.collaboration",
        otel.kind = "internal",
        gen_ai.operation.name = "invoke_workflow",
        gen_ai.conversation.id = %id,
        skein.resumed = known.is_none(),
    );
    let running = tracing::Instrument::instrument(
        Box::pin(run_here(crew, lease, known, control, halt)),
        span,
    );
    crate::traces::for_conversation(id, running).await;
}

async fn run_here(
    crew: &Crew,
    lease: Lease,
    known: Option<Known>,
    mut control: mpsc::Receiver<Control>,
    halt: CancellationToken,
) {
    let id = lease.collaboration_id;
    let mut state = match Box::pin(load(crew, lease, known, halt)).await {
        Ok(Some(state)) => state,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(collaboration = %id, error = format!("{error:#}"), "cannot load collaboration");
            return;
        }
    };
    if state.collaboration.status != CollaborationStatus::Running {
        if state.collaboration.summary.is_none()
            && let Some(reason) = state.collaboration.end_reason
        {
            Box::pin(summarize(crew, &state, reason, &mut Some(&mut control))).await;
        }
        return;
    }
    let exit = Box::pin(drive(crew, &mut state, &mut control)).await;
    save_spend(crew, &mut state).await;
    // A runner that lost its lease leaves the turn to the process that runs it now.
    if !state.halt.is_cancelled() || crew.shutdown.is_cancelled() {
        crew.hub.end_turns(state.collaboration.channel_id);
    }
    let Exit::Ended(ending, ack) = exit else {
        return;
    };
    let Some(event) = persist("end", || {
        crew.journal
            .finish_collaboration(id, Some(&state.lease), &ending)
    })
    .await
    .flatten() else {
        return;
    };
    crew.hub
        .publish_event(state.collaboration.channel_id, &event);
    crew.hub.feed().changed(state.collaboration.account_id);
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
    tracing::info!(collaboration = %id, reason = ?ending.reason, "collaboration ended");
    telemetry::collaboration_ended(ending.reason.status().name(), ending.reason.name());
    let collaboration = &mut state.collaboration;
    collaboration.status = ending.reason.status();
    collaboration.end_reason = Some(ending.reason);
    collaboration.advisory_message = ending.advisory_message.clone();
    collaboration.error_message = ending.error_message.clone();
    let mut control = Some(&mut control);
    if Box::pin(summarize(crew, &state, ending.reason, &mut control)).await
        && state.collaboration.podcast
    {
        // A delete or shutdown abandons it; the collaboration then simply has no audio.
        let reading = podcast::record(
            crew,
            &state.lease,
            &state.roster,
            &state.transcript,
            state.aux.as_ref(),
        );
        Box::pin(after_the_end(&state.halt, &mut control, reading)).await;
    }
}

/// A runner panicked: a bug, not an agent's failure. The collaboration is ended visibly
/// rather than left "running" with nobody driving it, and summarized.
pub(super) async fn panicked(crew: &Crew, lease: Lease) {
    let id = lease.collaboration_id;
    tracing::error!(collaboration = %id, "the runner panicked");
    let ending = Ending {
        reason: EndReason::Error,
        advisory_message: None,
        error_message: Some(
            "Skein hit an internal error running this collaboration; see the server log.".into(),
        ),
        ended_at: crate::domain::now(),
        verdict_seq: None,
        failed_agent: None,
    };
    let Ok(Some(event)) = crew
        .journal
        .finish_collaboration(id, Some(&lease), &ending)
        .await
    else {
        return;
    };
    let Ok(Some(collaboration)) = crew.journal.collaboration(id).await else {
        return;
    };
    crew.hub.end_turns(collaboration.channel_id);
    telemetry::collaboration_ended(ending.reason.status().name(), ending.reason.name());
    crew.hub.publish_event(collaboration.channel_id, &event);
    crew.hub.feed().changed(collaboration.account_id);
    if let Ok(Some(state)) = load(crew, lease, None, crew.shutdown.child_token()).await {
        summarize(crew, &state, ending.reason, &mut None).await;
    }
}

/// `None` when the collaboration is gone or needs nothing more (ended and summarized).
async fn load(
    crew: &Crew,
    lease: Lease,
    known: Option<Known>,
    halt: CancellationToken,
) -> anyhow::Result<Option<State>> {
    // A collaboration just created has nothing in its channel yet: only its runner writes
    // there, under the lease taken with the insert. Any other is rebuilt from the store, not
    // from memory: this is also how a restart resumes.
    let (collaboration, agents, read) = match known {
        Some(Known {
            collaboration,
            agents,
        }) => (collaboration, agents, Read::default()),
        None => {
            let Some(collaboration) = crew.journal.collaboration(lease.collaboration_id).await?
            else {
                return Ok(None);
            };
            let ids: Vec<Uuid> = collaboration.roster().iter().map(|s| s.id).collect();
            let agents = crew.journal.agents(&ids).await?;
            let transcript = transcript(crew, collaboration.channel_id).await?;
            (collaboration, agents, transcript)
        }
    };
    let roster = collaboration.roster();
    let watch = stall::Watch::replayed(
        &read.transcript,
        roster.len(),
        collaboration.strategy == Strategy::Manager,
        &crew.settings.stalls,
    );
    let agents: HashMap<Uuid, Agent> = agents.into_iter().map(|a| (a.id, a)).collect();
    let aux = auxiliary_model(
        &crew.models,
        agents.get(&collaboration.principal.id).map(|a| &a.spec),
    );
    if collaboration.status != CollaborationStatus::Running && collaboration.summary.is_some() {
        return Ok(None);
    }
    Ok(Some(State {
        lease,
        halt,
        stored_messages: AtomicU32::new(collaboration.message_count),
        collaboration,
        last_seq: AtomicI64::new(read.last_seq),
        agents,
        roster,
        transcript: read.transcript,
        judged_seq: read.judged_seq,
        aux,
        tool_notes: read.tool_notes,
        unanswered: read.open_calls,
        watch,
        notice: None,
        manager_next: false,
        unsaved: Spend::default(),
    }))
}

/// What a runner rebuilds from a channel's log.
#[derive(Default)]
struct Read {
    /// The messages, in order.
    transcript: Vec<Line>,
    last_seq: i64,
    /// The last message the judge ruled on.
    judged_seq: i64,
    tool_notes: Vec<Line>,
    /// Tool calls with no result.
    open_calls: Vec<OpenCall>,
}

async fn transcript(crew: &Crew, channel_id: Uuid) -> anyhow::Result<Read> {
    let mut read = Read::default();
    loop {
        let events = crew
            .journal
            .read_events(channel_id, read.last_seq, 500)
            .await?;
        let Some(last) = events.last() else { break };
        read.last_seq = last.seq;
        for event in &events {
            match event.body() {
                Some(EventBody::Message {
                    sender, content, ..
                }) => read.transcript.push(Line {
                    seq: event.seq,
                    sender,
                    content,
                }),
                Some(EventBody::Verdict { judged_seq, .. }) => read.judged_seq = judged_seq,
                Some(body) => answer(&mut read.open_calls, &mut read.tool_notes, event.seq, body),
                None => {}
            }
        }
    }
    Ok(read)
}

/// Follows tool calls and their results: a call opens, its result closes it and adds a
/// note of what came of it.
fn answer(open: &mut Vec<OpenCall>, notes: &mut Vec<Line>, seq: i64, body: EventBody) {
    match body {
        EventBody::ToolCall {
            turn_id,
            call_id,
            sender,
            tool,
            arguments,
            ..
        } => open.push(OpenCall {
            turn_id,
            call_id,
            sender,
            tool,
            arguments,
        }),
        EventBody::ToolResult {
            call_id,
            ok,
            content,
            ..
        } => {
            let Some(at) = open.iter().position(|call| call.call_id == call_id) else {
                return;
            };
            let call = open.remove(at);
            notes.push(context::tool_note(
                seq,
                call.sender,
                &call.tool,
                &call.arguments,
                ok,
                &content,
            ));
            if notes.len() > context::TOOL_NOTES_KEPT {
                notes.remove(0);
            }
        }
        _ => {}
    }
}

async fn drive(crew: &Crew, state: &mut State, control: &mut mpsc::Receiver<Control>) -> Exit {
    let (recorder, records) = mpsc::channel(1);
    let mut driver = Driver {
        crew,
        control,
        // The inactivity clock starts when this runner does: time the server was down is
        // not the agents' silence.
        last_activity: Instant::now(),
        posted: Vec::new(),
        records,
        open_calls: std::mem::take(&mut state.unanswered),
        noted: Vec::new(),
    };
    // Calls a turn made before this runner started were cut off with it: the turn is taken
    // again from the start, and the channel says what became of them.
    if !driver
        .interrupt_calls(
            state,
            "Interrupted: the server running this collaboration stopped before the tool \
             answered. The turn was taken again.",
        )
        .await
    {
        return Exit::Halted;
    }
    // A resumed collaboration may have stopped between a message and its verdict.
    let mut unjudged = state
        .transcript
        .last()
        .is_some_and(|line| line.seq > state.judged_seq);
    // After a failed synopsis, the transcript length before it is tried again.
    let mut synopsis_after = 0;
    loop {
        // Messages that have left the agents' window are folded into the synopsis, every
        // few; a failure leaves them as excerpts, and it is tried again a few messages on.
        if let Some(aux) = state.aux.clone()
            && state.transcript.len() >= synopsis_after
            && let Some(lines) = synopsis::due(
                &state.transcript,
                crew.settings.context_window,
                state.collaboration.synopsis.as_ref(),
            )
        {
            let lines = lines.to_vec();
            let writing = Box::pin(synopsis::write(
                &crew.models,
                &aux,
                &state.collaboration.objective,
                state.collaboration.synopsis.as_ref(),
                &lines,
                crew.settings.synopsis_chars,
            ));
            let wake = driver.wait(state, Phase::UNTIMED, writing).await;
            driver.absorb(state);
            match wake {
                Wake::Done(Ok((written, spend))) => {
                    spent(state, spend);
                    let lease = state.lease;
                    if persist("synopsis", || {
                        crew.journal.record_synopsis(&lease, &written)
                    })
                    .await
                    .is_none()
                    {
                        return Exit::Halted;
                    }
                    state.collaboration.synopsis = Some(written);
                }
                Wake::Done(Err(error)) => {
                    tracing::warn!(%error, "writing the synopsis failed; excerpts stand in");
                    synopsis_after = state.transcript.len() + synopsis::EVERY;
                }
                Wake::Spoke(_) | Wake::Failed(_) | Wake::Capped => {}
                Wake::Exit(exit) => return exit,
            }
            // The writer's time is not the agents' silence.
            driver.last_activity = Instant::now();
        }
        if unjudged
            && state.collaboration.evaluate_objective_completion
            && let Some(aux) = state.aux.clone()
        {
            // What the judge reads; posts during its call come after.
            let judged_seq = state.transcript.last().map_or(0, |line| line.seq);
            let read = context::with_tool_notes(&state.transcript, &state.tool_notes);
            let judging = Box::pin(judge::judge(
                &crew.models,
                &aux,
                &state.collaboration.objective,
                &read,
            ));
            // The judge's time is not the agents' silence: no inactivity deadline here.
            let wake = driver.wait(state, Phase::UNTIMED, judging).await;
            driver.absorb(state);
            match wake {
                Wake::Done(Ok((verdict, spend))) => {
                    spent(state, spend);
                    let Some(verdict_seq) = record_verdict(crew, state, &verdict, judged_seq).await
                    else {
                        return Exit::Halted;
                    };
                    if verdict.met {
                        let advisory = format!("The objective was judged met: {}", verdict.reason);
                        let mut exit = ended(EndReason::ObjectiveMet, Some(advisory), None, None);
                        if let Exit::Ended(ending, _) = &mut exit {
                            ending.verdict_seq = Some(verdict_seq);
                        }
                        return exit;
                    }
                }
                Wake::Done(Err(error)) => {
                    tracing::warn!(%error, "the objective judge failed; carrying on")
                }
                Wake::Spoke(_) | Wake::Failed(_) | Wake::Capped => {}
                Wake::Exit(exit) => return exit,
            }
            driver.last_activity = Instant::now();
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
        if let Some(budget) = collaboration.cost_budget_micros
            && collaboration.cost_micros >= budget
        {
            let advisory = format!(
                "The cost budget of ${} was spent (${} so far) before the objective was met.",
                crate::domain::event::usd(budget),
                crate::domain::event::usd(collaboration.cost_micros),
            );
            return ended(EndReason::CostBudget, Some(advisory), None, None);
        }
        // After a nudge the manager speaks next (unless it just did).
        let manager_next = std::mem::take(&mut state.manager_next)
            && state.roster.len() > 1
            && state.transcript.last().map(|l| l.sender.id) != Some(state.roster[0].id);
        let choice = if manager_next {
            speaker::Choice {
                index: 0,
                spend: Spend::default(),
            }
        } else {
            let collaboration = &state.collaboration;
            let choosing = Box::pin(speaker::next(
                collaboration.strategy,
                &state.roster,
                &state.transcript,
                &collaboration.objective,
                &crew.models,
                state.aux.as_ref(),
            ));
            let wake = driver.wait(state, Phase::TIMED, choosing).await;
            driver.absorb(state);
            match wake {
                Wake::Done(choice) => choice,
                Wake::Spoke(_) | Wake::Failed(_) | Wake::Capped => continue,
                Wake::Exit(exit) => return exit,
            }
        };
        spent(state, choice.spend);
        let sender = state.roster[choice.index].clone();
        let turn_id = Uuid::now_v7();
        announce(crew, state, turn_id, &sender);
        let started = Instant::now();
        let kind = state.agents.get(&sender.id).map(|agent| agent.spec.kind());
        let wake = if let Some(kind @ (AgentKind::Human | AgentKind::Uagent)) = kind {
            // Their time to answer starts when they are told it is their turn, and the
            // turn is theirs to take: it ends with their post (a person's through the API,
            // a uAgent's through `/submit`). A person's phase never ends by itself; a
            // uAgent's ends in failure when it cannot be asked or does not answer in time.
            driver.last_activity = Instant::now();
            let phase = Phase {
                timed: true,
                awaiting: Some((&sender, turn_id, started)),
            };
            let theirs: Pin<Box<dyn Future<Output = Result<Turn, String>> + Send + '_>> =
                if kind == AgentKind::Uagent {
                    Box::pin(tracing::Instrument::instrument(
                        ask_uagent(crew, state, &sender, turn_id),
                        turn_span(state, &sender, turn_id),
                    ))
                } else {
                    Box::pin(std::future::pending())
                };
            driver.wait(state, phase, theirs).await
        } else {
            // The turn, with the retries it made counted into it.
            let speaking = Box::pin(async {
                let (turn, retries) =
                    agents::count_retries(take_turn(crew, state, &sender, turn_id, &recorder))
                        .await;
                turn.map(|turn| Turn { retries, ..turn })
            });
            driver.wait(state, Phase::TIMED, speaking).await
        };
        driver.absorb(state);
        // A turn that did not finish leaves no call it made without a result.
        if !matches!(wake, Wake::Done(Ok(_)) | Wake::Exit(Exit::Halted))
            && !driver
                .interrupt_calls(
                    state,
                    "Interrupted: the turn ended before the tool answered.",
                )
                .await
        {
            return Exit::Halted;
        }
        // Whatever became of it, this turn is over: late viewers must not be told of it.
        crew.hub.end_turn(state.collaboration.channel_id, turn_id);
        match wake {
            Wake::Done(Ok(turn)) => {
                if !record(crew, state, turn, ms_since(started)).await {
                    return Exit::Halted;
                }
            }
            Wake::Done(Err(message)) | Wake::Failed(message) => {
                let mut exit = ended(EndReason::Error, None, Some(message), None);
                if let Exit::Ended(ending, _) = &mut exit {
                    ending.failed_agent = Some(sender.id);
                }
                return exit;
            }
            Wake::Spoke(line) => {
                state.collaboration.message_count += 1;
                state.transcript.push(line);
                // A person's or a uAgent's message came through the API, without what was
                // spent choosing them: stored now, rather than whenever a turn of ours is.
                save_spend(crew, state).await;
            }
            Wake::Capped => {}
            Wake::Exit(exit) => return exit,
        }
        if sender.id == state.roster[0].id {
            // The manager has had its say on the nudge.
            state.notice = None;
        }
        match state.watch.after(
            &state.transcript,
            state.roster.len(),
            state.collaboration.strategy == Strategy::Manager,
            &crew.settings.stalls,
        ) {
            stall::Verdict::Fine => {}
            stall::Verdict::Nudge(reason) => {
                if !nudge(crew, state, reason).await {
                    return Exit::Halted;
                }
            }
            stall::Verdict::End(reason) => {
                let advisory = format!(
                    "The conversation stalled: {reason}. The manager was told, and it went on \
                     going in circles."
                );
                return ended(EndReason::Stalled, Some(advisory), None, None);
            }
        }
        driver.last_activity = Instant::now();
        unjudged = true;
    }
}

/// What the loop waits on its phases with: the control channel, the inactivity clock, and
/// the interjections stored while a phase ran.
struct Driver<'a> {
    crew: &'a Crew,
    control: &'a mut mpsc::Receiver<Control>,
    /// When the last message arrived (or the runner started): the inactivity window runs
    /// from here during the phases it applies to.
    last_activity: Instant,
    /// Interjections stored while a phase ran, added to the state once it has finished
    /// (the phase may be reading the state meanwhile).
    posted: Vec<Line>,
    /// Tool events the turn in progress asks to store (see [`TurnSink::record`]).
    records: mpsc::Receiver<Record>,
    /// Tool calls stored without a result yet.
    open_calls: Vec<OpenCall>,
    /// Notes of tool results stored while a phase ran, added to the state with `posted`.
    noted: Vec<Line>,
}

/// How a phase of the loop is waited for.
#[derive(Clone, Copy)]
struct Phase<'a> {
    /// Whether the inactivity window runs during it (the judge's time is not the agents'
    /// silence).
    timed: bool,
    /// The person whose turn it is, and the turn's id: their post is the phase's end.
    awaiting: Option<(&'a Sender, Uuid, Instant)>,
}

impl Phase<'_> {
    const TIMED: Self = Self {
        timed: true,
        awaiting: None,
    };
    const UNTIMED: Self = Self {
        timed: false,
        awaiting: None,
    };
}

impl Driver<'_> {
    /// Adds the interjections stored during the last phase to the state: once the phase,
    /// which may read the state, is over.
    fn absorb(&mut self, state: &mut State) {
        for line in self.posted.drain(..) {
            state.collaboration.message_count += 1;
            state.transcript.push(line);
        }
        state.tool_notes.append(&mut self.noted);
        let over = state
            .tool_notes
            .len()
            .saturating_sub(context::TOOL_NOTES_KEPT);
        state.tool_notes.drain(..over);
    }

    /// Stores a turn's tool event and publishes it. False if the store would not take it.
    async fn record(&mut self, state: &State, body: EventBody) -> bool {
        let lease = &state.lease;
        let journal = &self.crew.journal;
        let Some(event) = persist("tool event", || journal.append_event(lease, &body))
            .await
            .flatten()
        else {
            return false;
        };
        self.crew
            .hub
            .publish_event(state.collaboration.channel_id, &event);
        state.last_seq.store(event.seq, Ordering::Release);
        // An agent at work with its tools is not a silent one.
        self.last_activity = Instant::now();
        let mut notes = Vec::new();
        answer(&mut self.open_calls, &mut notes, event.seq, body);
        self.noted.append(&mut notes);
        true
    }

    /// Stores a result for every call still open, saying `why` it has no answer. False if
    /// the store would not take one.
    async fn interrupt_calls(&mut self, state: &State, why: &str) -> bool {
        while let Some(call) = self.open_calls.first().cloned() {
            let body = EventBody::ToolResult {
                turn_id: call.turn_id,
                call_id: call.call_id,
                tool: call.tool,
                ok: false,
                content: why.to_owned(),
                ms: 0,
                interrupted: true,
                created_at: crate::domain::now(),
            };
            if !self.record(state, body).await {
                return false;
            }
        }
        true
    }

    /// Waits for `work` while answering what arrives meanwhile. Shutdown, stop and delete
    /// end the wait, and so does the inactivity window when the phase is timed. A person's
    /// post is stored at once: as the turn of the person awaited when it is theirs, else as
    /// an interjection if the collaboration allows them, kept in `posted` until
    /// [`Driver::absorb`].
    async fn wait<T>(
        &mut self,
        state: &State,
        phase: Phase<'_>,
        work: impl Future<Output = T>,
    ) -> Wake<T> {
        let mut work = pin!(work);
        let collaboration = &state.collaboration;
        let window = Duration::from_secs(u64::from(collaboration.timeout_window));
        loop {
            let deadline = phase.timed.then(|| self.last_activity + window);
            let silence = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let post = tokio::select! {
                biased;
                _ = state.halt.cancelled() => return Wake::Exit(Exit::Halted),
                request = self.control.recv() => match request {
                    Some(Control::Post(post)) => post,
                    other => return Wake::Exit(on_control(other)),
                },
                Some(record) = self.records.recv() => {
                    let stored = self.record(state, record.body).await;
                    let _ = record.stored.send(stored);
                    continue;
                }
                _ = silence => {
                    let advisory = format!(
                        "No message arrived within the {}-second inactivity window.",
                        collaboration.timeout_window
                    );
                    return Wake::Exit(ended(EndReason::InactivityTimeout, Some(advisory), None, None));
                }
                done = &mut work => return Wake::Done(done),
            };
            // The cap holds for people too: the phase may run after the last message it
            // allows (the judge of the capping message, say).
            let said = collaboration.message_count as usize + self.posted.len();
            if said >= collaboration.message_cap as usize {
                let _ = post.reply.send(Err(PostRefusal::CapReached));
                continue;
            }
            let due = phase
                .awaiting
                .filter(|(due, ..)| due.id == post.sender.id)
                .map(|(_, turn_id, started)| (turn_id, started));
            // Only people interject: an agent speaks on its turn.
            let person = post.sender.kind == AgentKind::Human;
            let turn = match due {
                Some(_) if post.failure => return Wake::Failed(post.content),
                Some(turn) => Some(turn),
                None if collaboration.allow_interjections && person && !post.failure => None,
                None => {
                    let _ = post.reply.send(Err(PostRefusal::NotYourTurn));
                    continue;
                }
            };
            let stored = store_message(
                self.crew,
                state,
                turn.map_or_else(Uuid::now_v7, |(turn_id, _)| turn_id),
                post.sender,
                post.content,
                (
                    Spend::default(),
                    turn.and_then(|(_, started)| ms_since(started)),
                    0,
                ),
                Spend::default(),
            )
            .await;
            let Some((event, line)) = stored else {
                let _ = post.reply.send(Err(PostRefusal::NotRunning));
                return Wake::Exit(Exit::Halted);
            };
            let _ = post.reply.send(Ok(event));
            self.last_activity = Instant::now();
            if turn.is_some() {
                return Wake::Spoke(line);
            }
            self.posted.push(line);
            if said + 1 >= collaboration.message_cap as usize {
                return Wake::Capped;
            }
        }
    }
}

/// Tells viewers whose turn it is: an ephemeral frame, like a delta.
fn announce(crew: &Crew, state: &State, turn_id: Uuid, sender: &Sender) {
    let frame = Frame::Turn { turn_id, sender };
    crew.hub.publish_turn(
        state.collaboration.channel_id,
        state.last_seq.load(Ordering::Acquire),
        turn_id,
        frame.text(),
    );
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
            ended_at: crate::domain::now(),
            verdict_seq: None,
            failed_agent: None,
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
        Some(Control::Post(_)) => unreachable!("`wait` takes posts itself"),
        None => Exit::Halted,
    }
}

/// The agent whose turn it is, and what it is told.
fn asked<'s>(
    crew: &Crew,
    state: &'s State,
    sender: &Sender,
    turn_id: Uuid,
) -> Result<(&'s Agent, agents::TurnContext), String> {
    let collaboration = &state.collaboration;
    let agent = state
        .agents
        .get(&sender.id)
        .ok_or_else(|| format!("agent {} no longer exists", sender.name))?;
    let conversation = context::Conversation {
        collaboration_id: collaboration.id,
        objective: &collaboration.objective,
        roster: &state.roster,
        transcript: &state.transcript,
        synopsis: collaboration.synopsis.as_ref(),
    };
    let mut context = context::build(&conversation, turn_id, sender, &crew.settings);
    if sender.id == state.roster[0].id {
        context.notice.clone_from(&state.notice);
    }
    Ok((agent, context))
}

/// A uAgent's half of its turn: Skein asks it, and its reply arrives as a post (see
/// [`Driver::wait`]). Ends in a turn only when the reply came while no runner held the
/// collaboration (it was kept for this one); otherwise only in failure: the agent could not
/// be asked, or did not answer within `SKEIN_UAGENT_REPLY_SECS` of being asked.
///
/// What was asked is noted in the store, so a runner that resumes the collaboration after a
/// restart, with nothing said since, waits for the reply already on its way instead of
/// asking the agent a second time.
async fn ask_uagent(
    crew: &Crew,
    state: &State,
    sender: &Sender,
    turn_id: Uuid,
) -> Result<Turn, String> {
    let collaboration = &state.collaboration;
    let (agent, context) = asked(crew, state, sender, turn_id)?;
    let crate::domain::AgentSpec::Uagent { endpoint } = &agent.spec else {
        return Err(format!("{} is not a uAgent", sender.name));
    };
    let remote = &crew.remote;
    let journal = &crew.journal;
    let lease = &state.lease;
    let unwritten = |what: &str| format!("the store would not take {what}");
    let identity = remote.identities.for_collaboration(collaboration.id);
    // So that the reply finds this collaboration on whichever server it reaches.
    persist("the uAgent identity", || {
        journal.remember_identity(identity.address().as_str(), collaboration.id)
    })
    .await
    .ok_or_else(|| unwritten("the uAgent identity"))?;
    agents::uagent::register(remote, &identity, collaboration.id).await;
    // Where the conversation stands: its last message (not the last event: a verdict
    // stored again on resuming changes nothing the agent was asked).
    let last_seq = state.transcript.last().map_or(0, |line| line.seq);
    let before = persist("what the uAgent was asked", || {
        journal.uagent_ask(collaboration.id, agent.id)
    })
    .await
    .ok_or_else(|| unwritten("what the uAgent was asked"))?;
    let asked_at = match before {
        Some((after_seq, asked_at)) if after_seq == last_seq => {
            let kept = persist("the uAgent's reply", || {
                journal.take_uagent_reply(lease, agent.id, asked_at)
            })
            .await
            .ok_or_else(|| unwritten("the uAgent's reply"))?;
            if let Some(content) = kept {
                return Ok(Turn {
                    turn_id,
                    sender: sender.clone(),
                    content,
                    spend: Spend::default(),
                    retries: 0,
                    replied: Instant::now(),
                });
            }
            asked_at
        }
        _ => {
            agents::uagent::ask(agent, endpoint.as_deref(), &context, remote)
                .await
                .map_err(|e| format!("{} failed: {e}", sender.name))?;
            let asked_at = crate::domain::now();
            persist("what the uAgent was asked", || {
                journal.note_uagent_ask(lease, agent.id, last_seq, asked_at)
            })
            .await
            .ok_or_else(|| unwritten("what the uAgent was asked"))?;
            asked_at
        }
    };
    let waiting = remote.uagents.reply_timeout;
    let waited = (crate::domain::now() - asked_at)
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(waiting.saturating_sub(waited)).await;
    Err(format!(
        "{} did not answer within {} s (SKEIN_UAGENT_REPLY_SECS)",
        sender.name,
        waiting.as_secs()
    ))
}

/// An agent's turn (never a person's or a uAgent's: they are waited for in [`wait`]).
/// Its tool events go to the driver through `recorder`, to be stored between its awaits.
async fn take_turn(
    crew: &Crew,
    state: &State,
    sender: &Sender,
    turn_id: Uuid,
    recorder: &mpsc::Sender<Record>,
) -> Result<Turn, String> {
    let (agent, context) = asked(crew, state, sender, turn_id)?;
    let sink = Sink {
        crew,
        state,
        sender,
        turn_id,
        recorder,
    };
    let completion = tracing::Instrument::instrument(
        agents::speak(agent, &context, &crew.models, &crew.remote, &sink),
        turn_span(state, sender, turn_id),
    )
    .await
    .map_err(|e| format!("{} failed: {e}", sender.name))?;
    if completion.content.trim().is_empty() {
        return Err(format!("{} returned an empty message", sender.name));
    }
    Ok(Turn {
        turn_id,
        sender: sender.clone(),
        spend: completion.spend(),
        content: within_limit(completion.content, crew.settings.max_content_chars),
        retries: 0,
        replied: Instant::now(),
    })
}

/// A turn's span: an `invoke_agent`, CLIENT for an agent that lives elsewhere.
fn turn_span(state: &State, sender: &Sender, turn_id: Uuid) -> tracing::Span {
    let kind = match sender.kind {
        AgentKind::Http | AgentKind::A2a | AgentKind::Uagent => "client",
        AgentKind::Llm | AgentKind::Scripted | AgentKind::Human => "internal",
    };
    tracing::info_span!(
        "turn",
        collaboration = %state.collaboration.id,
        agent = %sender.name,
        %turn_id,
        otel.name = %format!("invoke_agent {}", sender.name),
        otel.kind = kind,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.id = %sender.id,
        gen_ai.agent.name = %sender.name,
        gen_ai.conversation.id = %state.collaboration.id,
    )
}

/// Where a turn in progress reports: its text to viewers at once, its tool events to the
/// driver, which stores them.
struct Sink<'a> {
    crew: &'a Crew,
    state: &'a State,
    sender: &'a Sender,
    turn_id: Uuid,
    recorder: &'a mpsc::Sender<Record>,
}

#[async_trait::async_trait]
impl agents::TurnSink for Sink<'_> {
    fn delta(&self, delta: Delta<'_>) {
        let (text, restart) = match delta {
            Delta::Text(text) => (text, false),
            // Viewers drop the text they have of this turn and start it again.
            Delta::Restart => ("", true),
        };
        let frame = Frame::Delta {
            turn_id: self.turn_id,
            sender: self.sender,
            text,
            restart,
        };
        self.crew.hub.publish_delta(
            self.state.collaboration.channel_id,
            self.state.last_seq.load(Ordering::Acquire),
            || frame.text(),
        );
    }

    async fn record(&self, body: EventBody) -> bool {
        let (stored, answer) = tokio::sync::oneshot::channel();
        if self.recorder.send(Record { body, stored }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// An agent's message within the longest a message may be: what is over is cut, and the
/// message says so, so that nobody takes the cut for the agent's own ending.
pub(crate) fn within_limit(content: String, max_chars: usize) -> String {
    let Some((cut_at, _)) = content.char_indices().nth(max_chars) else {
        return content;
    };
    let total = content.chars().count();
    tracing::warn!(
        total,
        max_chars,
        "an agent's message was over the limit; cut"
    );
    let note = format!(
        "\n\n[Cut by Skein: the message was {total} characters; the limit is {max_chars}.]"
    );
    // The note is part of the message: the cut leaves room for it.
    let keep = content[..cut_at]
        .char_indices()
        .nth(max_chars.saturating_sub(note.chars().count()))
        .map_or(cut_at, |(at, _)| at);
    let mut cut = content;
    cut.truncate(keep);
    cut.push_str(&note);
    cut
}

/// Stores an agent's turn, then publishes it. False if the store would not take it.
async fn record(crew: &Crew, state: &mut State, turn: Turn, ms: Option<u64>) -> bool {
    let replied = turn.replied;
    let stored = store_message(
        crew,
        state,
        turn.turn_id,
        turn.sender,
        turn.content,
        (turn.spend, ms, turn.retries),
        state.unsaved,
    )
    .await;
    let Some((_, line)) = stored else {
        return false;
    };
    telemetry::turn_overhead(replied.elapsed());
    state.unsaved = Spend::default();
    state.collaboration.message_count += 1;
    state.collaboration.tokens_used += turn.spend.tokens;
    state.collaboration.cost_micros += turn.spend.cost_micros;
    state.transcript.push(line);
    true
}

/// Stores a message, then publishes it, and moves `last_seq` on. The collaboration counts
/// the message's `spend` and `also` with it. `None` if the store would not take it: the
/// collaboration is no longer running, or the store gave up.
async fn store_message(
    crew: &Crew,
    state: &State,
    turn_id: Uuid,
    sender: Sender,
    content: String,
    (spend, ms, retries): (Spend, Option<u64>, u32),
    also: Spend,
) -> Option<(StoredEvent, Line)> {
    let role = if sender.kind == AgentKind::Human {
        Role::Human
    } else {
        Role::Agent
    };
    let body = EventBody::Message {
        id: Uuid::now_v7(),
        turn_id,
        sender: sender.clone(),
        role,
        content: content.clone(),
        created_at: crate::domain::now(),
        tokens: spend.tokens,
        input_tokens: spend.input_tokens,
        output_tokens: spend.output_tokens,
        cost_usd: crate::domain::event::usd(spend.cost_micros),
        ms,
        retries,
    };
    let lease = &state.lease;
    let spent = Spent {
        tokens: spend.tokens + also.tokens,
        cost_micros: spend.cost_micros + also.cost_micros,
    };
    let event = persist("message", || {
        crew.journal.append_message(lease, &body, spent)
    })
    .await
    .flatten()?;
    telemetry::turn(sender.kind.as_str());
    // Before the message goes out, so that a viewer who has the message is not then told
    // the turn is still on.
    crew.hub.end_turn(state.collaboration.channel_id, turn_id);
    crew.hub
        .publish_event(state.collaboration.channel_id, &event);
    state.last_seq.store(event.seq, Ordering::Release);
    let stored = state.stored_messages.fetch_add(1, Ordering::AcqRel) + 1;
    let collaboration = &state.collaboration;
    crew.hub
        .feed()
        .messages(collaboration.account_id, collaboration.id, stored);
    let line = Line {
        seq: event.seq,
        sender,
        content,
    };
    Some((event, line))
}

/// Stores and publishes the judge's verdict on the transcript up to `judged_seq`: its `seq`,
/// or `None` if the store would not take it (the runner stops).
async fn record_verdict(
    crew: &Crew,
    state: &mut State,
    verdict: &judge::Verdict,
    judged_seq: i64,
) -> Option<i64> {
    let body = EventBody::Verdict {
        met: verdict.met,
        reason: verdict.reason.clone(),
        judged_seq,
        created_at: crate::domain::now(),
    };
    let lease = &state.lease;
    let stored = persist("verdict", || crew.journal.append_event(lease, &body))
        .await
        .flatten()?;
    crew.hub
        .publish_event(state.collaboration.channel_id, &stored);
    state.last_seq.store(stored.seq, Ordering::Release);
    state.judged_seq = judged_seq;
    Some(stored.seq)
}

/// Stores and publishes a nudge to the manager, which then speaks next and is told why.
/// False if the store would not take it (the runner stops).
async fn nudge(crew: &Crew, state: &mut State, reason: String) -> bool {
    let body = EventBody::Nudge {
        to: state.roster[0].clone(),
        reason: reason.clone(),
        created_at: crate::domain::now(),
    };
    let lease = &state.lease;
    let Some(stored) = persist("nudge", || crew.journal.append_event(lease, &body))
        .await
        .flatten()
    else {
        return false;
    };
    crew.hub
        .publish_event(state.collaboration.channel_id, &stored);
    state.last_seq.store(stored.seq, Ordering::Release);
    state.notice = Some(reason);
    state.manager_next = true;
    true
}

/// Counts what a model call between messages spent (see [`State::unsaved`]).
fn spent(state: &mut State, spend: Spend) {
    state.collaboration.tokens_used += spend.tokens;
    state.collaboration.cost_micros += spend.cost_micros;
    state.unsaved += spend;
}

/// Stores what was spent since the last message, on its own, when no message of the runner's
/// carries it: it has stopped driving, or the message came through the API. Kept unsaved if
/// the store would not take it (the lease is lost: whoever runs the collaboration now does
/// not know of it).
async fn save_spend(crew: &Crew, state: &mut State) {
    let Spend {
        tokens,
        cost_micros,
        ..
    } = state.unsaved;
    if tokens == 0 && cost_micros == 0 {
        return;
    }
    let lease = &state.lease;
    if persist("tokens", || {
        crew.journal.add_tokens(lease, tokens, cost_micros)
    })
    .await
    .is_some()
    {
        state.unsaved = Spend::default();
    }
}

/// Writes and stores the summary. False if the collaboration was deleted meanwhile or the
/// server is stopping: then nothing more is to be done for it.
async fn summarize(
    crew: &Crew,
    state: &State,
    reason: EndReason,
    control: &mut Option<&mut mpsc::Receiver<Control>>,
) -> bool {
    let collaboration = &state.collaboration;
    let writing = summary::write(
        &crew.models,
        state.aux.as_ref(),
        collaboration,
        reason,
        &state.transcript,
        &state.tool_notes,
    );
    let Some((summary, spend)) = after_the_end(&state.halt, control, writing).await else {
        return false;
    };
    let lease = &state.lease;
    if spend != Spend::default() {
        persist("tokens", || {
            crew.journal
                .add_tokens(lease, spend.tokens, spend.cost_micros)
        })
        .await;
    }
    let stored = persist("summary", || {
        crew.journal
            .record_summary(lease, &summary.headline, &summary.summary, &summary.outcome)
    })
    .await
    .flatten();
    if let Some(event) = stored {
        crew.hub.publish_event(collaboration.channel_id, &event);
        crew.hub.feed().changed(collaboration.account_id);
    }
    true
}

/// Runs work that follows the end (the summary, the podcast) while still answering
/// requests: a delete stops it (`None`, and nothing is to be written any more), a stop
/// finds nothing left to stop, a post comes too late. Shutdown stops it too.
async fn after_the_end<T>(
    halt: &CancellationToken,
    control: &mut Option<&mut mpsc::Receiver<Control>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = pin!(work);
    loop {
        let request = async {
            match control.as_mut() {
                Some(control) => control.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = halt.cancelled() => return None,
            request = request => match request {
                Some(Control::Delete(ack)) => { let _ = ack.send(()); return None; }
                // Already ended: dropping the ack tells the caller so.
                Some(Control::Stop(_)) => continue,
                Some(Control::Post(post)) => { let _ = post.reply.send(Err(PostRefusal::NotRunning)); }
                None => *control = None,
            },
            done = &mut work => return Some(done),
        }
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
            Err(StoreError::LeaseLost) => {
                tracing::warn!(what, "the lease was lost; this runner stops");
                return None;
            }
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

#[cfg(test)]
mod tests;
