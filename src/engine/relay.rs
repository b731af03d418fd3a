//! Requests for a collaboration that another process runs.
//!
//! Exactly one process runs a collaboration: the one holding its lease. A stop, a delete or
//! a person's message that reaches another process is carried to that one as a [`Request`]
//! (over NATS, by the cluster's [`Relay`]) and answered with a [`Reply`] once its runner has
//! acted. When nobody answers (the holder died, or there is no relay), the asker acts on
//! the store itself: the database's fences keep a runner that is still alive somewhere from
//! writing over it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Control, Engine, PostRefusal};
use crate::domain::Sender;

/// What one process asks of the process that runs a collaboration: the requests a local
/// runner takes through its control channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Stop {
        collaboration_id: Uuid,
    },
    /// The collaboration is being deleted: its runner stops without writing anything more.
    Delete {
        collaboration_id: Uuid,
    },
    Post {
        collaboration_id: Uuid,
        sender: Sender,
        content: String,
        /// See [`super::Engine::fail_turn`]; absent from a server that predates it.
        #[serde(default)]
        failure: bool,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Stopped,
    NotRunning,
    /// Its runner has stopped; the asker deletes the rows.
    Deleted,
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

/// Carries a [`Request`] to another process. `None` when nobody answered in time.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    async fn forward(&self, owner: Uuid, request: &Request) -> Option<Reply>;
}

impl Engine {
    /// Sends `request` to the process that holds the collaboration's lease, if that is
    /// another one and a relay is set. `None` when there is nobody to ask or no answer.
    pub(super) async fn forward(&self, id: Uuid, request: Request) -> Option<Reply> {
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

    /// Answers a request another process relayed here, for a runner of this one.
    pub async fn answer(&self, request: Request) -> Reply {
        match request {
            Request::Stop { collaboration_id } => match self.control(collaboration_id) {
                None => Reply::NotHere,
                Some(control) => match Control::stop(&control).await {
                    true => Reply::Stopped,
                    false => Reply::NotRunning,
                },
            },
            Request::Delete { collaboration_id } => match self.control(collaboration_id) {
                None => Reply::NotHere,
                Some(control) => {
                    Control::delete(&control).await;
                    Reply::Deleted
                }
            },
            Request::Post {
                collaboration_id,
                sender,
                content,
                failure,
            } => {
                if self.control(collaboration_id).is_none() {
                    return Reply::NotHere;
                }
                match self
                    .deliver(collaboration_id, sender, content, failure)
                    .await
                {
                    Ok(event) => Reply::Posted {
                        seq: event.seq,
                        frame: event.frame,
                    },
                    Err(refusal) => Reply::Refused { refusal },
                }
            }
        }
    }
}
