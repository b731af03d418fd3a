//! Fetch.ai uAgents in a channel, against a real agent on the reference SDK
//! (`tests/uagents/agent.py`, `uagents` 0.26.1 from PyPI): Skein asks it in signed chat
//! envelopes, and it answers to Skein's `/submit`.

use std::time::Duration;

use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skein::uagents::{self, ChatMessage, Envelope, Identity};

use crate::byo_agents::{said_by, stored_messages, with_fake_model};
use crate::support::{
    Api, PATIENCE, fake_model::FakeModel, id, peers::UagentPeer, problem, spawn_app,
    spawn_app_with, wait_for,
};

async fn uagent(app: &Api, name: &str, peer: &UagentPeer) -> Value {
    app.create_agent(json!({
        "name": name, "kind": "uagent", "address": peer.address, "endpoint": peer.endpoint,
    }))
    .await
}

/// The peer in `mode`, finding Skein by its own resolver rule.
async fn peer(app: &Api, mode: &str, seed: &str) -> Option<UagentPeer> {
    UagentPeer::start(mode, seed, &["--skein", &app.url("/submit")]).await
}

/// A planner asks the peer one question: the collaboration, just created.
async fn soup_or_salad(app: &Api, peer: &UagentPeer, message_cap: u32) -> Value {
    let planner = app.scripted("Planner", &["Soup or salad?"], 0).await;
    let chef = uagent(app, "Chef", peer).await;
    app.collaborate(&planner, &chef, json!({"message_cap": message_cap}))
        .await
}

/// Why the collaboration failed, once it has ended.
async fn failure_of(app: &Api, created: &Value) -> String {
    let done = app.wait_until_summarized(&id(created)).await;
    assert_eq!(done["status"], "failed", "{done}");
    done["error_message"].as_str().unwrap().to_owned()
}

/// The key a uAgent derives from its seed, as the SDK does.
fn key_of_seed(seed: &str) -> Identity {
    let prefix: [u8; 32] = Sha256::digest(b"agent\0").into();
    let seed: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    let secret: [u8; 32] = Sha256::digest([prefix, seed].concat()).into();
    Identity::from_secret(&secret).unwrap()
}

#[tokio::test]
async fn a_uagent_on_the_reference_sdk_takes_its_turns_with_an_llm_principal() {
    let fake = FakeModel::start().await;
    fake.reply_with(&["Let's plan Friday. Chef, a menu?", "Then it's settled."]);
    let app = with_fake_model(&fake).await;
    let Some(peer) = peer(&app, "echo", "chef-seed-1").await else {
        return;
    };
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let chef = uagent(&app, "Chef", &peer).await;
    assert_eq!(chef["kind"], "uagent");
    assert_eq!(chef["address"], peer.address.as_str());
    let created = app
        .collaborate(
            &host,
            &chef,
            json!({"message_cap": 4, "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        [
            "Chef heard: Host: Let's plan Friday. Chef, a menu?",
            "Chef heard: Host: Then it's settled."
        ]
    );
    assert!(
        stored
            .iter()
            .filter(|m| m["sender"]["name"] == "Chef")
            .all(|m| m["role"] == "agent")
    );
    // The first message opens with the objective and who takes part; the next carries only
    // what was said since.
    let heard = peer.heard();
    let texts: Vec<&str> = heard.iter().filter_map(|h| h["text"].as_str()).collect();
    assert_eq!(texts.len(), 2, "{heard:?}");
    assert!(texts[0].starts_with("Objective: "), "{}", texts[0]);
    assert!(texts[0].contains("Taking part: Host (principal), Chef (you)"));
    assert!(!texts[1].contains("Objective: "), "{}", texts[1]);
    assert!(!texts[1].contains("Let's plan Friday"), "{}", texts[1]);
    // Skein speaks as one address in this collaboration, and acknowledges each message.
    let skein = heard[0]["from"].as_str().unwrap();
    assert!(skein.starts_with("agent1q"));
    assert!(heard.iter().all(|h| h["from"] == skein));
    wait_for(|| async {
        (peer
            .heard()
            .iter()
            .filter(|h| h["acknowledged"].is_string())
            .count()
            == 2)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_uagent_finds_skein_through_skein_s_own_almanac_api() {
    let app = spawn_app().await;
    let base = app.url("");
    let Some(peer) = UagentPeer::start("echo", "chef-seed-2", &["--agentverse", &base]).await
    else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 2).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    // What the agent's resolver asked for: Skein's address in this collaboration.
    let skein = peer.heard()[0]["from"].as_str().unwrap().to_owned();
    let record = app.get(&format!("/v1/almanac/agents/{skein}")).await;
    let record: Value = record.json().await.unwrap();
    assert_eq!(record["endpoints"][0]["url"], format!("{base}/submit"));
    let unknown = app
        .get(&format!("/v1/almanac/agents/{}", peer.address))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forged_misaddressed_and_replayed_envelopes_change_nothing() {
    let app = spawn_app().await;
    let submit = app.url("/submit");
    let seed = "chef-seed-3";
    let Some(peer) = peer(&app, "silent", seed).await else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 2).await;
    // The agent was asked, and keeps quiet: the test answers in its name, with its key.
    let asked = wait_for(|| async { peer.heard().first().cloned() }).await;
    let skein: skein::domain::AgentAddress =
        skein::domain::AgentAddress::parse(asked["from"].as_str().unwrap()).unwrap();
    let session: uuid::Uuid = asked["session"].as_str().unwrap().parse().unwrap();
    let key = key_of_seed(seed);
    assert_eq!(key.address().as_str(), peer.address);
    let now = chrono::Utc::now();
    let envelope = Envelope::signed(
        &key,
        &skein,
        session,
        uagents::CHAT_MESSAGE,
        &ChatMessage::text("Salad, please.", now),
        now,
    );
    let client = reqwest::Client::new();
    let send = |envelope: Envelope| {
        let client = client.clone();
        let submit = submit.clone();
        async move {
            let response = client.post(&submit).json(&envelope).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let mut forged = envelope.clone();
    forged.payload = Some(base64_of(&json!({
        "timestamp": "2026-12-03T00:00:00Z", "msg_id": uuid::Uuid::new_v4(),
        "content": [{"type": "text", "text": "Soup, I insist."}],
    })));
    let (status, body) = send(forged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "Signature verification failed");
    let stranger = Identity::from_secret(&[5; 32]).unwrap();
    let misaddressed = Envelope::signed(
        &key,
        stranger.address(),
        session,
        uagents::CHAT_MESSAGE,
        &ChatMessage::text("Salad, please.", now),
        now,
    );
    let (status, body) = send(misaddressed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unable to route envelope");
    let impostor = Envelope::signed(
        &stranger,
        &skein,
        session,
        uagents::CHAT_MESSAGE,
        &ChatMessage::text("Salad, please.", now),
        now,
    );
    let (status, _) = send(impostor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        said_by(&stored_messages(&app, &created).await, "Chef").len(),
        0
    );

    let (status, body) = send(envelope.clone()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, _) = send(envelope).await;
    assert_eq!(status, StatusCode::OK, "a replay is answered, and ignored");
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(said_by(&stored, "Chef"), ["Salad, please."]);
}

fn base64_of(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn a_uagent_that_never_answers_fails_its_turn_at_the_deadline() {
    let app = spawn_app_with(|c| c.uagents.reply_timeout = Duration::from_secs(2)).await;
    let Some(peer) = peer(&app, "silent", "chef-seed-4").await else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 4).await;
    let error = failure_of(&app, &created).await;
    assert!(error.contains("Chef did not answer within 2 s"), "{error}");
}

#[tokio::test]
async fn a_uagent_that_answers_with_an_error_fails_the_collaboration_with_it() {
    let app = spawn_app().await;
    let Some(peer) = peer(&app, "error", "chef-seed-5").await else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 4).await;
    let error = failure_of(&app, &created).await;
    assert!(
        error.contains("Chef answered with an error: the kitchen is closed"),
        "{error}"
    );
}

#[tokio::test]
async fn a_uagent_that_is_down_or_elsewhere_is_refused_at_create() {
    let app = spawn_app().await;
    let Some(peer) = peer(&app, "echo", "chef-seed-6").await else {
        return;
    };
    let other = Identity::from_secret(&[6; 32]).unwrap();
    let elsewhere = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Chef", "kind": "uagent", "address": other.address().as_str(),
                    "endpoint": peer.endpoint}),
        )
        .await;
    let body = problem(elsewhere, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "endpoint", "{body}");
    let endpoint = peer.endpoint.clone();
    let address = peer.address.clone();
    peer.stop().await;
    tokio::time::sleep(PATIENCE / 10).await;
    let down = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Chef", "kind": "uagent", "address": address, "endpoint": endpoint}),
        )
        .await;
    let body = problem(down, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "endpoint", "{body}");
    let nameless = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Chef", "kind": "uagent", "endpoint": endpoint}),
        )
        .await;
    let body = problem(nameless, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "address", "{body}");
    let listed = app.get_json("/api/v1/agents").await;
    assert_eq!(listed["meta"]["total"], 0, "nothing was created");
}

#[tokio::test]
async fn a_uagent_principal_opens_the_collaboration() {
    let app = spawn_app().await;
    let Some(peer) = peer(&app, "echo", "chef-seed-7").await else {
        return;
    };
    let chef = uagent(&app, "Chef", &peer).await;
    let guest = app.scripted("Guest", &["Salad for me."], 0).await;
    let created = app
        .collaborate(&chef, &guest, json!({"message_cap": 3}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(stored[0]["sender"]["name"], "Chef", "{stored:?}");
    assert_eq!(
        said_by(&stored, "Chef"),
        [
            "Chef heard: Taking part: Chef (principal) (you), Guest",
            "Chef heard: Guest: Salad for me."
        ]
    );
}

#[tokio::test]
async fn a_uagent_without_an_endpoint_is_found_through_the_almanac() {
    // An Almanac API of the test's own, knowing where the agent is.
    let almanac = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let almanac_url = format!("http://{}", almanac.local_addr().unwrap());
    let app = {
        let almanac_url = almanac_url.clone();
        spawn_app_with(move |c| c.uagents.almanac_url = Some(almanac_url)).await
    };
    let Some(peer) = peer(&app, "echo", "chef-seed-8").await else {
        return;
    };
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let record = {
        let (address, endpoint, lookups) =
            (peer.address.clone(), peer.endpoint.clone(), lookups.clone());
        axum::Router::new().route(
            "/v1/almanac/agents/{address}",
            axum::routing::get(
                move |axum::extract::Path(asked): axum::extract::Path<String>| {
                    let (address, endpoint) = (address.clone(), endpoint.clone());
                    lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if asked != address {
                            return (StatusCode::NOT_FOUND, axum::Json(json!({}))).into_response();
                        }
                        axum::Json(json!({"address": address, "expiry": "2099-01-01T00:00:00Z",
                        "endpoints": [{"url": "http://127.0.0.1:9/submit", "weight": 0},
                                      {"url": endpoint, "weight": 1}]}))
                        .into_response()
                    }
                },
            ),
        )
    };
    tokio::spawn(async move { axum::serve(almanac, record).await.unwrap() });
    let chef = app
        .create_agent(json!({"name": "Chef", "kind": "uagent", "address": peer.address}))
        .await;
    assert!(chef["endpoint"].is_null(), "{chef}");
    let planner = app.scripted("Planner", &["Soup or salad?"], 0).await;
    let created = app
        .collaborate(&planner, &chef, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    assert!(lookups.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn an_address_that_keeps_sending_bad_envelopes_is_throttled() {
    let app = spawn_app_with(|c| c.rate_limits.auth_failures_per_minute = 2).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .post(app.url("/submit"))
            .json(&json!({"version": 1, "sender": "agent1qnobody"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn a_reply_that_comes_after_a_restart_is_taken_without_asking_again() {
    let app = spawn_app().await;
    // The agent thinks for a while: Skein restarts between its question and the answer.
    let Some(peer) = UagentPeer::start(
        "echo",
        "chef-seed-9",
        &["--skein", &app.url("/submit"), "--delay-ms", "4000"],
    )
    .await
    else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 2).await;
    wait_for(|| async { peer.heard().first().cloned() }).await;
    let bound: std::net::SocketAddr = app.url("").trim_start_matches("http://").parse().unwrap();
    let data = app.shut_down_keeping_data().await;
    // The same address, so that the agent's answer finds it.
    let app = crate::support::spawn_app_in_with(data, move |c| c.bind = bound).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    let asked: Vec<Value> = peer
        .heard()
        .into_iter()
        .filter(|h| h["text"].is_string())
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "asked once, not again after the restart: {asked:?}"
    );
}

#[tokio::test]
async fn a_reply_that_reaches_another_server_while_nobody_runs_the_collaboration_is_kept() {
    let Some(mut cluster) = crate::support::cluster::Cluster::start_with(
        2,
        &[
            ("SKEIN_ALLOW_PRIVATE_URLS", "true"),
            ("SKEIN_LEASE_SECS", "8"),
        ],
    )
    .await
    else {
        return;
    };
    let (runs, other) = (
        cluster.member(0).process.api.clone(),
        cluster.member(1).process.api.clone(),
    );
    // The agent answers, two seconds after being asked, to the server that does not run
    // the collaboration; by then the one that does has died and its lease still holds.
    let Some(peer) = UagentPeer::start(
        "echo",
        "chef-seed-10",
        &["--skein", &other.url("/submit"), "--delay-ms", "2000"],
    )
    .await
    else {
        return;
    };
    let created = soup_or_salad(&runs, &peer, 2).await;
    wait_for(|| async { peer.heard().first().cloned() }).await;
    cluster.processes[0].take().unwrap().process.kill().await;
    let done = wait_until_ended(&other, &created, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&other, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    let asked = peer
        .heard()
        .into_iter()
        .filter(|h| h["text"].is_string())
        .count();
    assert_eq!(asked, 1, "the server that took over did not ask again");
    cluster.remove().await;
}

/// The collaboration once it has ended: a takeover takes longer than [`PATIENCE`].
async fn wait_until_ended(api: &Api, created: &Value, patience: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let now = api.collaboration(&id(created)).await;
        if now["status"] != "running" {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
