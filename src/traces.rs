//! Traces: the process's `tracing` subscriber (logs to stderr, as always) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! OpenTelemetry spans exported over OTLP (HTTP/protobuf).
//!
//! Spans follow the GenAI semantic conventions: a collaboration run is an `invoke_workflow`,
//! a turn an `invoke_agent` (CLIENT for agents that live elsewhere, INTERNAL otherwise), a
//! model call a `chat`, a tool call an `execute_tool`; every one of them carries
//! `gen_ai.conversation.id`, the collaboration's id. The W3C trace context (`traceparent`,
//! `tracestate`) and `baggage` go out with every call Skein makes for a collaboration, and an
//! inbound `traceparent` on a REST request is continued. Without an endpoint none of this is
//! installed, and the helpers here return at once.
//!
//! The standard variables apply: `OTEL_SERVICE_NAME` (default `skein`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER` (and
//! `_ARG`), `OTEL_BSP_*`. Message content goes on spans only with
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    KeyValue, global,
    propagation::TextMapCompositePropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};
use uuid::Uuid;

/// Whether spans are exported: the helpers below do nothing when they are not.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Whether message content may go on spans (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`).
static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// The collaboration a runner's task works for: the spans made for it carry its id.
    static CONVERSATION: Uuid;
}

/// Keeps the exporter for as long as the process runs; dropping it sends what is left.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("the trace exporter did not shut down cleanly: {error}");
        }
    }
}

/// Installs the subscriber: logs to stderr (`RUST_LOG`, `SKEIN_LOG_FORMAT=json`), and the
/// OTLP exporter when an endpoint is configured.
pub fn init() -> anyhow::Result<Guard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("SKEIN_LOG_FORMAT").is_ok_and(|f| f == "json");
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    let (spans, provider) = if configured {
        let provider = provider()?;
        let tracer = provider.tracer("skein");
        // Skein's own spans only: not every poll of the HTTP stack and the database driver.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("skein", tracing::Level::INFO));
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        EXPORTING.store(true, Ordering::Release);
        CAPTURE_CONTENT.store(
            std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true")),
            Ordering::Release,
        );
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    // `try_init` also routes the `log` records of dependencies into the same output.
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(Guard(provider))
}

fn provider() -> anyhow::Result<SdkTracerProvider> {
    // The endpoint, headers, timeout and protocol come from the OTEL_EXPORTER_OTLP_*
    // variables, which the exporter reads itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("skein");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Whether message content may go on spans.
pub fn capture_content() -> bool {
    CAPTURE_CONTENT.load(Ordering::Acquire)
}

/// Runs `work` for collaboration `id`: the spans made inside carry its id.
pub async fn for_conversation<F: Future>(id: Uuid, work: F) -> F::Output {
    CONVERSATION.scope(id, work).await
}

/// The collaboration the current task works for, if it is a runner's.
pub fn conversation() -> Option<Uuid> {
    CONVERSATION.try_with(|id| *id).ok()
}

/// The trace context of the current span as W3C headers (`traceparent`, `tracestate`,
/// `baggage`), for a call Skein makes: empty when nothing is exported.
pub fn headers() -> Vec<(String, String)> {
    if !exporting() {
        return Vec::new();
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    // An empty `tracestate` (or `baggage`) says nothing: it is left out.
    let mut headers: Vec<(String, String)> =
        carrier.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    headers.sort();
    headers
}

/// The current span's `traceparent`, if spans are exported.
pub fn traceparent() -> Option<String> {
    headers()
        .into_iter()
        .find_map(|(name, value)| (name == "traceparent").then_some(value))
}

/// Makes `span` continue the trace an inbound request names in its `traceparent`.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let carrier: HashMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let context = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
