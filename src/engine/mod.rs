//! The orchestration engine: one runner task per running collaboration.
//!
//! [`Engine`] is the handle the API holds. It starts runners, forwards stop, delete and post
//! requests to them (through a [`Relay`] when another process runs the collaboration),
//! resumes what was running when the process starts, and on shutdown cancels every runner
//! and waits for it: runners are started under a `TaskTracker`, never as detached tasks.
//!
//! A runner runs under a lease ([`crate::store::Lease`]): the one writer of its channel,
//! across every process that serves the database. The engine renews its leases, claims
//! expired ones (a process died: its collaborations resume here from their stored messages)
//! and halts a runner whose lease it lost; the database refuses that runner's writes anyway.

mod context;
mod judge;
pub mod podcast;
mod runner;
mod speaker;
mod summary;
mod wav;

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use dashmap::DashMap;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    agents::{ModelRef, Models, Remote},
    config::EngineSettings,
    domain::{Agent, AgentSpec, Collaboration, EndReason, Ending, Sender, StoredEvent},
    live::Hub,
    store::{Claim, Lease, LeaseTo, Store},
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

#[derive(Debug)]
struct Post {
    sender: Sender,
    content: String,
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

/// What one process asks of the process that runs a collaboration: the requests a local
/// runner takes through its control channel, carried by a [`Relay`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Stop {
        collaboration_id: Uuid,
    },
    Halt {
        collaboration_id: Uuid,
    },
    Post {
        collaboration_id: Uuid,
        sender: Sender,
        content: String,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Stopped,
    NotRunning,
    Halted,
    Posted {
        seq: i64,
        frame: String,
    },
    Refused {
        refusal: PostRefusal,
    },
    /// This process does not run it (any more): the asker acts on the store itself.
    NotHere,
}

/// Carries a [`Request`] to another process (over NATS when several processes serve one
/// database). `None` when nobody answered in time.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    async fn forward(&self, owner: Uuid, request: &Request) -> Option<Reply>;
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    models: Models,
    remote: Remote,
    settings: EngineSettings,
    /// This process, as the owner of its leases.
    owner: Uuid,
    relay: OnceLock<Arc<dyn Relay>>,
    runners: DashMap<Uuid, Runner>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// A runner in this process.
struct Runner {
    control: mpsc::Sender<Control>,
    lease: Lease,
    claimed_at: Instant,
    /// Fires on shutdown, or when the lease is lost: the runner writes nothing more.
    halt: CancellationToken,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        models: Models,
        remote: Remote,
        settings: EngineSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                hub,
                models,
                remote,
                settings,
                owner: Uuid::new_v4(),
                relay: OnceLock::new(),
                runners: DashMap::new(),
                tracker: TaskTracker::new(),
                shutdown,
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

    /// The lease a collaboration created here is stored with: held by this process, so
    /// that it runs it from the start (see [`Engine::launch_created`]).
    pub fn lease_to(&self) -> LeaseTo {
        LeaseTo {
            owner: self.inner.owner,
            ttl: self.inner.settings.lease_ttl,
        }
    }

    /// Takes up what needs a runner now, then keeps leases renewed and claims expired ones
    /// until shutdown. `take_all` also takes live leases: for a process that is the only one
    /// (SQLite), whose predecessor's leases would otherwise stall it until they expired.
    /// Returns how many collaborations were taken up at once.
    pub async fn recover(&self, take_all: bool) -> anyhow::Result<usize> {
        let which = if take_all {
            Claim::All
        } else {
            Claim::Expired { limit: CLAIM_BATCH }
        };
        let leases = self.claim(which).await?;
        let count = leases.len();
        leases.into_iter().for_each(|lease| self.launch(lease));
        tokio::spawn(self.clone().keep_leases());
        Ok(count)
    }

    /// Ends a running collaboration with `cancelled`; returns once the status is stored.
    pub async fn stop(&self, collaboration: &Collaboration) -> anyhow::Result<StopOutcome> {
        let id = collaboration.id;
        if let Some(control) = self.control(id) {
            let (ack, done) = oneshot::channel();
            if control.send(Control::Stop(ack)).await.is_err() || done.await.is_err() {
                // The runner ended on its own in the meantime.
                return Ok(StopOutcome::NotRunning);
            }
            return Ok(StopOutcome::Stopped);
        }
        match self
            .forward(
                id,
                Request::Stop {
                    collaboration_id: id,
                },
            )
            .await
        {
            Some(Reply::Stopped) => Ok(StopOutcome::Stopped),
            Some(Reply::NotRunning) => Ok(StopOutcome::NotRunning),
            _ => self.stop_here(collaboration).await,
        }
    }

    /// Halts the runner, wherever it is, so nothing more is written; the caller then deletes.
    /// A runner that cannot be reached finds its next write refused once the rows are gone.
    pub async fn halt(&self, id: Uuid) {
        if let Some(control) = self.control(id) {
            let (ack, done) = oneshot::channel();
            if control.send(Control::Delete(ack)).await.is_ok() {
                let _ = done.await;
            }
            return;
        }
        self.forward(
            id,
            Request::Halt {
                collaboration_id: id,
            },
        )
        .await;
    }

    /// A human participant of a running collaboration speaks: as their turn when it is
    /// theirs, else as an interjection where the collaboration allows them. The caller has
    /// checked that `sender` is a human participant.
    pub async fn post(
        &self,
        collaboration_id: Uuid,
        sender: Sender,
        content: String,
    ) -> Result<StoredEvent, PostRefusal> {
        let Some(control) = self.control(collaboration_id) else {
            let request = Request::Post {
                collaboration_id,
                sender,
                content,
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
            reply,
        };
        control
            .send(Control::Post(post))
            .await
            .map_err(|_| PostRefusal::NotRunning)?;
        answer.await.map_err(|_| PostRefusal::NotRunning)?
    }

    /// Answers a request another process relayed here, for a runner of this one.
    pub async fn answer(&self, request: Request) -> Reply {
        match request {
            Request::Stop { collaboration_id } => {
                let Some(control) = self.control(collaboration_id) else {
                    return Reply::NotHere;
                };
                let (ack, done) = oneshot::channel();
                if control.send(Control::Stop(ack)).await.is_err() || done.await.is_err() {
                    return Reply::NotRunning;
                }
                Reply::Stopped
            }
            Request::Halt { collaboration_id } => {
                if self.control(collaboration_id).is_none() {
                    return Reply::NotHere;
                }
                self.halt(collaboration_id).await;
                Reply::Halted
            }
            Request::Post {
                collaboration_id,
                sender,
                content,
            } => {
                if self.control(collaboration_id).is_none() {
                    return Reply::NotHere;
                }
                match self.post(collaboration_id, sender, content).await {
                    Ok(event) => Reply::Posted {
                        seq: event.seq,
                        frame: event.frame,
                    },
                    Err(refusal) => Reply::Refused { refusal },
                }
            }
        }
    }

    pub fn models(&self) -> &Models {
        &self.inner.models
    }

    /// Where a collaboration's podcast file is.
    pub fn podcast_file(&self, id: Uuid) -> std::path::PathBuf {
        podcast::file(&self.inner.settings.podcast.dir, id)
    }

    /// Cancels every runner, waits until all have returned, and gives up this process's
    /// leases so that another process (or the next start) takes over at once. Running
    /// collaborations stay `running` in the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.remote.cards.close().await;
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

    async fn claim(&self, which: Claim) -> anyhow::Result<Vec<Lease>> {
        let inner = &self.inner;
        Ok(inner
            .store
            .claim_leases(inner.owner, inner.settings.lease_ttl, which)
            .await?)
    }

    /// Starts the runner of a collaboration just created here under `lease`, from the
    /// collaboration as stored and its agents, which it then need not read back.
    pub fn launch_created(&self, lease: Lease, collaboration: Collaboration, agents: Vec<Agent>) {
        self.spawn_runner(
            lease,
            Some(runner::Known {
                collaboration,
                agents,
            }),
        );
    }

    /// Starts the runner of a collaboration this process holds the lease of.
    fn launch(&self, lease: Lease) {
        self.spawn_runner(lease, None);
    }

    fn spawn_runner(&self, lease: Lease, known: Option<runner::Known>) {
        let id = lease.collaboration_id;
        let (tx, rx) = mpsc::channel(4);
        let halt = self.inner.shutdown.child_token();
        // A second launch of the same collaboration (a claim racing a create) is a no-op.
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
        self.inner.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(runner::run(&inner, lease, known, rx, halt.clone()))
                .catch_unwind()
                .await;
            if outcome.is_err() {
                // Boxed like the runner's phases (see `runner::run`): a task is as large as
                // its largest future, and this one, an ending and a summary written after a
                // bug, made every runner's task 16 KiB.
                Box::pin(runner::panicked(&inner, lease)).await;
            }
            // Done, halted or lost: whatever is left (a summary after a store outage, say)
            // is claimed again by the lease scan, here or elsewhere.
            if let Err(error) = inner.store.release_lease(&lease).await {
                tracing::warn!(collaboration = %id, error = format!("{error:#}"), "could not release a lease; it expires");
            }
            inner.runners.remove_if(&id, |_, runner| runner.lease == lease);
        });
    }

    /// Sends `request` to the process that holds the collaboration's lease, if that is
    /// another one and a relay is set. `None` when there is nobody to ask or no answer.
    async fn forward(&self, id: Uuid, request: Request) -> Option<Reply> {
        let relay = self.inner.relay.get()?;
        let holder = match self.inner.store.lease_holder(id).await {
            Ok(holder) => holder?,
            Err(error) => {
                tracing::warn!(collaboration = %id, error = format!("{error:#}"), "cannot read the lease holder");
                return None;
            }
        };
        if holder == self.inner.owner {
            return None;
        }
        match relay.forward(holder, &request).await {
            Some(Reply::NotHere) | None => None,
            reply => reply,
        }
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
        };
        let lease = self.claim(Claim::One(collaboration.id)).await?.pop();
        let finished = self
            .inner
            .store
            .finish_collaboration(collaboration.id, lease.as_ref(), &ending)
            .await?;
        if let Some(event) = &finished {
            self.inner.hub.end_turns(collaboration.channel_id);
            self.inner
                .hub
                .publish_event(collaboration.channel_id, event);
            crate::telemetry::collaboration_ended(
                ending.reason.status().name(),
                ending.reason.name(),
            );
        }
        if let Some(lease) = lease {
            self.launch(lease);
        }
        Ok(match finished {
            Some(_) => StopOutcome::Stopped,
            None => StopOutcome::NotRunning,
        })
    }

    /// Renews this process's leases and claims expired ones until shutdown. A runner whose
    /// lease was not renewed lost it: it is halted before it writes again (and the database
    /// would refuse it anyway). A lease held with no runner (one that gave up on a store
    /// outage) gets a runner again.
    async fn keep_leases(self) {
        let ttl = self.inner.settings.lease_ttl;
        let mut renew = tokio::time::interval(ttl / 3);
        let mut scan = tokio::time::interval((ttl / 3).min(Duration::from_secs(1)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = renew.tick() => {
                    let began = Instant::now();
                    match self.inner.store.renew_leases(self.inner.owner, ttl).await {
                        Ok(held) => {
                            renewed_at = began;
                            self.reconcile(&held, began);
                        }
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "renewing leases failed");
                            if began.duration_since(renewed_at) >= ttl {
                                // They may have been claimed elsewhere by now.
                                self.inner.runners.iter().for_each(|runner| runner.halt.cancel());
                            }
                        }
                    }
                }
                _ = scan.tick() => match self.claim(Claim::Expired { limit: CLAIM_BATCH }).await {
                    Ok(leases) => {
                        if !leases.is_empty() {
                            tracing::info!(count = leases.len(), "took over collaborations");
                        }
                        leases.into_iter().for_each(|lease| self.launch(lease));
                    }
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "claiming leases failed"),
                },
            }
        }
    }

    fn reconcile(&self, held: &[Lease], renewal_began: Instant) {
        for runner in self.inner.runners.iter() {
            let still_held = held.contains(&runner.lease);
            if !still_held && runner.claimed_at < renewal_began {
                tracing::warn!(collaboration = %runner.lease.collaboration_id, "lost the lease; halting the runner");
                runner.halt.cancel();
            }
        }
        for lease in held {
            if !self.inner.runners.contains_key(&lease.collaboration_id) {
                self.launch(*lease);
            }
        }
    }
}

/// How many expired leases one scan takes: a process taking over from a dead one spreads
/// the work over scans instead of starting everything in one burst.
const CLAIM_BATCH: u32 = 50;

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
