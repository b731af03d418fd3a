//! Persistence: one [`Store`] trait, one implementation per backend.
//!
//! The trait speaks in domain types and hides SQL. Every method that writes an event assigns
//! its `seq` and commits it in one transaction together with whatever the event changes
//! (message count, status, summary), so a crash never leaves the two disagreeing. Callers
//! publish an event only after the method returned: persist, then publish.
//!
//! Two backends implement it: [`SqliteStore`], one embedded file for a single process, and
//! [`PgStore`], one PostgreSQL database that several processes can share. They keep the same
//! schema (each with its own migrations, same versions) and answer the same way; the
//! conformance suite in `tests/store` runs every test against both. Callers never see which
//! one they have (no `sqlx::Any`, no backend types in signatures).
//!
//! The SQL the two share is written once, in [`sql`], over sqlx's generic traits; each
//! backend's module keeps only what it says its own way (a [`sql::Dialect`]): SQLite's
//! group-commit writer, PostgreSQL's row locks, whose clock judges a lease.
//!
//! Reads scoped to an account (`get_…`, `list_…`) are what the API calls; the few that are
//! not (`…_unscoped`) are for the engine, which holds a collaboration it already owns.

mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{
        Account, Agent, AgentAddress, AgentRef, ApiKey, Collaboration, CollaborationStatus, Ending,
        EventBody, NewCollaboration, NewKey, Outcome, PageRequest, Source, StoredEvent, Synopsis,
        Team,
        feed::FeedPage,
        webhook::{AttemptOutcome, Delivery, DueDelivery, WebhookSettings},
    },
    secrets::Secret,
};

pub use postgres::PgStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or reference rule refused the write; the message names it for people.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A fenced write came with a lease this process no longer holds: another process runs
    /// the collaboration now (or nobody did in time). The writer must stop, not retry.
    #[error("the lease on this collaboration is no longer held")]
    LeaseLost,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The most bytes of frames one page of events holds (see [`Store::read_events`]).
pub const PAGE_BYTES: i64 = 1 << 20;

/// The most uAgent registrations kept at once: anyone with a key may register, so the
/// table is bounded; agents re-register every hour, so lapsed ones make room.
pub const MAX_UAGENT_REGISTRATIONS: i64 = 10_000;

/// The most replies kept from one uAgent while no runner holds its collaboration.
pub const KEPT_UAGENT_REPLIES: i64 = 8;

/// Whether events may follow a page [`Store::read_events`] returned for `limit`: it is full,
/// or large enough that the size bound may have cut it.
pub fn page_may_continue(page: &[StoredEvent], limit: u32) -> bool {
    let bytes: usize = page.iter().map(|event| event.frame.len()).sum();
    page.len() >= limit as usize || bytes as i64 >= PAGE_BYTES
}

/// The conflicts every backend reports, worded once.
impl StoreError {
    fn address_taken(address: &AgentAddress) -> Self {
        Self::Conflict(format!("an agent with address {address} already exists"))
    }

    fn agent_in_use() -> Self {
        Self::Conflict("the agent takes part in collaborations; delete those first".into())
    }

    fn configured_key() -> Self {
        Self::Conflict(
            "this is the server's admin key, set by SKEIN_ADMIN_KEY or admin.key; \
             rotate it there and restart"
                .into(),
        )
    }

    fn too_many_running(running: i64, max_running: u32) -> Self {
        Self::Conflict(format!(
            "this account already has {running} running collaborations, the limit \
             (SKEIN_MAX_RUNNING_PER_ACCOUNT = {max_running}); stop one or wait for one to end"
        ))
    }

    fn too_many_keys(max_keys: u32) -> Self {
        Self::Conflict(format!(
            "this account already has {max_keys} keys, the limit (SKEIN_MAX_KEYS_PER_ACCOUNT); \
             revoke one first"
        ))
    }
}

/// sqlx classifies the backends' own codes (SQLite's constraint codes, PostgreSQL's 23505).
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// As [`is_unique_violation`], for references (PostgreSQL's 23503).
fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
}

/// A live key found by its hash, with what the request needs to know of its account.
#[derive(Debug, Clone)]
pub struct Credential {
    pub key: ApiKey,
    pub operator: bool,
}

/// What became of an `Idempotency-Key` the moment a request claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use (or the earlier one expired): the request runs and its response is kept.
    Claimed,
    /// The first request with this key has not finished.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
    /// The first request finished with this status; `response` is what was kept of it.
    Completed { status: u16, response: Vec<u8> },
}

/// Filters of `GET /collaborations`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct CollaborationFilter {
    pub agent: Option<Uuid>,
    pub channel_id: Option<Uuid>,
    pub status: Option<CollaborationStatus>,
    pub source: Option<Source>,
    pub team_id: Option<Uuid>,
    pub context_id: Option<Uuid>,
}

impl CollaborationFilter {
    /// Whether it asks for nothing but (at most) a status.
    pub fn by_status_alone(&self) -> bool {
        self.agent.is_none()
            && self.channel_id.is_none()
            && self.source.is_none()
            && self.team_id.is_none()
            && self.context_id.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub id: Uuid,
    pub account_id: Uuid,
    pub collaboration_id: Uuid,
    pub last_seq: i64,
    pub status: CollaborationStatus,
    pub created_at: DateTime<Utc>,
}

/// A process's hold on a collaboration: the right to run it (turns, ending, summary). Writes
/// that carry it are refused by the database once `owner` or `epoch` has moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub collaboration_id: Uuid,
    /// The process: a random id it picks at start.
    pub owner: Uuid,
    /// Grows with every claim, so a process that lost a lease and claimed it again does not
    /// let its earlier runner write.
    pub epoch: i64,
}

/// Tokens, and what they cost in millionths of a dollar, as a collaboration counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub tokens: u64,
    pub cost_micros: u64,
}

impl Spent {
    /// Tokens that cost nothing (a model without a price).
    pub const fn tokens(tokens: u64) -> Self {
        Self {
            tokens,
            cost_micros: 0,
        }
    }
}

/// A lease to take as a collaboration is stored: its owner, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTo {
    pub owner: Uuid,
    pub ttl: Duration,
}

impl LeaseTo {
    /// The lease a new collaboration starts with: the first claim of it.
    fn first(self, collaboration_id: Uuid) -> (Lease, DateTime<Utc>) {
        let lease = Lease {
            collaboration_id,
            owner: self.owner,
            epoch: 1,
        };
        (lease, Utc::now() + self.ttl)
    }
}

/// Which leases [`Store::claim_leases`] takes. Only collaborations that need a runner (running,
/// or ended without a stored summary) are ever claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This one, if its lease is free or expired.
    One(Uuid),
    /// Up to `limit` whose lease is free or expired, oldest first.
    Expired { limit: u32 },
    /// Every one, live leases too: for a process that knows it is the only one (SQLite's
    /// single server starting after a crash, whose old leases nobody else will renew).
    All,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for `/ready`.
    async fn ping(&self) -> StoreResult<()>;
    /// Seals every stored secret that is not sealed under the server's current key: stored
    /// before secrets were sealed, or under a key being rotated out. How many were.
    async fn reseal_secrets(&self) -> StoreResult<u64>;

    // Accounts and keys.
    /// The account of the server's own admin key, once it exists.
    async fn operator_account(&self) -> StoreResult<Option<Uuid>>;
    /// Stores an account with its first key, in one transaction.
    async fn create_account(&self, account: &Account, first_key: &NewKey) -> StoreResult<()>;
    async fn list_accounts(&self, page: PageRequest) -> StoreResult<(Vec<Account>, u64)>;
    /// Stores a key; a conflict naming the limit when its account already has `max_live`
    /// keys not revoked.
    async fn insert_key(&self, key: &NewKey, max_live: u32) -> StoreResult<()>;
    /// The live (not revoked) key with this hash.
    async fn find_key(&self, hash: &str) -> StoreResult<Option<Credential>>;
    /// Whether a key with this hash was ever stored, revoked or not.
    async fn key_exists(&self, hash: &str) -> StoreResult<bool>;
    /// Records that the key was used now.
    async fn touch_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    /// One of the account's keys, revoked or not.
    async fn get_key(&self, account_id: Uuid, id: Uuid) -> StoreResult<Option<ApiKey>>;
    async fn list_keys(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<ApiKey>, u64)>;
    /// Revokes the account's key (a second revoke changes nothing). False when the account
    /// has no such key; a conflict for a key that comes from the server's configuration.
    async fn revoke_key(&self, account_id: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes every configured key but the one with this hash: the admin key was rotated.
    /// Returns the ids revoked.
    async fn revoke_config_keys_except(&self, hash: &str) -> StoreResult<Vec<Uuid>>;

    // Idempotency keys, per account.
    /// Claims `key` for a request whose canonical form hashes to `request_hash`. A claim
    /// older than `expired_before`, or still in flight since before `abandoned_before` (its
    /// process died with the request unfinished), is replaced as if it did not exist.
    async fn claim_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
        abandoned_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyClaim>;
    /// Keeps the response of a claimed request.
    async fn complete_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        status: u16,
        response: &[u8],
    ) -> StoreResult<()>;
    /// Forgets a claim whose request did not finish (a 5xx, a dropped connection).
    async fn release_idempotency(&self, account_id: Uuid, key: &str) -> StoreResult<()>;
    /// Deletes expired claims and, at start, the in-flight ones a stopped process left.
    async fn purge_idempotency(
        &self,
        expired_before: DateTime<Utc>,
        in_flight_too: bool,
    ) -> StoreResult<u64>;

    // Agents.
    /// Refuses an address already used in the account ([`StoreError::Conflict`]).
    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()>;
    async fn get_agent(&self, account_id: Uuid, agent: &AgentRef) -> StoreResult<Option<Agent>>;
    /// The account's agents that `agents` name, in one query and in no particular order; a
    /// reference that names none adds nothing.
    async fn get_agents(&self, account_id: Uuid, agents: &[AgentRef]) -> StoreResult<Vec<Agent>>;
    /// Agents by id regardless of account: the engine's view of a roster it already owns.
    async fn agents_unscoped(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>>;
    async fn list_agents(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Agent>, u64)>;
    async fn update_agent(&self, agent: &Agent) -> StoreResult<()>;
    /// False when there was no such agent; a conflict while a collaboration uses it.
    async fn delete_agent(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool>;

    async fn insert_team(&self, team: &Team) -> StoreResult<()>;
    /// The account's team named by UUID or address.
    async fn get_team(&self, account_id: Uuid, team: &AgentRef) -> StoreResult<Option<Team>>;
    /// Whichever account's team answers at `address` (for uAgents, who have no key).
    async fn team_by_address(&self, address: &AgentAddress) -> StoreResult<Option<Team>>;
    async fn list_teams(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Team>, u64)>;
    async fn update_team(&self, team: &Team) -> StoreResult<bool>;
    async fn delete_team(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool>;

    // Collaborations.
    /// Stores the collaboration, its roster and its channel in one transaction; a conflict
    /// naming the limit when its account already has `max_running` collaborations running.
    /// With `lease_to`, the collaboration is stored with its lease held by that process,
    /// which is returned: no other process can claim it in between, and no second write
    /// is needed to claim it.
    async fn insert_collaboration(
        &self,
        new: &NewCollaboration,
        max_running: u32,
        lease_to: Option<LeaseTo>,
    ) -> StoreResult<Option<Lease>>;
    async fn get_collaboration(
        &self,
        account_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<Collaboration>>;
    /// By id regardless of account: for the engine, which owns the collaboration.
    async fn collaboration_unscoped(&self, id: Uuid) -> StoreResult<Option<Collaboration>>;
    /// Appends an event that is not a message (a verdict, say) to a running collaboration's
    /// channel, under the runner's lease: `None` once the collaboration has ended.
    async fn append_event(
        &self,
        lease: &Lease,
        body: &EventBody,
    ) -> StoreResult<Option<StoredEvent>>;
    /// Notes that Skein speaks to uAgents as `address` in `collaboration_id`; noting it
    /// again changes nothing.
    async fn remember_identity(&self, address: &str, collaboration_id: Uuid) -> StoreResult<()>;
    /// The collaboration Skein speaks to uAgents in as `address`, if any.
    async fn identity_collaboration(&self, address: &str) -> StoreResult<Option<Uuid>>;
    /// Notes, under the runner's lease, that uAgent `agent_id` was asked for its turn when
    /// the channel's last message was `after_seq`.
    async fn note_uagent_ask(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        after_seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// What uAgent `agent_id` was last asked in the collaboration: the last seq then, and when.
    async fn uagent_ask(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
    ) -> StoreResult<Option<(i64, DateTime<Utc>)>>;
    /// Keeps where the uAgent at `address` says it is, until `expires_at`; a registration
    /// again replaces it. False when [`MAX_UAGENT_REGISTRATIONS`] others are kept already.
    async fn register_uagent(
        &self,
        address: &str,
        endpoint: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Where the uAgent at `address` registered, if its registration holds at `now`.
    async fn registered_uagent(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    /// Forgets the registrations that lapsed before `now`.
    async fn purge_uagent_registrations(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Whether the chat message `msg_id` from a uAgent is heard for the first time; it is
    /// remembered from now on (until [`Store::purge_uagent_heard`]).
    async fn hear_uagent_message(&self, msg_id: Uuid) -> StoreResult<bool>;
    /// Forgets the chat messages heard before `before`.
    async fn purge_uagent_heard(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Keeps a uAgent's reply that no runner could take, for the runner that resumes the
    /// collaboration; at most [`KEPT_UAGENT_REPLIES`] per agent, and each `msg_id` once.
    /// Whether it was kept.
    async fn keep_uagent_reply(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
        msg_id: Uuid,
        content: &str,
    ) -> StoreResult<bool>;
    /// Under the runner's lease, the first reply kept from uAgent `agent_id` since `since`;
    /// every reply kept from it is gone afterwards.
    async fn take_uagent_reply(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    async fn list_collaborations(
        &self,
        account_id: Uuid,
        filter: &CollaborationFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<Collaboration>, u64)>;
    /// Deletes the collaboration with its channel and events. False when there was none.
    async fn delete_collaboration(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool>;
    /// How many collaborations there are in each status, over every account (for metrics).
    async fn count_by_status(&self) -> StoreResult<Vec<(CollaborationStatus, u64)>>;

    // Leases (see [`Lease`]). Expiry is judged by the database's clock where it has one.
    /// Takes leases for `owner` for `ttl`, bumping each one's epoch.
    async fn claim_leases(
        &self,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> StoreResult<Vec<Lease>>;
    /// Extends every unexpired lease `owner` holds; returns those it still holds.
    async fn renew_leases(&self, owner: Uuid, ttl: Duration) -> StoreResult<Vec<Lease>>;
    /// Gives the lease up (the work is done, or the runner stopped), if it is still this one.
    async fn release_lease(&self, lease: &Lease) -> StoreResult<()>;
    /// Gives up every lease `owner` holds: a process shutting down hands over at once.
    async fn release_leases(&self, owner: Uuid) -> StoreResult<u64>;
    /// The process holding an unexpired lease on the collaboration, if any.
    async fn lease_holder(&self, collaboration_id: Uuid) -> StoreResult<Option<Uuid>>;

    // The channel log.
    /// Appends a message event, counting it and `spent` on the collaboration (its own
    /// tokens and cost, and what else was spent on the way to it, such as choosing its
    /// speaker); `None` (and nothing written) once the collaboration is no longer running
    /// or has reached its message cap: the cap holds in the database, whoever writes. A
    /// message whose id is stored already (a retried write that had gone through) is
    /// answered as it was stored, and nothing is written. [`StoreError::LeaseLost`] unless `lease` is still held.
    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        spent: Spent,
    ) -> StoreResult<Option<StoredEvent>>;
    /// Adds tokens spent outside turns that no message carries (the summary's, or the
    /// judge's and selector's when the runner stops), and what they cost in millionths of
    /// a dollar. [`StoreError::LeaseLost`] unless `lease` is still held.
    async fn add_tokens(&self, lease: &Lease, tokens: u64, cost_micros: u64) -> StoreResult<()>;
    /// Keeps the collaboration's latest synopsis (for the runner that holds `lease`).
    async fn record_synopsis(&self, lease: &Lease, synopsis: &Synopsis) -> StoreResult<()>;
    /// Records the podcast: its URL, or (with no URL) why there is none, added to the
    /// collaboration's advisory message. [`StoreError::LeaseLost`] unless `lease` is still
    /// held.
    async fn record_audio(
        &self,
        lease: &Lease,
        audio_url: Option<&str>,
        note: Option<&str>,
    ) -> StoreResult<()>;
    /// Ends a running collaboration and appends its `status` event; `None` if it had ended.
    /// With a lease, [`StoreError::LeaseLost`] unless it is still held; without one (a stop
    /// no runner could take) it ends whoever runs it, and that runner's next write finds it
    /// ended.
    async fn finish_collaboration(
        &self,
        collaboration_id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
    ) -> StoreResult<Option<StoredEvent>>;
    /// Stores the summary and appends its `summary` event; `None` if one was stored already.
    /// [`StoreError::LeaseLost`] unless `lease` is still held.
    async fn record_summary(
        &self,
        lease: &Lease,
        headline: &str,
        summary: &str,
        outcome: &Outcome,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn get_channel(&self, account_id: Uuid, id: Uuid) -> StoreResult<Option<ChannelInfo>>;
    /// Events with `seq > after_seq`, in order: at most `limit`, and no more than
    /// [`PAGE_BYTES`] bytes of frames (but always one, if there is one), so that a page of
    /// large messages cannot take a server's memory. A short page does not mean the end: read
    /// on until a page is empty. By channel id alone: the caller found the channel in its
    /// account first.
    async fn read_events(
        &self,
        channel_id: Uuid,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;

    // Webhooks. Deliveries are written by the methods above that make their events happen
    // (`insert_collaboration`, `finish_collaboration`, `record_summary`), in their transaction.
    async fn webhook_settings(&self, account_id: Uuid) -> StoreResult<Option<WebhookSettings>>;
    /// Creates the account's settings unless it has some: true if these were stored.
    async fn create_webhook_settings(&self, settings: &WebhookSettings) -> StoreResult<bool>;
    /// Changes the default URL only; false if the account has no settings.
    async fn set_webhook_default_url(
        &self,
        account_id: Uuid,
        url: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Replaces the secret only; false if the account has no settings.
    async fn rotate_webhook_secret(
        &self,
        account_id: Uuid,
        secret: &Secret,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Claims up to `limit` pending deliveries due by `now`. A claimed one is not due again
    /// until `claim_until`, so two workers never send it at once, and an attempt cut short by
    /// a crash is made again then.
    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Records an attempt made under the claim `claimed_until`; one whose claim has lapsed
    /// (another attempt took over) changes nothing.
    async fn record_webhook_attempt(
        &self,
        id: Uuid,
        claimed_until: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()>;
    /// Makes a claimed delivery due again at `again`, if the claim is still this one.
    async fn unclaim_webhook(
        &self,
        id: Uuid,
        claimed_until: DateTime<Utc>,
        again: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Deletes deliveries settled (delivered, or given up on) for events before then. How
    /// many.
    async fn purge_webhook_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    async fn list_webhook_deliveries(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Delivery>, u64)>;

    // WebSocket tickets.
    /// Deletes the tickets that expired before then, used or not. How many.
    /// Up to `limit` changes of the account's feed after `after_rev`, oldest first, with
    /// its latest rev and whether changes right after `after_rev` were purged.
    async fn account_feed(
        &self,
        account_id: Uuid,
        after_rev: i64,
        limit: u32,
    ) -> StoreResult<FeedPage>;
    /// Forgets feed changes made before `before`.
    async fn purge_account_feed(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    async fn purge_tickets(&self, expired_before: DateTime<Utc>) -> StoreResult<u64>;
    async fn insert_ticket(
        &self,
        hash: &str,
        key: &ApiKey,
        channel_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Marks the ticket used and returns the key that asked for it, if the ticket is unused,
    /// unexpired and for this channel, and the key is not revoked. A ticket is redeemed once.
    /// One that does not exist costs a read, never a write.
    async fn redeem_ticket(&self, hash: &str, channel_id: Uuid) -> StoreResult<Option<Credential>>;
}
