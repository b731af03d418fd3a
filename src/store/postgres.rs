//! The shared backend: PostgreSQL, for several Skein processes over one database.
//!
//! The same SQL as [`super::SqliteStore`] with native types (`uuid`, `timestamptz`,
//! `boolean`), and the same guarantees under concurrency, which here come from row locks
//! rather than one writer at a time. Transactions run at READ COMMITTED: a guarded `UPDATE`
//! (`... WHERE status = 'running'`) waits for a concurrent writer of the row and evaluates its
//! guard again on what that writer committed, so the guards hold as they do in SQLite. Where
//! SQLite relies on `BEGIN IMMEDIATE` to serialize a read and the write it decides, this
//! module says which lock stands in for it.
//!
//! The schema is the connection's: set `search_path` in the URL's `options` (for example
//! `?options=-c%20search_path%3Dskein`) to keep Skein's tables, and its migration history,
//! in a schema of their own. PostgreSQL keeps times to the microsecond, SQLite to the
//! nanosecond.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, Postgres, QueryBuilder, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use super::{
    ChannelInfo, Claim, CollaborationFilter, Credential, IdempotencyClaim, Lease, LeaseTo, Store,
    StoreError, StoreResult, is_foreign_key_violation, is_unique_violation,
    rows::{
        self, AccountRow, AgentRow, ChannelRow, DeliveryRow, DueRow, IdempotencyRow, KeyRow,
        ListedRow, RosteredRow, SnapshotRow, WebhookSettingsRow, attempt_columns, spec_json,
    },
};
use crate::domain::{
    Account, Agent, AgentRef, ApiKey, Collaboration, CollaborationStatus, Ending, EventBody,
    NewCollaboration, NewKey, PageRequest, Scope, StoredEvent,
    webhook::{AttemptOutcome, Delivery, DueDelivery, WebhookEvent, WebhookSettings},
};

/// A query reading collaborations whole, as `c`: the row and, as `roster`, the agents on
/// its roster folded into a JSON array of `[position, id, address, name, kind]` (see
/// [`RosteredRow`]). What follows the select list is the macro's argument.
macro_rules! rostered {
    ($rest:literal) => {
        concat!(
            "SELECT c.*, (SELECT COALESCE(json_agg(json_build_array(p.position, a.id, a.address, a.name, a.kind) \
             ORDER BY p.position), '[]')::text FROM collaboration_participants p \
             JOIN agents a ON a.id = p.agent_id WHERE p.collaboration_id = c.id) AS roster ",
            $rest
        )
    };
}

/// How UUID columns decode here: as `uuid`.
type Id = Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a transaction may sit idle before PostgreSQL ends its session.
const IDLE_IN_TRANSACTION: &str = "5s";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` and applies pending migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
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
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// Appends one event to a channel inside the caller's transaction: bumps the channel's
/// counter and inserts the frame under the new `seq`. The bump locks the channel's row until
/// the transaction ends, so the next writer's `seq` waits for this one's commit.
async fn insert_event(
    tx: &mut Transaction<'static, Postgres>,
    channel_id: Uuid,
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
        "INSERT INTO events (channel_id, seq, kind, frame, created_at) VALUES ($1, $2, $3, $4, $5)",
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

/// Fencing: refuses the transaction's writes unless `lease` is still held. The row lock
/// taken here keeps a claim from moving the lease on until this transaction has ended.
async fn check_lease(tx: &mut Transaction<'static, Postgres>, lease: &Lease) -> StoreResult<()> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM collaborations WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 \
         AND lease_expires_at > clock_timestamp() FOR UPDATE",
    )
    .bind(lease.collaboration_id)
    .bind(lease.owner)
    .bind(lease.epoch)
    .fetch_optional(&mut **tx)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost),
    }
}

async fn channel_of(
    tx: &mut Transaction<'static, Postgres>,
    collaboration_id: Uuid,
) -> StoreResult<Uuid> {
    Ok(
        sqlx::query_scalar("SELECT channel_id FROM collaborations WHERE id = $1")
            .bind(collaboration_id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

async fn insert_key<'e>(
    executor: impl sqlx::Executor<'e, Database = Postgres>,
    key: &NewKey,
) -> StoreResult<()> {
    let scopes: Vec<String> = key.scopes.iter().map(Scope::name).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, key_prefix, key_hash, scopes, from_config, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id)
    .bind(key.account_id)
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
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn operator_account(&self) -> StoreResult<Option<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM accounts WHERE operator LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn create_account(&self, account: &Account, first_key: &NewKey) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, name, operator, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(account.id)
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
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<AccountRow<Id>> =
            sqlx::query_as("SELECT * FROM accounts ORDER BY created_at, id LIMIT $1 OFFSET $2")
                .bind(i64::from(page.size))
                .bind(page.offset())
                .fetch_all(&self.pool)
                .await?;
        Ok((
            rows.into_iter().map(AccountRow::into_domain).collect(),
            total as u64,
        ))
    }

    async fn insert_key(&self, key: &NewKey) -> StoreResult<()> {
        insert_key(&self.pool, key).await
    }

    async fn find_key(&self, hash: &str) -> StoreResult<Option<Credential>> {
        let row: Option<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(KeyRow::into_credential).transpose()
    }

    async fn key_exists(&self, hash: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_hash = $1)")
                .bind(hash)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn touch_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_key(&self, account_id: Uuid, id: Uuid) -> StoreResult<Option<ApiKey>> {
        let row: Option<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.id = $1 AND k.account_id = $2",
        )
        .bind(id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn list_keys(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<ApiKey>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<KeyRow<Id>> = sqlx::query_as(
            "SELECT k.*, a.operator FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.account_id = $1 ORDER BY k.created_at DESC, k.id LIMIT $2 OFFSET $3",
        )
        .bind(account_id)
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<StoreResult<_>>()?;
        Ok((keys, total as u64))
    }

    async fn revoke_key(&self, account_id: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let from_config: Option<bool> = sqlx::query_scalar(
            "SELECT from_config FROM api_keys WHERE id = $1 AND account_id = $2",
        )
        .bind(id)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
        match from_config {
            None => return Ok(false),
            Some(true) => return Err(StoreError::configured_key()),
            Some(false) => {}
        }
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_config_keys_except(&self, hash: &str) -> StoreResult<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE from_config AND revoked_at IS NULL AND key_hash <> $2 RETURNING id",
        )
        .bind(Utc::now())
        .bind(hash)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn claim_idempotency(
        &self,
        account_id: Uuid,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyClaim> {
        let mut tx = self.write().await?;
        // Claims the key if it is new or its claim expired, in one statement: of two requests
        // racing for it, one inserts and the other waits for that row, then finds it live.
        // A live row is left as it is but locked until this transaction ends, so it cannot
        // change (or be released) before it is read below.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, idempotency_key) DO UPDATE SET \
             request_hash = excluded.request_hash, status = NULL, response = NULL, \
             created_at = excluded.created_at \
             WHERE idempotency_keys.created_at < $5",
        )
        .bind(account_id)
        .bind(key)
        .bind(request_hash)
        .bind(Utc::now())
        .bind(expired_before)
        .execute(&mut *tx)
        .await?;
        let claim = if claimed.rows_affected() == 1 {
            IdempotencyClaim::Claimed
        } else {
            let live: IdempotencyRow = sqlx::query_as(
                "SELECT request_hash, status, response, created_at FROM idempotency_keys \
                 WHERE account_id = $1 AND idempotency_key = $2",
            )
            .bind(account_id)
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
        .bind(account_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_idempotency(&self, account_id: Uuid, key: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE account_id = $1 AND idempotency_key = $2 AND status IS NULL",
        )
        .bind(account_id)
        .bind(key)
        .execute(&self.pool)
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO agents (id, account_id, address, name, description, kind, spec, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(agent.id)
        .bind(agent.account_id)
        .bind(agent.address.as_str())
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(&agent.secret)
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::address_taken(&agent.address)),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_agent(&self, account_id: Uuid, agent: &AgentRef) -> StoreResult<Option<Agent>> {
        // The two columns have different types here, so each gets its own bind.
        let query = match agent {
            AgentRef::Id(id) => {
                sqlx::query_as("SELECT * FROM agents WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(*id)
            }
            AgentRef::Address(address) => {
                sqlx::query_as("SELECT * FROM agents WHERE account_id = $1 AND address = $2")
                    .bind(account_id)
                    .bind(address.as_str())
            }
        };
        let row: Option<AgentRow<Id>> = query.fetch_optional(&self.pool).await?;
        row.map(AgentRow::into_domain).transpose()
    }

    async fn get_agents(&self, account_id: Uuid, agents: &[AgentRef]) -> StoreResult<Vec<Agent>> {
        let (mut ids, mut addresses) = (Vec::new(), Vec::new());
        for agent in agents {
            match agent {
                AgentRef::Id(id) => ids.push(*id),
                AgentRef::Address(address) => addresses.push(address.as_str()),
            }
        }
        let rows: Vec<AgentRow<Id>> = sqlx::query_as(
            "SELECT * FROM agents WHERE account_id = $1 AND (id = ANY($2) OR address = ANY($3))",
        )
        .bind(account_id)
        .bind(ids)
        .bind(addresses)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AgentRow::into_domain).collect()
    }

    async fn agents_by_id(&self, ids: &[Uuid]) -> StoreResult<Vec<Agent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<AgentRow<Id>> = sqlx::query_as("SELECT * FROM agents WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AgentRow::into_domain).collect()
    }

    async fn list_agents(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Agent>, u64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<AgentRow<Id>> = sqlx::query_as(
            "SELECT * FROM agents WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        )
        .bind(account_id)
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let agents = rows
            .into_iter()
            .map(AgentRow::into_domain)
            .collect::<StoreResult<_>>()?;
        Ok((agents, total as u64))
    }

    async fn update_agent(&self, agent: &Agent) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET name = $1, description = $2, kind = $3, spec = $4, secret = $5, updated_at = $6 \
             WHERE id = $7 AND account_id = $8",
        )
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.spec.kind().as_str())
        .bind(spec_json(&agent.spec))
        .bind(&agent.secret)
        .bind(agent.updated_at)
        .bind(agent.id)
        .bind(agent.account_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_agent(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM agents WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.pool)
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
        let lease = lease_to.map(|to| to.first(new.id));
        let mut tx = self.write().await?;
        // Two requests of one key take turns on a lock named after the key, held until this
        // transaction ends, so they cannot both count the same free slot and take it.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(advisory_key(new.created_by))
            .execute(&mut *tx)
            .await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM collaborations WHERE created_by_key = $1 AND status = 'running'",
        )
        .bind(new.created_by)
        .fetch_one(&mut *tx)
        .await?;
        if running >= i64::from(max_running) {
            return Err(StoreError::too_many_running(running, max_running));
        }
        sqlx::query(
            "INSERT INTO collaborations (id, account_id, channel_id, objective, principal_agent_id, \
             message_cap, timeout_window, evaluate_objective_completion, source, strategy, webhook_url, \
             token_budget, podcast, allow_interjections, created_by_key, status, started_at, created_at, \
             lease_owner, lease_expires_at, lease_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'running', $16, $17, \
             $18, $19, $20)",
        )
        .bind(new.id)
        .bind(new.account_id)
        .bind(new.channel_id)
        .bind(&new.objective)
        .bind(new.principal)
        .bind(i64::from(new.message_cap))
        .bind(i64::from(new.timeout_window))
        .bind(new.evaluate_objective_completion)
        .bind(new.source.map(|s| s.name()))
        .bind(new.strategy.name())
        .bind(&new.webhook_url)
        .bind(new.token_budget.map(|b| b as i64))
        .bind(new.podcast)
        .bind(new.allow_interjections)
        .bind(new.created_by)
        .bind(new.created_at)
        .bind(new.created_at)
        .bind(lease.map(|(lease, _)| lease.owner))
        .bind(lease.map(|(_, expires)| expires))
        .bind(lease.map_or(0, |(lease, _)| lease.epoch))
        .execute(&mut *tx)
        .await?;
        let roster = std::iter::once(&new.principal).chain(&new.participants);
        QueryBuilder::new(
            "INSERT INTO collaboration_participants (collaboration_id, agent_id, position) ",
        )
        .push_values(roster.enumerate(), |mut row, (position, agent_id)| {
            row.push_bind(new.id)
                .push_bind(agent_id)
                .push_bind(position as i64);
        })
        .build()
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO channels (id, account_id, collaboration_id, last_seq, created_at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(new.channel_id)
        .bind(new.account_id)
        .bind(new.id)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await?;
        enqueue_webhook(&mut tx, new.id, WebhookEvent::Started).await?;
        tx.commit().await?;
        Ok(lease.map(|(lease, _)| lease))
    }

    async fn get_collaboration(
        &self,
        account_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<Collaboration>> {
        let row: Option<RosteredRow<Id>> = sqlx::query_as(rostered!(
            "FROM collaborations c WHERE c.id = $1 AND c.account_id = $2"
        ))
        .bind(id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(RosteredRow::into_domain).transpose()
    }

    async fn collaboration(&self, id: Uuid) -> StoreResult<Option<Collaboration>> {
        let row: Option<RosteredRow<Id>> =
            sqlx::query_as(rostered!("FROM collaborations c WHERE c.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
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
            query: &mut QueryBuilder<Postgres>,
            account_id: Uuid,
            filter: &CollaborationFilter,
        ) {
            query
                .push(" FROM collaborations c WHERE c.account_id = ")
                .push_bind(account_id);
            if let Some(agent) = filter.agent {
                query
                    .push(" AND EXISTS (SELECT 1 FROM collaboration_participants p WHERE p.collaboration_id = c.id AND p.agent_id = ")
                    .push_bind(agent)
                    .push(")");
            }
            if let Some(channel_id) = filter.channel_id {
                query.push(" AND c.channel_id = ").push_bind(channel_id);
            }
            if let Some(status) = filter.status {
                query.push(" AND c.status = ").push_bind(status.name());
            }
            if let Some(source) = filter.source {
                query.push(" AND c.source = ").push_bind(source.name());
            }
        }
        let total = |query: &mut QueryBuilder<Postgres>| {
            query.push("SELECT COUNT(*)");
            filtered(query, account_id, filter);
        };
        let mut query = QueryBuilder::<Postgres>::new(rostered!(", ("));
        total(&mut query);
        query.push(") AS total");
        filtered(&mut query, account_id, filter);
        query
            .push(" ORDER BY c.created_at DESC, c.id LIMIT ")
            .push_bind(i64::from(page.size))
            .push(" OFFSET ")
            .push_bind(page.offset());
        let rows: Vec<ListedRow<Id>> = query.build_query_as().fetch_all(&self.pool).await?;
        let total = match rows.first() {
            Some(row) => row.total,
            None if page.offset() == 0 => 0,
            // A page past the end still says how many there are.
            None => {
                let mut query = QueryBuilder::<Postgres>::new("");
                total(&mut query);
                query.build_query_scalar().fetch_one(&self.pool).await?
            }
        };
        let items = rows
            .into_iter()
            .map(|row| row.collaboration.into_domain())
            .collect::<StoreResult<_>>()?;
        Ok((items, total as u64))
    }

    async fn delete_collaboration(&self, account_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM collaborations WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_by_status(&self) -> StoreResult<Vec<(CollaborationStatus, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM collaborations GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(status, count)| Ok((rows::parse(&status)?, count as u64)))
            .collect()
    }

    async fn claim_leases(
        &self,
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
        let rows: Vec<(Uuid, i64)> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(collaboration_id, epoch)| Lease {
                collaboration_id,
                owner,
                epoch,
            })
            .collect())
    }

    async fn renew_leases(&self, owner: Uuid, ttl: Duration) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "UPDATE collaborations SET lease_expires_at = clock_timestamp() + make_interval(secs => $2) \
             WHERE lease_owner = $1 AND lease_expires_at > clock_timestamp() RETURNING id, lease_epoch",
        )
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(collaboration_id, epoch)| Lease {
                collaboration_id,
                owner,
                epoch,
            })
            .collect())
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        )
        .bind(lease.collaboration_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, owner: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE collaborations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn lease_holder(&self, collaboration_id: Uuid) -> StoreResult<Option<Uuid>> {
        let holder: Option<Option<Uuid>> = sqlx::query_scalar(
            "SELECT CASE WHEN lease_expires_at > clock_timestamp() THEN lease_owner END \
             FROM collaborations WHERE id = $1",
        )
        .bind(collaboration_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.flatten())
    }

    async fn append_message(
        &self,
        lease: &Lease,
        body: &EventBody,
        tokens: u64,
    ) -> StoreResult<Option<StoredEvent>> {
        let mut tx = self.write().await?;
        // The lease, the state and the cap in one guarded statement that also names the
        // channel. The guard is evaluated again on the row a concurrent writer committed, so
        // the cap and the fence hold with any number of writers. Only when it matches nothing
        // is the lease looked at again, to tell a lost lease from an ended collaboration.
        let counted: Option<Uuid> = sqlx::query_scalar(
            "UPDATE collaborations SET message_count = message_count + 1, tokens_used = tokens_used + $1 \
             WHERE id = $2 AND status = 'running' AND message_count < message_cap \
             AND lease_owner = $3 AND lease_epoch = $4 AND lease_expires_at > clock_timestamp() \
             RETURNING channel_id",
        )
        .bind(tokens as i64)
        .bind(lease.collaboration_id)
        .bind(lease.owner)
        .bind(lease.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(channel_id) = counted else {
            check_lease(&mut tx, lease).await?;
            return Ok(None);
        };
        let event = insert_event(&mut tx, channel_id, body).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn add_tokens(&self, collaboration_id: Uuid, tokens: u64) -> StoreResult<()> {
        sqlx::query("UPDATE collaborations SET tokens_used = tokens_used + $1 WHERE id = $2")
            .bind(tokens as i64)
            .bind(collaboration_id)
            .execute(&self.pool)
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
            "UPDATE collaborations SET audio_url = $1, \
             advisory_message = CASE WHEN $2 IS NULL THEN advisory_message \
               WHEN advisory_message IS NULL THEN $2 ELSE advisory_message || ' ' || $2 END \
             WHERE id = $3",
        )
        .bind(audio_url)
        .bind(note)
        .bind(collaboration_id)
        .execute(&self.pool)
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
            "UPDATE collaborations SET status = $1, end_reason = $2, ended_at = $3, advisory_message = $4, \
             error_message = $5 WHERE id = $6 AND status = 'running'",
        )
        .bind(status.name())
        .bind(ending.reason.name())
        .bind(ending.ended_at)
        .bind(&ending.advisory_message)
        .bind(&ending.error_message)
        .bind(collaboration_id)
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
            "UPDATE collaborations SET headline = $1, summary = $2 WHERE id = $3 AND summary IS NULL",
        )
        .bind(headline)
        .bind(summary)
        .bind(collaboration_id)
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
             WHERE ch.id = $1 AND ch.account_id = $2",
        )
        .bind(id)
        .bind(account_id)
        .fetch_optional(&self.pool)
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
            "SELECT seq, frame FROM events WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(channel_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, frame)| StoredEvent { seq, frame })
            .collect())
    }

    async fn webhook_settings(&self, account_id: Uuid) -> StoreResult<Option<WebhookSettings>> {
        let row: Option<WebhookSettingsRow<Id>> =
            sqlx::query_as("SELECT * FROM webhook_settings WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(WebhookSettingsRow::into_domain))
    }

    async fn create_webhook_settings(&self, settings: &WebhookSettings) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_settings (account_id, default_url, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(settings.account_id)
        .bind(&settings.default_url)
        .bind(&settings.secret)
        .bind(settings.created_at)
        .bind(settings.updated_at)
        .execute(&self.pool)
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
            "UPDATE webhook_settings SET default_url = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(url)
        .bind(at)
        .bind(account_id)
        .execute(&self.pool)
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
            "UPDATE webhook_settings SET secret = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(secret)
        .bind(at)
        .bind(account_id)
        .execute(&self.pool)
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
        // A delivery another worker is claiming right now is skipped, not waited for; once
        // that claim commits, the row is no longer due and a later SELECT passes it by too.
        let rows: Vec<DueRow<Id>> = sqlx::query_as(
            "SELECT d.id, d.account_id, d.url, d.payload, d.attempts, d.created_at, w.secret \
             FROM webhook_deliveries d JOIN webhook_settings w ON w.account_id = d.account_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT $2 \
             FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = ANY($2)")
            .bind(claim_until)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
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
        .bind(id)
        .bind(claimed_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_webhook_deliveries(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(&self.pool)
                .await?;
        let rows: Vec<DeliveryRow<Id>> = sqlx::query_as(
            "SELECT * FROM webhook_deliveries WHERE account_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(account_id)
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(key.account_id)
        .bind(key.id)
        .bind(channel_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn redeem_ticket(&self, hash: &str, channel_id: Uuid) -> StoreResult<Option<Credential>> {
        let now = Utc::now();
        let mut tx = self.write().await?;
        // Of two redemptions at once, the second waits for the first's row and finds it used.
        let key_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE websocket_tickets SET used_at = $1 \
             WHERE ticket_hash = $2 AND channel_id = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING key_id",
        )
        .bind(now)
        .bind(hash)
        .bind(channel_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key_id) = key_id else {
            return Ok(None);
        };
        let row: Option<KeyRow<Id>> = sqlx::query_as(
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

/// The key's id folded to the 64 bits an advisory lock is named by: its random half, so two
/// keys practically never share a lock (and if they did, they would only take turns).
fn advisory_key(key_id: Uuid) -> i64 {
    key_id.as_u64_pair().1 as i64
}

/// Writes an event's delivery into the outbox, in the transaction that makes the event
/// happen, when the collaboration has somewhere to send it (its own `webhook_url`, else its
/// account's default) and the account has a signing secret.
async fn enqueue_webhook(
    tx: &mut Transaction<'static, Postgres>,
    collaboration_id: Uuid,
    event: WebhookEvent,
) -> StoreResult<()> {
    let row: Option<SnapshotRow<Id>> = sqlx::query_as(
        "SELECT c.account_id, COALESCE(c.webhook_url, w.default_url) AS url, c.id, c.channel_id, \
         c.objective, c.status, c.end_reason, c.message_count, c.tokens_used, c.started_at, \
         c.ended_at, c.headline, c.summary, c.advisory_message, c.error_message \
         FROM collaborations c JOIN webhook_settings w ON w.account_id = c.account_id \
         WHERE c.id = $1",
    )
    .bind(collaboration_id)
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
         status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(collaboration_id)
    .bind(event.name())
    .bind(url)
    .bind(payload)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
