//! Agents that live outside Skein, for the tests of `http` and `a2a` agents.
//!
//! [`HttpAgent`] is an agent server in this process that checks Skein's Standard Webhooks
//! signature on its own (with `hmac` directly, not Skein's signer), records every request,
//! and misbehaves on demand. [`A2aPeer`] is `tests/a2a/agent.py`, an agent built on the A2A
//! reference SDK (`a2a-sdk` from PyPI), run in a virtualenv under `target/` that the first
//! test to need it creates. Without Python or PyPI those tests pass over themselves, saying
//! so, unless `SKEIN_A2A_TESTS=required` (as `.ci/run` sets it).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::PATIENCE;

/// What the HTTP agent does with its next request.
#[derive(Debug, Clone)]
pub enum Misstep {
    /// Waits this long before answering (longer than Skein's turn timeout: a retry).
    Slow(Duration),
    /// Answers 200 with something that is not a turn.
    Garbage,
    /// Answers 503.
    Unavailable,
    /// Answers a turn of a megabyte.
    Huge,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// Whether the signature checked out under the agent's secret.
    pub signed: bool,
}

#[derive(Default)]
struct Script {
    secret: Option<String>,
    missteps: VecDeque<Misstep>,
    received: Vec<Received>,
}

/// An `http` agent server on a free port.
#[derive(Clone)]
pub struct HttpAgent {
    pub address: SocketAddr,
    name: String,
    script: Arc<Mutex<Script>>,
}

impl HttpAgent {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = Self {
            address: listener.local_addr().unwrap(),
            name: name.into(),
            script: Arc::default(),
        };
        let app = Router::new()
            .route("/turn", post(turn))
            .with_state(agent.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        agent
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/turn", self.address)
    }

    /// The secret to check signatures with: the one Skein showed when the agent was made.
    pub fn trust(&self, secret: &str) {
        self.script.lock().unwrap().secret = Some(secret.into());
    }

    pub fn misstep(&self, misstep: Misstep) {
        self.script.lock().unwrap().missteps.push_back(misstep);
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

/// `v1,…` signatures of `id.timestamp.body` under a `whsec_` secret, checked the way the
/// Standard Webhooks libraries do.
fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    fresh && signatures.split(' ').any(|s| s == expected)
}

async fn turn(State(agent): State<HttpAgent>, headers: HeaderMap, body: Bytes) -> Response {
    let (is_signed, misstep, count) = {
        let mut script = agent.script.lock().unwrap();
        let is_signed = script
            .secret
            .as_deref()
            .is_some_and(|secret| signed(secret, &headers, &body));
        script.received.push(Received {
            headers: headers.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            signed: is_signed,
        });
        let count = script.received.iter().filter(|r| r.signed).count();
        (is_signed, script.missteps.pop_front(), count)
    };
    if !is_signed {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    match misstep {
        Some(Misstep::Slow(pause)) => tokio::time::sleep(pause).await,
        Some(Misstep::Garbage) => return "<html>Oops</html>".into_response(),
        Some(Misstep::Unavailable) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Misstep::Huge) => {
            return Json(json!({"content": "blah ".repeat(200_000)})).into_response();
        }
        None => {}
    }
    Json(json!({"content": format!("{} says {count}", agent.name)})).into_response()
}

/// The A2A reference SDK's Python, or `None` when it cannot be had here.
fn a2a_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| sdk_python("SKEIN_A2A_PYTHON", "a2a", "import a2a.server, uvicorn"))
        .clone()
}

/// The uAgents reference SDK's Python, or `None` (the test then passes over itself, saying
/// so) when it cannot be had here, unless `SKEIN_UAGENTS_TESTS=required`.
pub fn uagents_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    let python = PYTHON
        .get_or_init(|| sdk_python("SKEIN_UAGENTS_PYTHON", "uagents", "import uagents"))
        .clone();
    if python.is_none() {
        assert!(
            std::env::var("SKEIN_UAGENTS_TESTS").as_deref() != Ok("required"),
            "SKEIN_UAGENTS_TESTS=required but the uagents virtualenv could not be made"
        );
        eprintln!("no Python with uagents (and no way to install it): skipping");
    }
    python
}

/// A Python with an SDK: the one `variable` names, else a virtualenv under `target/` made
/// from `tests/<sdk>/requirements.txt` (pinned versions) the first time it is needed.
fn sdk_python(variable: &str, sdk: &str, imports: &str) -> Option<PathBuf> {
    if let Some(python) = std::env::var_os(variable) {
        return Some(python.into());
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{sdk}-venv"));
    let python = venv.join("bin/python");
    if has_sdk(&python, imports) {
        return Some(python);
    }
    let requirements =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{sdk}/requirements.txt"));
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements)
            .status()
            .is_ok_and(|s| s.success());
    (made && has_sdk(&python, imports)).then_some(python)
}

fn has_sdk(python: &Path, imports: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", imports])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a peer that prints one JSON object per request it receives, and keeps them.
fn recording(mut command: Command, starts: &str) -> (Child, Arc<Mutex<Vec<Value>>>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(starts);
    let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(request) = serde_json::from_str(&line) {
                seen.lock().unwrap().push(request);
            }
        }
    });
    (child, requests)
}

/// `tests/uagents/agent.py`: a uAgent on the reference SDK, listening on a free port.
pub struct UagentPeer {
    child: Child,
    python: PathBuf,
    pub address: String,
    pub endpoint: String,
    /// Every chat message and acknowledgement it received, one JSON object each.
    heard: Arc<Mutex<Vec<Value>>>,
}

impl UagentPeer {
    /// Starts the peer in `mode` (`echo`, `silent`, `error`), finding Skein by `flags`
    /// (`--skein <submit URL>` or `--agentverse <base URL>`); `None` (the test then passes
    /// over itself) without the SDK.
    pub async fn start(mode: &str, seed: &str, flags: &[&str]) -> Option<Self> {
        let python = uagents_python()?;
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/uagents/agent.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args([mode, &port.to_string(), seed])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the uAgent peer starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The SDK logs to stdout too: the address is the first line that is JSON.
        let address = tokio::time::timeout(PATIENCE * 4, async {
            loop {
                let line = lines.next_line().await.unwrap().expect("the peer runs");
                if let Ok(said) = serde_json::from_str::<Value>(&line) {
                    return said["address"].as_str().unwrap().to_owned();
                }
            }
        })
        .await
        .expect("the uAgent peer says its address");
        let heard: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = heard.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(said) = serde_json::from_str(&line) {
                    seen.lock().unwrap().push(said);
                }
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}/submit");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PATIENCE * 4;
        loop {
            let ready = client
                .head(&endpoint)
                .header("x-uagents-address", &address)
                .send()
                .await
                .is_ok_and(|r| {
                    r.headers()
                        .get("x-uagents-status")
                        .is_some_and(|s| s == "ready")
                });
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the uAgent peer did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Self {
            child,
            python,
            address,
            endpoint,
            heard,
        })
    }

    /// What it received: `{from, text}` per chat message, `{from, acknowledged}` per
    /// acknowledgement.
    pub fn heard(&self) -> Vec<Value> {
        self.heard.lock().unwrap().clone()
    }

    /// What `script`, run by the SDK's Python with `input` on stdin, prints (trimmed): for
    /// checking what Skein made with the SDK's own code.
    pub async fn python(&self, script: &str, input: &str) -> String {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new(&self.python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the SDK's Python runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let output = child.wait_with_output().await.unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Stops it: its endpoint no longer answers.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The A2A SDK's Python, or `None` (the test then passes over itself, saying so) when it
/// cannot be had here, unless `SKEIN_A2A_TESTS=required`.
fn a2a_sdk() -> Option<PathBuf> {
    let python = a2a_python();
    if python.is_none() {
        assert!(
            std::env::var("SKEIN_A2A_TESTS").as_deref() != Ok("required"),
            "SKEIN_A2A_TESTS=required but the a2a-sdk virtualenv could not be made"
        );
        eprintln!("no Python with a2a-sdk (and no way to install it): skipping");
    }
    python
}

/// Runs `script` (under `tests/`) with `python` and `args`, and returns the JSON object
/// it prints last: what a client on a reference SDK saw.
async fn sdk_client(python: PathBuf, script: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let output = tokio::time::timeout(
        PATIENCE * 4,
        Command::new(python)
            .arg(&script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{} did not finish", script.display()))
    .expect("the SDK's Python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "{} printed no result: {stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `tests/a2a/client.py`: an A2A client on the reference SDK, run to its end.
pub async fn a2a_client(args: &[&str]) -> Option<Value> {
    Some(sdk_client(a2a_sdk()?, "a2a/client.py", args).await)
}

/// `tests/a2a/agent.py` in one of its modes, listening on a free port.
pub struct A2aPeer {
    _child: Child,
    pub url: String,
    /// Every JSON-RPC request it received: `{headers, body}`.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl A2aPeer {
    /// Starts the peer, or `None` (the test then passes over itself) without the SDK.
    pub async fn start(mode: &str, flags: &[&str]) -> Option<Self> {
        let python = a2a_sdk()?;
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/a2a/agent.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(mode)
            .arg(port.to_string())
            .args(flags);
        let (child, requests) = recording(command, "the A2A peer starts");
        let url = format!("http://127.0.0.1:{port}");
        let card = format!("{url}/.well-known/agent-card.json");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        while !client
            .get(&card)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the A2A peer did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Self {
            _child: child,
            url,
            requests,
        })
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The JSON-RPC methods called, in order.
    pub fn methods(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r["body"]["method"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A webhook receiver: checks each delivery's signature under the account's secret,
/// answers 500 to the first `fail_first` of them, and can go down and come back on its port.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<ReceiverState>>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

#[derive(Default)]
struct ReceiverState {
    secret: Option<String>,
    fail_first: usize,
    received: Vec<Received>,
}

impl Receiver {
    pub async fn start() -> Self {
        let receiver = Self {
            port: 0,
            inner: Arc::default(),
            server: Arc::default(),
        };
        receiver.up(0).await
    }

    /// Listens (again) on `port`, 0 for any.
    pub async fn up(mut self, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/hook", post(deliver))
            .with_state(self.inner.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        *self.server.lock().unwrap() = Some(server);
        self
    }

    /// Stops listening: deliveries are refused until [`Receiver::up`].
    pub async fn down(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn trust(&self, secret: &str) {
        self.inner.lock().unwrap().secret = Some(secret.into());
    }

    pub fn fail_first(&self, count: usize) {
        self.inner.lock().unwrap().fail_first = count;
    }

    /// Every delivery received, with whether it was accepted (answered 2xx).
    pub fn received(&self) -> Vec<(Received, bool)> {
        let state = self.inner.lock().unwrap();
        state
            .received
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), r.signed && i >= state.fail_first))
            .collect()
    }

    /// The accepted deliveries' bodies.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter_map(|(r, ok)| ok.then_some(r))
            .collect()
    }
}

async fn deliver(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut state = state.lock().unwrap();
    let is_signed = state
        .secret
        .as_deref()
        .is_some_and(|secret| signed(secret, &headers, &body));
    let failing = state.received.len() < state.fail_first;
    state.received.push(Received {
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed: is_signed,
    });
    if !is_signed {
        StatusCode::UNAUTHORIZED
    } else if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// The MCP reference SDK's Python, or `None` (the test then passes over itself, saying so)
/// when it cannot be had here, unless `SKEIN_MCP_TESTS=required`.
fn mcp_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    let python = PYTHON
        .get_or_init(|| {
            sdk_python(
                "SKEIN_MCP_PYTHON",
                "mcp",
                "import mcp.server.mcpserver, uvicorn",
            )
        })
        .clone();
    if python.is_none() {
        assert!(
            std::env::var("SKEIN_MCP_TESTS").as_deref() != Ok("required"),
            "SKEIN_MCP_TESTS=required but the mcp virtualenv could not be made"
        );
        eprintln!("no Python with mcp (and no way to install it): skipping");
    }
    python
}

/// `tests/mcp/client.py`: an MCP client on the reference SDK, run to its end.
pub async fn mcp_client(args: &[&str]) -> Option<Value> {
    Some(sdk_client(mcp_python()?, "mcp/client.py", args).await)
}

/// `tests/mcp/server.py`: an MCP server on the reference SDK (streamable HTTP at `/mcp`),
/// with an adder, a notes store, a slow tool, one that raises and one that shouts.
pub struct McpPeer {
    _child: Child,
    /// Its MCP endpoint.
    pub url: String,
    /// Every HTTP request it received: `{method, path, headers, body}`.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl McpPeer {
    /// Starts the server, requiring `Authorization: Bearer <token>` when one is given.
    pub async fn start(token: Option<&str>) -> Option<Self> {
        Self::run("tests/mcp/server.py", token).await
    }

    /// `examples/mcp_tools.py`, the README's example server (it records no requests).
    pub async fn example(token: Option<&str>) -> Option<Self> {
        Self::run("examples/mcp_tools.py", token).await
    }

    async fn run(script: &str, token: Option<&str>) -> Option<Self> {
        let python = mcp_python()?;
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let mut command = Command::new(python);
        command.arg(script).arg(port.to_string());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let (child, requests) = recording(command, "the MCP server starts");
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the MCP server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            requests,
        })
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The JSON-RPC methods it was called with, in order (`tools/call` with the tool's name:
    /// `tools/call add`).
    pub fn methods(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
            .filter_map(|body| {
                let method = body["method"].as_str()?.to_owned();
                Some(match body["params"]["name"].as_str() {
                    Some(tool) if method == "tools/call" => format!("{method} {tool}"),
                    _ => method,
                })
            })
            .collect()
    }
}
