//! OpenTelemetry traces: the real binary exports over OTLP/HTTP to a receiver in the test,
//! which decodes them with the OpenTelemetry proto definitions. One collaboration with an
//! llm agent that uses a tool (on the MCP reference server) and an http agent, created by a
//! REST request that carries a `traceparent`.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_KEY,
    fake_model::{FakeModel, KEY, Purpose},
    id,
    otlp::{Receiver, Span},
    peers::{HttpAgent, McpPeer, Receiver as Hooks, UagentPeer},
    process::Process,
};

/// The caller's trace, which the collaboration it creates continues.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Whether `span` descends from `ancestor`.
fn under(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|s| s.span_id == parent)
            .map(|s| s.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

#[tokio::test]
async fn a_collaboration_s_spans_follow_the_genai_conventions_and_its_trace_reaches_every_peer() {
    let Some(mcp) = McpPeer::start(None).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let fake = FakeModel::start().await;
    fake.call_tools(&[("add", json!({"a": 2, "b": 3}))]);
    fake.reply_with(&["It is 5."]);
    let courier = HttpAgent::start("Courier").await;
    let data_dir = tempfile::tempdir().unwrap();
    let base = fake.base_url();
    let server = Process::start_with(
        data_dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("SKEIN_LLM_BASE_URL", &base),
            ("SKEIN_LLM_API_KEY", KEY),
            ("SKEIN_LLM_MODEL", "fake-model"),
            ("SKEIN_ALLOW_PRIVATE_URLS", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "skein-under-test"),
        ],
    )
    .await;
    let api = &server.api;
    let host = api.scripted("Host", &["@Analyst add 2 and 3"], 0).await;
    let analyst = api
        .create_agent(json!({"name": "Analyst", "kind": "llm",
                             "tools": [{"url": mcp.url, "name": "calc"}]}))
        .await;
    let courier_agent = api
        .create_agent(json!({"name": "Courier", "kind": "http", "endpoint": courier.endpoint()}))
        .await;
    courier.trust(courier_agent["secret"].as_str().unwrap());
    // Webhooks, delivered later by another task, continue the trace they were written in.
    let hooks = Hooks::start().await;
    let settings: Value = reqwest::Client::new()
        .put(api.url("/api/v1/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"default_url": hooks.url()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    hooks.trust(settings["secret"].as_str().unwrap());
    // A uAgent on the reference SDK gets the context in a metadata item of its message.
    let Some(chef) =
        UagentPeer::start("echo", "tracing-chef", &["--skein", &api.url("/submit")]).await
    else {
        return;
    };
    let chef_agent = api
        .create_agent(
            json!({"name": "Chef", "kind": "uagent", "address": chef.address,
                             "endpoint": chef.endpoint}),
        )
        .await;
    let created: Value = reqwest::Client::new()
        .post(api.url("/api/v1/collaborations"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"objective": "Add two numbers and pass it on",
                      "principal": id(&host),
                      "participants": [id(&analyst), id(&courier_agent), id(&chef_agent)],
                      "strategy": "round_robin", "message_cap": 4, "timeout_window": 30,
                      "evaluate_objective_completion": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let collaboration = id(&created);
    let done = api.wait_until_summarized(&collaboration).await;
    assert_eq!(done["message_count"], 4, "{done}");
    crate::support::wait_for(|| async { (hooks.accepted().len() >= 3).then_some(()) }).await;
    // Stopping flushes what the exporter still holds.
    server.stop().await;
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "spans were exported");
    assert!(spans.iter().all(|s| s.service == "skein-under-test"));

    // The REST create continued the caller's trace, and the collaboration runs in it.
    let request = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.parent_span_id == CALLER_SPAN)
        .expect("the create request continues the caller's span");
    assert_eq!(request.trace_id, TRACE_ID);
    assert_eq!(request.attribute("http.request.method"), Some("POST"));
    let workflows = named(&spans, "invoke_workflow skein.collaboration");
    assert_eq!(workflows.len(), 1);
    let workflow = workflows[0];
    assert_eq!(workflow.trace_id, TRACE_ID);
    assert!(under(&spans, workflow, request));
    assert_eq!(
        workflow.attribute("gen_ai.operation.name"),
        Some("invoke_workflow")
    );

    // Each turn an invoke_agent: INTERNAL for the model, CLIENT for the remote agent.
    let analyst_turn = named(&spans, "invoke_agent Analyst");
    let courier_turn = named(&spans, "invoke_agent Courier");
    assert_eq!((analyst_turn.len(), courier_turn.len()), (1, 1));
    let (analyst_turn, courier_turn) = (analyst_turn[0], courier_turn[0]);
    assert_eq!(analyst_turn.kind, SpanKind::Internal);
    assert_eq!(courier_turn.kind, SpanKind::Client);
    assert_eq!(
        analyst_turn.attribute("gen_ai.agent.id"),
        Some(id(&analyst).as_str())
    );
    assert_eq!(analyst_turn.attribute("gen_ai.agent.name"), Some("Analyst"));
    assert!(under(&spans, analyst_turn, workflow));

    // Its model calls are chat spans with the usage the provider reported.
    let chats: Vec<&Span> = named(&spans, "chat fake-model")
        .into_iter()
        .filter(|s| under(&spans, s, analyst_turn))
        .collect();
    assert_eq!(chats.len(), 2, "a round of tool calls, then the answer");
    for chat in &chats {
        assert_eq!(chat.kind, SpanKind::Client);
        assert_eq!(chat.attribute("gen_ai.provider.name"), Some("default"));
        assert_eq!(chat.attribute("gen_ai.request.model"), Some("fake-model"));
    }
    let sum = |key: &str| -> u64 {
        chats
            .iter()
            .map(|c| c.attribute(key).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (
            sum("gen_ai.usage.input_tokens"),
            sum("gen_ai.usage.output_tokens")
        ),
        fake.usage_reported(Purpose::Turn)
    );
    assert!(
        chats
            .iter()
            .all(|c| c.attribute("gen_ai.output.messages").is_none()),
        "no message content without the operator's opt-in"
    );
    // Its tool call an execute_tool.
    let tool = named(&spans, "execute_tool add");
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0].attribute("gen_ai.tool.name"), Some("add"));
    assert!(tool[0].attribute("gen_ai.tool.call.id").is_some());
    assert!(under(&spans, tool[0], analyst_turn));
    // The summarizer's call is in the workflow too.
    assert!(
        named(&spans, "chat fake-model")
            .iter()
            .any(|c| !under(&spans, c, analyst_turn) && under(&spans, c, workflow))
    );

    // Every GenAI span names the collaboration.
    for span in spans
        .iter()
        .filter(|s| s.attribute("gen_ai.operation.name").is_some())
    {
        assert_eq!(
            span.attribute("gen_ai.conversation.id"),
            Some(collaboration.as_str()),
            "{span:?}"
        );
    }

    // The peers were told the trace: the http agent in its turn's request, the MCP server
    // on every request of the session and in each call's `_meta`.
    let traceparent = |value: &str| value.split('-').nth(1).map(str::to_owned);
    let turn = &courier.received()[0];
    let sent = turn.headers["traceparent"].to_str().unwrap();
    assert_eq!(traceparent(sent).as_deref(), Some(TRACE_ID));
    assert_eq!(
        sent.split('-').nth(2),
        Some(courier_turn.span_id.as_str()),
        "the http agent's parent is its turn"
    );
    let requests = mcp.requests();
    let body = |r: &Value| serde_json::from_str::<Value>(r["body"].as_str()?).ok();
    let calling = requests
        .iter()
        .find(|r| body(r).is_some_and(|b| b["method"] == "tools/call"))
        .expect("the tool was called");
    // The turn's session (the agent's creation had one of its own, in its own trace).
    let session = &calling["headers"]["mcp-session-id"];
    let turn_session: Vec<&Value> = requests
        .iter()
        .filter(|r| &r["headers"]["mcp-session-id"] == session)
        .collect();
    assert!(turn_session.len() >= 3, "{requests:?}");
    assert!(
        turn_session.iter().all(|r| r["headers"]["traceparent"]
            .as_str()
            .and_then(traceparent)
            .as_deref()
            == Some(TRACE_ID)),
        "{requests:?}"
    );
    assert!(
        turn_session
            .iter()
            .all(|r| r["headers"].get("tracestate").is_none()),
        "an empty tracestate is not sent"
    );
    let call = body(calling).unwrap();
    // The uAgent read the context from a metadata item, and still answered its turn.
    let chef_turn = named(&spans, "invoke_agent Chef");
    assert_eq!(chef_turn[0].kind, SpanKind::Client);
    let heard = &chef.heard()[0];
    let carried = heard["metadata"][0]["traceparent"].as_str().unwrap();
    assert_eq!(traceparent(carried).as_deref(), Some(TRACE_ID));
    assert!(heard["text"].as_str().unwrap().contains("Add two numbers"));
    // Each webhook (started, ended, summary ready) is in the collaboration's trace.
    for delivery in hooks.accepted() {
        let sent = delivery.headers["traceparent"].to_str().unwrap();
        assert_eq!(
            traceparent(sent).as_deref(),
            Some(TRACE_ID),
            "{:?}",
            delivery.body
        );
    }
    let meta = call["params"]["_meta"]["traceparent"].as_str().unwrap();
    assert_eq!(
        meta.split('-').nth(2),
        Some(tool[0].span_id.as_str()),
        "the call's own context is its execute_tool span"
    );
}
