//! Metrics: every Prometheus series Skein exports, named in this one file, and the text
//! `/metrics` serves.
//!
//! The `metrics` facade records into one process-wide recorder, installed on first use;
//! several servers in one process (the tests) share it, which is why tests look at how a
//! counter moved rather than at its value. Labels are bounded sets (statuses, kinds, routes
//! as declared, providers and models as configured), never ids, so a busy server cannot
//! grow the series without bound. Gauges of stored state (collaborations by status) are
//! read from the store when scraped, so they are right after a restart too.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The recorder, installed once per process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program's): then ours
        // still renders what it is given, which is nothing, rather than panic.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("skein_collaborations", "Collaborations stored, by status.");
    describe_counter!(
        "skein_collaborations_started_total",
        "Collaborations created."
    );
    describe_counter!(
        "skein_collaborations_ended_total",
        "Collaborations that ended, by status and end reason."
    );
    describe_counter!(
        "skein_turns_total",
        "Messages stored, by the speaker's kind."
    );
    describe_histogram!(
        "skein_turn_overhead_seconds",
        Unit::Seconds,
        "The engine's own part of an agent's turn: from its reply in hand to the message \
         stored and published."
    );
    describe_counter!(
        "skein_tokens_total",
        "Model tokens used, by provider and model."
    );
    describe_histogram!(
        "skein_model_call_seconds",
        Unit::Seconds,
        "Model calls, retries included, by provider, model and outcome."
    );
    describe_counter!(
        "skein_model_errors_total",
        "Model calls that failed after their retries, by kind of failure."
    );
    describe_counter!(
        "skein_tool_calls_total",
        "Tool calls made for llm agents, by MCP server, tool and outcome (ok, error, timeout)."
    );
    describe_histogram!(
        "skein_tool_call_seconds",
        Unit::Seconds,
        "Time a tool call took, by MCP server and tool."
    );
    describe_gauge!("skein_websocket_connections", "WebSocket streams open now.");
    describe_counter!("skein_websocket_frames_total", "Frames sent to viewers.");
    describe_counter!(
        "skein_viewers_caught_up_total",
        "Times a viewer that fell behind the live stream was caught up from the store."
    );
    describe_counter!(
        "skein_viewers_dropped_total",
        "Viewers disconnected because they stopped reading or answering pings."
    );
    describe_counter!(
        "skein_http_requests_total",
        "HTTP requests, by route, method and status."
    );
    describe_histogram!(
        "skein_http_request_seconds",
        Unit::Seconds,
        "HTTP request latency, by route."
    );
    describe_counter!(
        "skein_webhook_attempts_total",
        "Webhook delivery attempts, by outcome (delivered, retrying, gave_up)."
    );
    describe_counter!(
        "skein_rate_limited_total",
        "Requests and messages refused for a key's rate."
    );
    describe_counter!(
        "skein_cluster_publications_dropped_total",
        "Publications not carried to other processes because the queue to NATS was full; \
         their viewers catch up from the store."
    );
    describe_counter!(
        "skein_cluster_frames_received_total",
        "Frames received over NATS from the channels watched here (this process's own \
         included, which it drops)."
    );
    describe_counter!(
        "skein_connections_refused_total",
        "Connections answered 503 because the server had its maximum open."
    );
}

pub fn collaboration_started() {
    counter!("skein_collaborations_started_total").increment(1);
}

pub fn collaboration_ended(status: String, end_reason: String) {
    counter!("skein_collaborations_ended_total", "status" => status, "end_reason" => end_reason)
        .increment(1);
}

/// The stored count of collaborations in each status, read at scrape time.
pub fn collaborations(by_status: Vec<(String, u64)>) {
    for (status, count) in by_status {
        gauge!("skein_collaborations", "status" => status).set(count as f64);
    }
}

pub fn turn(kind: &'static str) {
    counter!("skein_turns_total", "kind" => kind).increment(1);
}

pub fn cluster_frame_received() {
    counter!("skein_cluster_frames_received_total").increment(1);
}

pub fn turn_overhead(took: Duration) {
    histogram!("skein_turn_overhead_seconds").record(took.as_secs_f64());
}

/// Distinct models, and distinct tools, that get a series of their own; later ones share
/// `other`. Model, server and tool names are free text in agents that tenants create, so
/// they must not grow the series unbounded.
const LABELS_KEPT: usize = 64;

type Seen = OnceLock<Mutex<HashSet<(String, String)>>>;

/// Whether the pair `(a, b)` has (or may now get) a series of its own in `seen`.
fn kept(seen: &'static Seen, a: &str, b: &str) -> bool {
    let mut seen = seen
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = (a.to_owned(), b.to_owned());
    if seen.contains(&key) || seen.len() < LABELS_KEPT {
        seen.insert(key);
        true
    } else {
        false
    }
}

fn model_label(provider: &str, model: &str) -> String {
    static SEEN: Seen = OnceLock::new();
    if kept(&SEEN, provider, model) {
        model.to_owned()
    } else {
        "other".to_owned()
    }
}

/// One tool call: its server, tool, outcome (`ok`, `error`, `timeout`) and time.
pub fn tool_call(server: &str, tool: &str, outcome: &'static str, took: Duration) {
    static SEEN: Seen = OnceLock::new();
    let (server, tool) = if kept(&SEEN, server, tool) {
        (server.to_owned(), tool.to_owned())
    } else {
        ("other".to_owned(), "other".to_owned())
    };
    counter!("skein_tool_calls_total", "server" => server.clone(), "tool" => tool.clone(), "outcome" => outcome)
        .increment(1);
    histogram!("skein_tool_call_seconds", "server" => server, "tool" => tool)
        .record(took.as_secs_f64());
}

/// One model call's outcome: its time, its tokens, and what went wrong if anything did.
pub fn model_call(
    provider: &str,
    model: &str,
    took: Duration,
    tokens: u64,
    failure: Option<&'static str>,
) {
    // Providers come from the server's configuration: a bounded set.
    let (provider, model) = (provider.to_owned(), model_label(provider, model));
    let outcome = if failure.is_some() { "error" } else { "ok" };
    histogram!("skein_model_call_seconds", "provider" => provider.clone(), "model" => model.clone(), "outcome" => outcome)
        .record(took.as_secs_f64());
    if tokens > 0 {
        counter!("skein_tokens_total", "provider" => provider, "model" => model).increment(tokens);
    }
    if let Some(kind) = failure {
        counter!("skein_model_errors_total", "kind" => kind).increment(1);
    }
}

/// Counts an open stream for as long as it lives, however its session ends.
pub struct ViewerConnected(());

impl ViewerConnected {
    pub fn new() -> Self {
        gauge!("skein_websocket_connections").increment(1.0);
        Self(())
    }
}

impl Default for ViewerConnected {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ViewerConnected {
    fn drop(&mut self) {
        gauge!("skein_websocket_connections").decrement(1.0);
    }
}

/// Frames sent to viewers, counted per viewer; the handle is looked up once, not per frame.
pub fn frames_sent(count: u64) {
    static FRAMES: std::sync::LazyLock<metrics::Counter> =
        std::sync::LazyLock::new(|| counter!("skein_websocket_frames_total"));
    FRAMES.increment(count);
}

pub fn viewer_caught_up() {
    counter!("skein_viewers_caught_up_total").increment(1);
}

pub fn viewer_dropped() {
    counter!("skein_viewers_dropped_total").increment(1);
}

/// Methods by name; anything else, which any client may send, counts as `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn http_request(route: String, method: &'static str, status: u16, took: Duration) {
    histogram!("skein_http_request_seconds", "route" => route.clone()).record(took.as_secs_f64());
    counter!("skein_http_requests_total", "route" => route, "method" => method, "status" => status.to_string())
        .increment(1);
}

pub fn webhook_attempt(outcome: &'static str) {
    counter!("skein_webhook_attempts_total", "outcome" => outcome).increment(1);
}

pub fn rate_limited() {
    counter!("skein_rate_limited_total").increment(1);
}

pub fn export_dropped() {
    counter!("skein_cluster_publications_dropped_total").increment(1);
}

pub fn connection_refused() {
    counter!("skein_connections_refused_total").increment(1);
}
