//! The SQL both backends speak, written once.
//!
//! [`SqlStore`] is the [`Store`] over either database. Its one implementation of the trait
//! holds every statement the two dialects say alike: placeholders are `$N` in both (sqlx's
//! SQLite driver reads `$N` as the N-th argument), booleans are tested bare (`WHERE
//! operator`), and a bound `LIMIT` is cast (see [`crate::store`]'s SQLite notes), which
//! PostgreSQL takes as it is.
//!
//! What the backends truly say differently is a [`Dialect`], implemented in each backend's
//! module: how a UUID column is encoded, how a write transaction begins, whose clock judges a
//! lease (PostgreSQL's, so that processes agree; SQLite's process is the only one), how leases
//! and deliveries are claimed (`SKIP LOCKED` where other processes contend), how a roster is
//! folded into JSON, and how new collaborations and turns are written (SQLite's group commit,
//! PostgreSQL's row locks).
//!
//! Rust cannot yet say once, on the trait, everything sqlx needs of a backend to run these
//! statements (bounds on types other than the backend itself are not implied), so the impl
//! blocks below repeat one `where` clause.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder,
    Transaction, Type,
};
use uuid::Uuid;

use super::{
    ChannelInfo, Claim, CollaborationFilter, Credential, IdempotencyClaim, Lease, LeaseTo, Spent,
    Store, StoreError, StoreResult, is_foreign_key_violation, is_unique_violation,
    rows::{
        AccountRow, AgentRow, ChannelRow, DeliveryRow, DueRow, IdempotencyRow, KeyRow, ListedRow,
        RosteredRow, SnapshotRow, TeamRow, WebhookSettingsRow, attempt_columns, parse, spec_json,
        team_defaults, team_members,
    },
};
use crate::{
    domain::{
        Account, Agent, AgentAddress, AgentRef, ApiKey, Collaboration, CollaborationStatus, Ending,
        EventBody, NewCollaboration, NewKey, Outcome, PageRequest, Scope, StoredEvent, Synopsis,
        Team,
        feed::{Change, ChangeKind, FeedPage},
        webhook::{AttemptOutcome, Delivery, DueDelivery, WebhookEvent, WebhookSettings},
    },
    secrets::{Secret, Vault},
};

/// A value a backend binds and reads back the same.
pub(super) trait Column<D: Database>:
    for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D>
{
}

impl<D: Database, T> Column<D> for T where T: for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D>
{}

/// What a backend says its own way. Implemented by sqlx's `Sqlite` and `Postgres`.
pub(super) trait Dialect: Database<Arguments: IntoArguments<Self>> + Sized {
    /// How a UUID column binds and decodes (hyphenated text in SQLite, `uuid` in PostgreSQL).
    type Id: Column<Self> + From<Uuid> + Into<Uuid> + Copy + Send + Sync + Unpin + 'static;
    /// What a store keeps besides its pools: SQLite's queue to its group-commit writer.
    type Writer: Clone + Send + Sync + 'static;

    /// How a write transaction begins: SQLite takes the write lock up front.
    const BEGIN_WRITE: &'static str;
    /// The select-list expression that folds the roster of collaboration `c` into a JSON
    /// array of `[position, id, address, name, kind]` (see [`RosteredRow`]).
    const ROSTER: &'static str;
    /// Whether `collaboration_counts` and `collaboration_tallies` are kept (by SQLite's
    /// triggers, migrations 0007 and 0022): a list filtered by status alone then reads its
    /// total there instead of counting, and finds a deep page without stepping over the
    /// rows before it.
    const KEEPS_COUNTS: bool;
    /// Ends a query that claims webhook deliveries (`d`): rows another transaction is
    /// claiming are passed over rather than waited for.
    const SKIP_CLAIMED: &'static str;
    /// Ends a query whose rows the transaction must hold until it ends.
    const LOCK_ROW: &'static str;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Refuses the transaction's writes unless `lease` is still held, and keeps anyone from
    /// claiming it until the transaction ends.
    fn check_lease(
        tx: &mut Transaction<'static, Self>,
        lease: &Lease,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// See [`Store::insert_collaboration`].
    fn insert_collaboration(
        store: &SqlStore<Self>,
        create: Create,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// See [`Store::append_message`].
    fn append_message(
        store: &SqlStore<Self>,
        turn: Turn,
    ) -> impl Future<Output = StoreResult<Option<StoredEvent>>> + Send;

    /// See [`Store::claim_leases`].
    fn claim_leases(
        store: &SqlStore<Self>,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> impl Future<Output = StoreResult<Vec<Lease>>> + Send;

    /// See [`Store::renew_leases`].
    fn renew_leases(
        store: &SqlStore<Self>,
        owner: Uuid,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<Vec<Lease>>> + Send;

    /// See [`Store::lease_holder`].
    fn lease_holder(
        store: &SqlStore<Self>,
        collaboration_id: Uuid,
    ) -> impl Future<Output = StoreResult<Option<Uuid>>> + Send;
}

/// The store over a SQL database: its pools, and whatever its dialect keeps besides.
/// Named through its aliases, [`super::SqliteStore`] and [`super::PgStore`]; the dialects
/// are this module's business, hence the private bounds.
#[expect(private_bounds, reason = "the dialects are the store's own business")]
pub struct SqlStore<D: Dialect> {
    /// Where reads go. The same pool as `writes` on PostgreSQL; on SQLite, read-only
    /// connections that never wait for the writer.
    pub(super) reads: Pool<D>,
    pub(super) writes: Pool<D>,
    pub(super) writer: D::Writer,
    /// Seals the secrets stored, and opens them again (see [`crate::secrets`]).
    pub(super) vault: Arc<Vault>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            reads: self.reads.clone(),
            writes: self.writes.clone(),
            writer: self.writer.clone(),
            vault: self.vault.clone(),
        }
    }
}

/// A new collaboration to store, with the lease it is stored under.
pub(super) struct Create {
    pub(super) new: NewCollaboration,
    pub(super) max_running: u32,
    pub(super) lease: Option<(Lease, DateTime<Utc>)>,
    /// The trace of the request that creates it (read there: a batch of creates is written
    /// by another task), which its `started` webhook continues.
    pub(super) traceparent: Option<String>,
}

/// A turn's message to append under its lease, with what the collaboration counts with it.
pub(super) struct Turn {
    pub(super) lease: Lease,
    pub(super) body: EventBody,
    pub(super) spent: Spent,
}

/// The most rows of one table a multi-row statement writes at once (see [`runs`]).
pub(super) const ROWS_PER_STATEMENT: usize = 256;

/// How many ordinals each row of `collaboration_tallies` counts: `bucket` is `ordinal >> 12`.
const TALLY_RUN: i64 = 1 << 12;

fn id<D: Dialect>(uuid: Uuid) -> D::Id {
    uuid.into()
}

#[expect(private_bounds, reason = "the dialects are the store's own business")]
impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Vec<u8>: Column<D>,
    DateTime<Utc>: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    Option<DateTime<Utc>>: Column<D>,
    Option<D::Id>: Column<D>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q str>: Encode<'q, D>,
    for<'q> &'q [u8]: Encode<'q, D> + Type<D>,
{
    pub(super) async fn write(&self) -> StoreResult<Transaction<'static, D>> {
        Ok(self.writes.begin_with(D::BEGIN_WRITE).await?)
    }

    /// Appends one event to a channel inside the caller's transaction: bumps the channel's
    /// counter and inserts the frame under the new `seq`. On PostgreSQL the bump locks the
    /// channel's row until the transaction ends, so the next writer's `seq` waits for this
    /// one's commit; SQLite has one writer at a time anyway.
    pub(super) async fn insert_event(
        tx: &mut Transaction<'static, D>,
        channel_id: D::Id,
        body: &EventBody,
    ) -> StoreResult<StoredEvent> {
        let seq: i64 = sqlx::query_scalar(
            "UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
        )
        .bind(channel_id)
        .fetch_one(&mut **tx)
        .await?;
        let frame = body.to_frame(seq);
        sqlx::query(
            "INSERT INTO events (channel_id, seq, kind, frame, created_at, message_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(channel_id)
        .bind(seq)
        .bind(body.kind())
        .bind(&frame)
        .bind(Utc::now())
        .bind(body.message_id().map(id::<D>))
        .execute(&mut **tx)
        .await?;
        Ok(StoredEvent { seq, frame })
    }

    /// New collaborations, each with its roster, channel, lease and `started` webhook, in
    /// one statement per table whatever their number (see [`runs`]): a statement costs two
    /// thread hand-offs to sqlx's connection thread besides the database's own work, and a
    /// batch of creates shares them. The caller has checked the running cap.
    pub(super) async fn insert_created(
        tx: &mut Transaction<'static, D>,
        admitted: &[&Create],
    ) -> StoreResult<()> {
        // Each is numbered in its account's feed first: that number is where it stands in
        // the account's list (its `ordinal`, migration 0022).
        let mut created: BTreeMap<Uuid, Vec<(Uuid, ChangeKind)>> = BTreeMap::new();
        for Create { new, .. } in admitted {
            created
                .entry(new.account_id)
                .or_default()
                .push((new.id, ChangeKind::Created));
        }
        let mut ordinals = HashMap::with_capacity(admitted.len());
        for (account_id, changes) in &created {
            let first = Self::note_changes(tx, *account_id, changes).await?;
            ordinals.extend(changes.iter().zip(first..).map(|(&(id, _), rev)| (id, rev)));
        }
        for run in runs(admitted, ROWS_PER_STATEMENT) {
            QueryBuilder::<D>::new(
                "INSERT INTO collaborations (id, account_id, channel_id, objective, principal_agent_id, \
                 message_cap, timeout_window, evaluate_objective_completion, source, strategy, \
                 webhook_url, token_budget, cost_budget_micros, podcast, allow_interjections, forked_from, \
                 forked_at_seq, team_id, context_id, created_by_key, status, \
                 started_at, created_at, lease_owner, lease_expires_at, lease_epoch, ordinal) ",
            )
            .push_values(run, |mut row, Create { new, lease, .. }| {
                row.push_bind(id::<D>(new.id))
                    .push_bind(id::<D>(new.account_id))
                    .push_bind(id::<D>(new.channel_id))
                    .push_bind(new.objective.clone())
                    .push_bind(id::<D>(new.principal))
                    .push_bind(i64::from(new.message_cap))
                    .push_bind(i64::from(new.timeout_window))
                    .push_bind(new.evaluate_objective_completion)
                    .push_bind(new.source.map(|s| s.name()))
                    .push_bind(new.strategy.name())
                    .push_bind(new.webhook_url.clone())
                    .push_bind(new.token_budget.map(|b| b as i64))
                    .push_bind(new.cost_budget_micros.map(|b| b as i64))
                    .push_bind(new.podcast)
                    .push_bind(new.allow_interjections)
                    .push_bind(new.fork.as_ref().map(|fork| id::<D>(fork.from)))
                    .push_bind(new.fork.as_ref().map(|fork| fork.at_seq))
                    .push_bind(new.team_id.map(id::<D>))
                    .push_bind(new.context_id.map(id::<D>))
                    .push_bind(id::<D>(new.created_by))
                    .push("'running'")
                    .push_bind(new.created_at)
                    .push_bind(new.created_at)
                    .push_bind(lease.map(|(lease, _)| id::<D>(lease.owner)))
                    .push_bind(lease.map(|(_, expires)| expires))
                    .push_bind(lease.map_or(0, |(lease, _)| lease.epoch))
                    .push_bind(ordinals[&new.id]);
            })
            .build()
            .execute(&mut **tx)
            .await?;
        }

        let roster: Vec<(Uuid, Uuid, usize)> = admitted
            .iter()
            .flat_map(|Create { new, .. }| {
                std::iter::once(&new.principal)
                    .chain(&new.participants)
                    .enumerate()
                    .map(|(position, agent_id)| (new.id, *agent_id, position))
            })
            .collect();
        // Rosters can be long: 2048 rows bind 6144 values, well under either's limit.
        for run in runs(&roster, 2048) {
            QueryBuilder::<D>::new(
                "INSERT INTO collaboration_participants (collaboration_id, agent_id, position) ",
            )
            .push_values(run, |mut row, (collaboration_id, agent_id, position)| {
                row.push_bind(id::<D>(*collaboration_id))
                    .push_bind(id::<D>(*agent_id))
                    .push_bind(*position as i64);
            })
            .build()
            .execute(&mut **tx)
            .await?;
        }

        for run in runs(admitted, ROWS_PER_STATEMENT) {
            QueryBuilder::<D>::new(
                "INSERT INTO channels (id, account_id, collaboration_id, last_seq, created_at) ",
            )
            .push_values(run, |mut row, Create { new, .. }| {
                let copied = new.fork.as_ref().map_or(0, |fork| fork.events.len());
                row.push_bind(id::<D>(new.channel_id))
                    .push_bind(id::<D>(new.account_id))
                    .push_bind(id::<D>(new.id))
                    .push_bind(copied as i64)
                    .push_bind(new.created_at);
            })
            .build()
            .execute(&mut **tx)
            .await?;
        }
        // A fork's channel begins with what it copied, under seqs 1, 2, … (the channel's
        // counter, set above, continues from the last).
        for Create { new, .. } in admitted {
            let Some(fork) = &new.fork else { continue };
            for (i, body) in fork.events.iter().enumerate() {
                let seq = i as i64 + 1;
                let mut frame = body.clone();
                frame["seq"] = seq.into();
                let kind = body["type"].as_str().unwrap_or("message").to_owned();
                let message_id = (kind == "message")
                    .then(|| body["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()))
                    .flatten();
                sqlx::query(
                    "INSERT INTO events (channel_id, seq, kind, frame, created_at, message_id) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id::<D>(new.channel_id))
                .bind(seq)
                .bind(kind)
                .bind(frame.to_string())
                .bind(new.created_at)
                .bind(message_id.map(id::<D>))
                .execute(&mut **tx)
                .await?;
            }
        }

        Self::started_webhooks(tx, admitted).await
    }

    /// The `started` deliveries of new collaborations: for each whose account has set
    /// webhooks up and that has a URL of its own or the account's default. The payload is
    /// made from the collaboration as it was just written, which is all a new one is.
    async fn started_webhooks(
        tx: &mut Transaction<'static, D>,
        admitted: &[&Create],
    ) -> StoreResult<()> {
        if admitted.is_empty() {
            return Ok(());
        }
        let accounts: BTreeSet<Uuid> = admitted.iter().map(|c| c.new.account_id).collect();
        let mut query = QueryBuilder::<D>::new(
            "SELECT account_id, default_url FROM webhook_settings WHERE account_id IN (",
        );
        push_in(&mut query, &accounts);
        let settings: HashMap<Uuid, Option<String>> = query
            .build_query_as::<(D::Id, Option<String>)>()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(account, url)| (account.into(), url))
            .collect();
        let now = Utc::now();
        let event = WebhookEvent::Started;
        let deliveries: Vec<(&NewCollaboration, &str, &Option<String>)> = admitted
            .iter()
            .filter_map(
                |Create {
                     new, traceparent, ..
                 }| {
                    let default_url = settings.get(&new.account_id)?;
                    Some((
                        new,
                        new.webhook_url.as_ref().or(default_url.as_ref())?.as_str(),
                        traceparent,
                    ))
                },
            )
            .collect();
        for run in runs(&deliveries, ROWS_PER_STATEMENT) {
            QueryBuilder::<D>::new(
                "INSERT INTO webhook_deliveries (id, account_id, collaboration_id, event, url, \
                 payload, status, next_attempt_at, created_at, traceparent) ",
            )
            .push_values(run, |mut row, (new, url, traceparent)| {
                row.push_bind(id::<D>(Uuid::now_v7()))
                    .push_bind(id::<D>(new.account_id))
                    .push_bind(id::<D>(new.id))
                    .push_bind(event.name())
                    .push_bind(url.to_string())
                    .push_bind(event.payload(&new.snapshot(), now))
                    .push("'pending'")
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind((*traceparent).clone());
            })
            .build()
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Writes an event's delivery into the outbox, in the transaction that makes the event
    /// happen, when the collaboration has somewhere to send it (its own `webhook_url`, else
    /// its account's default) and the account has a signing secret.
    async fn enqueue_webhook(
        tx: &mut Transaction<'static, D>,
        collaboration_id: Uuid,
        event: WebhookEvent,
    ) -> StoreResult<()> {
        let row: Option<SnapshotRow<D::Id>> = sqlx::query_as(
            "SELECT c.account_id, COALESCE(c.webhook_url, w.default_url) AS url, c.id, c.channel_id, \
             c.objective, c.status, c.end_reason, c.message_count, c.tokens_used, c.cost_micros, \
             c.team_id, c.started_at, c.ended_at, c.headline, c.summary, c.outcome, c.advisory_message, c.error_message \
             FROM collaborations c JOIN webhook_settings w ON w.account_id = c.account_id \
             WHERE c.id = $1",
        )
        .bind(id::<D>(collaboration_id))
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let Some(url) = row.url.clone() else {
            return Ok(());
        };
        let now = Utc::now();
        let account_id = row.account_id;
        let payload = event.payload(&row.into_domain()?, now);
        // The trace it is written in (the runner's), which its delivery continues.
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, account_id, collaboration_id, event, url, payload, \
             status, next_attempt_at, created_at, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9)",
        )
        .bind(id::<D>(Uuid::now_v7()))
        .bind(account_id)
        .bind(id::<D>(collaboration_id))
        .bind(event.name())
        .bind(url)
        .bind(payload)
        .bind(now)
        .bind(now)
        .bind(crate::traces::traceparent())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn channel_of(
        tx: &mut Transaction<'static, D>,
        collaboration_id: Uuid,
    ) -> StoreResult<D::Id> {
        Ok(
            sqlx::query_scalar("SELECT channel_id FROM collaborations WHERE id = $1")
                .bind(id::<D>(collaboration_id))
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    /// Numbers `changes` of one account's collaborations in its feed, inside the caller's
    /// transaction: the account's counter is bumped by their number (on PostgreSQL that
    /// locks its row until the commit, so numbers commit in order), then they are stored
    /// under the numbers it went through, the first of which is returned.
    async fn note_changes(
        tx: &mut Transaction<'static, D>,
        account_id: Uuid,
        changes: &[(Uuid, ChangeKind)],
    ) -> StoreResult<i64> {
        if changes.is_empty() {
            return Ok(0);
        }
        let last: i64 = sqlx::query_scalar(
            "UPDATE accounts SET feed_rev = feed_rev + $1 WHERE id = $2 RETURNING feed_rev",
        )
        .bind(changes.len() as i64)
        .bind(id::<D>(account_id))
        .fetch_one(&mut **tx)
        .await?;
        let first = last - changes.len() as i64 + 1;
        let at = Utc::now();
        let numbered: Vec<(i64, Uuid, ChangeKind)> = changes
            .iter()
            .zip(first..)
            .map(|(&(collaboration_id, kind), rev)| (rev, collaboration_id, kind))
            .collect();
        for run in runs(&numbered, ROWS_PER_STATEMENT) {
            QueryBuilder::<D>::new(
                "INSERT INTO account_feed (account_id, rev, collaboration_id, change, at) ",
            )
            .push_values(run, |mut row, (rev, collaboration_id, kind)| {
                row.push_bind(id::<D>(account_id))
                    .push_bind(*rev)
                    .push_bind(id::<D>(*collaboration_id))
                    .push_bind(kind.name())
                    .push_bind(at);
            })
            .build()
            .execute(&mut **tx)
            .await?;
        }
        Ok(first)
    }

    /// [`Self::note_changes`] for one change of a collaboration, whose account is looked up.
    async fn note_change(
        tx: &mut Transaction<'static, D>,
        collaboration_id: Uuid,
        kind: ChangeKind,
    ) -> StoreResult<()> {
        let account: D::Id =
            sqlx::query_scalar("SELECT account_id FROM collaborations WHERE id = $1")
                .bind(id::<D>(collaboration_id))
                .fetch_one(&mut **tx)
                .await?;
        Self::note_changes(tx, account.into(), &[(collaboration_id, kind)]).await?;
        Ok(())
    }

    async fn insert_key<'e>(
        executor: impl Executor<'e, Database = D>,
        key: &NewKey,
    ) -> StoreResult<()> {
        let scopes: Vec<String> = key.scopes.iter().map(Scope::name).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, key_prefix, key_hash, scopes, from_config, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id::<D>(key.id))
        .bind(id::<D>(key.account_id))
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(scopes.join(" "))
        .bind(key.from_config)
        .bind(Utc::now())
        .execute(executor)
        .await?;
        Ok(())
    }

    /// The account's row of `table` (agents or teams) that `reference` names, by id or by
    /// address.
    async fn named<Row>(
        &self,
        table: &'static str,
        account_id: Uuid,
        reference: &AgentRef,
    ) -> StoreResult<Option<Row>>
    where
        Row: for<'r> sqlx::FromRow<'r, D::Row> + Send + Unpin,
    {
        let mut query = QueryBuilder::<D>::new("SELECT * FROM ");
        query
            .push(table)
            .push(" WHERE account_id = ")
            .push_bind(id::<D>(account_id));
        match reference {
            AgentRef::Id(named) => query.push(" AND id = ").push_bind(id::<D>(*named)),
            AgentRef::Address(address) => query
                .push(" AND address = ")
                .push_bind(address.as_str().to_owned()),
        };
        Ok(query.build_query_as().fetch_optional(&self.reads).await?)
    }

    /// One page of a query over `table`'s rows of an account, newest first, with how many
    /// rows the account has in all.
    async fn page<Row>(
        &self,
        count: &'static str,
        select: &'static str,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Row>, u64)>
    where
        Row: for<'r> sqlx::FromRow<'r, D::Row> + Send + Unpin,
    {
        let total: i64 = sqlx::query_scalar(count)
            .bind(id::<D>(account_id))
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<Row> = sqlx::query_as(select)
            .bind(id::<D>(account_id))
            .bind(i64::from(page.size))
            .bind(page.offset())
            .fetch_all(&self.reads)
            .await?;
        Ok((rows, total as u64))
    }

    /// `FROM` and `WHERE` of the account's collaborations that `filter` matches, as `c`.
    fn filtered(query: &mut QueryBuilder<D>, account_id: Uuid, filter: &CollaborationFilter) {
        match filter.agent {
            // Read off the agent's rows of the roster, which are few beside the account's
            // collaborations: SQLite takes a CROSS JOIN's tables in the order written.
            Some(agent) => query
                .push(
                    " FROM collaboration_participants p CROSS JOIN collaborations c \
                       WHERE p.agent_id = ",
                )
                .push_bind(id::<D>(agent))
                .push(" AND c.id = p.collaboration_id AND c.account_id = "),
            None => query.push(" FROM collaborations c WHERE c.account_id = "),
        };
        query.push_bind(id::<D>(account_id));
        if let Some(channel_id) = filter.channel_id {
            query
                .push(" AND c.channel_id = ")
                .push_bind(id::<D>(channel_id));
        }
        if let Some(status) = filter.status {
            query.push(" AND c.status = ").push_bind(status.name());
        }
        if let Some(source) = filter.source {
            query.push(" AND c.source = ").push_bind(source.name());
        }
        if let Some(team_id) = filter.team_id {
            query.push(" AND c.team_id = ").push_bind(id::<D>(team_id));
        }
        if let Some(context_id) = filter.context_id {
            query
                .push(" AND c.context_id = ")
                .push_bind(id::<D>(context_id));
        }
    }

    /// A query for how many of the account's collaborations `filter` matches: read off the
    /// kept counts when there are some and the filter is by status alone, else counted.
    fn total(query: &mut QueryBuilder<D>, account_id: Uuid, filter: &CollaborationFilter) {
        if !(D::KEEPS_COUNTS && filter.by_status_alone()) {
            query.push("SELECT COUNT(*)");
            Self::filtered(query, account_id, filter);
            return;
        }
        query
            .push("SELECT COALESCE(SUM(n), 0) FROM collaboration_counts WHERE account_id = ")
            .push_bind(id::<D>(account_id));
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.name());
        }
    }

    /// Where the page `offset` rows down the account's list (of collaborations in `status`)
    /// starts: below which ordinal, and how many rows to step over there. The tallies of
    /// runs of 4096 ordinals (migration 0022) are added up, newest first, until the run the
    /// page starts in, so a page thousands deep steps over at most one run's rows.
    async fn seek(
        reading: &mut Transaction<'static, D>,
        account_id: Uuid,
        status: Option<CollaborationStatus>,
        offset: i64,
    ) -> StoreResult<(Option<i64>, i64)> {
        if offset < TALLY_RUN {
            return Ok((None, offset));
        }
        // Added up in the database, which answers with one row: sent row by row, the
        // tallies of a long list cost more than the page itself.
        let mut query = QueryBuilder::<D>::new(
            "SELECT bucket, above FROM (SELECT bucket, SUM(n) AS n, \
             SUM(SUM(n)) OVER (ORDER BY bucket DESC) - SUM(n) AS above \
             FROM collaboration_tallies WHERE account_id = ",
        );
        query.push_bind(id::<D>(account_id));
        if let Some(status) = status {
            query.push(" AND status = ").push_bind(status.name());
        }
        query
            .push(" GROUP BY bucket) AS runs WHERE above + n > ")
            .push_bind(offset)
            .push(" ORDER BY bucket DESC LIMIT 1");
        let run: Option<(i64, i64)> = query
            .build_query_as()
            .fetch_optional(&mut **reading)
            .await?;
        if let Some((bucket, above)) = run {
            return Ok((Some((bucket + 1) * TALLY_RUN), offset - above));
        }
        // Past the end: nothing is below the lowest run.
        let lowest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(bucket) FROM collaboration_tallies WHERE account_id = $1",
        )
        .bind(id::<D>(account_id))
        .fetch_one(&mut **reading)
        .await?;
        Ok((lowest.map(|bucket| bucket * TALLY_RUN), 0))
    }

    /// A collaboration read whole (see [`RosteredRow`]): `rest` follows the select list
    /// and names the collaboration `c`.
    fn rostered(rest: &str) -> String {
        format!("SELECT c.*, {} AS roster {rest}", D::ROSTER)
    }
}

/// The leases `owner` holds, as a claim or a renewal returned them.
pub(super) fn leases<Id: Into<Uuid>>(owner: Uuid, rows: Vec<(Id, i64)>) -> Vec<Lease> {
    rows.into_iter()
        .map(|(id, epoch)| Lease {
            collaboration_id: id.into(),
            owner,
            epoch,
        })
        .collect()
}

/// Multi-row statements are written over runs of rows whose lengths are powers of two, at
/// most `longest` (itself one), so that each takes one of a few shapes, prepared once and
/// kept in the connection's statement cache. A shape for every batch size, prepared anew
/// each time, was 8% of a create's CPU.
pub(super) fn runs<T>(rows: &[T], longest: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(longest.is_power_of_two());
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (run, tail) = rest.split_at((1 << rest.len().ilog2()).min(longest));
        rest = tail;
        Some(run)
    })
}

/// `IN (...)` over `ids`, the last repeated up to a power of two, for the same reason as
/// [`runs`]. `ids` is not empty.
pub(super) fn push_in<D: Dialect>(query: &mut QueryBuilder<D>, ids: &BTreeSet<Uuid>) {
    let last = ids.last().expect("an id to look for");
    let padding = ids.len().next_power_of_two() - ids.len();
    let mut list = query.separated(", ");
    for uuid in ids.iter().chain(std::iter::repeat_n(last, padding)) {
        list.push_bind(id::<D>(*uuid));
    }
    query.push(")");
}

#[async_trait]
impl<D> Store for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Vec<u8>: Column<D>,
    DateTime<Utc>: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    Option<DateTime<Utc>>: Column<D>,
    Option<D::Id>: Column<D>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q str>: Encode<'q, D>,
    for<'q> &'q [u8]: Encode<'q, D> + Type<D>,
{
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    async fn reseal_secrets(&self) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let mut resealed = 0;
        for (table, key, column) in [
            ("agents", "id", "secret"),
            ("agents", "id", "tool_credentials"),
            ("webhook_settings", "account_id", "secret"),
        ] {
            let sql = format!("SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL");
            let rows: Vec<(D::Id, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *tx)
                .await?;
            for (row, stored) in rows {
                if self.vault.is_current(&stored) {
                    continue;
                }
                let secret = super::rows::open(&self.vault, &stored)?;
                let sql = format!("UPDATE {table} SET {column} = $1 WHERE {key} = $2");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(self.vault.seal(&secret))
                    .bind(row)
                    .execute(&mut *tx)
                    .await?;
                resealed += 1;
            }
        }
        tx.commit().await?;
        Ok(resealed)
    }

    async fn operator_account(&self) -> StoreResult<Option<Uuid>> {
        let id: Option<D::Id> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE operator LIMIT 1")
                .fetch_optional(&self.reads)
                .await?;
        Ok(id.map(Into::into))
    }

    async fn create_account(&self, account: &Account, first_key: &NewKey) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, name, operator, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id::<D>(account.id))
        .bind(&account.name)
        .bind(account.operator)
        .bind(account.created_at)
        .execute(&mut *tx)
        .await?;
        Self::insert_key(&mut *tx, first_key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_accounts(&self, page: PageRequest) -> StoreResult<(Vec<Account>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<AccountRow<D::Id>> = sqlx::query_as(
            "SELECT * FROM accounts ORDER BY created_at, id LIMIT CAST($1 AS BIGINT) OFFSET $2",
        )
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(AccountRow::into_domain).collect(),
            total as u64,
        ))
    }

    async fn insert_key(&self, key: &NewKey, max_live: u32) -> StoreResult<()> {
        let mut tx = self.write().await?;
        // Two keys made at once for one account take turns on its row (SQLite: on the write
        // lock), so they cannot both take its last place.
        let lock = format!("SELECT id FROM accounts WHERE id = $1{}", D::LOCK_ROW);
        sqlx::query(sqlx::AssertSqlSafe(lock))
            .bind(id::<D>(key.account_id))
            .execute(&mut *tx)
            .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
        )
        .bind(id::<D>(key.account_id))
        .fetch_one(&mut *tx)
        .await?;
        if live >= i64::from(max_live) {
            return Err(StoreError::too_many_keys(max_live));
        }
        Self::insert_key(&mut *tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_key(&self, hash: &str) -> StoreResult<Option<Credential>> {
        let row: Option<KeyRow<D::Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reads)
        .await?;
        row.map(KeyRow::into_credential).transpose()
    }

    async fn key_exists(&self, hash: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_hash = $1)")
                .bind(hash)
                .fetch_one(&self.reads)
                .await?,
        )
    }

    async fn touch_key(&self, key_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id::<D>(key_id))
            .execute(&self.writes)
            .await?;
        Ok(())
    }

    async fn get_key(&self, account_id: Uuid, key_id: Uuid) -> StoreResult<Option<ApiKey>> {
        let row: Option<KeyRow<D::Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.id = $1 AND k.account_id = $2",
        )
        .bind(id::<D>(key_id))
        .bind(id::<D>(account_id))
        .fetch_optional(&self.reads)
        .await?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn list_keys(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<ApiKey>, u64)> {
        let (rows, total) = self
            .page::<KeyRow<D::Id>>(
                "SELECT COUNT(*) FROM api_keys WHERE account_id = $1",
                "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
                 WHERE k.account_id = $1 ORDER BY k.created_at DESC, k.id \
                 LIMIT CAST($2 AS BIGINT) OFFSET $3",
                account_id,
                page,
            )
            .await?;
        let keys = rows
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<StoreResult<_>>()?;
        Ok((keys, total))
    }

    async fn revoke_key(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let from_config: Option<bool> = sqlx::query_scalar(
            "SELECT from_config FROM api_keys WHERE id = $1 AND account_id = $2",
        )
        .bind(id::<D>(key_id))
        .bind(id::<D>(account_id))
        .fetch_optional(&mut *tx)
        .await?;
        match from_config {
            None => return Ok(false),
            Some(true) => return Err(StoreError::configured_key()),
            Some(false) => {}
        }
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(at)
            .bind(id::<D>(key_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_config_keys_except(&self, hash: &str) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<D::Id> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE from_config AND revoked_at IS NULL AND key_hash <> $2 RETURNING id",
        )
        .bind(Utc::now())
        .bind(hash)
        .fetch_all(&self.writes)
        .await?;
        Ok(ids.into_iter().map(Into::into).collect())
    }

    async fn claim_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
        abandoned_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyClaim> {
        let mut tx = self.write().await?;
        // Claims the key if it is new or its claim expired, in one statement: of two
        // requests racing for it, one inserts and the other waits for that row (SQLite: for
        // the write lock), then finds it live. A live row is left as it is but locked until
        // this transaction ends, so it cannot change (or be released) before it is read.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, idempotency_key) DO UPDATE SET \
             request_hash = excluded.request_hash, status = NULL, response = NULL, \
             created_at = excluded.created_at \
             WHERE idempotency_keys.created_at < $5 \
               OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < $6)",
        )
        .bind(id::<D>(account_id))
        .bind(key)
        .bind(request_hash)
        .bind(Utc::now())
        .bind(expired_before)
        .bind(abandoned_before)
        .execute(&mut *tx)
        .await?;
        let claim = if D::rows_affected(&claimed) == 1 {
            IdempotencyClaim::Claimed
        } else {
            let live: IdempotencyRow = sqlx::query_as(
                "SELECT request_hash, status, response FROM idempotency_keys \
                 WHERE account_id = $1 AND idempotency_key = $2",
            )
            .bind(id::<D>(account_id))
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            live.claim(request_hash)?
        };
        tx.commit().await?;
        Ok(claim)
    }

    async fn complete_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        status: u16,
        response: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 \
             WHERE account_id = $3 AND idempotency_key = $4",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(id::<D>(account_id))
        .bind(key)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn release_idempotency(&self, account_id: Uuid, key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE account_id = $1 AND idempotency_key = $2 AND status IS NULL",
        )
        .bind(id::<D>(account_id))
        .bind(key)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn purge_idempotency(
        &self,
        expired_before: DateTime<Utc>,
        in_flight_too: bool,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1 OR ($2 AND status IS NULL)",
        )
        .bind(expired_before)
        .bind(in_flight_too)
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO agents (id, account_id, address, name, description, kind, spec, secret, \
             tool_credentials, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id::<D>(agent.id))
        .bind(id::<D>(agent.account_id))
        .bind(agent.address.as_str())
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(agent.secret.as_ref().map(|secret| self.vault.seal(secret)))
        .bind(agent.tool_credentials.as_ref().map(|secret| self.vault.seal(secret)))
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .execute(&self.writes)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::address_taken(&agent.address)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_agent(&self, account_id: Uuid, agent: &AgentRef) -> StoreResult<Option<Agent>> {
        let row: Option<AgentRow<D::Id>> = self.named("agents", account_id, agent).await?;
        row.map(|row| row.into_domain(&self.vault)).transpose()
    }

    async fn get_agents(&self, account_id: Uuid, agents: &[AgentRef]) -> StoreResult<Vec<Agent>> {
        let (mut ids, mut addresses) = (BTreeSet::new(), BTreeSet::new());
        for agent in agents {
            match agent {
                AgentRef::Id(agent_id) => ids.insert(*agent_id),
                AgentRef::Address(address) => addresses.insert(address.as_str()),
            };
        }
        if ids.is_empty() && addresses.is_empty() {
            return Ok(Vec::new());
        }
        // An id lookup and an address lookup, each off its own unique index. The ids are
        // looked up alone and the account checked here: asked with the account too, SQLite
        // walks every agent of the account (the `(account_id, address)` index) once there
        // are four ids, which in an account of 10,000 agents was most of a create's time.
        let mut query = QueryBuilder::<D>::new("");
        if !ids.is_empty() {
            query.push("SELECT * FROM agents WHERE id IN (");
            push_in(&mut query, &ids);
        }
        if !addresses.is_empty() {
            if !ids.is_empty() {
                query.push(" UNION ALL ");
            }
            query
                .push("SELECT * FROM agents WHERE account_id = ")
                .push_bind(id::<D>(account_id))
                .push(" AND address IN (");
            let mut list = query.separated(", ");
            for address in addresses {
                list.push_bind(address.to_owned());
            }
            query.push(")");
        }
        let rows: Vec<AgentRow<D::Id>> = query.build_query_as().fetch_all(&self.reads).await?;
        let mut seen = BTreeSet::new();
        rows.into_iter()
            .map(|row| row.into_domain(&self.vault))
            .filter(|agent| match agent {
                Ok(agent) => agent.account_id == account_id && seen.insert(agent.id),
                Err(_) => true,
            })
            .collect()
    }

    async fn agents_unscoped(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<D>::new("SELECT * FROM agents WHERE id IN (");
        push_in(&mut query, &ids.iter().copied().collect());
        let rows: Vec<AgentRow<D::Id>> = query.build_query_as().fetch_all(&self.reads).await?;
        rows.into_iter()
            .map(|row| row.into_domain(&self.vault))
            .collect()
    }

    async fn list_agents(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Agent>, u64)> {
        let (rows, total) = self
            .page::<AgentRow<D::Id>>(
                "SELECT COUNT(*) FROM agents WHERE account_id = $1",
                "SELECT * FROM agents WHERE account_id = $1 ORDER BY created_at DESC, id \
                 LIMIT CAST($2 AS BIGINT) OFFSET $3",
                account_id,
                page,
            )
            .await?;
        let agents = rows
            .into_iter()
            .map(|row| row.into_domain(&self.vault))
            .collect::<StoreResult<_>>()?;
        Ok((agents, total))
    }

    async fn update_agent(&self, agent: &Agent) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET name = $1, description = $2, kind = $3, spec = $4, secret = $5, \
             tool_credentials = $6, updated_at = $7 WHERE id = $8 AND account_id = $9",
        )
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(agent.secret.as_ref().map(|secret| self.vault.seal(secret)))
        .bind(
            agent
                .tool_credentials
                .as_ref()
                .map(|secret| self.vault.seal(secret)),
        )
        .bind(agent.updated_at)
        .bind(id::<D>(agent.id))
        .bind(id::<D>(agent.account_id))
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn delete_agent(&self, account_id: Uuid, agent_id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM agents WHERE id = $1 AND account_id = $2")
            .bind(id::<D>(agent_id))
            .bind(id::<D>(account_id))
            .execute(&self.writes)
            .await;
        match result {
            Ok(done) => Ok(D::rows_affected(&done) == 1),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::agent_in_use()),
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_team(&self, team: &Team) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO teams (id, account_id, address, name, description, members, defaults, \
             answers_uagents, saved_by_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id::<D>(team.id))
        .bind(id::<D>(team.account_id))
        .bind(team.address.as_str())
        .bind(&team.name)
        .bind(&team.description)
        .bind(team_members(team))
        .bind(team_defaults(team))
        .bind(team.answers_uagents)
        .bind(id::<D>(team.saved_by))
        .bind(team.created_at)
        .bind(team.updated_at)
        .execute(&self.writes)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::address_taken(&team.address)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_team(&self, account_id: Uuid, team: &AgentRef) -> StoreResult<Option<Team>> {
        let row: Option<TeamRow<D::Id>> = self.named("teams", account_id, team).await?;
        row.map(TeamRow::into_domain).transpose()
    }

    async fn team_by_address(&self, address: &AgentAddress) -> StoreResult<Option<Team>> {
        let row: Option<TeamRow<D::Id>> = sqlx::query_as("SELECT * FROM teams WHERE address = $1")
            .bind(address.as_str())
            .fetch_optional(&self.reads)
            .await?;
        row.map(TeamRow::into_domain).transpose()
    }

    async fn list_teams(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Team>, u64)> {
        let (rows, total) = self
            .page::<TeamRow<D::Id>>(
                "SELECT COUNT(*) FROM teams WHERE account_id = $1",
                "SELECT * FROM teams WHERE account_id = $1 ORDER BY created_at DESC, id \
                 LIMIT CAST($2 AS BIGINT) OFFSET $3",
                account_id,
                page,
            )
            .await?;
        let teams = rows
            .into_iter()
            .map(TeamRow::into_domain)
            .collect::<StoreResult<_>>()?;
        Ok((teams, total))
    }

    async fn update_team(&self, team: &Team) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE teams SET name = $1, description = $2, members = $3, defaults = $4, \
             answers_uagents = $5, saved_by_key = $6, updated_at = $7 \
             WHERE id = $8 AND account_id = $9",
        )
        .bind(&team.name)
        .bind(&team.description)
        .bind(team_members(team))
        .bind(team_defaults(team))
        .bind(team.answers_uagents)
        .bind(id::<D>(team.saved_by))
        .bind(team.updated_at)
        .bind(id::<D>(team.id))
        .bind(id::<D>(team.account_id))
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn delete_team(&self, account_id: Uuid, team_id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM teams WHERE id = $1 AND account_id = $2")
            .bind(id::<D>(team_id))
            .bind(id::<D>(account_id))
            .execute(&self.writes)
            .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn insert_collaboration(
        &self,
        new: &NewCollaboration,
        max_running: u32,
        lease_to: Option<LeaseTo>,
    ) -> StoreResult<Option<Lease>> {
        let create = Create {
            new: new.clone(),
            max_running,
            lease: lease_to.map(|to| to.first(new.id)),
            traceparent: crate::traces::traceparent(),
        };
        let lease = create.lease.map(|(lease, _)| lease);
        D::insert_collaboration(self, create).await?;
        Ok(lease)
    }

    async fn get_collaboration(
        &self,
        account_id: Uuid,
        collaboration_id: Uuid,
    ) -> StoreResult<Option<Collaboration>> {
        let sql = Self::rostered("FROM collaborations c WHERE c.id = $1 AND c.account_id = $2");
        let row: Option<RosteredRow<D::Id>> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id::<D>(collaboration_id))
            .bind(id::<D>(account_id))
            .fetch_optional(&self.reads)
            .await?;
        row.map(RosteredRow::into_domain).transpose()
    }

    async fn collaboration_unscoped(
        &self,
        collaboration_id: Uuid,
    ) -> StoreResult<Option<Collaboration>> {
        let sql = Self::rostered("FROM collaborations c WHERE c.id = $1");
        let row: Option<RosteredRow<D::Id>> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id::<D>(collaboration_id))
            .fetch_optional(&self.reads)
            .await?;
        row.map(RosteredRow::into_domain).transpose()
    }

    async fn append_event(
        &self,
        lease: &Lease,
        body: &EventBody,
    ) -> StoreResult<Option<StoredEvent>> {
        debug_assert!(
            body.message_id().is_none(),
            "messages are appended as turns"
        );
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        let channel: Option<(D::Id,)> = sqlx::query_as(
            "SELECT channel_id FROM collaborations WHERE id = $1 AND status = 'running'",
        )
        .bind(id::<D>(lease.collaboration_id))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((channel_id,)) = channel else {
            // The lease check locked the collaboration's row: let it go now (see
            // `claim_webhooks`).
            tx.rollback().await?;
            return Ok(None);
        };
        let event = Self::insert_event(&mut tx, channel_id, body).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn remember_identity(&self, address: &str, collaboration_id: Uuid) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO uagent_identities (address, collaboration_id) VALUES ($1, $2) \
             ON CONFLICT (address) DO NOTHING",
        )
        .bind(address)
        .bind(id::<D>(collaboration_id))
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn identity_collaboration(&self, address: &str) -> StoreResult<Option<Uuid>> {
        let row: Option<(D::Id,)> =
            sqlx::query_as("SELECT collaboration_id FROM uagent_identities WHERE address = $1")
                .bind(address)
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.map(|(id,)| id.into()))
    }

    async fn note_uagent_ask(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        after_seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        sqlx::query(
            "INSERT INTO uagent_asks (collaboration_id, agent_id, after_seq, asked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (collaboration_id, agent_id) \
             DO UPDATE SET after_seq = excluded.after_seq, asked_at = excluded.asked_at",
        )
        .bind(id::<D>(lease.collaboration_id))
        .bind(id::<D>(agent_id))
        .bind(after_seq)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn uagent_ask(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
    ) -> StoreResult<Option<(i64, DateTime<Utc>)>> {
        Ok(sqlx::query_as(
            "SELECT after_seq, asked_at FROM uagent_asks \
             WHERE collaboration_id = $1 AND agent_id = $2",
        )
        .bind(id::<D>(collaboration_id))
        .bind(id::<D>(agent_id))
        .fetch_optional(&self.reads)
        .await?)
    }

    async fn register_uagent(
        &self,
        address: &str,
        endpoint: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO uagent_registrations (address, endpoint, expires_at) \
             SELECT $1, $2, $3 \
             WHERE EXISTS (SELECT 1 FROM uagent_registrations WHERE address = $1) \
                OR (SELECT COUNT(*) FROM uagent_registrations) < $4 \
             ON CONFLICT (address) DO UPDATE SET endpoint = excluded.endpoint, \
                expires_at = excluded.expires_at",
        )
        .bind(address)
        .bind(endpoint)
        .bind(expires_at)
        .bind(super::MAX_UAGENT_REGISTRATIONS)
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn registered_uagent(
        &self,
        address: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT endpoint FROM uagent_registrations WHERE address = $1 AND expires_at > $2",
        )
        .bind(address)
        .bind(now)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(endpoint,)| endpoint))
    }

    async fn purge_uagent_registrations(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM uagent_registrations WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.writes)
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn hear_uagent_message(&self, msg_id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO uagent_heard (msg_id, heard_at) VALUES ($1, $2) \
             ON CONFLICT (msg_id) DO NOTHING",
        )
        .bind(id::<D>(msg_id))
        .bind(crate::domain::now())
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn purge_uagent_heard(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM uagent_heard WHERE heard_at < $1")
            .bind(before)
            .execute(&self.writes)
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn keep_uagent_reply(
        &self,
        collaboration_id: Uuid,
        agent_id: Uuid,
        msg_id: Uuid,
        content: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO uagent_replies (msg_id, collaboration_id, agent_id, content, received_at) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE (SELECT COUNT(*) FROM uagent_replies \
                    WHERE collaboration_id = $2 AND agent_id = $3) < $6 \
             ON CONFLICT (msg_id) DO NOTHING",
        )
        .bind(id::<D>(msg_id))
        .bind(id::<D>(collaboration_id))
        .bind(id::<D>(agent_id))
        .bind(content)
        .bind(crate::domain::now())
        .bind(super::KEPT_UAGENT_REPLIES)
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn take_uagent_reply(
        &self,
        lease: &Lease,
        agent_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        let first: Option<(String,)> = sqlx::query_as(
            "SELECT content FROM uagent_replies \
             WHERE collaboration_id = $1 AND agent_id = $2 AND received_at >= $3 \
             ORDER BY received_at LIMIT 1",
        )
        .bind(id::<D>(lease.collaboration_id))
        .bind(id::<D>(agent_id))
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM uagent_replies WHERE collaboration_id = $1 AND agent_id = $2")
            .bind(id::<D>(lease.collaboration_id))
            .bind(id::<D>(agent_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(first.map(|(content,)| content))
    }

    async fn list_collaborations(
        &self,
        account_id: Uuid,
        filter: &CollaborationFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<Collaboration>, u64)> {
        // One snapshot for the tallies, the page and its total.
        let mut reading = self.reads.begin().await?;
        let (below, skip) = if D::KEEPS_COUNTS && filter.by_status_alone() {
            Self::seek(&mut reading, account_id, filter.status, page.offset()).await?
        } else {
            (None, page.offset())
        };
        // The page's ids are read off the list's index alone, stepping over `skip` of its
        // entries; only the page's own rows are then read whole, with their rosters.
        let mut query = QueryBuilder::<D>::new(Self::rostered(", ("));
        Self::total(&mut query, account_id, filter);
        query.push(") AS total FROM collaborations c WHERE c.id IN (SELECT c.id");
        Self::filtered(&mut query, account_id, filter);
        if let Some(below) = below {
            query.push(" AND c.ordinal < ").push_bind(below);
        }
        query
            .push(" ORDER BY c.ordinal DESC, c.id LIMIT CAST(")
            .push_bind(i64::from(page.size))
            .push(" AS BIGINT) OFFSET ")
            .push_bind(skip)
            .push(") ORDER BY c.ordinal DESC, c.id");
        let rows: Vec<ListedRow<D::Id>> = query.build_query_as().fetch_all(&mut *reading).await?;
        let total = match rows.first() {
            Some(row) => row.total,
            None if page.offset() == 0 => 0,
            // A page past the end still says how many there are.
            None => {
                let mut query = QueryBuilder::<D>::new("");
                Self::total(&mut query, account_id, filter);
                query.build_query_scalar().fetch_one(&mut *reading).await?
            }
        };
        reading.commit().await?;
        let items = rows
            .into_iter()
            .map(|row| row.collaboration.into_domain())
            .collect::<StoreResult<_>>()?;
        Ok((items, total as u64))
    }

    async fn delete_collaboration(
        &self,
        account_id: Uuid,
        collaboration_id: Uuid,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM collaborations WHERE id = $1 AND account_id = $2")
            .bind(id::<D>(collaboration_id))
            .bind(id::<D>(account_id))
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 0 {
            return Ok(false);
        }
        Self::note_changes(
            &mut tx,
            account_id,
            &[(collaboration_id, ChangeKind::Deleted)],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(CollaborationStatus, u64)>> {
        let sql = if D::KEEPS_COUNTS {
            "SELECT status, SUM(n) FROM collaboration_counts GROUP BY status HAVING SUM(n) > 0"
        } else {
            "SELECT status, COUNT(*) FROM collaborations GROUP BY status"
        };
        let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&self.reads).await?;
        rows.into_iter()
            .map(|(status, count)| Ok((parse(&status)?, count as u64)))
            .collect()
    }

    async fn claim_leases(
        &self,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> StoreResult<Vec<Lease>> {
        D::claim_leases(self, owner, ttl, which).await
    }

    async fn renew_leases(&self, owner: Uuid, ttl: Duration) -> StoreResult<Vec<Lease>> {
        D::renew_leases(self, owner, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        )
        .bind(id::<D>(lease.collaboration_id))
        .bind(id::<D>(lease.owner))
        .bind(lease.epoch)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, owner: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
        )
        .bind(id::<D>(owner))
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn lease_holder(&self, collaboration_id: Uuid) -> StoreResult<Option<Uuid>> {
        D::lease_holder(self, collaboration_id).await
    }

    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        spent: Spent,
    ) -> StoreResult<Option<StoredEvent>> {
        let turn = Turn {
            lease: *lease,
            body: body.clone(),
            spent,
        };
        D::append_message(self, turn).await
    }

    async fn add_tokens(&self, lease: &Lease, tokens: u64, cost_micros: u64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        sqlx::query(
            "UPDATE collaborations SET tokens_used = tokens_used + $1, cost_micros = cost_micros + $2 \
             WHERE id = $3",
        )
            .bind(tokens as i64)
            .bind(cost_micros as i64)
            .bind(id::<D>(lease.collaboration_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_synopsis(&self, lease: &Lease, synopsis: &Synopsis) -> StoreResult<()> {
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        sqlx::query("UPDATE collaborations SET synopsis = $1, synopsis_seq = $2 WHERE id = $3")
            .bind(&synopsis.text)
            .bind(synopsis.through_seq)
            .bind(id::<D>(lease.collaboration_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_audio(
        &self,
        lease: &Lease,
        audio_url: Option<&str>,
        note: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        sqlx::query(
            "UPDATE collaborations SET audio_url = $1, \
             advisory_message = CASE WHEN $2 IS NULL THEN advisory_message \
               WHEN advisory_message IS NULL THEN $2 ELSE advisory_message || ' ' || $2 END \
             WHERE id = $3",
        )
        .bind(audio_url)
        .bind(note)
        .bind(id::<D>(lease.collaboration_id))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_collaboration(
        &self,
        collaboration_id: Uuid,
        lease: Option<&Lease>,
        ending: &Ending,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut tx = self.write().await?;
        if let Some(lease) = lease {
            D::check_lease(&mut tx, lease).await?;
        }
        let status = ending.reason.status();
        let updated = sqlx::query(
            "UPDATE collaborations SET status = $1, end_reason = $2, ended_at = $3, advisory_message = $4, \
             error_message = $5 WHERE id = $6 AND status = 'running'",
        )
        .bind(status.name())
        .bind(ending.reason.name())
        .bind(ending.ended_at)
        .bind(&ending.advisory_message)
        .bind(&ending.error_message)
        .bind(id::<D>(collaboration_id))
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&updated) == 0 {
            return Ok(None);
        }
        let channel_id = Self::channel_of(&mut tx, collaboration_id).await?;
        let body = EventBody::Status {
            status,
            end_reason: Some(ending.reason),
            advisory_message: ending.advisory_message.clone(),
            error_message: ending.error_message.clone(),
            ended_at: Some(ending.ended_at),
            verdict_seq: ending.verdict_seq,
            failed_agent: ending.failed_agent,
        };
        let event = Self::insert_event(&mut tx, channel_id, &body).await?;
        Self::note_change(&mut tx, collaboration_id, ChangeKind::Ended).await?;
        Self::enqueue_webhook(&mut tx, collaboration_id, WebhookEvent::Ended).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn record_summary(
        &self,
        lease: &Lease,
        headline: &str,
        summary: &str,
        outcome: &Outcome,
    ) -> StoreResult<Option<StoredEvent>> {
        let collaboration_id = lease.collaboration_id;
        let mut tx = self.write().await?;
        D::check_lease(&mut tx, lease).await?;
        let updated = sqlx::query(
            "UPDATE collaborations SET headline = $1, summary = $2, outcome = $3 \
             WHERE id = $4 AND summary IS NULL",
        )
        .bind(headline)
        .bind(summary)
        .bind(serde_json::to_string(outcome).expect("an outcome serializes"))
        .bind(id::<D>(collaboration_id))
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&updated) == 0 {
            // As in `append_event`: the lease check's lock goes now.
            tx.rollback().await?;
            return Ok(None);
        }
        let channel_id = Self::channel_of(&mut tx, collaboration_id).await?;
        let body = EventBody::Summary {
            headline: headline.to_owned(),
            summary: summary.to_owned(),
            outcome: Some(outcome.clone()),
            created_at: crate::domain::now(),
        };
        let event = Self::insert_event(&mut tx, channel_id, &body).await?;
        Self::note_change(&mut tx, collaboration_id, ChangeKind::Summarized).await?;
        Self::enqueue_webhook(&mut tx, collaboration_id, WebhookEvent::SummaryReady).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn get_channel(
        &self,
        account_id: Uuid,
        channel_id: Uuid,
    ) -> StoreResult<Option<ChannelInfo>> {
        let row: Option<ChannelRow<D::Id>> = sqlx::query_as(
            "SELECT ch.id, ch.account_id, ch.collaboration_id, ch.last_seq, c.status, ch.created_at \
             FROM channels ch JOIN collaborations c ON c.id = ch.collaboration_id \
             WHERE ch.id = $1 AND ch.account_id = $2",
        )
        .bind(id::<D>(channel_id))
        .bind(id::<D>(account_id))
        .fetch_optional(&self.reads)
        .await?;
        row.map(ChannelRow::into_domain).transpose()
    }

    async fn read_events(
        &self,
        channel_id: Uuid,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        // First where the page ends, from the frames' sizes alone (both databases know a
        // value's size without reading it, and sum it over the page's rows only); then the
        // frames up to there.
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, frame FROM events WHERE channel_id = $1 AND seq > $2 AND seq <= (\
               SELECT MAX(seq) FROM (\
                 SELECT seq, SUM(size) OVER (ORDER BY seq) - size AS before FROM (\
                   SELECT seq, octet_length(frame) AS size FROM events \
                   WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT CAST($3 AS BIGINT)\
                 ) page\
               ) sized WHERE before < $4\
             ) ORDER BY seq",
        )
        .bind(id::<D>(channel_id))
        .bind(after_seq)
        .bind(i64::from(limit))
        .bind(super::PAGE_BYTES)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, frame)| StoredEvent { seq, frame })
            .collect())
    }

    async fn webhook_settings(&self, account_id: Uuid) -> StoreResult<Option<WebhookSettings>> {
        let row: Option<WebhookSettingsRow<D::Id>> =
            sqlx::query_as("SELECT * FROM webhook_settings WHERE account_id = $1")
                .bind(id::<D>(account_id))
                .fetch_optional(&self.reads)
                .await?;
        row.map(|row| row.into_domain(&self.vault)).transpose()
    }

    async fn create_webhook_settings(&self, settings: &WebhookSettings) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_settings (account_id, default_url, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(id::<D>(settings.account_id))
        .bind(&settings.default_url)
        .bind(self.vault.seal(&settings.secret))
        .bind(settings.created_at)
        .bind(settings.updated_at)
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn set_webhook_default_url(
        &self,
        account_id: Uuid,
        url: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_settings SET default_url = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(url)
        .bind(at)
        .bind(id::<D>(account_id))
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        account_id: Uuid,
        secret: &Secret,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_settings SET secret = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(self.vault.seal(secret))
        .bind(at)
        .bind(id::<D>(account_id))
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let mut tx = self.write().await?;
        let mut query = QueryBuilder::<D>::new(
            "SELECT d.id, d.account_id, d.url, d.payload, d.attempts, d.created_at, w.secret, \
             d.traceparent \
             FROM webhook_deliveries d JOIN webhook_settings w ON w.account_id = d.account_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ",
        );
        query
            .push_bind(now)
            .push(" ORDER BY d.next_attempt_at LIMIT CAST(")
            .push_bind(i64::from(limit))
            .push(" AS BIGINT)")
            .push(D::SKIP_CLAIMED);
        let rows: Vec<DueRow<D::Id>> = query.build_query_as().fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            // Ended here, not by dropping it: PostgreSQL locks a row that another claim
            // took meanwhile before it finds the row no longer due, and sqlx rolls a
            // dropped transaction back later, from a task of its own. Until then every
            // other claim skips those rows as taken (a store test, run alone, failed 4
            // times in 60 so).
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut claim = QueryBuilder::<D>::new("UPDATE webhook_deliveries SET next_attempt_at = ");
        claim.push_bind(claim_until).push(" WHERE id IN (");
        push_in(&mut claim, &rows.iter().map(|row| row.id.into()).collect());
        claim.build().execute(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|row| row.into_domain(claim_until, &self.vault))
            .collect()
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: Uuid,
        claimed_until: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        let (status, next, delivered) = attempt_columns(outcome);
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             last_attempt_at = $3, last_status = $4, last_error = $5, delivered_at = $6 \
             WHERE id = $7 AND status = 'pending' AND next_attempt_at = $8",
        )
        .bind(status.name())
        .bind(next)
        .bind(outcome.at)
        .bind(outcome.status.map(i64::from))
        .bind(&outcome.error)
        .bind(delivered)
        .bind(id::<D>(delivery_id))
        .bind(claimed_until)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn unclaim_webhook(
        &self,
        delivery_id: Uuid,
        claimed_until: DateTime<Utc>,
        again: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 \
             WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(again)
        .bind(id::<D>(delivery_id))
        .bind(claimed_until)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn purge_webhook_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1",
        )
        .bind(before)
        .execute(&self.writes)
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn list_webhook_deliveries(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        let (rows, total) = self
            .page::<DeliveryRow<D::Id>>(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = $1",
                "SELECT * FROM webhook_deliveries WHERE account_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT CAST($2 AS BIGINT) OFFSET $3",
                account_id,
                page,
            )
            .await?;
        let deliveries = rows
            .into_iter()
            .map(DeliveryRow::into_domain)
            .collect::<StoreResult<_>>()?;
        Ok((deliveries, total))
    }

    async fn purge_tickets(&self, expired_before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM websocket_tickets WHERE expires_at < $1")
            .bind(expired_before)
            .execute(&self.writes)
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn account_feed(
        &self,
        account_id: Uuid,
        after_rev: i64,
        limit: u32,
    ) -> StoreResult<FeedPage> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT feed_rev FROM accounts WHERE id = $1")
            .bind(id::<D>(account_id))
            .fetch_optional(&self.reads)
            .await?;
        let rows: Vec<(i64, D::Id, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT rev, collaboration_id, change, at FROM account_feed \
             WHERE account_id = $1 AND rev > $2 ORDER BY rev LIMIT CAST($3 AS BIGINT)",
        )
        .bind(id::<D>(account_id))
        .bind(after_rev)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        let changes = rows
            .into_iter()
            .map(|(rev, collaboration_id, kind, at)| {
                Ok(Change {
                    rev,
                    collaboration_id: collaboration_id.into(),
                    kind: parse(&kind)?,
                    at,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Read after the rows: a change committed in between is then within `latest`.
        let latest = latest
            .unwrap_or(0)
            .max(changes.last().map_or(0, |change| change.rev));
        Ok(FeedPage::new(after_rev, changes, latest))
    }

    async fn purge_account_feed(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM account_feed WHERE at < $1")
            .bind(before)
            .execute(&self.writes)
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn insert_ticket(
        &self,
        hash: &str,
        key: &ApiKey,
        channel_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO websocket_tickets (ticket_hash, account_id, key_id, channel_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(id::<D>(key.account_id))
        .bind(id::<D>(key.id))
        .bind(id::<D>(channel_id))
        .bind(expires_at)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn redeem_ticket(&self, hash: &str, channel_id: Uuid) -> StoreResult<Option<Credential>> {
        let now = Utc::now();
        // A ticket that is not there (a guess, a reuse) costs a read, not a write
        // transaction: on SQLite that would queue behind, and hold up, every turn.
        let live: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM websocket_tickets \
             WHERE ticket_hash = $1 AND channel_id = $2 AND used_at IS NULL AND expires_at > $3)",
        )
        .bind(hash)
        .bind(id::<D>(channel_id))
        .bind(now)
        .fetch_one(&self.reads)
        .await?;
        if !live {
            return Ok(None);
        }
        let mut tx = self.write().await?;
        // Of two redemptions at once, the second waits for the first's row (SQLite: for the
        // write lock) and finds it used.
        let key_id: Option<D::Id> = sqlx::query_scalar(
            "UPDATE websocket_tickets SET used_at = $1 \
             WHERE ticket_hash = $2 AND channel_id = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING key_id",
        )
        .bind(now)
        .bind(hash)
        .bind(id::<D>(channel_id))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key_id) = key_id else {
            return Ok(None);
        };
        let row: Option<KeyRow<D::Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.id = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(KeyRow::into_credential).transpose()
    }
}

#[cfg(test)]
mod tests {
    /// Every row in order, in runs of a few lengths only.
    #[test]
    fn rows_are_written_in_runs_of_powers_of_two() {
        let lengths = |n: usize, longest| {
            let rows: Vec<usize> = (0..n).collect();
            let runs: Vec<&[usize]> = super::runs(&rows, longest).collect();
            assert_eq!(runs.concat(), rows);
            runs.iter().map(|run| run.len()).collect::<Vec<_>>()
        };
        assert_eq!(lengths(0, 8), [0; 0]);
        assert_eq!(lengths(1, 8), [1]);
        assert_eq!(lengths(16, 256), [16]);
        assert_eq!(lengths(13, 256), [8, 4, 1]);
        assert_eq!(lengths(600, 256), [256, 256, 64, 16, 8]);
    }
}
