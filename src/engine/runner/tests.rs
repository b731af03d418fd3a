//! The runner's state machine on a paused clock: an in-memory journal, scripted agents and
//! people, and a model answered in this process, so that a test that waits out a
//! 30-second window takes milliseconds, and what it asserts about time is exact.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Known, run};
use crate::{
    agents::{Models, Remote},
    config::Config,
    domain::{
        Agent, AgentAddress, AgentSpec, Collaboration, CollaborationStatus, EndReason, Ending,
        EventBody, NewCollaboration, StoredEvent, Strategy, event::Role,
    },
    engine::{Control, Crew, Post, PostRefusal, journal::Journal},
    live::Hub,
    outbound::Outbound,
    store::{Lease, Spent, StoreError, StoreResult},
    tasks::Tasks,
};

/// A journal in memory, refusing writes as the store would (ended, capped, lease lost).
struct Memory {
    book: Mutex<Book>,
}

struct Book {
    collaboration: Collaboration,
    events: Vec<(Instant, StoredEvent)>,
    /// From now on, every fenced write finds the lease gone.
    lease_lost: bool,
    /// Tokens written on their own, not with a message: one entry per write.
    alone: Vec<u64>,
}

impl Memory {
    fn new(collaboration: Collaboration) -> Arc<Self> {
        Arc::new(Self {
            book: Mutex::new(Book {
                collaboration,
                events: Vec::new(),
                lease_lost: false,
                alone: Vec::new(),
            }),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap()
    }

    fn collaboration(&self) -> Collaboration {
        self.book().collaboration.clone()
    }

    /// Every stored event: its body, and when it was stored.
    fn events(&self) -> Vec<(Instant, EventBody)> {
        self.book()
            .events
            .iter()
            .map(|(at, event)| (*at, event.body().expect("a stored body")))
            .collect()
    }

    fn messages(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|(_, body)| match body {
                EventBody::Message {
                    sender, content, ..
                } => Some((sender.name, content)),
                _ => None,
            })
            .collect()
    }

    fn lose_lease(&self) {
        self.book().lease_lost = true;
    }
}

impl Book {
    fn append(&mut self, body: &EventBody) -> StoredEvent {
        let seq = self.events.len() as i64 + 1;
        let event = StoredEvent {
            seq,
            frame: body.to_frame(seq),
        };
        self.events.push((Instant::now(), event.clone()));
        event
    }
}

#[async_trait]
impl Journal for Memory {
    async fn collaboration(&self, _: Uuid) -> StoreResult<Option<Collaboration>> {
        Ok(Some(self.collaboration()))
    }

    async fn agents(&self, _: &[Uuid]) -> StoreResult<Vec<Agent>> {
        unreachable!("a runner started from what is known reads no agents")
    }

    async fn read_events(&self, _: Uuid, after: i64, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        let book = self.book();
        Ok(book
            .events
            .iter()
            .map(|(_, event)| event.clone())
            .filter(|event| event.seq > after)
            .take(limit as usize)
            .collect())
    }

    async fn append_message(
        &self,
        _: &Lease,
        body: &EventBody,
        spent: Spent,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut book = self.book();
        if book.lease_lost {
            return Err(StoreError::LeaseLost);
        }
        let c = &mut book.collaboration;
        if c.status != CollaborationStatus::Running || c.message_count >= c.message_cap {
            return Ok(None);
        }
        c.message_count += 1;
        c.tokens_used += spent.tokens;
        c.cost_micros += spent.cost_micros;
        Ok(Some(book.append(body)))
    }

    async fn add_tokens(&self, _: &Lease, tokens: u64, cost_micros: u64) -> StoreResult<()> {
        let mut book = self.book();
        book.collaboration.tokens_used += tokens;
        book.collaboration.cost_micros += cost_micros;
        book.alone.push(tokens);
        Ok(())
    }

    async fn record_synopsis(
        &self,
        _: &Lease,
        synopsis: &crate::domain::Synopsis,
    ) -> StoreResult<()> {
        self.book().collaboration.synopsis = Some(synopsis.clone());
        Ok(())
    }

    async fn append_event(&self, _: &Lease, body: &EventBody) -> StoreResult<Option<StoredEvent>> {
        let mut book = self.book();
        if book.lease_lost {
            return Err(StoreError::LeaseLost);
        }
        if book.collaboration.status != CollaborationStatus::Running {
            return Ok(None);
        }
        Ok(Some(book.append(body)))
    }

    async fn remember_identity(&self, _: &str, _: Uuid) -> StoreResult<()> {
        Ok(())
    }

    // No runner test has a uAgent: the API tests drive those against a real one.
    async fn note_uagent_ask(
        &self,
        _: &Lease,
        _: Uuid,
        _: i64,
        _: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn uagent_ask(
        &self,
        _: Uuid,
        _: Uuid,
    ) -> StoreResult<Option<(i64, chrono::DateTime<chrono::Utc>)>> {
        Ok(None)
    }

    async fn take_uagent_reply(
        &self,
        _: &Lease,
        _: Uuid,
        _: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }

    async fn finish_collaboration(
        &self,
        _: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut book = self.book();
        if lease.is_some() && book.lease_lost {
            return Err(StoreError::LeaseLost);
        }
        let c = &mut book.collaboration;
        if c.status != CollaborationStatus::Running {
            return Ok(None);
        }
        c.status = ending.reason.status();
        c.end_reason = Some(ending.reason);
        c.advisory_message = ending.advisory_message.clone();
        c.error_message = ending.error_message.clone();
        c.ended_at = Some(ending.ended_at);
        let body = EventBody::Status {
            status: c.status,
            end_reason: c.end_reason,
            advisory_message: c.advisory_message.clone(),
            error_message: c.error_message.clone(),
            ended_at: c.ended_at,
            verdict_seq: ending.verdict_seq,
            failed_agent: ending.failed_agent,
        };
        Ok(Some(book.append(&body)))
    }

    async fn record_summary(
        &self,
        _: &Lease,
        headline: &str,
        summary: &str,
        outcome: &crate::domain::Outcome,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut book = self.book();
        if book.collaboration.summary.is_some() {
            return Ok(None);
        }
        book.collaboration.headline = Some(headline.to_owned());
        book.collaboration.summary = Some(summary.to_owned());
        book.collaboration.outcome = Some(outcome.clone());
        let body = EventBody::Summary {
            headline: headline.to_owned(),
            summary: summary.to_owned(),
            outcome: Some(outcome.clone()),
            created_at: crate::domain::now(),
        };
        Ok(Some(book.append(&body)))
    }

    async fn record_audio(&self, _: &Lease, _: Option<&str>, _: Option<&str>) -> StoreResult<()> {
        Ok(())
    }
}

fn agent(name: &str, spec: AgentSpec) -> Agent {
    let now = Utc::now();
    Agent {
        id: Uuid::now_v7(),
        account_id: Uuid::nil(),
        address: AgentAddress::generate(),
        name: name.to_owned(),
        description: None,
        spec,
        secret: None,
        tool_credentials: None,
        created_at: now,
        updated_at: now,
    }
}

fn scripted(name: &str, delay_ms: u64) -> Agent {
    let replies = (1..=3).map(|n| format!("{name} says {n}")).collect();
    agent(name, AgentSpec::Scripted { replies, delay_ms })
}

fn human(name: &str) -> Agent {
    agent(name, AgentSpec::Human)
}

/// A running collaboration of `roster` (principal first), round robin.
struct Setup {
    roster: Vec<Agent>,
    message_cap: u32,
    timeout_window: u32,
    evaluate: bool,
    strategy: Strategy,
}

impl Setup {
    fn new(roster: Vec<Agent>) -> Self {
        Self {
            roster,
            message_cap: 10,
            timeout_window: 30,
            evaluate: false,
            strategy: Strategy::RoundRobin,
        }
    }

    fn collaboration(&self) -> Collaboration {
        let new = NewCollaboration {
            id: Uuid::now_v7(),
            account_id: Uuid::nil(),
            channel_id: Uuid::now_v7(),
            objective: "Plan a picnic".into(),
            principal: self.roster[0].id,
            participants: self.roster[1..].iter().map(|a| a.id).collect(),
            message_cap: self.message_cap,
            timeout_window: self.timeout_window,
            evaluate_objective_completion: self.evaluate,
            source: None,
            strategy: self.strategy,
            webhook_url: None,
            token_budget: None,
            cost_budget_micros: None,
            podcast: false,
            allow_interjections: true,
            fork: None,
            team_id: None,
            context_id: None,
            created_by: Uuid::nil(),
            created_at: crate::domain::now(),
        };
        new.started(&self.roster)
    }
}

/// A runner at work, and what it is run with.
struct Running {
    journal: Arc<Memory>,
    control: mpsc::Sender<Control>,
    halt: CancellationToken,
    started: Instant,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(setup: Setup, models: Models) -> Self {
        let config = Config::default();
        let tasks = Tasks::new(CancellationToken::new());
        let collaboration = setup.collaboration();
        let journal = Memory::new(collaboration.clone());
        let crew = Crew {
            journal: journal.clone(),
            hub: Arc::new(Hub::new(16)),
            models,
            remote: Remote::new(
                Outbound::new(false, Duration::from_secs(5)).expect("an outbound client"),
                config.remote.clone(),
                config.uagents.clone(),
                config.tools.clone(),
                crate::uagents::Identities::new([1; 32]),
                &tasks,
            ),
            settings: config.engine.clone(),
            shutdown: CancellationToken::new(),
        };
        let lease = Lease {
            collaboration_id: collaboration.id,
            owner: Uuid::now_v7(),
            epoch: 1,
        };
        let known = Known {
            collaboration,
            agents: setup.roster,
        };
        let (control, requests) = mpsc::channel(4);
        let halt = CancellationToken::new();
        let token = halt.clone();
        let done = tasks.spawn("runner under test", async move {
            run(&crew, lease, Some(known), requests, token).await
        });
        Self {
            journal,
            control,
            halt,
            started: Instant::now(),
            done,
        }
    }

    /// Waits for the runner to return (on the paused clock, time runs as fast as timers
    /// fire), at most a virtual hour.
    async fn finished(self) -> Arc<Memory> {
        tokio::time::timeout(Duration::from_secs(3600), self.done)
            .await
            .expect("the runner returns")
            .expect("the runner does not panic");
        self.journal
    }

    async fn post(&self, sender: &Agent, content: &str) -> Result<StoredEvent, PostRefusal> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let post = Post {
            failure: false,
            sender: sender.sender(),
            content: content.to_owned(),
            reply,
        };
        self.control
            .send(Control::Post(post))
            .await
            .map_err(|_| PostRefusal::NotRunning)?;
        answer.await.map_err(|_| PostRefusal::NotRunning)?
    }
}

fn no_models() -> Models {
    Models::new(&[], &Config::default().models).expect("no providers")
}

/// The ending stored, and when.
fn ending(journal: &Memory) -> (Instant, EndReason) {
    journal
        .events()
        .into_iter()
        .find_map(|(at, body)| match body {
            EventBody::Status { end_reason, .. } => Some((at, end_reason.expect("a reason"))),
            _ => None,
        })
        .expect("the collaboration ended")
}

#[tokio::test(start_paused = true)]
async fn a_person_who_never_answers_ends_it_when_the_inactivity_window_closes() {
    let (principal, person) = (scripted("Planner", 0), human("Ada"));
    let running = Running::start(Setup::new(vec![principal, person]), no_models());
    let started = running.started;
    let journal = running.finished().await;

    assert_eq!(
        journal.messages(),
        [("Planner".into(), "Planner says 1".into())]
    );
    let (ended_at, reason) = ending(&journal);
    assert_eq!(reason, EndReason::InactivityTimeout);
    // Ada's 30 seconds started when she was given the turn, right after the message.
    assert_eq!(ended_at - started, Duration::from_secs(30));
    assert!(journal.collaboration().summary.is_some());
}

#[tokio::test(start_paused = true)]
async fn agents_take_turns_until_the_cap_and_not_one_message_more() {
    let mut setup = Setup::new(vec![scripted("Planner", 2000), scripted("Scout", 1000)]);
    setup.message_cap = 3;
    let running = Running::start(setup, no_models());
    let started = running.started;
    let journal = running.finished().await;

    assert_eq!(
        journal.messages(),
        [
            ("Planner".into(), "Planner says 1".into()),
            ("Scout".into(), "Scout says 1".into()),
            ("Planner".into(), "Planner says 2".into()),
        ]
    );
    let (ended_at, reason) = ending(&journal);
    assert_eq!(reason, EndReason::MessageCap);
    // Each turn took its agent's delay, and nothing else: no window closed.
    assert_eq!(ended_at - started, Duration::from_millis(5000));
    assert_eq!(journal.collaboration().message_count, 3);
}

#[tokio::test(start_paused = true)]
async fn a_judge_that_finds_the_objective_met_ends_it_with_its_reason() {
    // The judge says "not yet" to the first message and "met" to the second.
    let judged = Arc::new(Mutex::new(0));
    let calls = judged.clone();
    let models = Models::answered_by(
        move |request: Value| {
            let content = match request["response_format"]["json_schema"]["name"].as_str() {
                Some("objective_verdict") => {
                    let mut judged = calls.lock().unwrap();
                    *judged += 1;
                    let met = *judged >= 2;
                    json!({"met": met, "reason": if met { "the picnic is planned" } else { "no date yet" }})
                }
                Some("collaboration_summary") => json!({
                    "headline": "Picnic planned", "summary": "They planned it.",
                    "outcome": {"decisions": ["Saturday at noon"],
                                "action_items": [{"owner": "Scout", "task": "Bring the rug"}],
                                "open_questions": []}
                }),
                other => panic!("an unexpected model call: {other:?}"),
            };
            completion(&content.to_string())
        },
        &Config::default().models,
    );
    let mut setup = Setup::new(vec![scripted("Planner", 100), scripted("Scout", 100)]);
    setup.evaluate = true;
    let journal = Running::start(setup, models).finished().await;

    assert_eq!(journal.messages().len(), 2);
    assert_eq!(*judged.lock().unwrap(), 2);
    let (_, reason) = ending(&journal);
    assert_eq!(reason, EndReason::ObjectiveMet);
    let collaboration = journal.collaboration();
    assert_eq!(
        collaboration.advisory_message.as_deref(),
        Some("The objective was judged met: the picnic is planned")
    );
    assert_eq!(collaboration.headline.as_deref(), Some("Picnic planned"));
    let outcome = collaboration.outcome.expect("an outcome");
    assert_eq!(outcome.decisions, ["Saturday at noon"]);
    assert_eq!(outcome.action_items[0].owner, "Scout");
    assert_eq!(outcome.note, None, "a model wrote it");
    // Every model call's tokens were counted: two verdicts and the summary.
    assert_eq!(collaboration.tokens_used, 3 * TOKENS_PER_CALL);
}

#[tokio::test(start_paused = true)]
async fn a_person_who_interjects_while_an_agent_is_thinking_is_stored_before_its_answer() {
    let (principal, person) = (scripted("Planner", 5000), human("Ada"));
    let mut setup = Setup::new(vec![principal, scripted("Scout", 5000), person.clone()]);
    setup.message_cap = 2;
    let running = Running::start(setup, no_models());
    // Planner thinks for 5 s; Ada speaks at 1 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = running
        .post(&person, "Sunday works for me")
        .await
        .expect("the interjection is taken");
    assert_eq!(stored.seq, 1);
    let started = running.started;
    let journal = running.finished().await;

    assert_eq!(
        journal.messages(),
        [
            ("Ada".into(), "Sunday works for me".into()),
            ("Planner".into(), "Planner says 1".into()),
        ]
    );
    let interjection = &journal.events()[0];
    assert!(matches!(
        &interjection.1,
        EventBody::Message {
            role: Role::Human,
            ..
        }
    ));
    // The planner's answer came when it was ready, and it reached the cap.
    let (ended_at, reason) = ending(&journal);
    assert_eq!(reason, EndReason::MessageCap);
    assert_eq!(ended_at - started, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_runner_that_loses_its_lease_mid_turn_writes_nothing_more() {
    let setup = Setup::new(vec![scripted("Planner", 1000), scripted("Scout", 1000)]);
    let running = Running::start(setup, no_models());
    // The first message is stored at 1 s; at 1.5 s, with Scout's turn under way, another
    // process takes the collaboration over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.journal.lose_lease();
    let journal = running.finished().await;

    assert_eq!(
        journal.messages(),
        [("Planner".into(), "Planner says 1".into())]
    );
    // No ending and no summary: they are the new owner's to write.
    assert_eq!(journal.events().len(), 1);
    assert_eq!(journal.collaboration().status, CollaborationStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn a_runner_halted_mid_turn_drops_the_turn_and_writes_nothing_more() {
    let setup = Setup::new(vec![scripted("Planner", 1000), scripted("Scout", 1000)]);
    let running = Running::start(setup, no_models());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The lease keeper saw the lease go (or the server is stopping).
    running.halt.cancel();
    let journal = running.finished().await;

    assert_eq!(
        journal.messages(),
        [("Planner".into(), "Planner says 1".into())]
    );
    assert_eq!(journal.events().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_after_the_cap_is_refused_and_stores_nothing() {
    let person = human("Ada");
    let mut setup = Setup::new(vec![scripted("Planner", 1000), person.clone()]);
    setup.message_cap = 1;
    let running = Running::start(setup, no_models());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = running.post(&person, "too late").await;
    assert!(refused.is_err(), "{refused:?}");
    let journal = running.finished().await;
    assert_eq!(journal.messages().len(), 1);
}

const TOKENS_PER_CALL: u64 = 7;

/// A chat completion saying `content`, as an OpenAI-compatible server answers.
fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": TOKENS_PER_CALL}
    })
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_content_limit_is_cut_and_says_so() {
    let long = "x".repeat(25_000);
    let talker = agent(
        "Talker",
        AgentSpec::Scripted {
            replies: vec![long],
            delay_ms: 0,
        },
    );
    let mut setup = Setup::new(vec![talker, scripted("Scout", 0)]);
    setup.message_cap = 1;
    let journal = Running::start(setup, no_models()).finished().await;
    let (_, content) = journal.messages().remove(0);
    let limit = Config::default().engine.max_content_chars;
    assert_eq!(content.chars().count(), limit);
    assert!(
        content.ends_with("[Cut by Skein: the message was 25000 characters; the limit is 20000.]"),
        "{}",
        &content[content.len() - 100..]
    );
    assert!(content.starts_with("xxxx"));
}

/// Choosing a speaker is a model call between messages: what it spends is counted at once
/// and stored with the message it chose, in the same write, not in a write of its own.
/// Only what no message follows (here the summary) is written alone.
#[tokio::test(start_paused = true)]
async fn what_choosing_a_speaker_spends_is_stored_with_the_message_it_chose() {
    let chosen = Arc::new(Mutex::new(["Bob", "Ann"].into_iter().collect::<Vec<_>>()));
    let models = Models::answered_by(
        move |request: Value| {
            let content = match request["response_format"]["json_schema"]["name"].as_str() {
                Some("speaker_selection") => json!({"speaker": chosen.lock().unwrap().pop()}),
                Some("collaboration_summary") => json!({
                    "headline": "h", "summary": "s",
                    "outcome": {"decisions": [], "action_items": [], "open_questions": []}
                }),
                other => panic!("an unexpected model call: {other:?}"),
            };
            completion(&content.to_string())
        },
        &Config::default().models,
    );
    let mut setup = Setup::new(vec![
        scripted("Host", 10),
        scripted("Ann", 10),
        scripted("Bob", 10),
    ]);
    setup.strategy = Strategy::Manager;
    setup.message_cap = 3;
    let journal = Running::start(setup, models).finished().await;

    let said: Vec<String> = journal.messages().into_iter().map(|(who, _)| who).collect();
    assert_eq!(
        said,
        ["Host", "Ann", "Bob"],
        "the manager, then as the selector chose"
    );
    let book = journal.book();
    // Two speakers chosen, and the summary.
    assert_eq!(book.collaboration.tokens_used, 3 * TOKENS_PER_CALL);
    assert_eq!(book.alone, [TOKENS_PER_CALL], "the summary's, alone");
}

/// The engine itself (this runner, with its stall watch, its synopsis and its selector) run
/// 300 times against a selector model that answers at random: an invalid answer, a name
/// nobody has, the speaker who just spoke, the same pair again and again, or a fair choice;
/// among agents who repeat themselves a little or a lot. None runs past its cap, none fails
/// to end, each ends at its cap or as stalled (and then only after a nudge).
#[tokio::test(start_paused = true)]
async fn a_selector_answering_at_random_never_keeps_a_collaboration_from_ending() {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    let seeds = Arc::new(Mutex::new(StdRng::seed_from_u64(20261203)));
    let (mut capped, mut stalled) = (0, 0);
    for run in 0..300u32 {
        let mut rng = StdRng::seed_from_u64(u64::from(run));
        let names = ["Host", "Ann", "Bob", "Cy"];
        let members = rng.random_range(3..=4);
        let roster: Vec<Agent> = names[..members]
            .iter()
            .map(|name| {
                // From one line said over and over to many different ones.
                let lines = if rng.random_bool(0.7) {
                    1
                } else {
                    rng.random_range(2..=12)
                };
                let replies = (0..lines)
                    .map(|n| format!("{name} on point {n}: {}", "detail ".repeat(n % 4)))
                    .collect();
                agent(
                    name,
                    AgentSpec::Scripted {
                        replies,
                        delay_ms: rng.random_range(0..50),
                    },
                )
            })
            .collect();
        let chooser = seeds.clone();
        let models = Models::answered_by(
            move |request: Value| {
                let content = match request["response_format"]["json_schema"]["name"].as_str() {
                    Some("speaker_selection") => {
                        let mut rng = chooser.lock().unwrap();
                        match rng.random_range(0..6) {
                            0 => "not json at all".to_owned(),
                            1 => json!({"speaker": "Nobody"}).to_string(),
                            2 => json!({"nonsense": true}).to_string(),
                            // The same pair, whatever happened.
                            3 | 4 => {
                                json!({"speaker": if rng.random_bool(0.5) { "Ann" } else { "Bob" }})
                                    .to_string()
                            }
                            _ => json!({"speaker": names[rng.random_range(0..4)]}).to_string(),
                        }
                    }
                    Some("conversation_synopsis") => {
                        json!({"synopsis": "So far, so good."}).to_string()
                    }
                    Some("collaboration_summary") => json!({
                        "headline": "h", "summary": "s",
                        "outcome": {"decisions": [], "action_items": [], "open_questions": []}
                    })
                    .to_string(),
                    other => panic!("an unexpected model call: {other:?}"),
                };
                completion(&content)
            },
            &Config::default().models,
        );
        let mut setup = Setup::new(roster);
        setup.strategy = Strategy::Manager;
        setup.message_cap = rng.random_range(1..=40).max(rng.random_range(1..=40));
        let cap = setup.message_cap;
        let journal = Running::start(setup, models).finished().await;

        let said = journal.messages().len() as u32;
        assert!(
            said <= cap,
            "run {run}: {said} messages past a cap of {cap}"
        );
        let (_, reason) = ending(&journal);
        let nudged = journal
            .events()
            .iter()
            .any(|(_, body)| matches!(body, EventBody::Nudge { .. }));
        match reason {
            EndReason::MessageCap => {
                assert_eq!(said, cap, "run {run}");
                capped += 1;
            }
            EndReason::Stalled => {
                assert!(nudged, "run {run}: stalled without a nudge first");
                stalled += 1;
            }
            other => panic!("run {run} ended as {other:?}"),
        }
    }
    // Both kinds of ending were exercised.
    assert!(
        capped > 20 && stalled > 20,
        "{capped} capped, {stalled} stalled"
    );
}
