//! The embedded backend: one SQLite file in WAL mode, for a single process.
//!
//! Most of its SQL is [`super::sql`]'s. What is SQLite's own: UUIDs are stored as hyphenated
//! text and times as RFC 3339 text, so the file reads well in the `sqlite3` shell and
//! compares the same way PostgreSQL will; write transactions start with `BEGIN IMMEDIATE`,
//! so that SQLite takes the write lock up front (a deferred transaction that later upgrades
//! can fail with `SQLITE_BUSY` instead of waiting); leases expire by this process's clock,
//! the only one; and turns and new collaborations are written by the group-commit
//! [`writer`].
//!
//! A bound `LIMIT` is written `LIMIT CAST($n AS BIGINT)`. SQLite plans a bare `LIMIT $n` for
//! the value bound, and so compiles the statement again every time it is bound: a cached
//! statement was prepared anew on every run, which was 14% of a list request's time.

mod writer;

use std::{path::Path, sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::{
    QueryBuilder, Sqlite, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
        SqliteSynchronous,
    },
};
use tokio::sync::mpsc;
use uuid::{Uuid, fmt::Hyphenated};

use super::{
    Claim, Lease, StoreError, StoreResult,
    sql::{Create, Dialect, SqlStore, Turn, leases},
};
use crate::{domain::StoredEvent, secrets::Vault, tasks::Tasks};

/// The store over one SQLite file. Reads and writes go through pools of their own: SQLite
/// takes one writer at a time, so one writing connection queues writers in the process,
/// where waiting costs nothing, instead of letting several connections contend for the file
/// lock (busy retries, and a thread switch per attempt). Readers never wait for it in WAL
/// mode.
pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) `skein.db` in `data_dir` and applies pending migrations.
    /// The group-commit writer runs on `tasks`, as an essential worker.
    /// Secrets are sealed with `vault`.
    pub async fn open(data_dir: &Path, tasks: &Tasks, vault: Arc<Vault>) -> StoreResult<Self> {
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
        // `sql::runs`): room for all of them in its cache.
        let writes = pool()
            .max_connections(1)
            .connect_with(options.clone().statement_cache_capacity(256))
            .await?;
        MIGRATOR.run(&writes).await?;
        let reads = pool()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await?;
        let (queue, writes_waiting) = mpsc::channel(writer::WRITES_PER_COMMIT);
        tasks.spawn_essential(
            "sqlite writer",
            writer::commit_writes(writes.clone(), writes_waiting),
        );
        Ok(Self {
            reads,
            writes,
            writer: queue,
            vault,
        })
    }
}

impl Dialect for Sqlite {
    type Id = Hyphenated;
    type Writer = mpsc::Sender<writer::Write>;

    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// Not ordered in SQL: an aggregate's `ORDER BY` sorts through a temporary b-tree opened
    /// for every row, 6% of a list request's CPU in a profile. The roster is put in order
    /// when it is read.
    const ROSTER: &'static str = "(SELECT json_group_array(json_array(p.position, a.id, \
        a.address, a.name, a.kind)) FROM collaboration_participants p \
        JOIN agents a ON a.id = p.agent_id WHERE p.collaboration_id = c.id)";
    const KEEPS_COUNTS: bool = true;
    /// One writer at a time: there is nothing to skip.
    const SKIP_CLAIMED: &'static str = "";
    /// `BEGIN IMMEDIATE` holds the whole database.
    const LOCK_ROW: &'static str = "";

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// The write lock taken by `BEGIN IMMEDIATE` keeps anyone from claiming the lease
    /// before the commit.
    async fn check_lease(tx: &mut Transaction<'static, Sqlite>, lease: &Lease) -> StoreResult<()> {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM collaborations \
             WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 AND lease_expires_at > $4",
        )
        .bind(lease.collaboration_id.hyphenated())
        .bind(lease.owner.hyphenated())
        .bind(lease.epoch)
        .bind(Utc::now())
        .fetch_optional(&mut **tx)
        .await?;
        held.map(drop).ok_or(StoreError::LeaseLost)
    }

    async fn insert_collaboration(store: &SqliteStore, create: Create) -> StoreResult<()> {
        writer::queued(&store.writer, |done| writer::Write::Create(create, done)).await
    }

    async fn append_message(store: &SqliteStore, turn: Turn) -> StoreResult<Option<StoredEvent>> {
        writer::queued(&store.writer, |done| writer::Write::Turn(turn, done)).await
    }

    async fn claim_leases(
        store: &SqliteStore,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> StoreResult<Vec<Lease>> {
        let now = Utc::now();
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE collaborations SET lease_owner = ");
        query
            .push_bind(owner.hyphenated())
            .push(", lease_expires_at = ")
            .push_bind(now + ttl)
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
        let mut tx = store.write().await?;
        let rows: Vec<(Hyphenated, i64)> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(leases(owner, rows))
    }

    async fn renew_leases(
        store: &SqliteStore,
        owner: Uuid,
        ttl: Duration,
    ) -> StoreResult<Vec<Lease>> {
        let now = Utc::now();
        let mut tx = store.write().await?;
        let rows: Vec<(Hyphenated, i64)> = sqlx::query_as(
            "UPDATE collaborations SET lease_expires_at = $1 \
             WHERE lease_owner = $2 AND lease_expires_at > $3 RETURNING id, lease_epoch",
        )
        .bind(now + ttl)
        .bind(owner.hyphenated())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(leases(owner, rows))
    }

    async fn lease_holder(
        store: &SqliteStore,
        collaboration_id: Uuid,
    ) -> StoreResult<Option<Uuid>> {
        let holder: Option<Option<Hyphenated>> = sqlx::query_scalar(
            "SELECT CASE WHEN lease_expires_at > $1 THEN lease_owner END FROM collaborations WHERE id = $2",
        )
        .bind(Utc::now())
        .bind(collaboration_id.hyphenated())
        .fetch_optional(&store.reads)
        .await?;
        Ok(holder.flatten().map(Hyphenated::into_uuid))
    }
}

#[cfg(test)]
mod tests {
    /// A bare bound `LIMIT` makes SQLite compile its statement again on every run (see the
    /// module's docs), which nothing else would show but a profile. Both backends' SQL is
    /// SQLite's.
    #[test]
    fn every_bound_limit_is_cast() {
        let sources = [
            include_str!("sqlite.rs"),
            include_str!("sqlite/writer.rs"),
            include_str!("sql.rs"),
        ];
        // Spelled in pieces, so that this test does not find itself.
        for bare in [["LIMIT", " $"].concat(), ["LIMIT", " \")"].concat()] {
            let found: Vec<&str> = sources
                .iter()
                .flat_map(|source| source.lines())
                .filter(|line| !line.trim_start().starts_with("//") && line.contains(&bare))
                .collect();
            assert!(
                found.is_empty(),
                "write `LIMIT CAST($n AS BIGINT)`: {found:#?}"
            );
        }
    }
}
