//! What a runner reads and writes of the store: its collaboration, its roster's agents and
//! its channel's log. A port of its own, so that the runner's state machine can be tested
//! over an in-memory journal on a paused clock (a real database answers from another
//! thread, and a paused clock jumps ahead while it waits).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{Agent, Collaboration, Ending, EventBody, Outcome, StoredEvent, Synopsis},
    store::{Lease, Spent, Store, StoreResult},
};

/// The runner's view of the store; every method is the [`Store`] method of the same name.
#[async_trait]
pub(crate) trait Journal: Send + Sync + 'static {
    async fn collaboration(&self, id: Uuid) -> StoreResult<Option<Collaboration>>;
    async fn agents(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>>;
    async fn read_events(
        &self,
        channel_id: Uuid,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        spent: Spent,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn add_tokens(&self, lease: &Lease, tokens: u64, cost_micros: u64) -> StoreResult<()>;
    async fn record_synopsis(&self, lease: &Lease, synopsis: &Synopsis) -> StoreResult<()>;
    async fn append_event(
        &self,
        lease: &Lease,
        body: &EventBody,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn remember_identity(&self, address: &str, collaboration_id: Uuid) -> StoreResult<()>;
    async fn note_uagent_ask(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        after_seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn uagent_ask(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
    ) -> StoreResult<Option<(i64, DateTime<Utc>)>>;
    async fn take_uagent_reply(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    async fn finish_collaboration(
        &self,
        collaboration_id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn record_summary(
        &self,
        lease: &Lease,
        headline: &str,
        summary: &str,
        outcome: &Outcome,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn record_audio(
        &self,
        lease: &Lease,
        audio_url: Option<&str>,
        note: Option<&str>,
    ) -> StoreResult<()>;
}

/// The journal a server's runners keep: the store itself.
pub(crate) struct Stored(pub(crate) Arc<dyn Store>);

#[async_trait]
impl Journal for Stored {
    async fn collaboration(&self, id: Uuid) -> StoreResult<Option<Collaboration>> {
        self.0.collaboration_unscoped(id).await
    }

    async fn agents(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>> {
        self.0.agents_unscoped(ids).await
    }

    async fn read_events(
        &self,
        channel_id: Uuid,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.0.read_events(channel_id, after_seq, limit).await
    }

    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        spent: Spent,
    ) -> StoreResult<Option<StoredEvent>> {
        self.0.append_message(lease, body, spent).await
    }

    async fn add_tokens(&self, lease: &Lease, tokens: u64, cost_micros: u64) -> StoreResult<()> {
        self.0.add_tokens(lease, tokens, cost_micros).await
    }
    async fn record_synopsis(&self, lease: &Lease, synopsis: &Synopsis) -> StoreResult<()> {
        self.0.record_synopsis(lease, synopsis).await
    }

    async fn remember_identity(&self, address: &str, collaboration_id: Uuid) -> StoreResult<()> {
        self.0.remember_identity(address, collaboration_id).await
    }

    async fn append_event(
        &self,
        lease: &Lease,
        body: &EventBody,
    ) -> StoreResult<Option<StoredEvent>> {
        self.0.append_event(lease, body).await
    }

    async fn note_uagent_ask(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        after_seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.0.note_uagent_ask(lease, agent_id, after_seq, at).await
    }

    async fn uagent_ask(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
    ) -> StoreResult<Option<(i64, DateTime<Utc>)>> {
        self.0.uagent_ask(collaboration_id, agent_id).await
    }

    async fn take_uagent_reply(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        self.0.take_uagent_reply(lease, agent_id, since).await
    }

    async fn finish_collaboration(
        &self,
        collaboration_id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
    ) -> StoreResult<Option<StoredEvent>> {
        self.0
            .finish_collaboration(collaboration_id, lease, ending)
            .await
    }

    async fn record_summary(
        &self,
        lease: &Lease,
        headline: &str,
        summary: &str,
        outcome: &Outcome,
    ) -> StoreResult<Option<StoredEvent>> {
        self.0
            .record_summary(lease, headline, summary, outcome)
            .await
    }

    async fn record_audio(
        &self,
        lease: &Lease,
        audio_url: Option<&str>,
        note: Option<&str>,
    ) -> StoreResult<()> {
        self.0.record_audio(lease, audio_url, note).await
    }
}
