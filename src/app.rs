//! Wiring: open the store, make sure an admin key exists, build the engine and the router,
//! bind the listener. [`App::run_until`] serves until the given future resolves, then shuts
//! down in order: stop accepting, close WebSockets with 1001, let runners stop, let the
//! background workers finish what they hold, return. Every background task runs on the
//! app's [`Tasks`] (or a group of them), and is waited for here.

use std::{future::Future, net::SocketAddr, sync::Arc};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    agents::{Models, Remote},
    api::{
        self, AppState, BodyLimit,
        auth::KeyCache,
        rate_limit::{AuthFailures, RateLimits},
    },
    cluster::Cluster,
    config::Config,
    engine::{self, Engine},
    live::{Hub, Streams},
    outbound::Outbound,
    secrets::Vault,
    store::{PgStore, SqliteStore, Store},
    tasks::Tasks,
    uagents::Identities,
};

/// How long shutdown waits for viewers' streams to close.
const VIEWERS_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long shutdown waits, last, for the store's own workers (SQLite's writer) to finish
/// what they were given once nothing holds the store any more.
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Limit on one call to a user-supplied URL.
/// What the keys of the identities Skein speaks to uAgents as are derived for.
const IDENTITIES: &str = "uagents identities";

const OUTBOUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct App {
    listener: TcpListener,
    state: AppState,
    /// The store's own workers, waited for after everything else let go of the store.
    store_tasks: Tasks,
    new_admin_key: Option<String>,
    cluster: Option<Cluster>,
    /// Only this process uses the database (SQLite): it may take over every lease at start.
    single_process: bool,
}

impl App {
    /// Everything up to and including binding; nothing is served yet.
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        // Before anything is counted, so that nothing is counted into the void.
        crate::telemetry::handle();
        config.engine.podcast.dir = config.data_dir.join("audio");
        config.engine.max_content_chars = config.limits.max_content_chars;
        std::fs::create_dir_all(&config.data_dir)?;
        // SQLite is one server's file; PostgreSQL may be shared by several.
        let single_process = config.database_url.is_none();
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        let store_tasks = tasks.group();
        let previous: Vec<String> = config
            .previous_secret_keys
            .iter()
            .map(|key| key.expose_secret().to_owned())
            .collect();
        let vault = Arc::new(Vault::load(
            &config.data_dir,
            config.secret_key.as_ref().map(ExposeSecret::expose_secret),
            &previous,
        )?);
        // Bound before the parts are made, so that they know the address uAgents reach.
        let listener = TcpListener::bind(config.bind).await?;
        if config.uagents.public_url.is_none() {
            config.uagents.public_url = Some(format!("http://{}", listener.local_addr()?));
        }
        let identities = Identities::new(vault.derive(IDENTITIES))
            .recognising(vault.derive_previous(IDENTITIES));
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => Arc::new(PgStore::connect(url.expose_secret(), vault).await?),
            None => Arc::new(SqliteStore::open(&config.data_dir, &store_tasks, vault).await?),
        };
        let resealed = store.reseal_secrets().await?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed stored secrets under the current key");
        }
        let bootstrap = api::auth::bootstrap_admin(
            store.as_ref(),
            config.admin_key.as_ref().map(ExposeSecret::expose_secret),
            &config.data_dir,
        )
        .await?;
        if !bootstrap.rotated_out.is_empty() {
            tracing::info!(
                revoked = bootstrap.rotated_out.len(),
                "the configured admin key changed; the previous one is revoked"
            );
        }
        // Claims left in flight by a stopped process would answer 409 until they expire. With
        // a shared database they may be another process's requests in progress: left alone.
        let expired = chrono::Utc::now() - chrono::Duration::hours(api::IDEMPOTENCY_HOURS);
        store.purge_idempotency(expired, single_process).await?;
        let models = Models::new(&config.providers, &config.models)?;
        let hub = Arc::new(Hub::new(config.websocket.buffered_frames));
        let outbound = Outbound::new(config.allow_private_urls, OUTBOUND_TIMEOUT)?;
        let engine = Engine::new(
            engine::Parts {
                store: store.clone(),
                hub: hub.clone(),
                models,
                remote: Remote::new(
                    outbound.clone(),
                    config.remote.clone(),
                    config.uagents.clone(),
                    config.tools.clone(),
                    identities,
                    &tasks,
                ),
                settings: config.engine.clone(),
                max_running_per_account: config.rate_limits.max_running_per_account,
            },
            &tasks,
        );
        let keys: Arc<KeyCache> = Arc::default();
        let streams = Arc::new(Streams::new(
            config.rate_limits.max_streams_per_account,
            shutdown.clone(),
        ));
        let cluster = match &config.nats_url {
            Some(url) => {
                let url = url.expose_secret();
                let mut cluster =
                    Cluster::connect(url, &config.nats_auth, engine.owner(), &tasks).await?;
                engine.set_relay(cluster.relay());
                let (keys, streams) = (keys.clone(), streams.clone());
                let revoked = move |key| {
                    keys.forget(key);
                    streams.revoke(key);
                };
                cluster.start(hub.clone(), engine.clone(), revoked).await?;
                Some(cluster)
            }
            None => {
                if !single_process {
                    tracing::warn!(
                        "DATABASE_URL is set but SKEIN_NATS_URL is not: viewers see only what \
                         this process runs, and requests cannot reach other processes"
                    );
                }
                None
            }
        };
        let state = AppState {
            store,
            engine,
            hub,
            rate_limits: Arc::new(RateLimits::new(&config.rate_limits)),
            auth_failures: Arc::new(AuthFailures::new(
                config.rate_limits.auth_failures_per_minute,
            )),
            keys,
            streams,
            revocations: cluster.as_ref().map(Cluster::revocations),
            outbound,
            config: Arc::new(config),
            shutdown,
            tasks,
        };
        Ok(Self {
            listener,
            state,
            store_tasks,
            new_admin_key: bootstrap.created,
            cluster,
            single_process,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin key, if this start created it: shown once, then only in `admin.key`.
    pub fn new_admin_key(&self) -> Option<&str> {
        self.new_admin_key.as_deref()
    }

    /// This process's id: the owner of its leases, named in logs and on other processes.
    pub fn instance(&self) -> uuid::Uuid {
        self.state.engine.owner()
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.state.engine.models().names()
    }

    /// Resumes interrupted collaborations, then serves until `signal` resolves.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            store_tasks,
            cluster,
            single_process,
            ..
        } = self;
        let resumed = state.engine.recover(single_process).await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed running collaborations");
        }
        let (engine, hub, tasks) = (state.engine.clone(), state.hub.clone(), state.tasks.clone());
        let shutdown = state.shutdown.clone();
        tasks.spawn_essential(
            "housekeeping",
            housekeeping(
                state.store.clone(),
                state.auth_failures.clone(),
                shutdown.clone(),
            ),
        );
        let deliverer = crate::webhooks::Deliverer {
            store: state.store.clone(),
            outbound: state.outbound.clone(),
            settings: state.config.webhooks.clone(),
        };
        let delivering = deliverer.run(tasks.clone(), shutdown.clone());
        tasks.spawn_essential("webhook deliverer", delivering);
        let limit = state.config.limits.max_body_bytes;
        let state_limits = state.config.connections.clone();
        let router = api::router(state).layer(axum::Extension(BodyLimit(limit)));
        let stopping = shutdown.clone();
        let connections = crate::server::ConnectionLimits {
            header_timeout: state_limits.header_timeout,
            max_connections: state_limits.max_connections,
        };
        let serve = crate::server::serve(listener, router, connections, &tasks, async move {
            signal.await;
            tracing::info!("shutting down");
            stopping.cancel();
        });
        let result = serve.await;
        shutdown.cancel();
        engine.shutdown().await;
        drop(engine);
        // Viewers have been told the server is going (1001); give their close frames a
        // moment to leave.
        hub.tasks().close();
        let _ = tokio::time::timeout(VIEWERS_GRACE, hub.tasks().wait()).await;
        if let Some(cluster) = cluster {
            cluster.close().await;
        }
        // The webhook deliverer records its attempt in progress before it returns.
        tasks.wait().await;
        drop(hub);
        let _ = tokio::time::timeout(STORE_GRACE, store_tasks.wait()).await;
        Ok(result?)
    }
}

/// Every few minutes while the server runs, throws out what has served its time: expired
/// idempotency keys and WebSocket tickets, webhook deliveries settled a month ago, and the
/// addresses that have stopped failing to authenticate.
async fn housekeeping(
    store: Arc<dyn Store>,
    auth_failures: Arc<AuthFailures>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        auth_failures.forget_old();
        let now = chrono::Utc::now();
        let expired = now - chrono::Duration::hours(api::IDEMPOTENCY_HOURS);
        if let Err(error) = store.purge_idempotency(expired, false).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "purging idempotency keys failed"
            );
        }
        if let Err(error) = store.purge_tickets(now).await {
            tracing::warn!(error = format!("{error:#}"), "purging tickets failed");
        }
        // Long after any envelope that carried them has expired.
        let heard =
            now - chrono::Duration::seconds(2 * crate::uagents::MAX_ENVELOPE_LIFE_SECS as i64);
        if let Err(error) = store.purge_uagent_heard(heard).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "purging heard uAgent messages failed"
            );
        }
        if let Err(error) = store.purge_uagent_registrations(now).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "purging uAgent registrations failed"
            );
        }
        let kept = now - chrono::Duration::hours(FEED_RETENTION_HOURS);
        if let Err(error) = store.purge_account_feed(kept).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "purging accounts' feeds failed"
            );
        }
        let settled = now - chrono::Duration::days(WEBHOOK_RETENTION_DAYS);
        if let Err(error) = store.purge_webhook_deliveries(settled).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "purging webhook deliveries failed"
            );
        }
    }
}

/// How long an account's feed keeps a change: a client of `GET /events` gone longer than
/// this is told to reload rather than resume.
const FEED_RETENTION_HOURS: i64 = 24;

/// How long a settled webhook delivery stays listed (`GET /webhooks/deliveries`).
const WEBHOOK_RETENTION_DAYS: i64 = 30;

/// How often [`housekeeping`] runs.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
