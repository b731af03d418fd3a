//! Fetch.ai uAgents in a channel, against a real agent on the reference SDK
//! (`tests/uagents/agent.py`, `uagents` 0.26.1 from PyPI): Skein asks it in signed chat
//! envelopes, and it answers to Skein's `/submit`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

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
    // The agent registered with Skein as it started: its address is enough to add it.
    let chef = wait_for(|| async {
        let created = app
            .post(
                "/api/v1/agents",
                &json!({"name": "Chef", "kind": "uagent", "address": peer.address}),
            )
            .await;
        (created.status() == StatusCode::CREATED).then_some(created)
    })
    .await;
    let chef: Value = chef.json().await.unwrap();
    assert_eq!(chef["endpoint"], peer.endpoint.as_str());
    let created = {
        let planner = app.scripted("Planner", &["Soup or salad?"], 0).await;
        app.collaborate(&planner, &chef, json!({"message_cap": 2}))
            .await
    };
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

    // A registration the SDK signed is taken; the same with a changed endpoint is not.
    let signed = peer.python(SDK_SIGNS_REGISTRATION, "").await;
    let mut registration: Value = serde_json::from_str(&signed).unwrap();
    let client = reqwest::Client::new();
    let register = |registration: Value| {
        let (client, url) = (client.clone(), app.url("/v1/almanac/agents"));
        async move {
            client
                .post(url)
                .json(&registration)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(register(registration.clone()).await, StatusCode::OK);
    registration["endpoints"][0]["url"] = json!("http://127.0.0.1:10/submit");
    assert_eq!(register(registration).await, StatusCode::BAD_REQUEST);
}

/// Prints a registration the SDK signed, its metadata not all ASCII.
const SDK_SIGNS_REGISTRATION: &str = "\
from uagents_core.identity import Identity
from uagents_core.registration import AgentRegistrationAttestation
from uagents_core.types import AgentEndpoint
identity = Identity.from_seed('registration-seed', 0)
registration = AgentRegistrationAttestation(
    agent_identifier=f'agent://{identity.address}',
    protocols=['proto:30a801ed3a83f9a0ff0a9f1e6fe958cb91da1fc2218b153df7b6cbf87bd33d62'],
    endpoints=[AgentEndpoint(url='http://127.0.0.1:9/submit', weight=1)],
    metadata={'city': 'Zürich'},
)
registration.sign(identity)
print(registration.model_dump_json())
";

#[tokio::test]
async fn forged_misaddressed_and_replayed_envelopes_change_nothing() {
    let app = spawn_app().await;
    let submit = app.url("/submit");
    let seed = "chef-seed-3";
    let Some(peer) = peer(&app, "silent", seed).await else {
        return;
    };
    let created = soup_or_salad(&app, &peer, 4).await;
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
    // Chef's next turn: the same envelope again is not its answer, a new one is.
    wait_for(|| async {
        let asked = peer
            .heard()
            .iter()
            .filter(|h| h["text"].is_string())
            .count();
        (asked == 2).then_some(())
    })
    .await;
    let (status, _) = send(envelope).await;
    assert_eq!(status, StatusCode::OK, "a replay is answered, and ignored");
    let now = chrono::Utc::now();
    let (status, _) = send(Envelope::signed(
        &key,
        &skein,
        session,
        uagents::CHAT_MESSAGE,
        &ChatMessage::text("Soup after all.", now),
        now,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Salad, please.", "Soup after all."]
    );
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

/// Prints whether the SDK's own check accepts the registration on stdin.
const SDK_VERIFIES_REGISTRATION: &str = "\
import json, sys
from uagents_core.registration import AgentRegistrationAttestation
registration = AgentRegistrationAttestation.model_validate(json.load(sys.stdin))
try:
    print(registration.verify())
except Exception:
    print(False)
";

/// An Almanac API of the test's own: it knows where the agents it is told of are, and keeps
/// the registrations it is sent.
#[derive(Clone, Default)]
struct FakeAlmanac {
    agents: Arc<Mutex<HashMap<String, String>>>,
    lookups: Arc<Mutex<Vec<String>>>,
    registrations: Arc<Mutex<Vec<Value>>>,
}

impl FakeAlmanac {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .route(
                "/v1/almanac/agents/{address}",
                axum::routing::get(Self::lookup),
            )
            .route("/v1/almanac/agents", axum::routing::post(Self::register))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    async fn lookup(
        axum::extract::State(almanac): axum::extract::State<Self>,
        axum::extract::Path(address): axum::extract::Path<String>,
    ) -> axum::response::Response {
        almanac.lookups.lock().unwrap().push(address.clone());
        let Some(endpoint) = almanac.agents.lock().unwrap().get(&address).cloned() else {
            return (StatusCode::NOT_FOUND, axum::Json(json!({}))).into_response();
        };
        axum::Json(json!({"address": address, "expiry": "2099-01-01T00:00:00Z",
            "endpoints": [{"url": "http://127.0.0.1:9/submit", "weight": 0},
                          {"url": endpoint, "weight": 1}]}))
        .into_response()
    }

    async fn register(
        axum::extract::State(almanac): axum::extract::State<Self>,
        axum::Json(registration): axum::Json<Value>,
    ) -> axum::Json<Value> {
        almanac.registrations.lock().unwrap().push(registration);
        axum::Json(json!({}))
    }
}

#[tokio::test]
async fn through_an_almanac_skein_finds_an_agent_and_registers_where_it_answers() {
    let almanac = FakeAlmanac::default();
    let almanac_url = almanac.start().await;
    let app = spawn_app_with(move |c| c.uagents.almanac_url = Some(almanac_url)).await;
    let Some(peer) = peer(&app, "echo", "chef-seed-8").await else {
        return;
    };
    almanac
        .agents
        .lock()
        .unwrap()
        .insert(peer.address.clone(), peer.endpoint.clone());
    let chef = app
        .create_agent(json!({"name": "Chef", "kind": "uagent", "address": peer.address}))
        .await;
    assert!(chef["endpoint"].is_null(), "{chef}");
    let created = {
        let planner = app.scripted("Planner", &["Soup or salad?"], 0).await;
        app.collaborate(&planner, &chef, json!({"message_cap": 2}))
            .await
    };
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    assert!(almanac.lookups.lock().unwrap().contains(&peer.address));

    // Skein registered the address it speaks as there, at its own /submit, signed so that
    // the SDK's own check accepts it.
    let skein = peer.heard()[0]["from"].as_str().unwrap().to_owned();
    let registrations = almanac.registrations.lock().unwrap().clone();
    assert_eq!(
        registrations.len(),
        1,
        "once, not every turn: {registrations:?}"
    );
    let registration = &registrations[0];
    assert_eq!(registration["agent_identifier"], format!("agent://{skein}"));
    assert_eq!(
        registration["endpoints"][0]["url"],
        format!("{}/submit", app.url(""))
    );
    assert_eq!(
        peer.python(SDK_VERIFIES_REGISTRATION, &registration.to_string(),)
            .await,
        "True"
    );
    let mut forged = registration.clone();
    forged["endpoints"][0]["url"] = json!("http://127.0.0.1:9/submit");
    assert_eq!(
        peer.python(SDK_VERIFIES_REGISTRATION, &forged.to_string(),)
            .await,
        "False"
    );
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
    let Some((app, done, peer)) = restarted_while_the_agent_thinks("chef-seed-9", |_, _| {}).await
    else {
        return;
    };
    answered_once(&app, &done, &peer).await;
}

#[tokio::test]
async fn a_reply_to_the_address_of_a_secret_key_being_rotated_out_still_counts() {
    // The key the server made on first start is rotated out while the agent thinks.
    let rotated = |config: &mut skein::config::Config, data: &std::path::Path| {
        let old = std::fs::read_to_string(data.join("secret.key")).unwrap();
        let new = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        };
        config.secret_key = Some(new.into());
        config.previous_secret_keys = vec![old.trim().to_owned().into()];
    };
    let Some((app, done, peer)) = restarted_while_the_agent_thinks("chef-seed-12", rotated).await
    else {
        return;
    };
    answered_once(&app, &done, &peer).await;
}

/// A planner asks a uAgent that thinks for four seconds, and Skein restarts meanwhile on the
/// same address (so the answer finds it), its configuration changed by `adjust` (given the
/// data directory). The server after the restart, the collaboration once summarized, the
/// agent.
async fn restarted_while_the_agent_thinks(
    seed: &str,
    adjust: impl FnOnce(&mut skein::config::Config, &std::path::Path) + Send + 'static,
) -> Option<(crate::support::TestApp, Value, UagentPeer)> {
    let app = spawn_app().await;
    let peer = UagentPeer::start(
        "echo",
        seed,
        &["--skein", &app.url("/submit"), "--delay-ms", "4000"],
    )
    .await?;
    let created = soup_or_salad(&app, &peer, 2).await;
    wait_for(|| async { peer.heard().first().cloned() }).await;
    // Past the moment Skein notes what it asked (just after the agent took the message).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bound: std::net::SocketAddr = app.url("").trim_start_matches("http://").parse().unwrap();
    let data = app.shut_down_keeping_data().await;
    let dir = data.path().to_path_buf();
    let app = crate::support::spawn_app_in_with(data, move |config| {
        config.bind = bound;
        adjust(config, &dir);
    })
    .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    Some((app, done, peer))
}

/// The collaboration completed with the agent's one answer, and the agent was asked once.
async fn answered_once(api: &Api, done: &Value, peer: &UagentPeer) {
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(api, done).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef heard: Planner: Soup or salad?"]
    );
    let asked: Vec<Value> = peer
        .heard()
        .into_iter()
        .filter(|h| h["text"].is_string())
        .collect();
    assert_eq!(asked.len(), 1, "asked once, not again: {asked:?}");
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
    // Skein notes what it asked once the agent has taken the message: a kill in between
    // (a few milliseconds) leaves no note, and the next runner asks again. That window is
    // not what this test is about; the agent answers two seconds later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.processes[0].take().unwrap().process.kill().await;
    let done = wait_until_ended(&other, &created, Duration::from_secs(30)).await;
    answered_once(&other, &done, &peer).await;
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

#[tokio::test]
async fn the_readme_s_example_uagent_takes_part() {
    let Some(python) = crate::support::peers::uagents_python() else {
        return;
    };
    let app = spawn_app().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/uagent_agent.py");
    let mut example = tokio::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .env("SKEIN_URL", app.url(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        example.stdout.take().unwrap(),
    ));
    let address = tokio::time::timeout(PATIENCE * 4, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the example runs");
            if line.starts_with("agent1q") {
                return line;
            }
        }
    })
    .await
    .expect("the example prints its address");
    let endpoint = format!("http://127.0.0.1:{port}/submit");
    let chef = wait_for(|| async {
        let created = app
            .post(
                "/api/v1/agents",
                &json!({"name": "Chef", "kind": "uagent", "address": address, "endpoint": endpoint}),
            )
            .await;
        // Refused while it is still starting.
        (created.status() == StatusCode::CREATED).then_some(created)
    })
    .await;
    let chef: Value = chef.json().await.unwrap();
    let planner = app
        .scripted("Planner", &["Shall we meet at eight?"], 0)
        .await;
    let created = app
        .collaborate(&planner, &chef, json!({"message_cap": 2}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = stored_messages(&app, &created).await;
    assert_eq!(
        said_by(&stored, "Chef"),
        ["Chef here. Noted: Planner: Shall we meet at eight?"]
    );
}

#[tokio::test]
async fn a_uagent_that_is_down_by_its_first_turn_fails_it_saying_so() {
    let app = spawn_app().await;
    let Some(peer) = peer(&app, "echo", "chef-seed-11").await else {
        return;
    };
    let planner = app.scripted("Planner", &["Soup or salad?"], 0).await;
    let chef = uagent(&app, "Chef", &peer).await;
    peer.stop().await;
    let created = app
        .collaborate(&planner, &chef, json!({"message_cap": 2}))
        .await;
    let error = failure_of(&app, &created).await;
    assert!(
        error.starts_with("Chef failed: it is not ready: the agent could not be reached"),
        "{error}"
    );
}

#[tokio::test]
async fn a_uagent_can_be_checked_and_says_when_it_is_down() {
    let app = spawn_app().await;
    let Some(chef) = peer(&app, "echo", "chef-seed-check").await else {
        return;
    };
    let agent = uagent(&app, "Chef", &chef).await;
    let path = format!("/api/v1/agents/{}/check", id(&agent));
    let up: Value = app.post(&path, &json!({})).await.json().await.unwrap();
    assert_eq!(up, json!({"ready": true, "endpoint": chef.endpoint}));
    chef.stop().await;
    let down: Value = app.post(&path, &json!({})).await.json().await.unwrap();
    assert_eq!(down["ready"], false, "{down}");
    assert!(
        down["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{down}"
    );
    // Other kinds are not checked.
    let scripted = app.scripted("Planner", &["Soup?"], 0).await;
    let refused = app
        .post(
            &format!("/api/v1/agents/{}/check", id(&scripted)),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
}
