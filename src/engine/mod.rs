//! The orchestration engine: one runner task per running collaboration.
//!
//! [`Engine`] is the handle the API holds, and it owns every sequence in a collaboration's
//! life, so that a handler only parses, calls one method and renders:
//! - **create**: resolve the roster, store the collaboration with its lease, start its
//!   runner from what is at hand;
//! - **stop**: the runner stores the end (wherever it runs), or, with none to ask, this
//!   process does under the lease it can take;
//! - **delete**: the runner is told to write nothing more, the rows go, the channel's
//!   viewers are told, the podcast file is removed;
//! - **post**: a person speaks, as their turn or an interjection.
//!
//! The parts: [`runner`] is one collaboration's life; [`leases`] keeps this process's hold
//! on the collaborations it runs; [`relay`] carries requests to the process that runs one;
//! [`journal`] is what a runner reads and writes of the store. Runners and the lease keeper
//! run on the engine's own [`Tasks`], which shutdown cancels and waits for before the
//! leases are handed over.

mod context;
mod journal;
mod judge;
mod leases;
pub mod podcast;
mod relay;
mod runner;
pub(crate) use runner::within_limit;
mod speaker;
mod stall;
mod summary;
mod synopsis;
mod wav;

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, OnceLock},
};

use dashmap::DashMap;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use relay::{Relay, Reply, Request};

use self::journal::{Journal, Stored};
use crate::{
    agents::{ModelRef, Models, Remote},
    config::EngineSettings,
    domain::{
        Agent, AgentRef, AgentSpec, ApiKey, Collaboration, EndReason, Ending, FieldError,
        NewCollaboration, Sender, StoredEvent, ValidCollaboration,
    },
    live::Hub,
    store::{Claim, Lease, LeaseTo, Store, StoreError},
    tasks::Tasks,
};

/// Requests a runner answers once it has acted on them.
#[derive(Debug)]
enum Control {
    /// End now with `cancelled`; acknowledged once the status is stored.
    Stop(oneshot::Sender<()>),
    /// Stop without writing anything: the rows are about to be deleted.
    Delete(oneshot::Sender<()>),
    /// A human participant speaks.
    Post(Post),
}

impl Control {
    /// Asks the runner to stop: true once it has stored the end, false if it had ended.
    async fn stop(control: &mpsc::Sender<Control>) -> bool {
        let (ack, done) = oneshot::channel();
        control.send(Control::Stop(ack)).await.is_ok() && done.await.is_ok()
    }

    /// Tells the runner its rows are going: it returns once the runner writes no more.
    async fn delete(control: &mpsc::Sender<Control>) {
        let (ack, done) = oneshot::channel();
        if control.send(Control::Delete(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

#[derive(Debug)]
struct Post {
    sender: Sender,
    content: String,
    /// The sender reports that it cannot take its turn, `content` saying why (a uAgent's
    /// `ErrorMessage`): the turn fails and nothing is stored. Its reply is then dropped.
    failure: bool,
    /// The stored message, or why it was not taken.
    reply: oneshot::Sender<Result<StoredEvent, PostRefusal>>,
}

/// Why a person's message was not taken.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostRefusal {
    #[error("the collaboration is not running")]
    NotRunning,
    #[error("it is not your turn, and this collaboration does not allow interjections")]
    NotYourTurn,
    #[error("the collaboration has reached its message cap")]
    CapReached,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    /// It had already ended.
    NotRunning,
}

/// Why a collaboration was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The roster or the webhook URL does not hold up: each problem, by field.
    #[error("the collaboration is invalid")]
    Invalid(Vec<FieldError>),
    /// A limit (the key's running collaborations), or the store failing.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What runners work with.
pub(crate) struct Crew {
    journal: Arc<dyn Journal>,
    hub: Arc<Hub>,
    models: Models,
    remote: Remote,
    settings: EngineSettings,
    /// Fires on shutdown: every runner writes nothing more and returns.
    shutdown: CancellationToken,
}

struct Inner {
    crew: Crew,
    store: Arc<dyn Store>,
    /// This process, as the owner of its leases.
    owner: Uuid,
    /// How many collaborations one account may have running at once.
    max_running_per_account: u32,
    relay: OnceLock<Arc<dyn Relay>>,
    runners: DashMap<Uuid, Runner>,
    /// The runners and the lease keeper.
    tasks: Tasks,
}

/// A runner in this process.
struct Runner {
    control: mpsc::Sender<Control>,
    lease: Lease,
    claimed_at: Instant,
    /// Fires on shutdown, or when the lease is lost: the runner writes nothing more.
    halt: CancellationToken,
}

/// Everything the engine is made of.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub models: Models,
    pub remote: Remote,
    pub settings: EngineSettings,
    pub max_running_per_account: u32,
}

impl Engine {
    /// An engine whose runners run on a group of `tasks`, and stop when they do.
    pub fn new(parts: Parts, tasks: &Tasks) -> Self {
        let Parts {
            store,
            hub,
            models,
            remote,
            settings,
            max_running_per_account,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                crew: Crew {
                    journal: Arc::new(Stored(store.clone())),
                    hub,
                    models,
                    remote,
                    settings,
                    shutdown: tasks.stopping().child_token(),
                },
                store,
                owner: Uuid::new_v4(),
                max_running_per_account,
                relay: OnceLock::new(),
                runners: DashMap::new(),
                tasks: tasks.group(),
            }),
        }
    }

    /// The id this process holds its leases under.
    pub fn owner(&self) -> Uuid {
        self.inner.owner
    }

    /// Lets requests for collaborations other processes run reach them. Set once, at start.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.inner.relay.set(relay);
    }

    pub fn models(&self) -> &Models {
        &self.inner.crew.models
    }

    /// How agents elsewhere are reached, and who Skein speaks to uAgents as.
    pub fn remote(&self) -> &Remote {
        &self.inner.crew.remote
    }

    /// Where a collaboration's podcast is kept.
    pub fn podcast_file(&self, id: Uuid) -> std::path::PathBuf {
        podcast::file(&self.inner.crew.settings.podcast.dir, id)
    }

    /// Creates a collaboration for `key`'s account and starts it here. The roster's
    /// references must name agents of the account, each once; a webhook URL must pass the
    /// outbound guard, with the account's webhooks set up to sign its deliveries.
    pub async fn create(
        &self,
        key: &ApiKey,
        request: ValidCollaboration,
    ) -> Result<Collaboration, CreateError> {
        let (agents, mut errors) = self.roster(key.account_id, &request).await?;
        if let Some(url) = &request.webhook_url
            && let Some(problem) = self.webhook_problem(key.account_id, url).await?
        {
            errors.push(FieldError::new("webhook_url", problem));
        }
        if !errors.is_empty() {
            return Err(CreateError::Invalid(errors));
        }
        let now = crate::domain::now();
        let new = NewCollaboration {
            id: Uuid::now_v7(),
            account_id: key.account_id,
            channel_id: Uuid::now_v7(),
            objective: request.objective,
            principal: agents[0].id,
            participants: agents[1..].iter().map(|agent| agent.id).collect(),
            message_cap: request.message_cap,
            timeout_window: request.timeout_window,
            evaluate_objective_completion: request.evaluate_objective_completion,
            source: request.source,
            strategy: request.strategy,
            webhook_url: request.webhook_url,
            token_budget: request.token_budget,
            cost_budget_micros: request.cost_budget_micros,
            podcast: request.podcast,
            allow_interjections: request.allow_interjections,
            fork: request.fork,
            team_id: request.team_id,
            context_id: request.context_id,
            created_by: key.id,
            created_at: now,
        };
        let lease_to = LeaseTo {
            owner: self.inner.owner,
            ttl: self.inner.crew.settings.lease_ttl,
        };
        let lease = self
            .inner
            .store
            .insert_collaboration(&new, self.inner.max_running_per_account, Some(lease_to))
            .await?
            .expect("a collaboration stored with a lease comes back with it");
        self.inner.crew.hub.feed().changed(new.account_id);
        // As stored: the store tests hold the two the same.
        let created = new.started(&agents);
        // Run here at once, from what is at hand. Should this future be dropped before
        // (the client went away), the next lease renewal finds the lease held with no
        // runner and starts one, which reads the collaboration from the store. A fork's
        // runner reads it from the store at once: its channel starts with what it copied.
        let known = new.fork.is_none().then(|| runner::Known {
            collaboration: created.clone(),
            agents,
        });
        self.launch(lease, known);
        crate::telemetry::collaboration_started();
        tracing::info!(collaboration = %new.id, "collaboration created");
        Ok(created)
    }

    /// The roster's agents, principal first, looked up in one query; and what is wrong with
    /// it, by field.
    pub async fn roster(
        &self,
        account_id: Uuid,
        request: &ValidCollaboration,
    ) -> Result<(Vec<Agent>, Vec<FieldError>), StoreError> {
        let named: Vec<(String, &AgentRef)> =
            std::iter::once(("principal".to_owned(), &request.principal))
                .chain(
                    request
                        .participants
                        .iter()
                        .enumerate()
                        .map(|(i, reference)| (format!("participants[{i}]"), reference)),
                )
                .collect();
        let references: Vec<AgentRef> = named.iter().map(|(_, r)| (*r).clone()).collect();
        let found = self.inner.store.get_agents(account_id, &references).await?;
        let mut agents: Vec<Agent> = Vec::with_capacity(named.len());
        let mut errors = Vec::new();
        let (mut principal, mut participants) = (None, Vec::new());
        for (place, (field, reference)) in named.into_iter().enumerate() {
            let Some(agent) = found.iter().find(|agent| agent.is(reference)) else {
                errors.push(FieldError::new(
                    field,
                    format!("no agent `{reference}` exists"),
                ));
                continue;
            };
            if place == 0 {
                principal = Some(agent.id);
            } else if principal == Some(agent.id) {
                errors.push(FieldError::new(
                    field,
                    "the principal cannot also be a participant",
                ));
                continue;
            } else if participants.contains(&agent.id) {
                errors.push(FieldError::new(field, "this agent is listed twice"));
                continue;
            } else {
                participants.push(agent.id);
            }
            agents.push(agent.clone());
        }
        Ok((agents, errors))
    }

    /// Why a collaboration's webhook URL cannot be used, if it cannot.
    async fn webhook_problem(
        &self,
        account_id: Uuid,
        url: &str,
    ) -> Result<Option<String>, StoreError> {
        if let Err(error) = self.inner.crew.remote.outbound.check(url).await {
            return Ok(Some(error.to_string()));
        }
        if self
            .inner
            .store
            .webhook_settings(account_id)
            .await?
            .is_none()
        {
            // Deliveries are signed with the account's secret, which the user must have seen.
            return Ok(Some(
                "set webhooks up first (PUT /api/v1/webhooks), to get the secret deliveries are signed with"
                    .into(),
            ));
        }
        Ok(None)
    }

    /// Ends a running collaboration with `cancelled`; returns once the status is stored.
    pub async fn stop(&self, collaboration: &Collaboration) -> anyhow::Result<StopOutcome> {
        let id = collaboration.id;
        if let Some(control) = self.control(id) {
            return Ok(match Control::stop(&control).await {
                true => StopOutcome::Stopped,
                // The runner ended on its own in the meantime.
                false => StopOutcome::NotRunning,
            });
        }
        let request = Request::Stop {
            collaboration_id: id,
        };
        match self.forward(id, request).await {
            Some(Reply::Stopped) => Ok(StopOutcome::Stopped),
            Some(Reply::NotRunning) => Ok(StopOutcome::NotRunning),
            _ => self.stop_here(collaboration).await,
        }
    }

    /// Deletes a collaboration of `account_id` with its channel: its runner, wherever it
    /// is, writes nothing more, then the rows go, the channel's viewers are told, and its
    /// podcast file is removed. False when there was no such collaboration. A runner that
    /// cannot be reached finds its next write refused once the rows are gone.
    pub async fn delete(
        &self,
        account_id: Uuid,
        collaboration: &Collaboration,
    ) -> Result<bool, StoreError> {
        let id = collaboration.id;
        match self.control(id) {
            Some(control) => Control::delete(&control).await,
            None => {
                let request = Request::Delete {
                    collaboration_id: id,
                };
                self.forward(id, request).await;
            }
        }
        if !self
            .inner
            .store
            .delete_collaboration(account_id, id)
            .await?
        {
            return Ok(false);
        }
        self.inner.crew.hub.close(collaboration.channel_id);
        self.inner.crew.hub.feed().changed(account_id);
        match tokio::fs::remove_file(self.podcast_file(id)).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, "deleting a podcast file failed"),
        }
        tracing::info!(collaboration = %id, "collaboration deleted");
        Ok(true)
    }

    /// A member who answers in their own time (a person, a uAgent) speaks in a running
    /// collaboration: as their turn when it is theirs, else, for a person, as an
    /// interjection where the collaboration allows them. The caller has checked that
    /// `sender` is such a member of it.
    pub async fn post(
        &self,
        collaboration_id: Uuid,
        sender: Sender,
        content: String,
    ) -> Result<StoredEvent, PostRefusal> {
        self.deliver(collaboration_id, sender, content, false).await
    }

    /// A member whose turn it is reports that it cannot take it: the collaboration ends
    /// with `why` as its error. Refused when it is not their turn.
    pub async fn fail_turn(
        &self,
        collaboration_id: Uuid,
        sender: Sender,
        why: String,
    ) -> Result<(), PostRefusal> {
        match self.deliver(collaboration_id, sender, why, true).await {
            Err(refusal @ (PostRefusal::NotYourTurn | PostRefusal::CapReached)) => Err(refusal),
            _ => Ok(()),
        }
    }

    async fn deliver(
        &self,
        collaboration_id: Uuid,
        sender: Sender,
        content: String,
        failure: bool,
    ) -> Result<StoredEvent, PostRefusal> {
        let Some(control) = self.control(collaboration_id) else {
            let request = Request::Post {
                collaboration_id,
                sender,
                content,
                failure,
            };
            return match self.forward(collaboration_id, request).await {
                Some(Reply::Posted { seq, frame }) => Ok(StoredEvent { seq, frame }),
                Some(Reply::Refused { refusal }) => Err(refusal),
                _ => Err(PostRefusal::NotRunning),
            };
        };
        let (reply, answer) = oneshot::channel();
        let post = Post {
            sender,
            content,
            failure,
            reply,
        };
        control
            .send(Control::Post(post))
            .await
            .map_err(|_| PostRefusal::NotRunning)?;
        answer.await.map_err(|_| PostRefusal::NotRunning)?
    }

    /// Cancels every runner and the lease keeper, waits until all have returned, and gives
    /// up this process's leases so that another process (or the next start) takes over at
    /// once. Running collaborations stay `running` in the store.
    pub async fn shutdown(&self) {
        self.inner.crew.shutdown.cancel();
        self.inner.tasks.wait().await;
        self.inner.crew.remote.tasks.wait().await;
        match self.inner.store.release_leases(self.inner.owner).await {
            Ok(released) if released > 0 => tracing::info!(released, "handed over leases"),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not release leases; they expire"
                )
            }
        }
    }

    fn control(&self, id: Uuid) -> Option<mpsc::Sender<Control>> {
        self.inner
            .runners
            .get(&id)
            .map(|entry| entry.value().control.clone())
    }

    /// Starts the runner of a collaboration this process holds the lease of: from what is
    /// `known` of it (it was just created here), else from the store. A second launch of
    /// the same collaboration (a claim racing a create) does nothing, and so does a launch
    /// once shutdown has begun.
    fn launch(&self, lease: Lease, known: Option<runner::Known>) {
        let id = lease.collaboration_id;
        let crew = &self.inner.crew;
        if crew.shutdown.is_cancelled() {
            return;
        }
        let (tx, rx) = mpsc::channel(4);
        let halt = crew.shutdown.child_token();
        match self.inner.runners.entry(id) {
            dashmap::Entry::Vacant(entry) => entry.insert(Runner {
                control: tx,
                lease,
                claimed_at: Instant::now(),
                halt: halt.clone(),
            }),
            dashmap::Entry::Occupied(_) => return,
        };
        let inner = self.inner.clone();
        self.inner.tasks.spawn("runner", async move {
            let crew = &inner.crew;
            let outcome = AssertUnwindSafe(runner::run(crew, lease, known, rx, halt))
                .catch_unwind()
                .await;
            if outcome.is_err() {
                // Boxed like the runner's phases (see `runner::run`): a task is as large as
                // its largest future, and this one, an ending and a summary written after a
                // bug, made every runner's task 16 KiB.
                Box::pin(runner::panicked(crew, lease)).await;
            }
            // Done, halted or lost: whatever is left (a summary after a store outage, say)
            // is claimed again by the lease scan, here or elsewhere.
            if let Err(error) = inner.store.release_lease(&lease).await {
                tracing::warn!(collaboration = %id, error = format!("{error:#}"), "could not release a lease; it expires");
            }
            inner.runners.remove_if(&id, |_, runner| runner.lease == lease);
        });
    }

    /// Stops a collaboration no runner could be asked to stop: with its lease when it can be
    /// had (then a runner here writes the summary), else without (the holder's next write
    /// finds it ended, and the lease scan has it summarized).
    async fn stop_here(&self, collaboration: &Collaboration) -> anyhow::Result<StopOutcome> {
        let ending = Ending {
            reason: EndReason::Cancelled,
            advisory_message: None,
            error_message: None,
            ended_at: crate::domain::now(),
            verdict_seq: None,
            failed_agent: None,
        };
        let lease = self.claim(Claim::One(collaboration.id)).await?.pop();
        let finished = self
            .inner
            .store
            .finish_collaboration(collaboration.id, lease.as_ref(), &ending)
            .await?;
        if let Some(event) = &finished {
            let hub = &self.inner.crew.hub;
            hub.end_turns(collaboration.channel_id);
            hub.publish_event(collaboration.channel_id, event);
            hub.feed().changed(collaboration.account_id);
            crate::telemetry::collaboration_ended(
                ending.reason.status().name(),
                ending.reason.name(),
            );
        }
        if let Some(lease) = lease {
            self.launch(lease, None);
        }
        Ok(match finished {
            Some(_) => StopOutcome::Stopped,
            None => StopOutcome::NotRunning,
        })
    }
}

/// The model that judges, selects and summarizes for a collaboration: the principal's when
/// it is an `llm` agent, else the `default` provider's configured model, else none.
fn auxiliary_model(models: &Models, principal: Option<&AgentSpec>) -> Option<ModelRef> {
    if let Some(AgentSpec::Llm {
        provider, model, ..
    }) = principal
        && models.has(provider)
    {
        return Some(ModelRef {
            provider: provider.clone(),
            model: model.clone(),
        });
    }
    let model = models.default_model("default")?;
    Some(ModelRef {
        provider: "default".into(),
        model,
    })
}
