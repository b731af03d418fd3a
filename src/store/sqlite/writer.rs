//! SQLite's group commit: the one task that writes turns and new collaborations.
//!
//! Turns, the one write every running collaboration makes over and over, and new
//! collaborations, the one write every create request makes, are handed to this task and
//! written many to a transaction. A commit costs SQLite a WAL write of every page it
//! touched, and sqlx two hand-offs to its connection's thread; under load, hundreds of turns
//! (or tens of creates) now share them, and the pages they have in common (the tables' last
//! leaves, the indexes) are written once. Each write is answered only once its transaction
//! has committed.

use std::collections::{BTreeSet, HashMap};

use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::{Uuid, fmt::Hyphenated};

use super::super::{
    StoreError, StoreResult,
    sql::{Create, SqlStore, Turn, push_in},
};
use crate::domain::StoredEvent;

/// The most writes in one transaction. Enough to take in every runnable collaboration's
/// turn at once; few enough that a commit stays short.
pub(super) const WRITES_PER_COMMIT: usize = 256;

/// A write waiting for [`commit_writes`], with where to answer once it is committed.
pub(in crate::store) enum Write {
    Turn(Turn, oneshot::Sender<StoreResult<Option<StoredEvent>>>),
    Create(Create, oneshot::Sender<StoreResult<()>>),
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

/// Hands a write to [`commit_writes`] and waits until its transaction has committed.
pub(super) async fn queued<T>(
    queue: &mpsc::Sender<Write>,
    write: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Write,
) -> StoreResult<T> {
    let (done, written) = oneshot::channel();
    // The writer lives as long as any clone of the store; it is gone only if it failed (the
    // supervisor said so), and then nothing can be written any more.
    let gone = || StoreError::Database(sqlx::Error::PoolClosed);
    queue.send(write(done)).await.map_err(|_| gone())?;
    written.await.map_err(|_| gone())?
}

/// The writer's loop. Every write waiting when it comes round goes into one transaction.
///
/// A write is refused on its own (its collaboration has ended, its lease is lost, its key
/// has too many collaborations running) without harm to the others. If the transaction
/// fails as a whole, nothing of it was kept, and each write is tried again in a transaction
/// of its own, so that one bad write fails alone. It returns once every store is dropped.
pub(super) async fn commit_writes(writes: SqlitePool, mut queue: mpsc::Receiver<Write>) {
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
    let mut tx = writes.begin_with("BEGIN IMMEDIATE").await?;
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
            Write::Turn(turn, _) => match SqlStore::<Sqlite>::append_in(&mut tx, turn).await {
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

/// New collaborations, after the running cap: every account's count is read at once (kept
/// by triggers, migration 0007) and counted on here, in order, so two creates of one batch
/// cannot both take an account's last place. A create over the cap is refused (`Conflict`)
/// and writes nothing; the others are written together ([`SqlStore::insert_created`]).
async fn create_all(
    tx: &mut Transaction<'static, Sqlite>,
    creates: &[&Create],
) -> StoreResult<Vec<StoreResult<()>>> {
    if creates.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: BTreeSet<Uuid> = creates.iter().map(|c| c.new.account_id).collect();
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT account_id, n FROM collaboration_counts WHERE status = 'running' AND account_id IN (",
    );
    push_in(&mut query, &accounts);
    let counted: Vec<(Hyphenated, i64)> = query.build_query_as().fetch_all(&mut **tx).await?;
    let mut running: HashMap<Uuid, i64> = counted
        .into_iter()
        .map(|(account, n)| (account.into_uuid(), n))
        .collect();
    let outcomes: Vec<StoreResult<()>> = creates
        .iter()
        .map(|create| {
            let n = running.entry(create.new.account_id).or_default();
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
    SqlStore::<Sqlite>::insert_created(tx, &admitted).await?;
    Ok(outcomes)
}
