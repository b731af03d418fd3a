//! Every background task is started by someone who waits for it, under a name.
//!
//! [`Tasks`] is a `TaskTracker` with a name for each task and a register of the workers the
//! server cannot do without. A task ends when its work is done or when it hears the
//! `stopping` token; whoever made the [`Tasks`] (or a [`Tasks::group`] of it) waits for its
//! tasks before going on with shutdown. An *essential* worker (the SQLite writer, the
//! webhook deliverer, the lease keeper, the cluster's links) is meant to run until the
//! server stops: one that ends before `stopping` fires, by returning or by panicking, is
//! logged by name and kept in the register, and `/ready` then answers 503 naming it.
//!
//! Nothing here restarts a worker: a loop that died has lost whatever it held, and a fresh
//! one would hide the bug. A load balancer that reads `/ready` moves traffic away instead.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// A set of tracked tasks, cheap to clone. Groups made from it share its register of
/// failed workers and its `stopping` token, but are waited for on their own.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Fired when the server starts shutting down: from then on, workers ending is expected.
    stopping: CancellationToken,
    /// The essential workers that ended before `stopping` fired, by name.
    failed: Mutex<Vec<&'static str>>,
}

impl Tasks {
    /// Tasks of a server that stops when `stopping` fires.
    pub fn new(stopping: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shared: Arc::new(Shared {
                stopping,
                failed: Mutex::default(),
            }),
        }
    }

    /// A group of tasks waited for apart from these (the engine's runners, say, which must
    /// be done before the engine gives up its leases), failing into the same register.
    pub fn group(&self) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shared: self.shared.clone(),
        }
    }

    /// The token that tells tasks the server is stopping.
    pub fn stopping(&self) -> &CancellationToken {
        &self.shared.stopping
    }

    /// Runs `task` until it is done. Its logs carry `name`, and so does the report of a
    /// panic, which then reaches whoever awaits the handle.
    pub fn spawn<T, F>(&self, name: &'static str, task: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let span = tracing::info_span!("task", name);
        self.tracker.spawn(
            async move {
                match AssertUnwindSafe(task).catch_unwind().await {
                    Ok(done) => done,
                    Err(panic) => {
                        tracing::error!(task = name, "a task panicked");
                        std::panic::resume_unwind(panic)
                    }
                }
            }
            .instrument(span),
        )
    }

    /// Runs a worker the server needs for as long as it runs. If it ends before the server
    /// stops, it is logged by name and `/ready` reports it.
    pub fn spawn_essential<F>(&self, name: &'static str, worker: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = self.shared.clone();
        let span = tracing::info_span!("task", name);
        self.tracker.spawn(
            async move {
                let panicked = AssertUnwindSafe(worker).catch_unwind().await.is_err();
                if shared.stopping.is_cancelled() && !panicked {
                    return;
                }
                if panicked {
                    tracing::error!(worker = name, "an essential worker panicked");
                } else {
                    tracing::error!(worker = name, "an essential worker ended unexpectedly");
                }
                lock(&shared.failed).push(name);
            }
            .instrument(span),
        );
    }

    /// The essential workers that have stopped while the server runs.
    pub fn failed(&self) -> Vec<&'static str> {
        lock(&self.shared.failed).clone()
    }

    /// Waits until every task of this group has ended. Tasks started meanwhile (by a task
    /// of the group, say) are waited for too.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// How many tasks of this group are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// Nothing panics while holding the register's lock, so a poisoned one is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_essential_worker_that_returns_while_the_server_runs_is_reported_by_name() {
        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_essential("webhook deliverer", async {});
        tasks.spawn_essential("lease keeper", std::future::pending());
        tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.failed().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the failure is registered");
        assert_eq!(tasks.failed(), ["webhook deliverer"]);
    }

    #[tokio::test]
    async fn an_essential_worker_that_panics_is_reported_and_the_others_carry_on() {
        let tasks = Tasks::new(CancellationToken::new());
        let group = tasks.group();
        group.spawn_essential("cluster import", async { panic!("a bug") });
        let (alive, mut still) = tokio::sync::mpsc::channel::<()>(1);
        tasks.spawn_essential("sqlite writer", async move {
            let _alive = alive;
            std::future::pending::<()>().await
        });
        tokio::time::timeout(Duration::from_secs(5), group.wait())
            .await
            .expect("the panicking worker ends");
        assert_eq!(tasks.failed(), ["cluster import"]);
        assert!(still.try_recv().is_err(), "the other worker runs on");
    }

    #[tokio::test]
    async fn workers_that_end_once_the_server_stops_are_not_failures() {
        let stopping = CancellationToken::new();
        let tasks = Tasks::new(stopping.clone());
        let token = stopping.clone();
        tasks.spawn_essential("lease keeper", async move { token.cancelled().await });
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends");
        assert!(tasks.failed().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_task_reaches_whoever_awaits_it() {
        let tasks = Tasks::new(CancellationToken::new());
        let handle = tasks.spawn("idempotent request", async { panic!("a bug") });
        assert!(handle.await.unwrap_err().is_panic());
        assert_eq!(tasks.spawn("sum", async { 2 + 2 }).await.unwrap(), 4);
    }
}
