//! Running one test body against every backend, and the valid inputs tests build on.

use std::{future::Future, sync::Arc};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use skein::{
    domain::{
        Account, Agent, AgentAddress, AgentSpec, EndReason, Ending, EventBody, NewCollaboration,
        NewKey, Scope, Sender, Strategy, event::Role,
    },
    store::{Claim, Lease, PgStore, SqliteStore, Store},
};
use uuid::Uuid;

pub type Shared = Arc<dyn Store>;

/// Runs `test` against a fresh SQLite store, then, if `SKEIN_TEST_DATABASE_URL` is set,
/// against a fresh PostgreSQL store in a schema of its own.
pub async fn each_store<F, Fut>(test: F)
where
    F: Fn(Shared) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!("== SQLite in {}", dir.path().display());
    let sqlite = SqliteStore::open(dir.path(), &tasks(), vault())
        .await
        .expect("SQLite opens");
    test(Arc::new(sqlite)).await;

    if let Some(url) = database_url() {
        let schema = Schema::create(&url, "skein_t").await;
        println!("== PostgreSQL in schema {}", schema.name);
        let postgres = PgStore::connect(&schema.url, vault())
            .await
            .expect("PostgreSQL connects");
        test(Arc::new(postgres)).await;
        schema.drop().await;
    }
}

#[path = "../common/schema.rs"]
mod schema;
pub use schema::{Schema, database_url};

/// Now, to the microsecond: what both backends keep of a time, so values compare equal
/// after a round trip.
/// The key the test stores seal their secrets with: one for the whole run, so that a store
/// opened again on the same file opens what it sealed.
pub fn vault() -> Arc<skein::secrets::Vault> {
    static VAULT: std::sync::LazyLock<Arc<skein::secrets::Vault>> =
        std::sync::LazyLock::new(|| Arc::new(skein::secrets::Vault::generate()));
    VAULT.clone()
}

/// Tasks for a store's workers (SQLite's writer), in a server that never stops.
pub fn tasks() -> skein::tasks::Tasks {
    skein::tasks::Tasks::new(tokio_util::sync::CancellationToken::new())
}

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn later(seconds: i64) -> DateTime<Utc> {
    now() + Duration::seconds(seconds)
}

pub fn new_key(account_id: Uuid, name: &str, scopes: Vec<Scope>, from_config: bool) -> NewKey {
    let secret = format!("sk_test_{}", Uuid::new_v4().simple());
    NewKey {
        id: Uuid::now_v7(),
        account_id,
        name: name.to_owned(),
        prefix: secret.chars().take(12).collect(),
        hash: format!("hash-of-{secret}"),
        scopes,
        from_config,
    }
}

/// An account with its first key.
pub struct Tenant {
    pub account: Account,
    pub key: NewKey,
}

impl Tenant {
    pub fn id(&self) -> Uuid {
        self.account.id
    }
}

pub async fn tenant(store: &Shared, name: &str) -> Tenant {
    tenant_at(store, name, false, now()).await
}

pub async fn tenant_at(
    store: &Shared,
    name: &str,
    operator: bool,
    created_at: DateTime<Utc>,
) -> Tenant {
    let account = Account {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        operator,
        created_at,
    };
    let key = new_key(account.id, "first", vec![Scope::Read, Scope::Write], false);
    store
        .create_account(&account, &key)
        .await
        .expect("the account is stored");
    Tenant { account, key }
}

pub fn agent_value(account_id: Uuid, name: &str) -> Agent {
    let at = now();
    Agent {
        id: Uuid::now_v7(),
        account_id,
        address: AgentAddress::generate(),
        name: name.to_owned(),
        description: Some(format!("{name}, for the tests")),
        spec: AgentSpec::Scripted {
            replies: vec!["yes".into(), "no".into()],
            delay_ms: 0,
        },
        secret: None,
        tool_credentials: None,
        created_at: at,
        updated_at: at,
    }
}

pub async fn agent(store: &Shared, account_id: Uuid, name: &str) -> Agent {
    let agent = agent_value(account_id, name);
    store
        .insert_agent(&agent)
        .await
        .expect("the agent is stored");
    agent
}

/// A tenant with two agents, enough for a collaboration.
pub struct Team {
    pub tenant: Tenant,
    pub principal: Agent,
    pub participant: Agent,
}

pub async fn team(store: &Shared, name: &str) -> Team {
    let tenant = tenant(store, name).await;
    let principal = agent(store, tenant.id(), "principal").await;
    let participant = agent(store, tenant.id(), "participant").await;
    Team {
        tenant,
        principal,
        participant,
    }
}

impl Team {
    /// A collaboration of the team's two agents, started by its first key.
    pub fn collaboration(&self, message_cap: u32) -> NewCollaboration {
        NewCollaboration {
            id: Uuid::now_v7(),
            account_id: self.tenant.id(),
            channel_id: Uuid::now_v7(),
            objective: "agree on a name".into(),
            principal: self.principal.id,
            participants: vec![self.participant.id],
            message_cap,
            timeout_window: 60,
            evaluate_objective_completion: true,
            source: None,
            strategy: Strategy::RoundRobin,
            webhook_url: None,
            token_budget: None,
            cost_budget_micros: None,
            podcast: false,
            allow_interjections: true,
            fork: None,
            team_id: None,
            context_id: None,
            created_by: self.tenant.key.id,
            created_at: now(),
        }
    }

    /// Stores a collaboration with this cap and returns it.
    pub async fn start(&self, store: &Shared, message_cap: u32) -> NewCollaboration {
        let new = self.collaboration(message_cap);
        store
            .insert_collaboration(&new, 100, None)
            .await
            .expect("the collaboration is stored");
        new
    }

    pub fn message(&self, content: &str) -> EventBody {
        message_from(self.principal.sender(), content)
    }
}

/// The process id the tests write as.
pub const OWNER: Uuid = Uuid::from_u128(0x5eed);

/// The lease [`OWNER`] holds on the collaboration, claimed on first use: what a runner's
/// writes carry.
pub async fn lease(store: &Shared, id: Uuid) -> Lease {
    let hour = std::time::Duration::from_secs(3600);
    let claimed = store
        .claim_leases(OWNER, hour, Claim::One(id))
        .await
        .unwrap();
    if let Some(lease) = claimed.into_iter().next() {
        return lease;
    }
    let held = store.renew_leases(OWNER, hour).await.unwrap();
    held.into_iter()
        .find(|lease| lease.collaboration_id == id)
        .expect("the collaboration needs a runner and nobody else holds it")
}

/// A fresh SQLite store whose file also holds `trigger`, installed through a connection of
/// its own: how a test makes the database refuse one write among many.
pub async fn sqlite_refusing(trigger: &'static str) -> (tempfile::TempDir, Shared) {
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let store: Shared = Arc::new(
        SqliteStore::open(dir.path(), &tasks(), vault())
            .await
            .unwrap(),
    );
    let url = format!("sqlite://{}", dir.path().join("skein.db").display());
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(trigger).execute(&mut raw).await.unwrap();
    (dir, store)
}

/// Every collaboration that needs a runner, sorted: claimed, live leases too, by a process
/// of its own.
pub async fn needing_runner(store: &Shared) -> Vec<Uuid> {
    let minute = std::time::Duration::from_secs(60);
    let claimed = store.claim_leases(Uuid::new_v4(), minute, Claim::All).await;
    let mut ids: Vec<Uuid> = claimed
        .unwrap()
        .into_iter()
        .map(|lease| lease.collaboration_id)
        .collect();
    ids.sort();
    ids
}

pub fn message_from(sender: Sender, content: &str) -> EventBody {
    EventBody::Message {
        id: Uuid::now_v7(),
        turn_id: Uuid::now_v7(),
        sender,
        role: Role::Agent,
        content: content.to_owned(),
        created_at: now(),
        tokens: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        ms: None,
        retries: 0,
    }
}

pub fn ending(reason: EndReason) -> Ending {
    Ending {
        reason,
        advisory_message: Some(format!("ended: {}", reason.describe())),
        error_message: None,
        ended_at: now(),
        verdict_seq: None,
        failed_agent: None,
    }
}

/// The JSON of a stored frame.
pub fn frame(frame: &str) -> serde_json::Value {
    serde_json::from_str(frame).expect("frames are JSON")
}
