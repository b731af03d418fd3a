//! Agents people bring: `http` agents (signed turns, retries, bad answers), `a2a` agents on
//! the protocol's reference SDK (messages, tasks, failures, 0.3, cancellation), and one
//! collaboration that mixes every kind.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, TestApp, Viewer, default_provider,
    fake_model::FakeModel,
    id, messages,
    peers::{A2aPeer, HttpAgent, Misstep},
    problem, spawn_app, spawn_app_with, wait_for,
};

/// An `http` agent registered with Skein and trusting the secret Skein showed.
async fn http_agent(app: &Api, name: &str) -> (Value, HttpAgent) {
    let agent = HttpAgent::start(name).await;
    let created = app
        .create_agent(json!({"name": name, "kind": "http", "endpoint": agent.endpoint()}))
        .await;
    agent.trust(created["secret"].as_str().unwrap());
    (created, agent)
}

pub(crate) async fn stored_messages(app: &Api, collaboration: &Value) -> Vec<Value> {
    let history = app
        .history(collaboration["channel_id"].as_str().unwrap())
        .await;
    messages(&history).into_iter().cloned().collect()
}

pub(crate) fn said_by<'a>(messages: &'a [Value], name: &str) -> Vec<&'a str> {
    messages
        .iter()
        .filter(|m| m["sender"]["name"] == name)
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_http_agents_secret_is_shown_once_and_every_turn_it_gets_is_signed() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Ideas?", "Good."], 0).await;
    let (scout, agent) = http_agent(&app, "Scout").await;
    assert!(scout["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(scout["endpoint"], agent.endpoint());
    let read = app
        .get_json(&format!("/api/v1/agents/{}", id(&scout)))
        .await;
    assert!(read.get("secret").is_none(), "{read}");
    let listed = app.get_json("/api/v1/agents").await;
    assert!(!listed.to_string().contains("whsec_"));

    let created = app
        .collaborate(&planner, &scout, json!({"message_cap": 4}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(said_by(&stored, "Scout"), ["Scout says 1", "Scout says 2"]);

    let received = agent.received();
    assert_eq!(received.len(), 2);
    for (request, message) in received
        .iter()
        .zip(stored.iter().filter(|m| m["sender"]["name"] == "Scout"))
    {
        assert!(request.signed, "every request carries a valid signature");
        let body = &request.body;
        assert_eq!(body["type"], "turn");
        assert_eq!(
            request.headers["webhook-id"],
            body["turn_id"].as_str().unwrap()
        );
        assert_eq!(
            body["turn_id"], message["turn_id"],
            "the turn id is the message's"
        );
        assert_eq!(body["collaboration_id"], created["id"]);
        assert_eq!(body["agent"]["name"], "Scout");
        assert_eq!(body["agent"]["address"], scout["address"]);
        assert_eq!(body["roster"][0]["role"], "principal");
        assert_eq!(body["roster"][1]["name"], "Scout");
        assert!(!body["instruction"].as_str().unwrap().is_empty());
        // The transcript so far, with seqs: everything before this turn.
        let seqs: Vec<i64> = body["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["seq"].as_i64().unwrap())
            .collect();
        let before = message["seq"].as_i64().unwrap();
        assert_eq!(seqs, (1..before).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn an_agent_that_checks_with_another_secret_refuses_and_the_collaboration_fails() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Ideas?"], 0).await;
    let (scout, agent) = http_agent(&app, "Scout").await;
    agent.trust("whsec_c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMgISE=");
    let created = app
        .collaborate(&planner, &scout, json!({"message_cap": 4}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["end_reason"], "error");
    let error = done["error_message"].as_str().unwrap();
    assert!(error.contains("Scout") && error.contains("401"), "{error}");
    assert_eq!(agent.received().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_slow_or_unavailable_agent_is_retried_with_the_same_turn_id() {
    let app = spawn_app_with(|c| c.remote.turn_timeout = Duration::from_millis(400)).await;
    let planner = app.scripted("Planner", &["Ideas?"], 0).await;
    let (scout, agent) = http_agent(&app, "Scout").await;
    agent.misstep(Misstep::Slow(Duration::from_secs(2)));
    agent.misstep(Misstep::Unavailable);
    let created = app
        .collaborate(&planner, &scout, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    let received = agent.received();
    assert_eq!(received.len(), 3, "a timeout, a 503, then the answer");
    let ids: Vec<&str> = received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one turn id: {ids:?}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(said_by(&stored, "Scout").len(), 1, "stored once");
    assert_eq!(stored[1]["turn_id"], ids[0]);
}

/// The error a collaboration fails with when its http agent first does `misstep`; the
/// agent's own view of what it was asked comes with it.
async fn failure_after(misstep: Misstep) -> (String, HttpAgent) {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Ideas?"], 0).await;
    let (scout, agent) = http_agent(&app, "Scout").await;
    agent.misstep(misstep);
    let created = app
        .collaborate(&planner, &scout, json!({"message_cap": 4}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["end_reason"], "error");
    (done["error_message"].as_str().unwrap().to_owned(), agent)
}

#[tokio::test]
async fn an_answer_that_is_not_a_turn_fails_the_collaboration_with_a_clear_error() {
    let (error, agent) = failure_after(Misstep::Garbage).await;
    assert!(
        error.starts_with("Scout failed: its answer is not {\"content\": \"…\"}")
            && error.contains("<html>Oops</html>"),
        "{error}"
    );
    assert_eq!(agent.received().len(), 1, "a bad answer is not asked again");
}

#[tokio::test]
async fn an_answer_too_large_is_refused_rather_than_stored() {
    let (error, _) = failure_after(Misstep::Huge).await;
    assert!(error.contains("larger than 262144 bytes"), "{error}");
}

#[tokio::test]
async fn remote_agents_need_a_url_the_outbound_guard_allows() {
    let app = spawn_app_with(|c| c.allow_private_urls = false).await;
    for (body, field, why) in [
        (
            json!({"name": "H", "kind": "http"}),
            "endpoint",
            "is required",
        ),
        (
            json!({"name": "H", "kind": "http", "endpoint": "http://127.0.0.1:9/turn"}),
            "endpoint",
            "loopback",
        ),
        (
            json!({"name": "H", "kind": "http", "endpoint": "ftp://example.com/"}),
            "endpoint",
            "http or https",
        ),
        (
            json!({"name": "A", "kind": "a2a"}),
            "card_url",
            "is required",
        ),
        (
            json!({"name": "A", "kind": "a2a", "card_url": "http://10.0.0.8/"}),
            "card_url",
            "private",
        ),
    ] {
        let refused = app.post("/api/v1/agents", &body).await;
        let problem = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{problem}"
        );
    }
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 0);
}

/// An `a2a` agent registered by the peer's base URL (its card is found at the well-known path).
async fn a2a_agent(app: &Api, name: &str, peer: &A2aPeer) -> Value {
    app.create_agent(json!({"name": name, "kind": "a2a", "card_url": peer.url}))
        .await
}

pub(crate) async fn with_fake_model(fake: &FakeModel) -> TestApp {
    let base = fake.base_url();
    spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await
}

#[tokio::test]
async fn an_a2a_agent_on_the_reference_sdk_takes_part_with_an_llm_principal() {
    let Some(peer) = A2aPeer::start("echo", &[]).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.reply_with(&["Let's plan Friday. Echo, thoughts?", "Then it's settled."]);
    let app = with_fake_model(&fake).await;
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let echo = a2a_agent(&app, "Echo", &peer).await;
    let created = app
        .collaborate(
            &host,
            &echo,
            json!({"message_cap": 4, "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Echo"),
        [
            "Echo heard: Host: Let's plan Friday. Echo, thoughts?",
            "Echo heard: Host: Then it's settled."
        ]
    );

    let requests = peer.requests();
    assert_eq!(peer.methods(), ["SendMessage", "SendMessage"]);
    let echo_turns: Vec<&Value> = stored
        .iter()
        .filter(|m| m["sender"]["name"] == "Echo")
        .collect();
    for (request, turn) in requests.iter().zip(echo_turns) {
        assert_eq!(request["headers"]["a2a-version"], "1.0");
        let message = &request["body"]["params"]["message"];
        assert_eq!(message["role"], "ROLE_USER");
        assert_eq!(
            message["contextId"], created["id"],
            "the context is the collaboration"
        );
        assert_eq!(
            message["messageId"], turn["turn_id"],
            "the message id is the turn's"
        );
    }
    // The first turn opens with the frame; later ones carry only what is new.
    let first = &requests[0]["body"]["params"]["message"]["parts"];
    assert!(first[0]["text"].as_str().unwrap().contains("Objective:"));
    let second: Vec<&str> = requests[1]["body"]["params"]["message"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(second, ["Host: Then it's settled."]);
}

#[tokio::test]
async fn an_a2a_task_is_followed_until_it_completes() {
    let Some(peer) = A2aPeer::start("task", &[]).await else {
        return;
    };
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Please book it."], 0).await;
    let tasker = a2a_agent(&app, "Tasker", &peer).await;
    let created = app
        .collaborate(&planner, &tasker, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Tasker"),
        ["task done: Planner: Please book it."]
    );
    assert_eq!(peer.methods(), ["SendMessage", "GetTask", "GetTask"]);
}

#[tokio::test]
async fn an_a2a_task_that_fails_fails_the_collaboration_with_its_reason() {
    let Some(peer) = A2aPeer::start("fail", &[]).await else {
        return;
    };
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Please book it."], 0).await;
    let failer = a2a_agent(&app, "Failer", &peer).await;
    let created = app
        .collaborate(&planner, &failer, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "failed");
    let error = done["error_message"].as_str().unwrap();
    assert!(
        error.contains("Failer failed: its task ended failed: cannot plan this"),
        "{error}"
    );
}

#[tokio::test]
async fn an_older_a2a_agent_is_spoken_to_in_0_3() {
    let Some(peer) = A2aPeer::start("echo", &["--v03"]).await else {
        return;
    };
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Hello?"], 0).await;
    let echo = a2a_agent(&app, "Echo", &peer).await;
    let created = app
        .collaborate(&planner, &echo, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(said_by(&stored, "Echo"), ["Echo heard: Planner: Hello?"]);
    let request = &peer.requests()[0];
    assert_eq!(request["body"]["method"], "message/send");
    let part = &request["body"]["params"]["message"]["parts"][0];
    assert_eq!(part["kind"], "text");
}

#[tokio::test]
async fn an_a2a_task_still_open_when_the_collaboration_stops_is_cancelled() {
    stopped_while_tasked_cancels_the_task(&[]).await;
}

/// The stop comes while the agent is still answering the send: Skein does not know the
/// task's id yet. The task is cancelled all the same, once the answer names it.
#[tokio::test]
async fn a_task_whose_send_was_still_unanswered_at_the_stop_is_cancelled() {
    stopped_while_tasked_cancels_the_task(&["--send-delay-ms", "700"]).await;
}

/// Stops a collaboration as soon as its A2A agent (started with `peer_flags`) has been sent
/// its turn, and waits for the agent to be asked to cancel the task.
async fn stopped_while_tasked_cancels_the_task(peer_flags: &[&str]) {
    let Some(peer) = A2aPeer::start("task", peer_flags).await else {
        return;
    };
    // Asked about rarely, so the task is still open when the stop comes.
    let app = spawn_app_with(|c| c.remote.poll_interval = Duration::from_secs(30)).await;
    let tasker = a2a_agent(&app, "Tasker", &peer).await;
    let other = app.scripted("Other", &["hm"], 0).await;
    let created = app
        .collaborate(&tasker, &other, json!({"message_cap": 2}))
        .await;
    wait_for(|| async {
        peer.methods()
            .contains(&"SendMessage".to_owned())
            .then_some(())
    })
    .await;
    let stopped = app
        .post(
            &format!("/api/v1/collaborations/{}/stop", id(&created)),
            &json!({}),
        )
        .await;
    assert_eq!(stopped.status(), StatusCode::OK);
    wait_for(|| async {
        peer.methods()
            .contains(&"CancelTask".to_owned())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_mixed_collaboration_of_every_kind_runs_to_its_summary() {
    let Some(peer) = A2aPeer::start("echo", &[]).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.reply_with(&[
        "Host opens: Friday night.",
        "Guest: tapas?",
        "Host: settled.",
    ]);
    let app = with_fake_model(&fake).await;
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let guest = app
        .create_agent(json!({"name": "Guest", "kind": "llm"}))
        .await;
    let (courier, _agent) = http_agent(&app, "Courier").await;
    let echo = a2a_agent(&app, "Echo", &peer).await;
    let alice = app
        .create_agent(json!({"name": "Alice", "kind": "human"}))
        .await;
    // The principal by address; the participants by UUID and by address.
    let created = app
        .create_collaboration(json!({
            "principal": host["address"],
            "participants": [id(&guest), courier["address"], id(&echo), alice["address"]],
            "message_cap": 6, "timeout_window": 30, "strategy": "round_robin",
            "evaluate_objective_completion": false,
        }))
        .await;
    let mut viewer: Viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    loop {
        let frame = viewer.frame().await;
        if frame["type"] == "turn" && frame["sender"]["name"] == "Alice" {
            break;
        }
    }
    let posted = app
        .post(
            &format!(
                "/api/v1/channels/{}/messages",
                created["channel_id"].as_str().unwrap()
            ),
            &json!({"sender": id(&alice), "content": "Count me in!"}),
        )
        .await;
    assert_eq!(posted.status(), StatusCode::CREATED);
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["headline"], "Fake headline");
    let stored = stored_messages(&app, &created).await;
    let speakers: Vec<(&str, &str)> = stored
        .iter()
        .map(|m| {
            (
                m["sender"]["name"].as_str().unwrap(),
                m["sender"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        speakers,
        [
            ("Host", "llm"),
            ("Guest", "llm"),
            ("Courier", "http"),
            ("Echo", "a2a"),
            ("Alice", "human"),
            ("Host", "llm")
        ]
    );
    assert_eq!(stored[2]["content"], "Courier says 1");
    assert_eq!(stored[3]["content"], "Echo heard: Courier: Courier says 1");
}

#[tokio::test]
async fn the_readme_example_http_agent_takes_part() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no python3: skipping");
        return;
    }
    let app = spawn_app().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let planner = app
        .scripted("Planner", &["Shall we meet at eight?"], 0)
        .await;
    let example = app
        .create_agent(json!({"name": "Example", "kind": "http",
                             "endpoint": format!("http://127.0.0.1:{port}/")}))
        .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http_agent.py");
    let _agent = tokio::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .env("SKEIN_AGENT_SECRET", example["secret"].as_str().unwrap())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(|| async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let created = app
        .collaborate(&planner, &example, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Example"),
        ["Example here. You said: Shall we meet at eight?"]
    );
}
