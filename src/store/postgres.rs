//! The shared backend: PostgreSQL, for several Skein processes over one database.
//!
//! Most of its SQL is [`super::sql`]'s, with native types (`uuid`, `timestamptz`,
//! `boolean`), and the same guarantees under concurrency, which here come from row locks
//! rather than one writer at a time. Transactions run at READ COMMITTED: a guarded `UPDATE`
//! (`... WHERE status = 'running'`) waits for a concurrent writer of the row and evaluates its
//! guard again on what that writer committed, so the guards hold as they do in SQLite. What
//! is PostgreSQL's own, here: leases expire by the database's clock, which every process
//! shares; a lease is checked under a row lock; claims skip rows other processes are
//! claiming; a key's running collaborations are counted under an advisory lock named after
//! the key.
//!
//! The schema is the connection's: set `search_path` in the URL's `options` (for example
//! `?options=-c%20search_path%3Dskein`) to keep Skein's tables, and its migration history,
//! in a schema of their own. PostgreSQL keeps times to the microsecond, SQLite to the
//! nanosecond.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Postgres, QueryBuilder, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult},
};
use uuid::Uuid;

use super::{
    Claim, Lease, StoreError, StoreResult,
    sql::{Create, Dialect, SqlStore, Turn, leases},
};
use crate::{domain::StoredEvent, secrets::Vault};

/// The store over a PostgreSQL database that several processes may share.
pub type PgStore = SqlStore<Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a transaction may sit idle before PostgreSQL ends its session.
const IDLE_IN_TRANSACTION: &str = "5s";

impl SqlStore<Postgres> {
    /// Connects to the database at `url` and applies pending migrations. Secrets are
    /// sealed with `vault`.
    pub async fn connect(url: &str, vault: Arc<Vault>) -> StoreResult<Self> {
        // A process frozen in the middle of a transaction (stopped, swapped out, paused in a
        // debugger) would keep its row locks, and other processes skip locked rows when they
        // claim leases: its collaborations would never be taken over. Our transactions last
        // milliseconds, so one left idle this long belongs to a process that is not coming
        // back soon; the database ends its session and the locks go with it.
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            reads: pool.clone(),
            writes: pool,
            writer: (),
            vault,
        })
    }
}

impl Dialect for Postgres {
    type Id = Uuid;
    type Writer = ();

    const BEGIN_WRITE: &'static str = "BEGIN";
    const ROSTER: &'static str = "(SELECT COALESCE(json_agg(json_build_array(p.position, a.id, \
        a.address, a.name, a.kind) ORDER BY p.position), '[]')::text \
        FROM collaboration_participants p JOIN agents a ON a.id = p.agent_id \
        WHERE p.collaboration_id = c.id)";
    /// A counter row per account would put every insert and status change of that account,
    /// from every process, in line for one row lock (see migration 0007): lists count.
    const KEEPS_COUNTS: bool = false;
    /// A delivery another worker is claiming right now is skipped, not waited for; once
    /// that claim commits, the row is no longer due and a later SELECT passes it by too.
    const SKIP_CLAIMED: &'static str = " FOR UPDATE OF d SKIP LOCKED";
    const LOCK_ROW: &'static str = " FOR UPDATE";

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// The row lock taken here keeps a claim from moving the lease on until this
    /// transaction has ended.
    async fn check_lease(
        tx: &mut Transaction<'static, Postgres>,
        lease: &Lease,
    ) -> StoreResult<()> {
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM collaborations WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 \
             AND lease_expires_at > clock_timestamp() FOR UPDATE",
        )
        .bind(lease.collaboration_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .fetch_optional(&mut **tx)
        .await?;
        held.map(drop).ok_or(StoreError::LeaseLost)
    }

    async fn insert_collaboration(store: &PgStore, create: Create) -> StoreResult<()> {
        let new = &create.new;
        let mut tx = store.write().await?;
        // Two requests of one account take turns on a lock named after the account, held
        // until this transaction ends, so they cannot both count the same free place and
        // take it.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(advisory_key(new.account_id))
            .execute(&mut *tx)
            .await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM collaborations WHERE account_id = $1 AND status = 'running'",
        )
        .bind(new.account_id)
        .fetch_one(&mut *tx)
        .await?;
        if running >= i64::from(create.max_running) {
            return Err(StoreError::too_many_running(running, create.max_running));
        }
        PgStore::insert_created(&mut tx, &[&create]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A turn, in a transaction of its own: counted by one statement guarded by the lease,
    /// the status and the cap, then stored as an event. The guard is evaluated again on the
    /// row a concurrent writer committed, so the cap and the fence hold with any number of
    /// writers. A turn refused writes nothing; only then is the lease looked at again, to
    /// tell a lost lease from an ended collaboration.
    async fn append_message(store: &PgStore, turn: Turn) -> StoreResult<Option<StoredEvent>> {
        let mut tx = store.write().await?;
        let lease = &turn.lease;
        // A write retried after an ambiguous failure (its commit may have happened) finds
        // the message it stored, rather than storing it twice.
        if let Some(message_id) = turn.body.message_id() {
            let stored: Option<(i64, String)> = sqlx::query_as(
                "SELECT e.seq, e.frame FROM events e JOIN collaborations c ON c.channel_id = e.channel_id \
                 WHERE c.id = $1 AND e.message_id = $2",
            )
            .bind(lease.collaboration_id)
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((seq, frame)) = stored {
                return Ok(Some(StoredEvent { seq, frame }));
            }
        }
        let channel_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE collaborations SET message_count = message_count + 1, tokens_used = tokens_used + $1, \
             cost_micros = cost_micros + $5 \
             WHERE id = $2 AND status = 'running' AND message_count < message_cap \
             AND lease_owner = $3 AND lease_epoch = $4 AND lease_expires_at > clock_timestamp() \
             RETURNING channel_id",
        )
        .bind(turn.spent.tokens as i64)
        .bind(lease.collaboration_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .bind(turn.spent.cost_micros as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(channel_id) = channel_id else {
            Postgres::check_lease(&mut tx, lease).await?;
            return Ok(None);
        };
        let event = PgStore::insert_event(&mut tx, channel_id, &turn.body).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn claim_leases(
        store: &PgStore,
        owner: Uuid,
        ttl: Duration,
        which: Claim,
    ) -> StoreResult<Vec<Lease>> {
        // The rows are picked and locked in the subquery; SKIP LOCKED lets processes that
        // scan at the same moment take different rows instead of queueing on the same ones.
        let mut query = QueryBuilder::<Postgres>::new("UPDATE collaborations SET lease_owner = ");
        query
            .push_bind(owner)
            .push(", lease_expires_at = clock_timestamp() + make_interval(secs => ")
            .push_bind(ttl.as_secs_f64())
            .push(
                "), lease_epoch = lease_epoch + 1 WHERE id IN (SELECT id FROM collaborations \
                   WHERE (status = 'running' OR summary IS NULL)",
            );
        if which != Claim::All {
            query.push(" AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())");
        }
        match which {
            Claim::One(id) => {
                query.push(" AND id = ").push_bind(id);
            }
            Claim::Expired { limit } => {
                query
                    .push(" ORDER BY created_at LIMIT ")
                    .push_bind(i64::from(limit));
            }
            Claim::All => {}
        }
        query.push(" FOR UPDATE SKIP LOCKED) RETURNING id, lease_epoch");
        let rows: Vec<(Uuid, i64)> = query.build_query_as().fetch_all(&store.writes).await?;
        Ok(leases(owner, rows))
    }

    async fn renew_leases(store: &PgStore, owner: Uuid, ttl: Duration) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "UPDATE collaborations SET lease_expires_at = clock_timestamp() + make_interval(secs => $2) \
             WHERE lease_owner = $1 AND lease_expires_at > clock_timestamp() RETURNING id, lease_epoch",
        )
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .fetch_all(&store.writes)
        .await?;
        Ok(leases(owner, rows))
    }

    async fn lease_holder(store: &PgStore, collaboration_id: Uuid) -> StoreResult<Option<Uuid>> {
        let holder: Option<Option<Uuid>> = sqlx::query_scalar(
            "SELECT CASE WHEN lease_expires_at > clock_timestamp() THEN lease_owner END \
             FROM collaborations WHERE id = $1",
        )
        .bind(collaboration_id)
        .fetch_optional(&store.reads)
        .await?;
        Ok(holder.flatten())
    }
}

/// An id folded to the 64 bits an advisory lock is named by: its random half, so two ids
/// practically never share a lock (and if they did, they would only take turns).
fn advisory_key(id: Uuid) -> i64 {
    id.as_u64_pair().1 as i64
}
