//! LLM agents with tools: MCP servers on the reference SDK (`tests/mcp/server.py`, the
//! Python `mcp` package's MCPServer over streamable HTTP), called during a turn that the
//! fake provider scripts with OpenAI tool calls.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use skein::config::Config;

use crate::support::{
    TestApp, default_provider,
    fake_model::{FakeModel, Purpose},
    id, messages,
    peers::McpPeer,
    problem, seqs, spawn_app_in_with, spawn_app_with,
};

const TOKEN: &str = "mcp-token-7d1f0c2a9e";

fn with(fake: &FakeModel, adjust: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    let base = fake.base_url();
    move |config: &mut Config| {
        config.providers = vec![default_provider(&base)];
        adjust(config);
    }
}

/// A scripted host that hands the turn to the analyst, and the analyst: an llm agent with
/// the MCP server's tools (all but `shout`, which its allow-list leaves out).
async fn cast(app: &TestApp, mcp: &McpPeer) -> (Value, Value) {
    let host = app
        .scripted("Host", &["@Analyst work it out, please."], 0)
        .await;
    let analyst = app
        .create_agent(json!({
            "name": "Analyst", "kind": "llm",
            "tools": [{"url": mcp.url, "name": "calc", "bearer": TOKEN,
                       "allow": ["add", "note_put", "note_get", "slow", "explode"]}],
        }))
        .await;
    (host, analyst)
}

/// A collaboration of `host` and `analyst` that ends at `message_cap`, round robin.
async fn run(app: &TestApp, host: &Value, analyst: &Value, message_cap: u32) -> Value {
    app.collaborate(
        host,
        analyst,
        json!({"message_cap": message_cap, "evaluate_objective_completion": false,
               "strategy": "round_robin"}),
    )
    .await
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

#[tokio::test]
async fn two_calls_in_one_round_run_on_the_mcp_server_and_the_answer_uses_both_results() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.call_tools(&[
        ("add", json!({"a": 2, "b": 3})),
        ("note_put", json!({"key": "plan", "text": "tapas at seven"})),
    ]);
    fake.answer_from_results();
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let (host, analyst) = cast(&app, &mcp).await;
    let created = run(&app, &host, &analyst, 2).await;
    let frames = app.watch_to_the_end(&created).await;

    // What a viewer saw, in order: the host, both calls, both results, the answer.
    let kinds: Vec<&str> = frames
        .iter()
        .filter(|f| f["seq"].is_i64())
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "tool_call",
            "tool_call",
            "tool_result",
            "tool_result",
            "message",
            "status",
            "summary"
        ]
    );
    let stored: Vec<Value> = frames
        .iter()
        .filter(|f| f["seq"].is_i64())
        .cloned()
        .collect();
    assert_eq!(seqs(&stored), (1..=8).collect::<Vec<_>>(), "gap-free seqs");
    let calls = of_type(&frames, "tool_call");
    let results = of_type(&frames, "tool_result");
    assert_eq!(calls[0]["tool"], json!({"server": "calc", "name": "add"}));
    assert_eq!(calls[0]["arguments"], json!({"a": 2, "b": 3}));
    assert_eq!(calls[0]["sender"]["name"], "Analyst");
    assert_eq!(results[0]["call_id"], calls[0]["call_id"]);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["content"], "5");
    assert_eq!(results[1]["content"], "kept plan");
    assert!(results[0]["ms"].is_u64());
    assert_eq!(
        calls[0]["turn_id"],
        messages(&frames)[1]["turn_id"],
        "the calls belong to the turn whose message follows"
    );
    assert_eq!(messages(&frames)[1]["content"], "results: 5 | kept plan");
    // History is the same record.
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(history, stored);

    // The model was offered the allowed tools, in OpenAI's function format, and was given
    // each result under its call's id.
    let turns = fake.requests(Purpose::Turn);
    assert_eq!(turns.len(), 2);
    let offered: Vec<&str> = turns[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["add", "note_put", "note_get", "slow", "explode"]);
    assert_eq!(
        turns[0].body["tools"][0]["function"]["parameters"]["required"],
        json!(["a", "b"])
    );
    let sent = turns[1].body["messages"].as_array().unwrap();
    let tool_messages: Vec<&Value> = sent.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 2);
    let asked = sent
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .unwrap();
    assert_eq!(
        tool_messages[0]["tool_call_id"],
        asked["tool_calls"][0]["id"]
    );
    // Tokens of both rounds count.
    let done = app.wait_until_summarized(&id(&created)).await;
    assert!(done["tokens_used"].as_u64().unwrap() >= fake.tokens_reported(Purpose::Turn));
    // The summarizer read what the tools gave, quoted as data with the transcript.
    let summary = fake.requests(Purpose::Summary);
    let quoted = summary[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        quoted.contains("Analyst: [used the tool add({\"a\":2,\"b\":3}) → result: 5]"),
        "{quoted}"
    );
    // And the figures count each member's calls.
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    assert_eq!(figures["members"][1]["agent"]["name"], "Analyst");
    assert_eq!(figures["members"][1]["tool_calls"], 2);
    assert_eq!(figures["members"][1]["tool_failures"], 0);

    // The server saw the bearer token, and the calls themselves.
    let requests = mcp.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r["headers"]["authorization"] == format!("Bearer {TOKEN}"))
    );
    let methods = mcp.methods();
    assert!(methods.contains(&"initialize".to_owned()), "{methods:?}");
    assert!(
        methods.contains(&"tools/call add".to_owned()),
        "{methods:?}"
    );
    assert!(
        methods.contains(&"tools/call note_put".to_owned()),
        "{methods:?}"
    );

    // Metrics count them by server, tool and outcome.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("skein_tool_calls_total")
                && l.contains("server=\"calc\"")
                && l.contains("tool=\"add\"")
                && l.contains("outcome=\"ok\"")),
        "{metrics}"
    );
    assert!(metrics.contains("skein_tool_call_seconds"));
}

#[tokio::test]
async fn the_tools_endpoint_lists_what_the_agent_may_call_and_hides_the_rest() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let (_, analyst) = cast(&app, &mcp).await;
    // The view names the header that carries the credential, never its value.
    assert_eq!(
        analyst["tools"][0]["credential_headers"],
        json!(["Authorization"])
    );
    assert!(!analyst.to_string().contains(TOKEN));
    let listed = app
        .get_json(&format!("/api/v1/agents/{}/tools", id(&analyst)))
        .await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tool"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "note_put", "note_get", "slow", "explode"]);
    assert!(!names.contains(&"shout"), "the allow-list hides it");
    assert_eq!(listed["items"][0]["description"], "Adds two numbers.");
    assert_eq!(listed["items"][0]["tool"]["server"], "calc");
    assert_eq!(listed["items"][0]["allowed"], true);
    // `all` shows what the allow-list leaves out, to pick from.
    let everything = app
        .get_json(&format!("/api/v1/agents/{}/tools?all=true", id(&analyst)))
        .await;
    let shout = everything["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"]["name"] == "shout")
        .expect("every tool of the server is listed");
    assert_eq!(shout["allowed"], false);

    // A PATCH that sends the view back keeps the stored credentials; one that changes the
    // allow-list changes what is offered.
    let mut tools = analyst["tools"].clone();
    tools[0]["allow"] = json!(["shout"]);
    let patched = app
        .patch(
            &format!("/api/v1/agents/{}", id(&analyst)),
            &json!({"tools": tools}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let listed = app
        .get_json(&format!("/api/v1/agents/{}/tools", id(&analyst)))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["function"], "shout");
}

#[tokio::test]
async fn servers_that_cannot_be_used_are_refused_with_the_reason_and_nothing_is_created() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cases = [
        (
            json!({"url": format!("http://127.0.0.1:{closed}/mcp")}),
            "tools[0].url",
            "could not be reached",
        ),
        (
            json!({"url": mcp.url, "bearer": "wrong"}),
            "tools[0].url",
            "could not be reached",
        ),
        (
            json!({"url": mcp.url, "bearer": TOKEN, "allow": ["add", "nope"]}),
            "tools[0].allow",
            "`nope` is not a tool of this server",
        ),
        (
            json!({"url": mcp.url, "headers": {"Mcp-Session-Id": "x"}}),
            "tools[0].headers",
            "not a header",
        ),
        (
            json!({"url": "ftp://example.com/mcp"}),
            "tools[0].url",
            "http",
        ),
    ];
    for (server, field, says) in cases {
        let response = app
            .post(
                "/api/v1/agents",
                &json!({"name": "Tooled", "kind": "llm", "tools": [server]}),
            )
            .await;
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let error = &body["errors"][0];
        assert_eq!(error["field"], field, "{body}");
        assert!(error["message"].as_str().unwrap().contains(says), "{body}");
    }
    let listed = app.get_json("/api/v1/agents").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn a_tool_that_fails_or_times_out_is_a_result_the_model_reads_not_a_failure() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.call_tools(&[("explode", json!({})), ("slow", json!({"seconds": 5}))]);
    fake.answer_from_results();
    let app = spawn_app_with(with(&fake, |c| {
        c.tools.call_timeout = Duration::from_secs(1);
    }))
    .await;
    let (host, analyst) = cast(&app, &mcp).await;
    let created = run(&app, &host, &analyst, 2).await;
    let frames = app.watch_to_the_end(&created).await;
    let results = of_type(&frames, "tool_result");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ok"], false);
    assert!(results[0]["content"].as_str().unwrap().contains("explode"));
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["content"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1 s"),
        "{}",
        results[1]
    );
    let answer = messages(&frames)[1]["content"].as_str().unwrap();
    assert!(answer.starts_with("results: Error: "), "{answer}");
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["end_reason"], "message_cap");
}

#[tokio::test]
async fn the_round_limit_ends_the_turn_with_the_models_answer_and_an_advisory() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    for _ in 0..3 {
        fake.call_tools(&[("add", json!({"a": 1, "b": 1}))]);
    }
    let app = spawn_app_with(with(&fake, |c| c.tools.max_rounds = 2)).await;
    let (host, analyst) = cast(&app, &mcp).await;
    let created = run(&app, &host, &analyst, 2).await;
    let frames = app.watch_to_the_end(&created).await;
    assert_eq!(
        of_type(&frames, "tool_call").len(),
        2,
        "two rounds, then no more"
    );
    let answer = messages(&frames)[1]["content"].as_str().unwrap();
    assert!(answer.contains("without tools"), "{answer}");
    assert!(
        answer.contains("limit of 2 rounds of tool calls"),
        "{answer}"
    );
    let turns = fake.requests(Purpose::Turn);
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[2].body["tool_choice"], "none");
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn a_turn_cut_off_while_a_tool_runs_is_closed_as_interrupted_and_taken_again() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.call_tools(&[("slow", json!({"seconds": 30}))]);
    fake.reply_with(&["Done, after the restart."]);
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let (host, analyst) = cast(&app, &mcp).await;
    let created = run(&app, &host, &analyst, 2).await;
    let channel = created["channel_id"].as_str().unwrap().to_owned();
    let mut viewer = app.viewer(&channel, 0).await;
    let call = viewer.until("tool_call").await.pop().unwrap();
    let data_dir = app.shut_down_keeping_data().await;

    let again = spawn_app_in_with(data_dir, with(&fake, |_| {})).await;
    let done = again.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    let events = again.history(&channel).await;
    assert_eq!(seqs(&events), (1..=events.len() as i64).collect::<Vec<_>>());
    let result = events
        .iter()
        .find(|e| e["type"] == "tool_result")
        .expect("the open call is closed");
    assert_eq!(result["call_id"], call["call_id"]);
    assert_eq!(result["interrupted"], true);
    assert_eq!(result["ok"], false);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "tool_call",
            "tool_result",
            "message",
            "status",
            "summary"
        ]
    );
    assert_eq!(events[3]["content"], "Done, after the restart.");
}

#[tokio::test]
async fn tool_credentials_are_sealed_in_the_database() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let analyst = app
        .create_agent(json!({
            "name": "Analyst", "kind": "llm",
            "tools": [{"url": mcp.url, "headers": {"Authorization": format!("Bearer {TOKEN}"),
                                                    "X-Team": "team-secret-4471"}}],
        }))
        .await;
    assert_eq!(
        analyst["tools"][0]["credential_headers"],
        json!(["Authorization", "X-Team"])
    );
    let data_dir = app.shut_down_keeping_data().await;
    let dump = crate::support::database_dump(data_dir.path());
    assert!(dump.contains(mcp.url.as_str()), "the database was read");
    assert!(!dump.contains(TOKEN), "the bearer token is sealed");
    assert!(!dump.contains("team-secret-4471"), "the header is sealed");
    // And it opens again after a restart: the server still gets the credential.
    let again = spawn_app_in_with(data_dir, with(&fake, |_| {})).await;
    let listed = again
        .get(&format!("/api/v1/agents/{}/tools", id(&analyst)))
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_readme_s_example_server_works_as_it_says() {
    let Some(example) = McpPeer::example(Some("example-secret")).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.call_tools(&[("remember", json!({"key": "venue", "text": "the jazz bar"}))]);
    fake.call_tools(&[
        ("recall", json!({"key": "venue"})),
        ("add", json!({"a": 1.5, "b": 2})),
    ]);
    fake.answer_from_results();
    let app = spawn_app_with(with(&fake, |_| {})).await;
    let host = app.scripted("Host", &["@Analyst where do we go?"], 0).await;
    let analyst = app
        .create_agent(json!({"name": "Analyst", "kind": "llm",
                             "tools": [{"url": example.url, "name": "notebook", "bearer": "example-secret"}]}))
        .await;
    let created = run(&app, &host, &analyst, 2).await;
    let frames = app.watch_to_the_end(&created).await;
    assert_eq!(of_type(&frames, "tool_call").len(), 3);
    assert_eq!(
        messages(&frames)[1]["content"],
        "results: the jazz bar | 3.5"
    );
}

#[tokio::test]
async fn a_server_gone_when_the_turn_starts_fails_the_collaboration_saying_which() {
    let Some(mcp) = McpPeer::start(Some(TOKEN)).await else {
        return;
    };
    let fake = FakeModel::start().await;
    let app = spawn_app_with(with(&fake, |c| {
        c.remote.max_retries = 1;
        c.remote.retry_base = Duration::from_millis(50);
    }))
    .await;
    let (host, analyst) = cast(&app, &mcp).await;
    drop(mcp);
    let created = run(&app, &host, &analyst, 4).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["end_reason"], "error");
    let error = done["error_message"].as_str().unwrap();
    assert!(
        error.starts_with("Analyst failed: the MCP server calc (http://127.0.0.1:")
            && error.contains("could not be reached"),
        "{error}"
    );
    assert!(
        fake.requests(Purpose::Turn).is_empty(),
        "the model is not asked without its tools"
    );
}
