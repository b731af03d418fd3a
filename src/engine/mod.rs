//! The orchestration engine: one runner task per running collaboration.
//!
//! [`Engine`] is the handle the API holds. It starts runners, forwards stop and delete
//! requests to them, resumes what was running when the process starts, and on shutdown
//! cancels every runner and waits for it: runners are started under a `TaskTracker`, never
//! as detached tasks. A runner is the only writer of its channel while it runs.

mod context;
mod judge;
pub mod podcast;
mod runner;
mod speaker;
mod summary;
mod wav;

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    agents::{ModelRef, Models, Remote},
    config::EngineSettings,
    domain::{AgentSpec, Collaboration, EndReason, Ending, Sender, StoredEvent},
    live::Hub,
    store::Store,
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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
    runners: DashMap<Uuid, mpsc::Sender<Control>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
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
                runners: DashMap::new(),
                tracker: TaskTracker::new(),
                shutdown,
            }),
        }
    }

    /// Starts the runner of a stored, running collaboration.
    pub fn start(&self, id: Uuid) {
        let (tx, rx) = mpsc::channel(4);
        // A second start of the same collaboration (recovery racing a create) is a no-op.
        if let dashmap::Entry::Vacant(entry) = self.inner.runners.entry(id) {
            entry.insert(tx);
        } else {
            return;
        }
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(runner::run(&inner, id, rx)).catch_unwind().await;
            inner.runners.remove(&id);
            if outcome.is_err() {
                // A bug, not an agent's failure; end it visibly rather than leave it "running"
                // with nobody driving it.
                tracing::error!(collaboration = %id, "the runner panicked");
                let ending = Ending {
                    reason: EndReason::Error,
                    advisory_message: None,
                    error_message: Some("Skein hit an internal error running this collaboration; see the server log.".into()),
                    ended_at: chrono::Utc::now(),
                };
                if let Ok(Some(event)) = inner.store.finish_collaboration(id, &ending).await
                    && let Ok(Some(collaboration)) = inner.store.collaboration(id).await
                {
                    inner.hub.end_turns(collaboration.channel_id);
                    crate::telemetry::collaboration_ended(
                        ending.reason.status().name(),
                        ending.reason.name(),
                    );
                    inner.hub.publish_event(collaboration.channel_id, &event);
                    runner::summarize_only(&inner, id).await;
                }
            }
        });
    }

    /// Resumes every collaboration that was running, and writes summaries that a crash
    /// prevented. Called once at start.
    pub async fn recover(&self) -> anyhow::Result<usize> {
        let running = self.inner.store.running_collaborations().await?;
        for id in &running {
            self.start(*id);
        }
        for id in self.inner.store.unsummarized_collaborations().await? {
            let inner = self.inner.clone();
            self.inner
                .tracker
                .spawn(async move { runner::summarize_only(&inner, id).await });
        }
        Ok(running.len())
    }

    /// Ends a running collaboration with `cancelled`; returns once the status is stored.
    pub async fn stop(&self, collaboration: &Collaboration) -> anyhow::Result<StopOutcome> {
        let Some(control) = self.control(collaboration.id) else {
            return self.stop_without_runner(collaboration).await;
        };
        let (ack, done) = oneshot::channel();
        if control.send(Control::Stop(ack)).await.is_err() || done.await.is_err() {
            // The runner ended on its own in the meantime.
            return Ok(StopOutcome::NotRunning);
        }
        Ok(StopOutcome::Stopped)
    }

    /// Halts the runner, if any, so nothing more is written; the caller then deletes.
    pub async fn halt(&self, id: Uuid) {
        if let Some(control) = self.control(id) {
            let (ack, done) = oneshot::channel();
            if control.send(Control::Delete(ack)).await.is_ok() {
                let _ = done.await;
            }
        }
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
        let control = self
            .control(collaboration_id)
            .ok_or(PostRefusal::NotRunning)?;
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

    pub fn models(&self) -> &Models {
        &self.inner.models
    }

    /// Where a collaboration's podcast file is.
    pub fn podcast_file(&self, id: Uuid) -> std::path::PathBuf {
        podcast::file(&self.inner.settings.podcast.dir, id)
    }

    /// Cancels every runner and waits until all have returned. Running collaborations stay
    /// `running` in the store and are resumed by the next process.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.remote.cards.close().await;
    }

    fn control(&self, id: Uuid) -> Option<mpsc::Sender<Control>> {
        self.inner
            .runners
            .get(&id)
            .map(|entry| entry.value().clone())
    }

    /// A running collaboration with no runner here (between a restart and its recovery).
    async fn stop_without_runner(
        &self,
        collaboration: &Collaboration,
    ) -> anyhow::Result<StopOutcome> {
        let ending = Ending {
            reason: EndReason::Cancelled,
            advisory_message: None,
            error_message: None,
            ended_at: chrono::Utc::now(),
        };
        let Some(event) = self
            .inner
            .store
            .finish_collaboration(collaboration.id, &ending)
            .await?
        else {
            return Ok(StopOutcome::NotRunning);
        };
        self.inner
            .hub
            .publish_event(collaboration.channel_id, &event);
        crate::telemetry::collaboration_ended(ending.reason.status().name(), ending.reason.name());
        let inner = self.inner.clone();
        let id = collaboration.id;
        self.inner
            .tracker
            .spawn(async move { runner::summarize_only(&inner, id).await });
        Ok(StopOutcome::Stopped)
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
