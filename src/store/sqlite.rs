//! The embedded backend: one SQLite file in WAL mode.
//!
//! Write transactions start with `BEGIN IMMEDIATE` so that SQLite takes the write lock up
//! front; a deferred transaction that later upgrades can fail with `SQLITE_BUSY` instead of
//! waiting. UUIDs are stored as hyphenated text and times as RFC 3339 text, so the file reads
//! well in the `sqlite3` shell and compares the same way PostgreSQL will.
//!
//! A bound `LIMIT` is written `LIMIT CAST(? AS INTEGER)`. SQLite plans a bare `LIMIT ?` for
//! the value bound, and so compiles the statement again every time it is bound: a cached
//! statement was prepared anew on every run, which was 14% of a list request's time.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    QueryBuilder, Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{mpsc, oneshot};
use uuid::{Uuid, fmt::Hyphenated};

use super::{
    ChannelInfo, Claim, CollaborationFilter, Credential, IdempotencyClaim, Lease, LeaseTo, Store,
    StoreError, StoreResult, is_foreign_key_violation, is_unique_violation,
    rows::{
        AccountRow, AgentRow, ChannelRow, DeliveryRow, DueRow, IdempotencyRow, KeyRow, ListedRow,
        RosteredRow, SnapshotRow, WebhookSettingsRow, attempt_columns, spec_json,
    },
};
use crate::domain::{
    Account, Agent, AgentRef, ApiKey, Collaboration, CollaborationStatus, Ending, EventBody,
    NewCollaboration, NewKey, PageRequest, Scope, StoredEvent,
    webhook::{AttemptOutcome, Delivery, DueDelivery, WebhookEvent, WebhookSettings},
};

/// How UUID columns decode here: as hyphenated text.
type Id = Hyphenated;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A query reading collaborations whole, as `c`: the row and, as `roster`, the agents on
/// its roster folded into a JSON array of `[position, id, address, name, kind]` (see
/// [`RosteredRow`]). What follows the select list is the macro's argument.
///
/// The array is not ordered in SQL: an aggregate's `ORDER BY` sorts through a temporary
/// b-tree opened for every row, 6% of a list request's CPU in a profile. The roster is put
/// in order when it is read.
macro_rules! rostered {
    ($rest:literal) => {
        concat!(
            "SELECT c.*, (SELECT json_group_array(json_array(p.position, a.id, a.address, \
             a.name, a.kind)) FROM collaboration_participants p \
             JOIN agents a ON a.id = p.agent_id WHERE p.collaboration_id = c.id) AS roster ",
            $rest
        )
    };
}

/// Reads and writes go through pools of their own. SQLite takes one writer at a time: one
/// writing connection queues writers in the process, where waiting costs nothing, instead
/// of letting several connections contend for the file lock (busy retries, and a thread
/// switch per attempt). Readers never wait for it in WAL mode.
///
/// Turns, the one write every running collaboration makes over and over, and new
/// collaborations, the one write every create request makes, are written by a task of their
/// own, many to a transaction (see [`commit_writes`]).
#[derive(Clone)]
pub struct SqliteStore {
    reads: SqlitePool,
    writes: SqlitePool,
    queue: mpsc::Sender<Write>,
}

/// The most writes in one transaction. Enough to take in every runnable collaboration's
/// turn at once; few enough that a commit stays short.
const WRITES_PER_COMMIT: usize = 256;

impl SqliteStore {
    /// Opens (creating if needed) `skein.db` in `data_dir` and applies pending migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("skein.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode; only a power loss can
            // take back the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each use: a connection here is a thread in this process with the
        // file open, not a socket that can go away, and the ping costs a round trip to that
        // thread, as much as the statement itself.
        let pool = || SqlitePoolOptions::new().test_before_acquire(false);
        // The writer's statements are many, the creates' multi-row shapes among them (see
        // `runs`): room for all of them in its cache.
        let writes = pool()
            .max_connections(1)
            .connect_with(options.clone().statement_cache_capacity(256))
            .await?;
        MIGRATOR.run(&writes).await?;
        let reads = pool()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await?;
        let (queue, writer) = mpsc::channel(WRITES_PER_COMMIT);
        tokio::spawn(commit_writes(writes.clone(), writer));
        Ok(Self {
            reads,
            writes,
            queue,
        })
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        begin_write(&self.writes).await
    }

    /// Hands `write` to [`commit_writes`] and waits until its transaction has committed.
    async fn queued<T>(
        &self,
        write: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Write,
    ) -> StoreResult<T> {
        let (done, written) = oneshot::channel();
        // The writer task lives as long as any clone of the store; it is gone only if it
        // panicked, and then nothing can be written any more.
        let gone = || StoreError::Database(sqlx::Error::PoolClosed);
        self.queue.send(write(done)).await.map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }
}

/// Appends one event to a channel inside the caller's transaction: bumps the channel's
/// counter and inserts the frame under the new `seq`.
async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    channel_id: Hyphenated,
    body: &EventBody,
) -> StoreResult<StoredEvent> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE channels SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
    )
    .bind(channel_id)
    .fetch_one(&mut **tx)
    .await?;
    let frame = body.to_frame(seq);
    sqlx::query(
        "INSERT INTO events (channel_id, seq, kind, frame, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(channel_id)
    .bind(seq)
    .bind(body.kind())
    .bind(&frame)
    .bind(Utc::now())
    .execute(&mut **tx)
    .await?;
    Ok(StoredEvent { seq, frame })
}

async fn begin_write(writes: &SqlitePool) -> StoreResult<Transaction<'static, Sqlite>> {
    Ok(writes.begin_with("BEGIN IMMEDIATE").await?)
}

/// A write waiting for [`commit_writes`], with where to answer once it is committed.
enum Write {
    Turn(Turn, oneshot::Sender<StoreResult<Option<StoredEvent>>>),
    Create(Create, oneshot::Sender<StoreResult<()>>),
}

struct Turn {
    lease: Lease,
    body: EventBody,
    tokens: u64,
}

struct Create {
    new: NewCollaboration,
    max_running: u32,
    lease: Option<(Lease, DateTime<Utc>)>,
}

/// What a write made: the event a turn stored, nothing for a create.
type Made = Option<StoredEvent>;

impl Write {
    fn answer(self, result: StoreResult<Made>) {
        match self {
            Write::Turn(_, done) => drop(done.send(result)),
            Write::Create(_, done) => drop(done.send(result.map(drop))),
        }
    }
}

/// Group commit. Every write waiting when the writer comes round goes into one transaction,
/// and each is answered only once that transaction is committed. A commit costs SQLite a
/// WAL write of every page it touched, and sqlx two hand-offs to its connection's thread;
/// under load, hundreds of turns (or tens of creates) now share them, and the pages they
/// have in common (the tables' last leaves, the indexes) are written once.
///
/// A write is refused on its own (its collaboration has ended, its lease is lost, its key
/// has too many collaborations running) without harm to the others. If the transaction
/// fails as a whole, nothing of it was kept, and each write is tried again in a transaction
/// of its own, so that one bad write fails alone.
async fn commit_writes(writes: SqlitePool, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITES_PER_COMMIT);
    while queue.recv_many(&mut batch, WRITES_PER_COMMIT).await > 0 {
        match write_together(&writes, &batch).await {
            Ok(made) => {
                for (write, result) in batch.drain(..).zip(made) {
                    write.answer(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = batch.len(), "group commit failed; writing its writes one by one");
                for write in batch.drain(..) {
                    let result = write_alone(&writes, &write).await;
                    write.answer(result);
                }
            }
        }
    }
}

/// The writes of `batch` in one transaction, with each write's own outcome; `Err` if the
/// transaction failed and was rolled back. The creates are written first, all together
/// (see [`create_all`]); then each turn.
async fn write_together(
    writes: &SqlitePool,
    batch: &[Write],
) -> StoreResult<Vec<StoreResult<Made>>> {
    let mut tx = begin_write(writes).await?;
    let creates: Vec<&Create> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Create(create, _) => Some(create),
            Write::Turn(..) => None,
        })
        .collect();
    let mut created = create_all(&mut tx, &creates).await?.into_iter();
    let mut made = Vec::with_capacity(batch.len());
    for write in batch {
        made.push(match write {
            Write::Create(..) => created
                .next()
                .expect("an outcome for every create")
                .map(|()| None),
            // A turn refused for its lease writes nothing, so the transaction goes on.
            Write::Turn(turn, _) => match append_in(&mut tx, turn).await {
                Err(error) if !matches!(error, StoreError::LeaseLost) => return Err(error),
                result => result,
            },
        });
    }
    tx.commit().await?;
    Ok(made)
}

async fn write_alone(writes: &SqlitePool, write: &Write) -> StoreResult<Made> {
    let mut made = write_together(writes, std::slice::from_ref(write)).await?;
    made.pop().expect("an outcome for the one write")
}

/// Multi-row statements are written over runs of rows whose lengths are powers of two, at
/// most `longest` (itself one), so that each takes one of a few shapes, prepared once and
/// kept in the connection's statement cache. A shape for every batch size, prepared anew
/// each time, was 8% of a create's CPU.
fn runs<T>(rows: &[T], longest: usize) -> impl Iterator<Item = &[T]> {
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
fn push_in(query: &mut QueryBuilder<Sqlite>, ids: &BTreeSet<Uuid>) {
    let last = ids.last().expect("an id to look for");
    let padding = ids.len().next_power_of_two() - ids.len();
    let mut list = query.separated(", ");
    for id in ids.iter().chain(std::iter::repeat_n(last, padding)) {
        list.push_bind(id.hyphenated());
    }
    query.push(")");
}

/// New collaborations, each with its roster, channel, lease and `started` webhook, in one
/// statement per table whatever their number (see [`runs`]): a statement costs two thread
/// hand-offs to sqlx's connection thread besides SQLite's own work, and a batch of creates
/// shares them.
///
/// First the running cap: every key's count is read at once (kept by triggers, migration
/// 0008) and counted on here, in order, so two creates of one batch cannot both take a
/// key's last slot. A create over the cap is refused (`Conflict`) and writes nothing.
async fn create_all(
    tx: &mut Transaction<'static, Sqlite>,
    creates: &[&Create],
) -> StoreResult<Vec<StoreResult<()>>> {
    if creates.is_empty() {
        return Ok(Vec::new());
    }
    let keys: BTreeSet<Uuid> = creates.iter().map(|c| c.new.created_by).collect();
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT created_by_key, n FROM running_counts WHERE created_by_key IN (",
    );
    push_in(&mut query, &keys);
    let counted: Vec<(Id, i64)> = query.build_query_as().fetch_all(&mut **tx).await?;
    let mut running: HashMap<Uuid, i64> = counted
        .into_iter()
        .map(|(key, n)| (key.into_uuid(), n))
        .collect();
    let outcomes: Vec<StoreResult<()>> = creates
        .iter()
        .map(|create| {
            let n = running.entry(create.new.created_by).or_default();
            if *n >= i64::from(create.max_running) {
                return Err(StoreError::too_many_running(*n, create.max_running));
            }
            *n += 1;
            Ok(())
        })
        .collect();
    let admitted: Vec<&Create> = creates
        .iter()
        .zip(&outcomes)
        .filter_map(|(create, outcome)| outcome.is_ok().then_some(*create))
        .collect();

    for run in runs(&admitted, WRITES_PER_COMMIT) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO collaborations (id, account_id, channel_id, objective, principal_agent_id, \
             message_cap, timeout_window, evaluate_objective_completion, source, strategy, \
             webhook_url, token_budget, podcast, allow_interjections, created_by_key, status, \
             started_at, created_at, lease_owner, lease_expires_at, lease_epoch) ",
        )
        .push_values(run, |mut row, Create { new, lease, .. }| {
            row.push_bind(new.id.hyphenated())
                .push_bind(new.account_id.hyphenated())
                .push_bind(new.channel_id.hyphenated())
                .push_bind(&new.objective)
                .push_bind(new.principal.hyphenated())
                .push_bind(i64::from(new.message_cap))
                .push_bind(i64::from(new.timeout_window))
                .push_bind(new.evaluate_objective_completion)
                .push_bind(new.source.map(|s| s.name()))
                .push_bind(new.strategy.name())
                .push_bind(&new.webhook_url)
                .push_bind(new.token_budget.map(|b| b as i64))
                .push_bind(new.podcast)
                .push_bind(new.allow_interjections)
                .push_bind(new.created_by.hyphenated())
                .push("'running'")
                .push_bind(new.created_at)
                .push_bind(new.created_at)
                .push_bind(lease.map(|(lease, _)| lease.owner.hyphenated()))
                .push_bind(lease.map(|(_, expires)| expires))
                .push_bind(lease.map_or(0, |(lease, _)| lease.epoch));
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
    // Rosters can be long: 2048 rows bind 6144 values, well under SQLite's limit.
    for run in runs(&roster, 2048) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO collaboration_participants (collaboration_id, agent_id, position) ",
        )
        .push_values(run, |mut row, (collaboration_id, agent_id, position)| {
            row.push_bind(collaboration_id.hyphenated())
                .push_bind(agent_id.hyphenated())
                .push_bind(*position as i64);
        })
        .build()
        .execute(&mut **tx)
        .await?;
    }

    for run in runs(&admitted, WRITES_PER_COMMIT) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO channels (id, account_id, collaboration_id, last_seq, created_at) ",
        )
        .push_values(run, |mut row, Create { new, .. }| {
            row.push_bind(new.channel_id.hyphenated())
                .push_bind(new.account_id.hyphenated())
                .push_bind(new.id.hyphenated())
                .push("0")
                .push_bind(new.created_at);
        })
        .build()
        .execute(&mut **tx)
        .await?;
    }

    started_webhooks(tx, &admitted).await?;
    Ok(outcomes)
}

/// The `started` deliveries of new collaborations: for each whose account has set webhooks
/// up and that has a URL of its own or the account's default. The payload is made from the
/// collaboration as it was just written, which is all a new one is.
async fn started_webhooks(
    tx: &mut Transaction<'static, Sqlite>,
    admitted: &[&Create],
) -> StoreResult<()> {
    if admitted.is_empty() {
        return Ok(());
    }
    let accounts: BTreeSet<Uuid> = admitted.iter().map(|c| c.new.account_id).collect();
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT account_id, default_url FROM webhook_settings WHERE account_id IN (",
    );
    push_in(&mut query, &accounts);
    let settings: HashMap<Uuid, Option<String>> = query
        .build_query_as::<(Id, Option<String>)>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(account, url)| (account.into_uuid(), url))
        .collect();
    let now = Utc::now();
    let event = WebhookEvent::Started;
    let deliveries: Vec<(&NewCollaboration, &str)> = admitted
        .iter()
        .filter_map(|Create { new, .. }| {
            let default_url = settings.get(&new.account_id)?;
            Some((
                new,
                new.webhook_url.as_ref().or(default_url.as_ref())?.as_str(),
            ))
        })
        .collect();
    for run in runs(&deliveries, WRITES_PER_COMMIT) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO webhook_deliveries (id, account_id, collaboration_id, event, url, \
             payload, status, next_attempt_at, created_at) ",
        )
        .push_values(run, |mut row, (new, url)| {
            row.push_bind(Uuid::now_v7().hyphenated())
                .push_bind(new.account_id.hyphenated())
                .push_bind(new.id.hyphenated())
                .push_bind(event.name())
                .push_bind(*url)
                .push_bind(event.payload(&new.snapshot(), now))
                .push("'pending'")
                .push_bind(now)
                .push_bind(now);
        })
        .build()
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// One turn's writes. A turn refused for its lease or state writes nothing, so the
/// transaction can go on with the next.
async fn append_in(
    tx: &mut Transaction<'static, Sqlite>,
    turn: &Turn,
) -> StoreResult<Option<StoredEvent>> {
    let lease = &turn.lease;
    // The lease, the state and the cap in one guarded statement that also names the
    // channel. Only when it matches nothing is the lease looked at again, to tell a lost
    // lease from an ended collaboration.
    let counted: Option<Id> = sqlx::query_scalar(
        "UPDATE collaborations SET message_count = message_count + 1, tokens_used = tokens_used + ? \
         WHERE id = ? AND status = 'running' AND message_count < message_cap \
         AND lease_owner = ? AND lease_epoch = ? AND lease_expires_at > ? RETURNING channel_id",
    )
    .bind(turn.tokens as i64)
    .bind(lease.collaboration_id.hyphenated())
    .bind(lease.owner.hyphenated())
    .bind(lease.epoch)
    .bind(Utc::now())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(channel_id) = counted else {
        check_lease(tx, lease).await?;
        return Ok(None);
    };
    Ok(Some(insert_event(tx, channel_id, &turn.body).await?))
}

/// Fencing: refuses the transaction's writes unless `lease` is still held. The write lock
/// taken by `BEGIN IMMEDIATE` keeps anyone from claiming it before the commit.
async fn check_lease(tx: &mut Transaction<'static, Sqlite>, lease: &Lease) -> StoreResult<()> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM collaborations \
         WHERE id = ? AND lease_owner = ? AND lease_epoch = ? AND lease_expires_at > ?",
    )
    .bind(lease.collaboration_id.hyphenated())
    .bind(lease.owner.hyphenated())
    .bind(lease.epoch)
    .bind(Utc::now())
    .fetch_optional(&mut **tx)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost),
    }
}

async fn channel_of(
    tx: &mut Transaction<'static, Sqlite>,
    collaboration_id: Uuid,
) -> StoreResult<Hyphenated> {
    Ok(
        sqlx::query_scalar("SELECT channel_id FROM collaborations WHERE id = ?")
            .bind(collaboration_id.hyphenated())
            .fetch_one(&mut **tx)
            .await?,
    )
}

async fn insert_key<'e>(
    executor: impl sqlx::Executor<'e, Database = Sqlite>,
    key: &NewKey,
) -> StoreResult<()> {
    let scopes: Vec<String> = key.scopes.iter().map(Scope::name).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, key_prefix, key_hash, scopes, from_config, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.hyphenated())
    .bind(key.account_id.hyphenated())
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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    async fn operator_account(&self) -> StoreResult<Option<Uuid>> {
        let id: Option<Hyphenated> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE operator = 1 LIMIT 1")
                .fetch_optional(&self.reads)
                .await?;
        Ok(id.map(Hyphenated::into_uuid))
    }

    async fn create_account(&self, account: &Account, first_key: &NewKey) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO accounts (id, name, operator, created_at) VALUES (?, ?, ?, ?)")
            .bind(account.id.hyphenated())
            .bind(&account.name)
            .bind(account.operator)
            .bind(account.created_at)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut *tx, first_key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_accounts(&self, page: PageRequest) -> StoreResult<(Vec<Account>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<AccountRow<Id>> = sqlx::query_as(
            "SELECT * FROM accounts ORDER BY created_at, id LIMIT CAST(? AS INTEGER) OFFSET ?",
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

    async fn insert_key(&self, key: &NewKey) -> StoreResult<()> {
        insert_key(&self.writes, key).await
    }

    async fn find_key(&self, hash: &str) -> StoreResult<Option<Credential>> {
        let row: Option<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.reads)
        .await?;
        row.map(KeyRow::into_credential).transpose()
    }

    async fn key_exists(&self, hash: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_hash = ?)")
                .bind(hash)
                .fetch_one(&self.reads)
                .await?,
        )
    }

    async fn touch_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(at)
            .bind(id.hyphenated())
            .execute(&self.writes)
            .await?;
        Ok(())
    }

    async fn get_key(&self, account_id: Uuid, id: Uuid) -> StoreResult<Option<ApiKey>> {
        let row: Option<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.id = ? AND k.account_id = ?",
        )
        .bind(id.hyphenated())
        .bind(account_id.hyphenated())
        .fetch_optional(&self.reads)
        .await?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn list_keys(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<ApiKey>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = ?")
            .bind(account_id.hyphenated())
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.account_id = ? ORDER BY k.created_at DESC, k.id LIMIT CAST(? AS INTEGER) OFFSET ?",
        )
        .bind(account_id.hyphenated())
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.reads)
        .await?;
        let keys = rows
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<StoreResult<_>>()?;
        Ok((keys, total as u64))
    }

    async fn revoke_key(&self, account_id: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let from_config: Option<bool> =
            sqlx::query_scalar("SELECT from_config FROM api_keys WHERE id = ? AND account_id = ?")
                .bind(id.hyphenated())
                .bind(account_id.hyphenated())
                .fetch_optional(&mut *tx)
                .await?;
        match from_config {
            None => return Ok(false),
            Some(true) => return Err(StoreError::configured_key()),
            Some(false) => {}
        }
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(at)
            .bind(id.hyphenated())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_config_keys_except(&self, hash: &str) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<Hyphenated> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = ? \
             WHERE from_config = 1 AND revoked_at IS NULL AND key_hash <> ? RETURNING id",
        )
        .bind(Utc::now())
        .bind(hash)
        .fetch_all(&self.writes)
        .await?;
        Ok(ids.into_iter().map(Hyphenated::into_uuid).collect())
    }

    async fn claim_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyClaim> {
        let mut tx = self.write().await?;
        let existing: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT request_hash, status, response, created_at FROM idempotency_keys \
             WHERE account_id = ? AND idempotency_key = ?",
        )
        .bind(account_id.hyphenated())
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(live) = existing.filter(|row| row.created_at >= expired_before) {
            return live.claim(request_hash);
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, request_hash, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (account_id, idempotency_key) DO UPDATE SET \
             request_hash = excluded.request_hash, status = NULL, response = NULL, \
             created_at = excluded.created_at",
        )
        .bind(account_id.hyphenated())
        .bind(key)
        .bind(request_hash)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IdempotencyClaim::Claimed)
    }

    async fn complete_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        status: u16,
        response: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = ?, response = ? \
             WHERE account_id = ? AND idempotency_key = ?",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(account_id.hyphenated())
        .bind(key)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn release_idempotency(&self, account_id: Uuid, key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE account_id = ? AND idempotency_key = ? AND status IS NULL",
        )
        .bind(account_id.hyphenated())
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
            "DELETE FROM idempotency_keys WHERE created_at < ? OR (? AND status IS NULL)",
        )
        .bind(expired_before)
        .bind(in_flight_too)
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO agents (id, account_id, address, name, description, kind, spec, secret, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(agent.id.hyphenated())
        .bind(agent.account_id.hyphenated())
        .bind(agent.address.as_str())
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(&agent.secret)
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
        let (column, value) = match agent {
            AgentRef::Id(id) => ("id", id.to_string()),
            AgentRef::Address(address) => ("address", address.to_string()),
        };
        let sql = format!("SELECT * FROM agents WHERE account_id = ? AND {column} = ?");
        let row: Option<AgentRow<Id>> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account_id.hyphenated())
            .bind(value)
            .fetch_optional(&self.reads)
            .await?;
        row.map(AgentRow::into_domain).transpose()
    }

    async fn get_agents(&self, account_id: Uuid, agents: &[AgentRef]) -> StoreResult<Vec<Agent>> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM agents WHERE account_id = ");
        query.push_bind(account_id.hyphenated()).push(" AND (");
        let mut either = query.separated(" OR ");
        for agent in agents {
            match agent {
                AgentRef::Id(id) => either.push("id = ").push_bind_unseparated(id.hyphenated()),
                AgentRef::Address(address) => either
                    .push("address = ")
                    .push_bind_unseparated(address.to_string()),
            };
        }
        query.push(")");
        let rows: Vec<AgentRow<Id>> = query.build_query_as().fetch_all(&self.reads).await?;
        rows.into_iter().map(AgentRow::into_domain).collect()
    }

    async fn agents_by_id(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM agents WHERE id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id.hyphenated());
        }
        query.push(")");
        let rows: Vec<AgentRow<Id>> = query.build_query_as().fetch_all(&self.reads).await?;
        rows.into_iter().map(AgentRow::into_domain).collect()
    }

    async fn list_agents(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Agent>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE account_id = ?")
            .bind(account_id.hyphenated())
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<AgentRow<Id>> = sqlx::query_as(
            "SELECT * FROM agents WHERE account_id = ? ORDER BY created_at DESC, id LIMIT CAST(? AS INTEGER) OFFSET ?",
        )
        .bind(account_id.hyphenated())
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.reads)
        .await?;
        let agents = rows
            .into_iter()
            .map(AgentRow::into_domain)
            .collect::<StoreResult<_>>()?;
        Ok((agents, total as u64))
    }

    async fn update_agent(&self, agent: &Agent) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET name = ?, description = ?, kind = ?, spec = ?, secret = ?, updated_at = ? \
             WHERE id = ? AND account_id = ?",
        )
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(&agent.secret)
        .bind(agent.updated_at)
        .bind(agent.id.hyphenated())
        .bind(agent.account_id.hyphenated())
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn delete_agent(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM agents WHERE id = ? AND account_id = ?")
            .bind(id.hyphenated())
            .bind(account_id.hyphenated())
            .execute(&self.writes)
            .await;
        match result {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::agent_in_use()),
            Err(e) => Err(e.into()),
        }
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
        };
        let lease = create.lease.map(|(lease, _)| lease);
        self.queued(|done| Write::Create(create, done)).await?;
        Ok(lease)
    }

    async fn get_collaboration(
        &self,
        account_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<Collaboration>> {
        let row: Option<RosteredRow<Id>> = sqlx::query_as(rostered!(
            "FROM collaborations c WHERE c.id = ? AND c.account_id = ?"
        ))
        .bind(id.hyphenated())
        .bind(account_id.hyphenated())
        .fetch_optional(&self.reads)
        .await?;
        row.map(RosteredRow::into_domain).transpose()
    }

    async fn collaboration(&self, id: Uuid) -> StoreResult<Option<Collaboration>> {
        let row: Option<RosteredRow<Id>> =
            sqlx::query_as(rostered!("FROM collaborations c WHERE c.id = ?"))
                .bind(id.hyphenated())
                .fetch_optional(&self.reads)
                .await?;
        row.map(RosteredRow::into_domain).transpose()
    }

    async fn list_collaborations(
        &self,
        account_id: Uuid,
        filter: &CollaborationFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<Collaboration>, u64)> {
        /// `FROM` and `WHERE` of the collaborations the filter matches, as `c`.
        fn filtered(
            query: &mut QueryBuilder<Sqlite>,
            account_id: Uuid,
            filter: &CollaborationFilter,
        ) {
            query
                .push(" FROM collaborations c WHERE c.account_id = ")
                .push_bind(account_id.hyphenated());
            if let Some(agent) = filter.agent {
                query
                    .push(" AND EXISTS (SELECT 1 FROM collaboration_participants p WHERE p.collaboration_id = c.id AND p.agent_id = ")
                    .push_bind(agent.hyphenated())
                    .push(")");
            }
            if let Some(channel_id) = filter.channel_id {
                query
                    .push(" AND c.channel_id = ")
                    .push_bind(channel_id.hyphenated());
            }
            if let Some(status) = filter.status {
                query.push(" AND c.status = ").push_bind(status.name());
            }
            if let Some(source) = filter.source {
                query.push(" AND c.source = ").push_bind(source.name());
            }
        }
        /// A query for how many collaborations the filter matches: read off the kept counts
        /// when the filter is by status alone, else counted.
        fn total(query: &mut QueryBuilder<Sqlite>, account_id: Uuid, filter: &CollaborationFilter) {
            let by_status_alone =
                filter.agent.is_none() && filter.channel_id.is_none() && filter.source.is_none();
            if !by_status_alone {
                query.push("SELECT COUNT(*)");
                filtered(query, account_id, filter);
                return;
            }
            query
                .push("SELECT COALESCE(SUM(n), 0) FROM collaboration_counts WHERE account_id = ")
                .push_bind(account_id.hyphenated());
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.name());
            }
        }
        let mut query = QueryBuilder::<Sqlite>::new(rostered!(", ("));
        total(&mut query, account_id, filter);
        query.push(") AS total");
        filtered(&mut query, account_id, filter);
        query
            .push(" ORDER BY c.created_at DESC, c.id LIMIT CAST(")
            .push_bind(i64::from(page.size))
            .push(" AS INTEGER) OFFSET ")
            .push_bind(page.offset());
        let rows: Vec<ListedRow<Id>> = query.build_query_as().fetch_all(&self.reads).await?;
        let total = match rows.first() {
            Some(row) => row.total,
            None if page.offset() == 0 => 0,
            // A page past the end still says how many there are.
            None => {
                let mut query = QueryBuilder::<Sqlite>::new("");
                total(&mut query, account_id, filter);
                query.build_query_scalar().fetch_one(&self.reads).await?
            }
        };
        let items = rows
            .into_iter()
            .map(|row| row.collaboration.into_domain())
            .collect::<StoreResult<_>>()?;
        Ok((items, total as u64))
    }

    async fn delete_collaboration(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM collaborations WHERE id = ? AND account_id = ?")
            .bind(id.hyphenated())
            .bind(account_id.hyphenated())
            .execute(&self.writes)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(CollaborationStatus, u64)>> {
        // Off the per-account counts the triggers keep (migration 0007).
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, SUM(n) FROM collaboration_counts GROUP BY status HAVING SUM(n) > 0",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter()
            .map(|(status, count)| {
                let status = status.parse().map_err(StoreError::Corrupt)?;
                Ok((status, count as u64))
            })
            .collect()
    }

    async fn claim_leases(
        &self,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> StoreResult<Vec<Lease>> {
        let now = Utc::now();
        let expires = now + ttl;
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE collaborations SET lease_owner = ");
        query
            .push_bind(owner.hyphenated())
            .push(", lease_expires_at = ")
            .push_bind(expires)
            .push(", lease_epoch = lease_epoch + 1 WHERE (status = 'running' OR summary IS NULL)");
        let free = |query: &mut QueryBuilder<Sqlite>| {
            query
                .push(" AND (lease_expires_at IS NULL OR lease_expires_at <= ")
                .push_bind(now)
                .push(")");
        };
        match which {
            Claim::One(id) => {
                free(&mut query);
                query.push(" AND id = ").push_bind(id.hyphenated());
            }
            Claim::Expired { limit } => {
                free(&mut query);
                // SQLite's UPDATE has no LIMIT by default; pick the rows in a subquery.
                query
                    .push(" AND id IN (SELECT id FROM collaborations WHERE (status = 'running' OR summary IS NULL) \
                           AND (lease_expires_at IS NULL OR lease_expires_at <= ")
                    .push_bind(now)
                    .push(") ORDER BY created_at LIMIT CAST(")
                    .push_bind(i64::from(limit))
                    .push(" AS INTEGER))");
            }
            Claim::All => {}
        }
        query.push(" RETURNING id, lease_epoch");
        let mut tx = self.write().await?;
        let rows: Vec<(Hyphenated, i64)> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(id, epoch)| Lease {
                collaboration_id: id.into_uuid(),
                owner,
                epoch,
            })
            .collect())
    }

    async fn renew_leases(&self, owner: Uuid, ttl: Duration) -> StoreResult<Vec<Lease>> {
        let now = Utc::now();
        let mut tx = self.write().await?;
        let rows: Vec<(Hyphenated, i64)> = sqlx::query_as(
            "UPDATE collaborations SET lease_expires_at = ? \
             WHERE lease_owner = ? AND lease_expires_at > ? RETURNING id, lease_epoch",
        )
        .bind(now + ttl)
        .bind(owner.hyphenated())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(id, epoch)| Lease {
                collaboration_id: id.into_uuid(),
                owner,
                epoch,
            })
            .collect())
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND lease_owner = ? AND lease_epoch = ?",
        )
        .bind(lease.collaboration_id.hyphenated())
        .bind(lease.owner.hyphenated())
        .bind(lease.epoch)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, owner: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?",
        )
        .bind(owner.hyphenated())
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected())
    }

    async fn lease_holder(&self, collaboration_id: Uuid) -> StoreResult<Option<Uuid>> {
        let holder: Option<Option<Hyphenated>> = sqlx::query_scalar(
            "SELECT CASE WHEN lease_expires_at > ? THEN lease_owner END FROM collaborations WHERE id = ?",
        )
        .bind(Utc::now())
        .bind(collaboration_id.hyphenated())
        .fetch_optional(&self.reads)
        .await?;
        Ok(holder.flatten().map(Hyphenated::into_uuid))
    }

    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        tokens: u64,
    ) -> StoreResult<Option<StoredEvent>> {
        let turn = Turn {
            lease: *lease,
            body: body.clone(),
            tokens,
        };
        self.queued(|done| Write::Turn(turn, done)).await
    }

    async fn add_tokens(&self, collaboration_id: Uuid, tokens: u64) -> StoreResult<()> {
        sqlx::query("UPDATE collaborations SET tokens_used = tokens_used + ? WHERE id = ?")
            .bind(tokens as i64)
            .bind(collaboration_id.hyphenated())
            .execute(&self.writes)
            .await?;
        Ok(())
    }

    async fn record_audio(
        &self,
        collaboration_id: Uuid,
        audio_url: Option<&str>,
        note: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE collaborations SET audio_url = ?, \
             advisory_message = CASE WHEN ? IS NULL THEN advisory_message \
               WHEN advisory_message IS NULL THEN ? ELSE advisory_message || ' ' || ? END \
             WHERE id = ?",
        )
        .bind(audio_url)
        .bind(note)
        .bind(note)
        .bind(note)
        .bind(collaboration_id.hyphenated())
        .execute(&self.writes)
        .await?;
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
            check_lease(&mut tx, lease).await?;
        }
        let status = ending.reason.status();
        let updated = sqlx::query(
            "UPDATE collaborations SET status = ?, end_reason = ?, ended_at = ?, advisory_message = ?, \
             error_message = ? WHERE id = ? AND status = 'running'",
        )
        .bind(status.name())
        .bind(ending.reason.name())
        .bind(ending.ended_at)
        .bind(&ending.advisory_message)
        .bind(&ending.error_message)
        .bind(collaboration_id.hyphenated())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let channel_id = channel_of(&mut tx, collaboration_id).await?;
        let body = EventBody::Status {
            status,
            end_reason: Some(ending.reason),
            advisory_message: ending.advisory_message.clone(),
            error_message: ending.error_message.clone(),
            ended_at: Some(ending.ended_at),
        };
        let event = insert_event(&mut tx, channel_id, &body).await?;
        enqueue_webhook(&mut tx, collaboration_id, WebhookEvent::Ended).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn record_summary(
        &self,
        collaboration_id: Uuid,
        headline: &str,
        summary: &str,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE collaborations SET headline = ?, summary = ? WHERE id = ? AND summary IS NULL",
        )
        .bind(headline)
        .bind(summary)
        .bind(collaboration_id.hyphenated())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let channel_id = channel_of(&mut tx, collaboration_id).await?;
        let body = EventBody::Summary {
            headline: headline.to_owned(),
            summary: summary.to_owned(),
            created_at: crate::domain::now(),
        };
        let event = insert_event(&mut tx, channel_id, &body).await?;
        enqueue_webhook(&mut tx, collaboration_id, WebhookEvent::SummaryReady).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn get_channel(&self, account_id: Uuid, id: Uuid) -> StoreResult<Option<ChannelInfo>> {
        let row: Option<ChannelRow<Id>> = sqlx::query_as(
            "SELECT ch.id, ch.account_id, ch.collaboration_id, ch.last_seq, c.status, ch.created_at \
             FROM channels ch JOIN collaborations c ON c.id = ch.collaboration_id \
             WHERE ch.id = ? AND ch.account_id = ?",
        )
        .bind(id.hyphenated())
        .bind(account_id.hyphenated())
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
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, frame FROM events WHERE channel_id = ? AND seq > ? ORDER BY seq LIMIT CAST(? AS INTEGER)",
        )
        .bind(channel_id.hyphenated())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, frame)| StoredEvent { seq, frame })
            .collect())
    }

    async fn webhook_settings(&self, account_id: Uuid) -> StoreResult<Option<WebhookSettings>> {
        let row: Option<WebhookSettingsRow<Id>> =
            sqlx::query_as("SELECT * FROM webhook_settings WHERE account_id = ?")
                .bind(account_id.hyphenated())
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.map(WebhookSettingsRow::into_domain))
    }

    async fn create_webhook_settings(&self, settings: &WebhookSettings) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_settings (account_id, default_url, secret, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(settings.account_id.hyphenated())
        .bind(&settings.default_url)
        .bind(&settings.secret)
        .bind(settings.created_at)
        .bind(settings.updated_at)
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_webhook_default_url(
        &self,
        account_id: Uuid,
        url: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_settings SET default_url = ?, updated_at = ? WHERE account_id = ?",
        )
        .bind(url)
        .bind(at)
        .bind(account_id.hyphenated())
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        account_id: Uuid,
        secret: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_settings SET secret = ?, updated_at = ? WHERE account_id = ?",
        )
        .bind(secret)
        .bind(at)
        .bind(account_id.hyphenated())
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let mut tx = self.write().await?;
        let rows: Vec<DueRow<Id>> = sqlx::query_as(
            "SELECT d.id, d.account_id, d.url, d.payload, d.attempts, d.created_at, w.secret \
             FROM webhook_deliveries d JOIN webhook_settings w ON w.account_id = d.account_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT CAST(? AS INTEGER)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?")
                .bind(claim_until)
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| row.into_domain(claim_until))
            .collect())
    }

    async fn record_webhook_attempt(
        &self,
        id: Uuid,
        claimed_until: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()> {
        let (status, next, delivered) = attempt_columns(outcome);
        sqlx::query(
            "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
             last_attempt_at = ?, last_status = ?, last_error = ?, delivered_at = ? \
             WHERE id = ? AND status = 'pending' AND next_attempt_at = ?",
        )
        .bind(status.name())
        .bind(next)
        .bind(outcome.at)
        .bind(outcome.status.map(i64::from))
        .bind(&outcome.error)
        .bind(delivered)
        .bind(id.hyphenated())
        .bind(claimed_until)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn list_webhook_deliveries(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = ?")
                .bind(account_id.hyphenated())
                .fetch_one(&self.reads)
                .await?;
        let rows: Vec<DeliveryRow<Id>> = sqlx::query_as(
            "SELECT * FROM webhook_deliveries WHERE account_id = ? \
             ORDER BY created_at DESC, id DESC LIMIT CAST(? AS INTEGER) OFFSET ?",
        )
        .bind(account_id.hyphenated())
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.reads)
        .await?;
        let deliveries = rows
            .into_iter()
            .map(DeliveryRow::into_domain)
            .collect::<StoreResult<_>>()?;
        Ok((deliveries, total as u64))
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
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(key.account_id.hyphenated())
        .bind(key.id.hyphenated())
        .bind(channel_id.hyphenated())
        .bind(expires_at)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn redeem_ticket(&self, hash: &str, channel_id: Uuid) -> StoreResult<Option<Credential>> {
        let now = Utc::now();
        let mut tx = self.write().await?;
        let key_id: Option<Hyphenated> = sqlx::query_scalar(
            "UPDATE websocket_tickets SET used_at = ? \
             WHERE ticket_hash = ? AND channel_id = ? AND used_at IS NULL AND expires_at > ? \
             RETURNING key_id",
        )
        .bind(now)
        .bind(hash)
        .bind(channel_id.hyphenated())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key_id) = key_id else {
            return Ok(None);
        };
        let row: Option<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.id = ? AND k.revoked_at IS NULL",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(KeyRow::into_credential).transpose()
    }
}

/// Writes an event's delivery into the outbox, in the transaction that makes the event
/// happen, when the collaboration has somewhere to send it (its own `webhook_url`, else its
/// account's default) and the account has a signing secret.
async fn enqueue_webhook(
    tx: &mut Transaction<'static, Sqlite>,
    collaboration_id: Uuid,
    event: WebhookEvent,
) -> StoreResult<()> {
    let row: Option<SnapshotRow<Id>> = sqlx::query_as(
        "SELECT c.account_id, COALESCE(c.webhook_url, w.default_url) AS url, c.id, c.channel_id, \
         c.objective, c.status, c.end_reason, c.message_count, c.tokens_used, c.started_at, \
         c.ended_at, c.headline, c.summary, c.advisory_message, c.error_message \
         FROM collaborations c JOIN webhook_settings w ON w.account_id = c.account_id \
         WHERE c.id = ?",
    )
    .bind(collaboration_id.hyphenated())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let Some(url) = row.url.clone() else {
        return Ok(());
    };
    let now = Utc::now();
    let account_id = row.account_id;
    let payload = event.payload(&row.into_domain()?, now);
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, account_id, collaboration_id, event, url, payload, \
         status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(Uuid::now_v7().hyphenated())
    .bind(account_id)
    .bind(collaboration_id.hyphenated())
    .bind(event.name())
    .bind(url)
    .bind(payload)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A bare bound `LIMIT` makes SQLite compile its statement again on every run (see the
    /// module's docs), which nothing else would show but a profile.
    #[test]
    fn every_bound_limit_is_cast() {
        let source = include_str!("sqlite.rs");
        // Spelled in pieces, so that this test does not find itself.
        for bare in [["LIMIT", " ?"].concat(), ["LIMIT", " \")"].concat()] {
            let found: Vec<&str> = source
                .lines()
                .filter(|line| !line.trim_start().starts_with("//") && line.contains(&bare))
                .collect();
            assert!(
                found.is_empty(),
                "write `LIMIT CAST(? AS INTEGER)`: {found:#?}"
            );
        }
    }

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
