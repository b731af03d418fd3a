//! Typed configuration: defaults, then `SKEIN_*` (and provider) environment variables, then
//! command-line flags. Everything the server reads from its environment is read here, once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

/// The header a provider's key travels in when nothing else is said.
pub const AUTHORIZATION: &str = "Authorization";

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Set by deployments and tests; otherwise a key is generated on first start. Secret, so
    /// that printing the config cannot show it.
    pub admin_key: Option<SecretString>,
    pub providers: Vec<ProviderConfig>,
    pub models: ModelSettings,
    pub remote: RemoteAgentSettings,
    pub uagents: UagentSettings,
    pub tools: ToolSettings,
    pub webhooks: WebhookDeliverySettings,
    pub limits: Limits,
    pub engine: EngineSettings,
    pub websocket: WebSocketSettings,
    pub rate_limits: RateLimitSettings,
    /// Origins besides the server's own whose pages may open WebSocket streams and call the
    /// API from a browser (`SKEIN_ALLOWED_ORIGINS`, comma separated).
    pub allowed_origins: Vec<String>,
    /// Lets agent endpoints and webhook URLs point at loopback and private networks
    /// (`SKEIN_ALLOW_PRIVATE_URLS=true`): for local development and tests only.
    pub allow_private_urls: bool,
    /// `DATABASE_URL=postgres://…` selects PostgreSQL instead of SQLite in the data
    /// directory. Secret: it may carry a password.
    pub database_url: Option<SecretString>,
    /// `SKEIN_NATS_URL`: live events (and requests for a collaboration another process
    /// runs) cross processes through NATS. Needed when several processes serve one database.
    /// Secret: it may carry a password.
    pub nats_url: Option<SecretString>,
    /// How Skein proves itself to NATS, besides what the URL says (`nats://user:pass@…`,
    /// `tls://…`).
    pub nats_auth: NatsAuth,
    pub connections: ConnectionSettings,
    /// The key secrets are sealed with at rest (`SKEIN_SECRET_KEY`, 32 bytes in base64);
    /// without it, the key in `<data-dir>/secret.key`, made on first start.
    pub secret_key: Option<SecretString>,
    /// Keys secrets may still be sealed with, while they are rotated out
    /// (`SKEIN_PREVIOUS_SECRET_KEYS`, comma separated).
    pub previous_secret_keys: Vec<SecretString>,
    /// With it, `/metrics` answers only requests that bear it (`SKEIN_METRICS_TOKEN`).
    pub metrics_token: Option<SecretString>,
}

/// NATS credentials and TLS, each optional.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// `SKEIN_NATS_TOKEN`.
    pub token: Option<SecretString>,
    /// `SKEIN_NATS_USER` and `SKEIN_NATS_PASSWORD`.
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// A `.creds` file (JWT and NKey seed): `SKEIN_NATS_CREDS`.
    pub creds_file: Option<PathBuf>,
    /// A CA to trust for the server's certificate: `SKEIN_NATS_CA`.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS: `SKEIN_NATS_CERT`, `SKEIN_NATS_KEY`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse a connection that is not TLS: `SKEIN_NATS_TLS=true`.
    pub require_tls: bool,
}

/// What one client connection may take.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Until a connection's request head (the next one, on a kept-alive connection) must
    /// have arrived whole (`SKEIN_HEADER_TIMEOUT_SECS`).
    pub header_timeout: Duration,
    /// Until a request (its body read, its work done) must be answered
    /// (`SKEIN_REQUEST_TIMEOUT_SECS`); a WebSocket stream is answered when it opens.
    pub request_timeout: Duration,
    /// Connections open at once, WebSocket streams included (`SKEIN_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

/// One OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub base_url: String,
    pub api_key: String,
    /// `Authorization` sends `Bearer <key>`; any other header name carries the bare key.
    pub key_header: String,
    pub default_model: Option<String>,
}

// Hand-written so the key never reaches a log line through `{:?}`.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("key_header", &self.key_header)
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Limit on one attempt of one model call, including a streamed body going quiet (no
    /// bytes at all for this long; comments and keep-alives count as bytes).
    pub call_timeout: Duration,
    /// Retries after the first attempt on 429, 5xx, connection errors and broken streams.
    pub max_retries: u32,
    /// First backoff step; doubled per retry, jittered, capped by `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The most of a model's answer read: a streamed reply is cut there (the turn's
    /// message is cut to the content limit anyway), a whole one refused.
    pub max_reply_bytes: usize,
    /// The longest one model call may take, its retries and its whole stream included
    /// (`SKEIN_LLM_DEADLINE_SECS`): a provider that trickles an answer forever is cut off.
    pub deadline: Duration,
    /// Prices by `provider/model`, in US dollars per million tokens, from `SKEIN_PRICES`
    /// (JSON) or the JSON file `SKEIN_PRICES_FILE`:
    /// `{"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6}}`.
    pub prices: std::collections::HashMap<String, crate::agents::Price>,
}

/// Turns of agents that live elsewhere (`http`, `a2a`).
#[derive(Debug, Clone)]
pub struct RemoteAgentSettings {
    /// Limit on one attempt of a turn, from sending the request to reading the answer.
    pub turn_timeout: Duration,
    /// Retries after the first attempt on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// First backoff step; doubled per retry, jittered, capped by `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often an A2A task that is still working is asked about again.
    pub poll_interval: Duration,
    /// How long a fetched A2A agent card is used before it is fetched again.
    pub card_ttl: Duration,
}

/// The bounds on an `llm` agent's tool calls (MCP), each set by an environment variable.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// One tool call, from asking to the answer (`SKEIN_TOOL_TIMEOUT_SECS`, 30).
    pub call_timeout: Duration,
    /// Reaching a server and listing its tools (`SKEIN_TOOL_CONNECT_SECS`, 15).
    pub connect_timeout: Duration,
    /// Rounds of tool calls in one turn (`SKEIN_TOOL_MAX_ROUNDS`, 5); then the model answers
    /// without tools.
    pub max_rounds: u32,
    /// Characters of one result the model sees (`SKEIN_TOOL_RESULT_CHARS`, 8000); more is cut,
    /// with a note saying so.
    pub max_result_chars: usize,
    /// Calls of one round that run at once (`SKEIN_TOOL_CONCURRENCY`, 4).
    pub concurrency: usize,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            max_rounds: 5,
            max_result_chars: 8000,
            concurrency: 4,
        }
    }
}

/// How Skein takes part in the uAgents network.
#[derive(Debug, Clone)]
pub struct UagentSettings {
    /// How long a uAgent has to answer its turn (`SKEIN_UAGENT_REPLY_SECS`).
    pub reply_timeout: Duration,
    /// An Almanac API to look up agents that were given without an endpoint
    /// (`SKEIN_ALMANAC_URL`, e.g. `https://agentverse.ai`).
    pub almanac_url: Option<String>,
    /// The base URL uAgents reach this server at: its `/submit` is what Skein's
    /// identities advertise (`SKEIN_PUBLIC_URL`; by default `http://` and the bound address).
    pub public_url: Option<String>,
}

/// How webhooks are delivered from the outbox.
#[derive(Debug, Clone)]
pub struct WebhookDeliverySettings {
    /// How often the outbox is looked at.
    pub poll_interval: Duration,
    /// Limit on one attempt.
    pub attempt_timeout: Duration,
    /// First wait after a failed attempt; doubled per attempt, jittered, capped by `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long after the event attempts go on.
    pub give_up_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_message_cap: u32,
    pub max_timeout_window: u32,
    pub max_objective_chars: usize,
    pub max_name_chars: usize,
    pub max_prompt_chars: usize,
    pub max_content_chars: usize,
    pub max_participants: usize,
}

/// Quotas, per account: every key of an account draws on the same ones, so a new key brings
/// no new budget. Defaults suit a team with browsers and a busy integration; raise them for
/// load tests.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Requests per minute, refilled continuously (`SKEIN_RATE_LIMIT_PER_MINUTE`).
    pub per_minute: u32,
    /// Requests that may arrive at once (`SKEIN_RATE_LIMIT_BURST`).
    pub burst: u32,
    /// WebSocket streams open at once (`SKEIN_MAX_STREAMS_PER_ACCOUNT`).
    pub max_streams_per_account: usize,
    /// Collaborations running at once (`SKEIN_MAX_RUNNING_PER_ACCOUNT`).
    pub max_running_per_account: u32,
    /// Keys not revoked (`SKEIN_MAX_KEYS_PER_ACCOUNT`).
    pub max_keys_per_account: u32,
    /// Failed authentications a client address may make per minute before it is refused
    /// for a while (`SKEIN_AUTH_FAILURES_PER_MINUTE`).
    pub auth_failures_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Transcript messages an agent sees verbatim; older ones are folded into the synopsis
    /// (`SKEIN_CONTEXT_WINDOW`).
    pub context_window: usize,
    /// Upper bound on the synopsis of older turns, in characters (`SKEIN_SYNOPSIS_CHARS`).
    /// About six excerpts by default: with the window, a prompt reaches its full size
    /// within twenty turns and stays there.
    pub synopsis_chars: usize,
    pub podcast: PodcastSettings,
    /// How long a process's hold on a collaboration lasts unless renewed
    /// (`SKEIN_LEASE_SECS`): how soon another process takes over from one that died.
    pub lease_ttl: Duration,
    /// The longest message stored, whoever wrote it (`SKEIN_MAX_CONTENT_CHARS`, the same
    /// as [`Limits::max_content_chars`]): an agent's longer message is cut, saying so.
    pub max_content_chars: usize,
    pub stalls: StallSettings,
}

/// When a conversation counts as going nowhere (see `engine::stall`).
#[derive(Debug, Clone)]
pub struct StallSettings {
    /// Earlier agent messages a new one is compared with (`SKEIN_STALL_WINDOW`, 4: two
    /// rounds of a two-member exchange).
    pub window: usize,
    /// Stale turns in a row before the manager is nudged (`SKEIN_STALL_NUDGE_AFTER`, 3).
    pub nudge_after: u32,
    /// Stale turns in a row that end the collaboration as `stalled`
    /// (`SKEIN_STALL_END_AFTER`, 6; 0 turns stall detection off).
    pub end_after: u32,
}

impl Default for StallSettings {
    fn default() -> Self {
        Self {
            window: 4,
            nudge_after: 3,
            end_after: 6,
        }
    }
}

/// How collaborations that ask for it (`podcast: true`) are read aloud.
#[derive(Debug, Clone)]
pub struct PodcastSettings {
    /// Where the audio files go: `<data-dir>/audio`.
    pub dir: PathBuf,
    /// The provider's speech model (`SKEIN_TTS_MODEL`).
    pub model: String,
    /// Voices given to the members in roster order, the principal first, cycling.
    pub voices: Vec<String>,
}

impl Default for PodcastSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/audio"),
            model: "tts-1".into(),
            voices: ["alloy", "echo", "fable", "onyx", "nova", "shimmer"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    pub ping_interval: Duration,
    pub max_message_bytes: usize,
    /// Frames that may wait for a viewer beyond what its socket takes, and that a channel's
    /// delivery task may fall behind its publisher: a viewer further behind is caught up
    /// from the store instead.
    pub buffered_frames: usize,
    /// Bytes of frames that may wait for one viewer (`SKEIN_WS_BUFFERED_BYTES`): a viewer of
    /// large messages that stops reading is caught up from the store rather than held.
    pub buffered_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8344)),
            data_dir: PathBuf::from("data"),
            admin_key: None,
            providers: Vec::new(),
            models: ModelSettings {
                call_timeout: Duration::from_secs(60),
                max_retries: 3,
                retry_base: Duration::from_millis(500),
                retry_max: Duration::from_secs(20),
                max_reply_bytes: 4 << 20,
                deadline: Duration::from_secs(300),
                prices: std::collections::HashMap::new(),
            },
            remote: RemoteAgentSettings {
                turn_timeout: Duration::from_secs(60),
                max_retries: 3,
                retry_base: Duration::from_millis(500),
                retry_max: Duration::from_secs(20),
                poll_interval: Duration::from_secs(1),
                card_ttl: Duration::from_secs(300),
            },
            uagents: UagentSettings {
                reply_timeout: Duration::from_secs(120),
                almanac_url: None,
                public_url: None,
            },
            tools: ToolSettings::default(),
            webhooks: WebhookDeliverySettings {
                poll_interval: Duration::from_secs(1),
                attempt_timeout: Duration::from_secs(10),
                retry_base: Duration::from_secs(10),
                retry_max: Duration::from_secs(3600),
                give_up_after: Duration::from_secs(24 * 3600),
            },
            limits: Limits {
                max_body_bytes: 256 * 1024,
                max_message_cap: 1000,
                max_timeout_window: 86_400,
                max_objective_chars: 4000,
                max_name_chars: 100,
                max_prompt_chars: 20_000,
                max_content_chars: 20_000,
                max_participants: 32,
            },
            engine: EngineSettings {
                context_window: 12,
                synopsis_chars: 1200,
                podcast: PodcastSettings::default(),
                lease_ttl: Duration::from_secs(15),
                max_content_chars: 20_000,
                stalls: StallSettings::default(),
            },
            websocket: WebSocketSettings {
                ping_interval: Duration::from_secs(20),
                max_message_bytes: 64 * 1024,
                buffered_frames: 256,
                buffered_bytes: 1 << 20,
            },
            rate_limits: RateLimitSettings {
                per_minute: 600,
                burst: 100,
                max_streams_per_account: 200,
                max_running_per_account: 50,
                max_keys_per_account: 100,
                auth_failures_per_minute: 60,
            },
            allowed_origins: Vec::new(),
            allow_private_urls: false,
            database_url: None,
            nats_url: None,
            nats_auth: NatsAuth::default(),
            secret_key: None,
            previous_secret_keys: Vec::new(),
            metrics_token: None,
            connections: ConnectionSettings {
                header_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                max_connections: 16_384,
            },
        }
    }
}

impl Config {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The same, reading variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut config = Self::default();
        if let Some(bind) = lookup("SKEIN_BIND") {
            config.bind = bind
                .parse()
                .map_err(|e| anyhow::anyhow!("SKEIN_BIND={bind}: {e}"))?;
        }
        if let Some(dir) = lookup("SKEIN_DATA_DIR") {
            config.data_dir = dir.into();
        }
        config.admin_key = lookup("SKEIN_ADMIN_KEY").map(SecretString::from);
        config.secret_key = lookup("SKEIN_SECRET_KEY").map(SecretString::from);
        config.metrics_token = lookup("SKEIN_METRICS_TOKEN").map(SecretString::from);
        config.previous_secret_keys = lookup("SKEIN_PREVIOUS_SECRET_KEYS")
            .map(|keys| {
                keys.split(',')
                    .map(str::trim)
                    .filter(|key| !key.is_empty())
                    .map(SecretString::from)
                    .collect()
            })
            .unwrap_or_default();
        config.providers = providers_from(&lookup);
        if let Some(secs) = lookup("SKEIN_LLM_TIMEOUT_SECS") {
            config.models.call_timeout = Duration::from_secs(secs.parse()?);
        }
        if let Some(retries) = lookup("SKEIN_LLM_MAX_RETRIES") {
            config.models.max_retries = retries.parse()?;
        }
        let prices = match (lookup("SKEIN_PRICES"), lookup("SKEIN_PRICES_FILE")) {
            (Some(json), _) => Some(("SKEIN_PRICES", json)),
            (None, Some(path)) => Some((
                "SKEIN_PRICES_FILE",
                std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("SKEIN_PRICES_FILE={path}: {e}"))?,
            )),
            (None, None) => None,
        };
        if let Some((name, json)) = prices {
            config.models.prices = serde_json::from_str(&json).map_err(|e| {
                anyhow::anyhow!(
                    "{name}: {e}; expected {{\"provider/model\": {{\"input\": dollars per million tokens, \"output\": …}}}}"
                )
            })?;
            for (model, price) in &config.models.prices {
                anyhow::ensure!(
                    price.input >= 0.0
                        && price.output >= 0.0
                        && price.input.is_finite()
                        && price.output.is_finite(),
                    "{name}: the price of {model} must be a number of dollars, not negative"
                );
            }
        }
        if let Some(secs) = lookup("SKEIN_LLM_DEADLINE_SECS") {
            config.models.deadline = Duration::from_secs(secs.parse()?);
        }
        if let Some(ms) = lookup("SKEIN_LLM_RETRY_BASE_MS") {
            config.models.retry_base = Duration::from_millis(ms.parse()?);
        }
        if let Some(model) = lookup("SKEIN_TTS_MODEL") {
            config.engine.podcast.model = model;
        }
        if let Some(secs) = lookup("SKEIN_AGENT_TIMEOUT_SECS") {
            config.remote.turn_timeout = Duration::from_secs(secs.parse()?);
        }
        config.uagents.almanac_url = lookup("SKEIN_ALMANAC_URL");
        config.uagents.public_url =
            lookup("SKEIN_PUBLIC_URL").map(|url| url.trim_end_matches('/').to_owned());
        if let Some(secs) = lookup("SKEIN_UAGENT_REPLY_SECS") {
            config.uagents.reply_timeout = Duration::from_secs(secs.parse()?);
        }
        if let Some(retries) = lookup("SKEIN_AGENT_MAX_RETRIES") {
            config.remote.max_retries = retries.parse()?;
        }
        let number = |name: &str, into: &mut dyn FnMut(u64)| -> anyhow::Result<()> {
            if let Some(value) = lookup(name) {
                let parsed: u64 = value
                    .trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{name}={value}: {e}"))?;
                anyhow::ensure!(parsed > 0, "{name} must be at least 1");
                into(parsed);
            }
            Ok(())
        };
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let tools = &mut config.tools;
        number("SKEIN_TOOL_TIMEOUT_SECS", &mut |v| {
            tools.call_timeout = Duration::from_secs(v)
        })?;
        number("SKEIN_TOOL_CONNECT_SECS", &mut |v| {
            tools.connect_timeout = Duration::from_secs(v)
        })?;
        number("SKEIN_TOOL_MAX_ROUNDS", &mut |v| {
            tools.max_rounds = clamp(v)
        })?;
        number("SKEIN_TOOL_RESULT_CHARS", &mut |v| {
            tools.max_result_chars = v as usize
        })?;
        number("SKEIN_TOOL_CONCURRENCY", &mut |v| {
            tools.concurrency = v as usize
        })?;
        let limits = &mut config.limits;
        number("SKEIN_MAX_BODY_BYTES", &mut |v| {
            limits.max_body_bytes = v as usize
        })?;
        number("SKEIN_MAX_MESSAGE_CAP", &mut |v| {
            limits.max_message_cap = clamp(v)
        })?;
        number("SKEIN_MAX_TIMEOUT_WINDOW", &mut |v| {
            limits.max_timeout_window = clamp(v)
        })?;
        number("SKEIN_MAX_CONTENT_CHARS", &mut |v| {
            limits.max_content_chars = v as usize
        })?;
        let websocket = &mut config.websocket;
        number("SKEIN_MAX_WS_MESSAGE_BYTES", &mut |v| {
            websocket.max_message_bytes = v as usize
        })?;
        number("SKEIN_WS_BUFFERED_BYTES", &mut |v| {
            websocket.buffered_bytes = v as usize
        })?;
        let rate = &mut config.rate_limits;
        number("SKEIN_RATE_LIMIT_PER_MINUTE", &mut |v| {
            rate.per_minute = clamp(v)
        })?;
        number("SKEIN_RATE_LIMIT_BURST", &mut |v| rate.burst = clamp(v))?;
        // The names these quotas had when they were counted per key still work.
        for name in ["SKEIN_MAX_STREAMS_PER_KEY", "SKEIN_MAX_STREAMS_PER_ACCOUNT"] {
            number(name, &mut |v| rate.max_streams_per_account = v as usize)?;
        }
        for name in ["SKEIN_MAX_RUNNING_PER_KEY", "SKEIN_MAX_RUNNING_PER_ACCOUNT"] {
            number(name, &mut |v| rate.max_running_per_account = clamp(v))?;
        }
        number("SKEIN_AUTH_FAILURES_PER_MINUTE", &mut |v| {
            rate.auth_failures_per_minute = clamp(v)
        })?;
        number("SKEIN_MAX_KEYS_PER_ACCOUNT", &mut |v| {
            rate.max_keys_per_account = clamp(v)
        })?;
        let connections = &mut config.connections;
        number("SKEIN_HEADER_TIMEOUT_SECS", &mut |v| {
            connections.header_timeout = Duration::from_secs(v)
        })?;
        number("SKEIN_REQUEST_TIMEOUT_SECS", &mut |v| {
            connections.request_timeout = Duration::from_secs(v)
        })?;
        number("SKEIN_MAX_CONNECTIONS", &mut |v| {
            connections.max_connections = v as usize
        })?;
        let engine = &mut config.engine;
        number("SKEIN_LEASE_SECS", &mut |v| {
            engine.lease_ttl = Duration::from_secs(v)
        })?;
        number("SKEIN_CONTEXT_WINDOW", &mut |v| {
            engine.context_window = v as usize
        })?;
        number("SKEIN_SYNOPSIS_CHARS", &mut |v| {
            engine.synopsis_chars = v as usize
        })?;
        let stalls = &mut config.engine.stalls;
        number("SKEIN_STALL_WINDOW", &mut |v| stalls.window = v as usize)?;
        number("SKEIN_STALL_NUDGE_AFTER", &mut |v| {
            stalls.nudge_after = clamp(v)
        })?;
        if let Some(value) = lookup("SKEIN_STALL_END_AFTER") {
            stalls.end_after = value
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("SKEIN_STALL_END_AFTER={value}: {e}"))?;
        }
        if let Some(url) = lookup("DATABASE_URL") {
            // Said plainly rather than guessed at: a URL meant for another program (or a
            // sqlite:// one) must not be taken for PostgreSQL, nor silently dropped.
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            anyhow::ensure!(
                matches!(scheme, "postgres" | "postgresql"),
                "DATABASE_URL must be a PostgreSQL URL (postgres://…); unset it to use SQLite in \
                 the data directory"
            );
            config.database_url = Some(SecretString::from(url));
        }
        config.nats_url = lookup("SKEIN_NATS_URL").map(SecretString::from);
        let auth = &mut config.nats_auth;
        auth.token = lookup("SKEIN_NATS_TOKEN").map(SecretString::from);
        auth.user = lookup("SKEIN_NATS_USER");
        auth.password = lookup("SKEIN_NATS_PASSWORD").map(SecretString::from);
        auth.creds_file = lookup("SKEIN_NATS_CREDS").map(PathBuf::from);
        auth.ca_file = lookup("SKEIN_NATS_CA").map(PathBuf::from);
        auth.client_cert = match (lookup("SKEIN_NATS_CERT"), lookup("SKEIN_NATS_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => anyhow::bail!("SKEIN_NATS_CERT and SKEIN_NATS_KEY go together"),
        };
        anyhow::ensure!(
            auth.user.is_some() == auth.password.is_some(),
            "SKEIN_NATS_USER and SKEIN_NATS_PASSWORD go together"
        );
        auth.require_tls = lookup("SKEIN_NATS_TLS").is_some_and(|v| truthy(&v));
        if let Some(origins) = lookup("SKEIN_ALLOWED_ORIGINS") {
            config.allowed_origins = origins
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(allow) = lookup("SKEIN_ALLOW_PRIVATE_URLS") {
            config.allow_private_urls = match allow.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                other => anyhow::bail!("SKEIN_ALLOW_PRIVATE_URLS={other}: expected true or false"),
            };
        }
        Ok(config)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn providers_from(lookup: &impl Fn(&str) -> Option<String>) -> Vec<ProviderConfig> {
    let mut providers = Vec::new();
    let base = lookup("SKEIN_LLM_BASE_URL");
    let key = lookup("SKEIN_LLM_API_KEY");
    if base.is_some() || key.is_some() {
        providers.push(ProviderConfig {
            name: "default".into(),
            base_url: base.unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key: key.unwrap_or_default(),
            key_header: lookup("SKEIN_LLM_API_KEY_HEADER").unwrap_or_else(|| AUTHORIZATION.into()),
            default_model: lookup("SKEIN_LLM_MODEL"),
        });
    }
    if let Some(key) = lookup("OPENAI_API_KEY") {
        providers.push(ProviderConfig {
            name: "openai".into(),
            base_url: lookup("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key: key,
            key_header: AUTHORIZATION.into(),
            default_model: None,
        });
    }
    if let Some(key) = lookup("FLOCK_LLM_API_KEY") {
        providers.push(ProviderConfig {
            name: "flock".into(),
            base_url: lookup("FLOCK_LLM_BASE_URL")
                .unwrap_or_else(|| "https://api.flock.io/v1".into()),
            api_key: key,
            key_header: "x-litellm-api-key".into(),
            default_model: None,
        });
    }
    providers
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_with(vars: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }

    #[test]
    fn each_provider_variable_defines_its_provider() {
        let config = config_with(&[
            ("SKEIN_LLM_BASE_URL", "http://127.0.0.1:9/v1"),
            ("SKEIN_LLM_API_KEY", "k1"),
            ("SKEIN_LLM_MODEL", "m1"),
            ("OPENAI_API_KEY", "k2"),
            ("FLOCK_LLM_API_KEY", "k3"),
        ]);
        let names: Vec<_> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "openai", "flock"]);
        let flock = config.provider("flock").unwrap();
        assert_eq!(flock.key_header, "x-litellm-api-key");
        assert_eq!(flock.base_url, "https://api.flock.io/v1");
        assert_eq!(
            config.provider("default").unwrap().default_model.as_deref(),
            Some("m1")
        );
    }

    #[test]
    fn prices_are_read_from_json_and_a_bad_table_is_refused() {
        let config = config_with(&[(
            "SKEIN_PRICES",
            r#"{"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6}}"#,
        )]);
        let price = config.models.prices["openai/gpt-4o-mini"];
        assert_eq!((price.input, price.output), (0.15, 0.6));
        for bad in [
            r#"{"m": {"input": -1, "output": 0}}"#,
            r#"{"m": {"in": 1, "output": 0}}"#,
            "not json",
        ] {
            let error = Config::from_lookup(|name| (name == "SKEIN_PRICES").then(|| bad.into()))
                .expect_err(bad);
            assert!(error.to_string().contains("SKEIN_PRICES"), "{error}");
        }
    }

    #[test]
    fn no_variables_means_no_provider_and_the_documented_defaults() {
        let config = config_with(&[]);
        assert!(config.providers.is_empty());
        assert_eq!(config.bind.to_string(), "127.0.0.1:8344");
    }

    #[test]
    fn limits_origins_and_private_urls_come_from_the_environment() {
        let config = config_with(&[
            ("SKEIN_RATE_LIMIT_PER_MINUTE", "120"),
            ("SKEIN_RATE_LIMIT_BURST", "7"),
            ("SKEIN_MAX_STREAMS_PER_ACCOUNT", "3"),
            ("SKEIN_MAX_BODY_BYTES", "1024"),
            (
                "SKEIN_ALLOWED_ORIGINS",
                "https://App.example.com/, http://localhost:5173",
            ),
            ("SKEIN_ALLOW_PRIVATE_URLS", "true"),
            ("SKEIN_CONTEXT_WINDOW", "20"),
            ("SKEIN_SYNOPSIS_CHARS", "4000"),
        ]);
        assert_eq!(config.rate_limits.per_minute, 120);
        assert_eq!(config.engine.context_window, 20);
        assert_eq!(config.engine.synopsis_chars, 4000);
        assert_eq!(config.rate_limits.burst, 7);
        assert_eq!(config.rate_limits.max_streams_per_account, 3);
        assert_eq!(config.limits.max_body_bytes, 1024);
        assert_eq!(
            config.allowed_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert!(config.allow_private_urls);
        let vars: HashMap<String, String> =
            [("SKEIN_MAX_MESSAGE_CAP".to_string(), "0".to_string())].into();
        assert!(Config::from_lookup(|name| vars.get(name).cloned()).is_err());
    }

    #[test]
    fn database_url_selects_postgres_and_nothing_else() {
        assert!(config_with(&[]).database_url.is_none());
        let config = config_with(&[("DATABASE_URL", "postgresql://skein:pw@db/skein")]);
        assert!(config.database_url.is_some());
        assert!(
            !format!("{config:?}").contains("pw@"),
            "the URL may hold a password"
        );
        for other in ["sqlite://data/skein.db", "mysql://db/skein", "db.internal"] {
            let vars: HashMap<String, String> = [("DATABASE_URL".into(), other.into())].into();
            let refused = Config::from_lookup(|name| vars.get(name).cloned()).unwrap_err();
            assert!(
                refused.to_string().contains("PostgreSQL"),
                "{other}: {refused}"
            );
        }
    }

    #[test]
    fn no_key_shows_in_debug_output() {
        let config = config_with(&[
            ("OPENAI_API_KEY", "sk-very-secret"),
            ("SKEIN_ADMIN_KEY", "sk-admin-secret"),
        ]);
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-very-secret"));
        assert!(!printed.contains("sk-admin-secret"));
    }
}
