//! Test support: the real server on port 0 with its own data directory, an HTTP client,
//! a WebSocket viewer, and a fake model provider.

pub mod browser;
pub mod cluster;
pub mod fake_model;
pub mod otlp;
pub mod peers;
pub mod process;
pub mod proxy;
#[path = "../../common/schema.rs"]
pub mod schema;
pub mod sse;

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use skein::{
    app::App,
    config::{Config, ProviderConfig},
};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};
use tokio_util::sync::CancellationToken;

pub const ADMIN_KEY: &str = "sk_test_admin_key_0123456789abcdef";
/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A running server as a client with one API key sees it.
#[derive(Clone)]
pub struct Api {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub key: String,
}

/// A server running in this test's runtime.
pub struct TestApp {
    pub api: Api,
    pub data_dir: TempDir,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A server with no model provider.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose config the test adjusts first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in_with(tempfile::tempdir().expect("a temp dir"), adjust).await
}

/// Port 0, the given data directory, a known admin key, and quick model retries.
fn test_config(data_dir: &TempDir) -> Config {
    let mut config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_path_buf(),
        admin_key: Some(ADMIN_KEY.into()),
        ..Config::default()
    };
    config.models.retry_base = Duration::from_millis(20);
    config.models.retry_max = Duration::from_millis(200);
    config.models.call_timeout = Duration::from_secs(5);
    config.remote.retry_base = Duration::from_millis(20);
    config.remote.retry_max = Duration::from_millis(200);
    config.remote.turn_timeout = Duration::from_secs(5);
    config.remote.poll_interval = Duration::from_millis(50);
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.webhooks.retry_base = Duration::from_millis(100);
    config.webhooks.retry_max = Duration::from_millis(400);
    config.webhooks.attempt_timeout = Duration::from_secs(2);
    // Tests poll quickly; the tests about limits set their own.
    config.rate_limits.per_minute = 1_000_000;
    config.rate_limits.burst = 100_000;
    config.allow_private_urls = true;
    config
}

/// A server on an existing data directory (a restart).
pub async fn spawn_app_in(data_dir: TempDir) -> TestApp {
    spawn_app_in_with(data_dir, |_| {}).await
}

/// A restart with a config the test adjusts first.
pub async fn spawn_app_in_with(data_dir: TempDir, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&data_dir);
    adjust(&mut config);
    start(config, data_dir).await
}

async fn start(mut config: Config, data_dir: TempDir) -> TestApp {
    if let Some(url) = postgres_for(data_dir.path()).await {
        config.database_url = Some(url.into());
        config.engine.lease_ttl = POSTGRES_LEASE;
    }
    let app = App::build(config).await.expect("the app builds");
    let address = app.local_addr();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let server = tokio::spawn(app.run_until(async move { signal.cancelled().await }));
    TestApp {
        api: Api::new(address),
        data_dir,
        stop,
        server: Some(server),
    }
}

pub fn on_postgres() -> bool {
    std::env::var("SKEIN_TEST_API_ON_POSTGRES").as_deref() == Ok("1")
}

/// A server restarted after a crash on PostgreSQL waits for its old leases to expire (it
/// cannot know it was the only one): short, so that the recovery tests do not wait long.
pub const POSTGRES_LEASE: Duration = Duration::from_secs(2);

/// With `SKEIN_TEST_API_ON_POSTGRES=1` and `SKEIN_TEST_DATABASE_URL` set, the servers these
/// tests start keep their data in PostgreSQL instead of SQLite: each data directory gets a
/// schema of its own, found again when a server restarts on the directory. The schemas
/// (`skein_api_…`) are left behind for a look afterwards.
pub async fn postgres_for(data_dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let base_url =
        schema::database_url().expect("SKEIN_TEST_API_ON_POSTGRES needs SKEIN_TEST_DATABASE_URL");
    let remembered = data_dir.join("test-postgres-schema");
    let schema = match std::fs::read_to_string(&remembered) {
        Ok(name) => schema::Schema::named(&base_url, name.trim()),
        Err(_) => {
            let schema = schema::Schema::create(&base_url, "skein_api").await;
            std::fs::write(&remembered, &schema.name).unwrap();
            schema
        }
    };
    Some(schema.url)
}

/// The `default` provider pointing at a fake model server.
pub fn default_provider(base_url: &str) -> ProviderConfig {
    ProviderConfig {
        name: "default".into(),
        base_url: base_url.into(),
        api_key: fake_model::KEY.into(),
        key_header: "Authorization".into(),
        default_model: Some("fake-model".into()),
    }
}

impl Api {
    /// The server at `address`, called with the admin key.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            client: reqwest::Client::new(),
            key: ADMIN_KEY.into(),
        }
    }

    /// The same server, called with another key.
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            key: key.into(),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET")
    }

    /// GETs a JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("DELETE")
    }

    /// POSTs `body`, expecting 201, and returns what was created.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let response = self.post(path, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        response.json().await.unwrap()
    }

    pub async fn create_agent(&self, body: Value) -> Value {
        self.create("/api/v1/agents", body).await
    }

    pub async fn scripted(&self, name: &str, replies: &[&str], delay_ms: u64) -> Value {
        self.create_agent(
            json!({"name": name, "kind": "scripted", "replies": replies, "delay_ms": delay_ms}),
        )
        .await
    }

    pub async fn create_collaboration(&self, body: Value) -> Value {
        self.create("/api/v1/collaborations", body).await
    }

    /// Everything a viewer connected from the start sees after `hello`, up to the summary.
    pub async fn watch_to_the_end(&self, collaboration: &Value) -> Vec<Value> {
        let mut viewer = self
            .viewer(collaboration["channel_id"].as_str().unwrap(), 0)
            .await;
        assert_eq!(viewer.frame().await["type"], "hello");
        viewer.until("summary").await
    }

    /// Two scripted agents, A and B, each speaking after `delay_ms`, in a collaboration of
    /// `message_cap` messages: the usual cast of a test about anything but the agents.
    pub async fn scripted_duo(&self, message_cap: u32, delay_ms: u64) -> Value {
        let a = self.scripted("A", &["a1", "a2", "a3"], delay_ms).await;
        let b = self.scripted("B", &["b1", "b2", "b3"], delay_ms).await;
        self.create_collaboration(json!({"principal": id(&a), "participants": [id(&b)],
                                         "message_cap": message_cap, "timeout_window": 30}))
            .await
    }

    /// A collaboration of `principal` with `participant`; `settings` add to or override a
    /// 30-second inactivity window.
    pub async fn collaborate(
        &self,
        principal: &Value,
        participant: &Value,
        settings: Value,
    ) -> Value {
        let mut body = json!({"principal": id(principal), "participants": [id(participant)], "timeout_window": 30});
        body.as_object_mut().unwrap().extend(
            settings
                .as_object()
                .expect("settings are an object")
                .clone(),
        );
        self.create_collaboration(body).await
    }

    /// Two new llm agents, Host and Guest, in a collaboration with `settings` (see
    /// [`TestApp::collaborate`]).
    pub async fn two_models(&self, settings: Value) -> Value {
        let host = self
            .create_agent(json!({"name": "Host", "kind": "llm"}))
            .await;
        let guest = self
            .create_agent(json!({"name": "Guest", "kind": "llm"}))
            .await;
        self.collaborate(&host, &guest, settings).await
    }

    /// A fresh single-use WebSocket ticket for the channel.
    pub async fn ticket(&self, channel_id: &str) -> Value {
        let response = self
            .post(
                &format!("/api/v1/channels/{channel_id}/websocket_tickets"),
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn collaboration(&self, id: &str) -> Value {
        let response = self.get(&format!("/api/v1/collaborations/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Every stored event of a channel, read through the history endpoint.
    pub async fn history(&self, channel_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get_json(&format!(
                    "/api/v1/channels/{channel_id}/messages?after_seq={after}&limit=500"
                ))
                .await;
            let items = page["items"].as_array().unwrap().clone();
            if items.is_empty() {
                return events;
            }
            after = page["next_after_seq"].as_i64().unwrap();
            events.extend(items);
        }
    }

    /// Polls the collaboration until its summary is stored.
    pub async fn wait_until_summarized(&self, id: &str) -> Value {
        wait_for(|| async {
            let c = self.collaboration(id).await;
            (!c["summary"].is_null()).then_some(c)
        })
        .await
    }

    /// A viewer authenticated with this key.
    pub async fn viewer(&self, channel_id: &str, after_seq: i64) -> Viewer {
        Viewer::connect(self.stream_request(channel_id, after_seq)).await
    }

    /// A viewer whose socket takes only a few KiB unread: once it stops reading, the
    /// server soon has nowhere to put its frames.
    pub async fn viewer_with_a_small_window(&self, channel_id: &str, after_seq: i64) -> Viewer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(self.address).await.unwrap();
        let request = self.stream_request(channel_id, after_seq);
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("the upgrade succeeds");
        Viewer { stream }
    }

    fn stream_request(
        &self,
        channel_id: &str,
        after_seq: i64,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let url = format!(
            "ws://{}/api/v1/channels/{channel_id}/stream?after_seq={after_seq}",
            self.address
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", self.key).parse().unwrap(),
        );
        request
    }

    pub async fn viewer_at(&self, path_and_query: &str) -> Viewer {
        let url = format!("ws://{}{path_and_query}", self.address);
        Viewer::connect(url.into_client_request().unwrap()).await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    /// Stops the server the way SIGTERM does, waits for it, and hands back its data
    /// directory so that a new server can start on it.
    pub async fn shut_down_keeping_data(mut self) -> TempDir {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .expect("shutdown in time")
                .unwrap()
                .unwrap();
        }
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Retries `probe` every 20 ms until it yields a value, failing the test after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// One WebSocket viewer of a channel.
pub struct Viewer {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server said next: a JSON frame, or a close with its code.
#[derive(Debug)]
pub enum Said {
    Frame(Value),
    Closed(Option<CloseCode>, String),
}

impl Viewer {
    async fn connect(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade succeeds");
        Self { stream }
    }

    /// The next JSON frame or close, skipping pings; fails the test after [`PATIENCE`].
    pub async fn next(&mut self) -> Said {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Said::Frame(serde_json::from_str(&text).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Said::Closed(
                        frame.as_ref().map(|f| f.code),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return Said::Closed(None, String::new()),
            }
        }
    }

    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            Said::Frame(frame) => frame,
            Said::Closed(code, reason) => {
                panic!("closed ({code:?}, {reason}) while a frame was expected")
            }
        }
    }

    /// Frames up to and including the first of type `kind`.
    pub async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.frame().await;
            let done = frame["type"] == kind;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }
}

/// Checks that `response` is problem+json with `status`, and returns the problem.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
    body
}

/// The `message` frames among `frames`.
pub fn messages(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["type"] == "message").collect()
}

/// The stored events among `frames` (those with a `seq`), as seqs.
pub fn seqs(frames: &[Value]) -> Vec<i64> {
    frames.iter().filter_map(|f| f["seq"].as_i64()).collect()
}

/// Every byte of the SQLite database in `data_dir` (the main file, its WAL and journal), as
/// text: what a copy of the database, or of its backup, would show.
pub fn database_dump(data_dir: &std::path::Path) -> String {
    let mut dump = Vec::new();
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("skein.db")
        {
            dump.extend(std::fs::read(&path).unwrap());
        }
    }
    String::from_utf8_lossy(&dump).into_owned()
}
