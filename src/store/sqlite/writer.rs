//! SQLite's group commit: the one task that writes turns and new collaborations.
//!
//! Turns, the one write every running collaboration makes over and over, and new
//! collaborations, the one write every create request makes, are handed to this task and
//! written many to a transaction. A commit costs SQLite a WAL write of every page it
//! touched, and sqlx two hand-offs to its connection's thread; under load, hundreds of turns
//! (or tens of creates) now share them, and the pages they have in common (the tables' last
//! leaves, the indexes) are written once. They share their statements too: a statement is
//! another two hand-offs, so a batch's turns are written with a statement for each step and
//! its creates with one for each table, however many there are. Each write is answered only
//! once its transaction has committed.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Duration, Instant},
};
use uuid::{Uuid, fmt::Hyphenated};

use super::super::{
    StoreError, StoreResult,
    sql::{Create, Dialect, ROWS_PER_STATEMENT, SqlStore, Turn, push_in, runs},
};
use crate::domain::StoredEvent;

/// The most writes in one transaction. Enough to take in every runnable collaboration's
/// turn at once; few enough that a commit stays short.
pub(super) const WRITES_PER_COMMIT: usize = 256;

/// How long the writer waits for more writes before it commits, when they come fast. A
/// commit costs the same for one write as for many (two hand-offs to sqlx's thread for each
/// statement, a WAL write of every page touched): at 1,600 turns a second they came about
/// two to a commit, and waiting this long made it eight, and a turn 12% cheaper in all.
const LINGER: Duration = Duration::from_millis(2);

/// How fast writes must come for [`LINGER`] to pay (a few arrive while it waits); slower,
/// and a write is committed as soon as the writer is free, as it always was.
const BUSY_PER_SECOND: f64 = 1_000.0;

/// How far back [`Pace`] looks: the writes taken in about the last 50 ms make its rate.
const PACE_WINDOW: Duration = Duration::from_millis(50);

/// The rate writes reach the writer at: every write it takes, those taken while it lingers
/// too, counted into a sum that fades by `e` every [`PACE_WINDOW`], so that it follows the
/// time that passes, not the number of batches.
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
    recent: f64,
}

impl Pace {
    /// Counts `taken` writes taken from the queue at `now`.
    fn took(&mut self, taken: usize, now: Instant) {
        let gone = self
            .last
            .replace(now)
            .map_or(Duration::ZERO, |last| now - last);
        let fade = (-gone.as_secs_f64() / PACE_WINDOW.as_secs_f64()).exp();
        self.recent = self.recent * fade + taken as f64;
    }

    /// Whether writes come fast enough to wait for more before committing.
    fn busy(&self) -> bool {
        self.recent / PACE_WINDOW.as_secs_f64() >= BUSY_PER_SECOND
    }
}

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
    let mut pace = Pace::default();
    while queue.recv_many(&mut batch, WRITES_PER_COMMIT).await > 0 {
        pace.took(batch.len(), Instant::now());
        if pace.busy() && batch.len() < WRITES_PER_COMMIT {
            tokio::time::sleep(LINGER).await;
            let taken = batch.len();
            while batch.len() < WRITES_PER_COMMIT
                && let Ok(write) = queue.try_recv()
            {
                batch.push(write);
            }
            pace.took(batch.len() - taken, Instant::now());
        }
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
/// (see [`create_all`]); then the turns, all together (see [`append_all`]).
async fn write_together(
    writes: &SqlitePool,
    batch: &[Write],
) -> StoreResult<Vec<StoreResult<Made>>> {
    let mut tx = writes.begin_with("BEGIN IMMEDIATE").await?;
    let (mut creates, mut turns) = (Vec::new(), Vec::new());
    for write in batch {
        match write {
            Write::Create(create, _) => creates.push(create),
            Write::Turn(turn, _) => turns.push(turn),
        }
    }
    let mut created = create_all(&mut tx, &creates).await?.into_iter();
    let mut appended = append_all(&mut tx, &turns).await?.into_iter();
    let made = batch
        .iter()
        .map(|write| match write {
            Write::Create(..) => created
                .next()
                .expect("an outcome for every create")
                .map(|()| None),
            Write::Turn(..) => appended.next().expect("an outcome for every turn"),
        })
        .collect();
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

/// Turns, with each one's outcome in order. A collaboration's turns are counted one after
/// another (its cap is checked for each), so the batch is written in rounds, each the
/// longest run of turns of different collaborations; under load that is the whole batch.
async fn append_all(
    tx: &mut Transaction<'static, Sqlite>,
    turns: &[&Turn],
) -> StoreResult<Vec<StoreResult<Made>>> {
    let mut made = Vec::with_capacity(turns.len());
    let mut rest = turns;
    while !rest.is_empty() {
        let mut seen = HashSet::with_capacity(rest.len());
        let round = rest
            .iter()
            .take_while(|turn| seen.insert(turn.lease.collaboration_id))
            .count();
        let (now, later) = rest.split_at(round);
        made.extend(append_round(tx, now).await?);
        rest = later;
    }
    Ok(made)
}

/// Turns of different collaborations, written with one statement for each step for all of
/// them, rather than four statements for each turn: a statement costs two hand-offs to
/// sqlx's connection thread and back. A turn written before (retried after an ambiguous
/// failure: its commit may have happened) is answered as stored; the others are counted
/// by one statement guarded by each one's lease, its collaboration's status and cap, and
/// those it counted get their channels' next seqs and are stored as events. A turn refused
/// writes nothing; only then is its lease looked at, to tell a lost lease from an ended
/// collaboration.
async fn append_round(
    tx: &mut Transaction<'static, Sqlite>,
    turns: &[&Turn],
) -> StoreResult<Vec<StoreResult<Made>>> {
    let mut stored = stored_before(tx, turns).await?;
    let fresh: Vec<&Turn> = turns
        .iter()
        .filter(|turn| !stored.contains_key(&turn.lease.collaboration_id))
        .copied()
        .collect();
    let channels = count_turns(tx, &fresh).await?;
    let seqs = next_seqs(tx, channels.values().copied().collect()).await?;
    let mut events: Vec<(Uuid, &Turn, StoredEvent)> = Vec::with_capacity(channels.len());
    for turn in &fresh {
        let Some(&channel_id) = channels.get(&turn.lease.collaboration_id) else {
            continue;
        };
        // A collaboration's channel goes only with it; a channel missing is the database's
        // error, as it was when each turn read its own.
        let seq = *seqs
            .get(&channel_id)
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        let frame = turn.body.to_frame(seq);
        events.push((channel_id, *turn, StoredEvent { seq, frame }));
    }
    insert_events(tx, &events).await?;
    stored.extend(
        events
            .into_iter()
            .map(|(_, turn, event)| (turn.lease.collaboration_id, event)),
    );
    let mut made = Vec::with_capacity(turns.len());
    for turn in turns {
        made.push(match stored.remove(&turn.lease.collaboration_id) {
            Some(event) => Ok(Some(event)),
            // Refused for its lease (an error of its own: the transaction goes on), or
            // because its collaboration has ended or is at its cap.
            None => match Sqlite::check_lease(tx, &turn.lease).await {
                Ok(()) => Ok(None),
                Err(StoreError::LeaseLost) => Err(StoreError::LeaseLost),
                Err(error) => return Err(error),
            },
        });
    }
    Ok(made)
}

/// `rows`, the last repeated up to a power of two, as [`push_in`] does and for the same
/// reason: a statement of a few shapes, prepared once. A statement over them must give the
/// same answer for a row written twice as for a row written once.
fn padded<T>(rows: &[T]) -> impl Iterator<Item = &T> {
    let padding = rows.len().next_power_of_two() - rows.len();
    rows.iter()
        .chain(rows.last().into_iter().cycle().take(padding))
}

/// The events the turns' messages were stored as before, by collaboration.
async fn stored_before(
    tx: &mut Transaction<'static, Sqlite>,
    turns: &[&Turn],
) -> StoreResult<HashMap<Uuid, StoredEvent>> {
    let messages: Vec<(Uuid, Uuid)> = turns
        .iter()
        .filter_map(|turn| Some((turn.lease.collaboration_id, turn.body.message_id()?)))
        .collect();
    if messages.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Hyphenated, i64, String)> =
        QueryBuilder::<Sqlite>::new("WITH m (cid, mid) AS (")
            .push_values(
                padded(&messages),
                |mut row, (collaboration_id, message_id)| {
                    row.push_bind(collaboration_id.hyphenated())
                        .push_bind(message_id.hyphenated());
                },
            )
            .push(
                ") SELECT m.cid, e.seq, e.frame FROM m JOIN collaborations c ON c.id = m.cid \
                 JOIN events e ON e.channel_id = c.channel_id AND e.message_id = m.mid",
            )
            .build_query_as()
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(collaboration_id, seq, frame)| {
            (collaboration_id.into_uuid(), StoredEvent { seq, frame })
        })
        .collect())
}

/// Counts each turn's message and tokens on its collaboration, guarded by its lease, the
/// status and the cap, in one statement; the channel of each collaboration it counted.
/// A row written twice (the padding) matches its collaboration once, and SQLite updates a
/// row the join matches more than once only once.
async fn count_turns(
    tx: &mut Transaction<'static, Sqlite>,
    turns: &[&Turn],
) -> StoreResult<HashMap<Uuid, Uuid>> {
    if turns.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = QueryBuilder::<Sqlite>::new("WITH t (cid, tokens, cost, owner, epoch) AS (");
    query
        .push_values(padded(turns), |mut row, turn| {
            let lease = &turn.lease;
            row.push_bind(lease.collaboration_id.hyphenated())
                .push_bind(turn.spent.tokens as i64)
                .push_bind(turn.spent.cost_micros as i64)
                .push_bind(lease.owner.hyphenated())
                .push_bind(lease.epoch);
        })
        .push(
            ") UPDATE collaborations SET message_count = message_count + 1, \
             tokens_used = tokens_used + t.tokens, cost_micros = cost_micros + t.cost FROM t \
             WHERE collaborations.id = t.cid AND status = 'running' AND message_count < message_cap \
             AND lease_owner = t.owner AND lease_epoch = t.epoch AND lease_expires_at > ",
        )
        .push_bind(Utc::now())
        .push(" RETURNING id, channel_id");
    let rows: Vec<(Hyphenated, Hyphenated)> = query.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(|(collaboration_id, channel_id)| {
            (collaboration_id.into_uuid(), channel_id.into_uuid())
        })
        .collect())
}

/// Moves each channel's `last_seq` on by one, in one statement; each one's new `last_seq`.
async fn next_seqs(
    tx: &mut Transaction<'static, Sqlite>,
    channels: BTreeSet<Uuid>,
) -> StoreResult<HashMap<Uuid, i64>> {
    if channels.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query =
        QueryBuilder::<Sqlite>::new("UPDATE channels SET last_seq = last_seq + 1 WHERE id IN (");
    push_in(&mut query, &channels);
    query.push(" RETURNING id, last_seq");
    let rows: Vec<(Hyphenated, i64)> = query.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(|(channel_id, seq)| (channel_id.into_uuid(), seq))
        .collect())
}

/// Stores the turns' messages as events, in a statement for each run of them (see
/// [`runs`]).
async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    events: &[(Uuid, &Turn, StoredEvent)],
) -> StoreResult<()> {
    let now = Utc::now();
    for run in runs(events, ROWS_PER_STATEMENT) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (channel_id, seq, kind, frame, created_at, message_id) ",
        )
        .push_values(run, |mut row, (channel_id, turn, event)| {
            row.push_bind(channel_id.hyphenated())
                .push_bind(event.seq)
                .push_bind(turn.body.kind())
                .push_bind(event.frame.as_str())
                .push_bind(now)
                .push_bind(turn.body.message_id().map(|id| id.hyphenated()));
        })
        .build()
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the writer waits after `batches` batches of `each` writes, `apart` from one
    /// another.
    fn waits(batches: u32, each: usize, apart: Duration) -> bool {
        let mut pace = Pace::default();
        let start = Instant::now();
        for i in 0..batches {
            pace.took(each, start + apart * i);
        }
        pace.busy()
    }

    #[test]
    fn the_writer_waits_for_more_only_while_writes_come_fast() {
        // A turn every 10 ms (100 a second): committed at once.
        assert!(!waits(50, 1, Duration::from_millis(10)));
        // Two turns a millisecond (2,000 a second): worth waiting for more.
        assert!(waits(50, 2, Duration::from_millis(1)));
        // Eight every 4 ms, as when it lingers (2,000 a second, counted whole).
        assert!(waits(50, 8, Duration::from_millis(4)));
        // Two writes close together, after nothing, are not thousands a second.
        assert!(!waits(2, 1, Duration::from_micros(100)));
        // Fast, then a pause of a fifth of a second: the next lone write commits at once.
        let mut pace = Pace::default();
        let mut at = Instant::now();
        for _ in 0..200 {
            at += Duration::from_millis(1);
            pace.took(4, at);
        }
        assert!(pace.busy());
        pace.took(1, at + Duration::from_millis(200));
        assert!(!pace.busy());
    }
}
