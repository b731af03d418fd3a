//! People in a collaboration: a human's turn waits for them (the inactivity window still
//! applies), and a person may speak out of turn where the collaboration allows it, over
//! REST or the WebSocket.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, Viewer, default_provider,
    fake_model::{FakeModel, Fault, Purpose},
    id, messages,
    peers::HttpAgent,
    problem, spawn_app, spawn_app_with, wait_for,
};

async fn person(app: &Api, name: &str) -> Value {
    app.create_agent(json!({"name": name, "kind": "human"}))
        .await
}

/// Frames until the `turn` frame that gives the turn to `name`.
async fn until_turn_of(viewer: &mut Viewer, name: &str) -> Value {
    loop {
        let frame = viewer.frame().await;
        if frame["type"] == "turn" && frame["sender"]["name"] == name {
            return frame;
        }
    }
}

fn post_path(collaboration: &Value) -> String {
    format!(
        "/api/v1/channels/{}/messages",
        collaboration["channel_id"].as_str().unwrap()
    )
}

fn contents(history: &[Value]) -> Vec<String> {
    messages(history)
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_human_whose_turn_it_is_is_waited_for_and_speaks_over_rest() {
    let app = spawn_app().await;
    let planner = app
        .scripted(
            "Planner",
            &["Alice, where shall we go?", "Great, booked."],
            0,
        )
        .await;
    let alice = person(&app, "Alice").await;
    let created = app
        .collaborate(&planner, &alice, json!({"message_cap": 3}))
        .await;
    let mut viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    let turn = until_turn_of(&mut viewer, "Alice").await;
    assert_eq!(turn["sender"]["kind"], "human");
    assert_eq!(
        app.collaboration(&id(&created)).await["message_count"],
        1,
        "nothing happens while the engine waits for her"
    );

    let response = app
        .post(
            &post_path(&created),
            &json!({"sender": alice["address"], "content": "The jazz bar!"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["type"], "message");
    assert_eq!(stored["seq"], 2);
    assert_eq!(stored["role"], "human");
    assert_eq!(stored["sender"]["name"], "Alice");
    assert_eq!(
        stored["turn_id"], turn["turn_id"],
        "her message is her turn"
    );

    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["message_count"], 3);
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(
        contents(&history),
        [
            "Alice, where shall we go?",
            "The jazz bar!",
            "Great, booked."
        ]
    );
}

#[tokio::test]
async fn a_human_who_never_answers_ends_it_with_the_inactivity_timeout_on_time() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Alice?"], 0).await;
    let alice = person(&app, "Alice").await;
    let created = app
        .collaborate(
            &planner,
            &alice,
            json!({"message_cap": 5, "timeout_window": 1}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "inactivity_timeout");
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let asked: DateTime<Utc> = history[0]["created_at"].as_str().unwrap().parse().unwrap();
    let ended: DateTime<Utc> = done["ended_at"].as_str().unwrap().parse().unwrap();
    let waited = (ended - asked).to_std().unwrap();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(2500),
        "ended {waited:?} after the last message, for a 1-second window"
    );
}

#[tokio::test]
async fn a_person_may_interject_where_allowed_and_the_next_turn_sees_it() {
    let app = spawn_app().await;
    let planner = app
        .scripted("Planner", &["Ideas for Friday?", "Tapas then."], 1500)
        .await;
    let courier = HttpAgent::start("Courier").await;
    let remote = app
        .create_agent(json!({"name": "Courier", "kind": "http", "endpoint": courier.endpoint()}))
        .await;
    courier.trust(remote["secret"].as_str().unwrap());
    let alice = person(&app, "Alice").await;
    let created = app
        .create_collaboration(json!({
            "principal": id(&planner), "participants": [id(&remote), id(&alice)],
            "message_cap": 3, "timeout_window": 30, "strategy": "round_robin",
        }))
        .await;
    // Out of turn, while the Planner is still thinking (it takes 1.5 s).
    let response = app
        .post(
            &post_path(&created),
            &json!({"sender": id(&alice), "content": "Somewhere quiet, please."}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["seq"], 1);

    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(
        contents(&history),
        [
            "Somewhere quiet, please.",
            "Ideas for Friday?",
            "Courier says 1"
        ],
        "her message counts towards the cap of 3"
    );
    let asked = &courier.received()[0].body;
    let seen: Vec<&str> = asked["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["content"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["Somewhere quiet, please.", "Ideas for Friday?"]);
}

#[tokio::test]
async fn without_interjections_a_person_speaks_only_in_turn() {
    let app = spawn_app().await;
    let planner = app
        .scripted("Planner", &["Alice, your call.", "Done."], 1500)
        .await;
    let alice = person(&app, "Alice").await;
    let created = app
        .collaborate(
            &planner,
            &alice,
            json!({"message_cap": 3, "allow_interjections": false}),
        )
        .await;
    let mut viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    // The Planner is still thinking (it takes 1.5 s): not her turn.
    let early = app
        .post(
            &post_path(&created),
            &json!({"sender": id(&alice), "content": "Me first!"}),
        )
        .await;
    let refusal = problem(early, StatusCode::CONFLICT).await;
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("not your turn"),
        "{refusal}"
    );
    until_turn_of(&mut viewer, "Alice").await;
    let in_turn = app
        .post(
            &post_path(&created),
            &json!({"sender": id(&alice), "content": "Tapas."}),
        )
        .await;
    assert_eq!(in_turn.status(), StatusCode::CREATED);
    app.wait_until_summarized(&id(&created)).await;
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(contents(&history), ["Alice, your call.", "Tapas.", "Done."]);
}

#[tokio::test]
async fn a_person_speaks_over_the_websocket_and_sees_their_message_come_back() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Alice?", "Thanks."], 0).await;
    let alice = person(&app, "Alice").await;
    let created = app
        .collaborate(&planner, &alice, json!({"message_cap": 3}))
        .await;
    let mut viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    until_turn_of(&mut viewer, "Alice").await;
    // The only human taking part: no need to say who speaks.
    viewer
        .send(json!({"type": "message", "content": "Hello from the socket"}))
        .await;
    let mine = viewer.until("message").await.pop().unwrap();
    assert_eq!(mine["content"], "Hello from the socket");
    assert_eq!(mine["role"], "human");
    assert_eq!(mine["seq"], 2);
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["message_count"], 3);
}

#[tokio::test]
async fn only_a_human_participant_of_a_running_collaboration_may_post() {
    let app = spawn_app_with(|_| {}).await;
    let planner = app.scripted("Planner", &["Alice?"], 0).await;
    let alice = person(&app, "Alice").await;
    let bob = person(&app, "Bob").await;
    let created = app
        .collaborate(&planner, &alice, json!({"message_cap": 3}))
        .await;
    let path = post_path(&created);
    for (sender, why) in [
        (id(&planner), "not a human participant"),
        (id(&bob), "not a human participant"),
        (
            "nobody".to_owned(),
            "neither an agent UUID nor an agent address",
        ),
    ] {
        let refused = app
            .post(&path, &json!({"sender": sender, "content": "hi"}))
            .await;
        let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "sender");
        assert!(
            body["errors"][0]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let blank = app
        .post(&path, &json!({"sender": id(&alice), "content": "   "}))
        .await;
    problem(blank, StatusCode::UNPROCESSABLE_ENTITY).await;

    // A read-only key may watch but not speak.
    let key = app
        .post(
            "/api/v1/keys",
            &json!({"name": "watcher", "scopes": ["read"]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let reader = app.with_key(key["key"].as_str().unwrap());
    let mut viewer = reader
        .viewer(created["channel_id"].as_str().unwrap(), 0)
        .await;
    viewer
        .send(json!({"type": "message", "content": "hi"}))
        .await;
    loop {
        let frame = viewer.frame().await;
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "forbidden");
            break;
        }
    }

    app.post(
        &format!("/api/v1/collaborations/{}/stop", id(&created)),
        &json!({}),
    )
    .await;
    let late = app
        .post(&path, &json!({"sender": id(&alice), "content": "wait!"}))
        .await;
    problem(late, StatusCode::CONFLICT).await;
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(contents(&history), ["Alice?"], "nothing refused was stored");
}

#[tokio::test]
async fn a_viewer_who_connects_while_a_person_has_the_turn_is_told_so() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Alice?"], 0).await;
    let alice = person(&app, "Alice").await;
    let bob = person(&app, "Bob").await;
    let created = app
        .create_collaboration(json!({
            "principal": id(&planner), "participants": [id(&alice), id(&bob)],
            "message_cap": 5, "timeout_window": 30, "strategy": "round_robin",
        }))
        .await;
    wait_for(|| async {
        (app.collaboration(&id(&created)).await["message_count"] == 1).then_some(())
    })
    .await;
    // Bob speaks out of turn while the engine waits for Alice: still her turn.
    let aside = app
        .post(
            &post_path(&created),
            &json!({"sender": id(&bob), "content": "I'm in too."}),
        )
        .await;
    assert_eq!(aside.status(), StatusCode::CREATED);
    let mut late = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    assert_eq!(late.frame().await["type"], "hello");
    assert_eq!(late.frame().await["seq"], 1, "the catch-up first");
    assert_eq!(late.frame().await["seq"], 2);
    let turn = late.frame().await;
    assert_eq!(
        (turn["type"].as_str(), turn["sender"]["name"].as_str()),
        (Some("turn"), Some("Alice"))
    );
}

#[tokio::test]
async fn a_person_cannot_speak_past_the_message_cap_while_the_judge_deliberates() {
    let fake = FakeModel::start().await;
    // The judge of the capping message never answers within the test.
    fake.fail_always(Purpose::Judge, Fault::Hang);
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let planner = app.scripted("Planner", &["All settled."], 0).await;
    let alice = person(&app, "Alice").await;
    let created = app
        .collaborate(&planner, &alice, json!({"message_cap": 1}))
        .await;
    wait_for(|| async { (!fake.requests(Purpose::Judge).is_empty()).then_some(()) }).await;
    let late = app
        .post(
            &post_path(&created),
            &json!({"sender": id(&alice), "content": "One more thing!"}),
        )
        .await;
    let refusal = problem(late, StatusCode::CONFLICT).await;
    assert!(
        refusal["detail"].as_str().unwrap().contains("message cap"),
        "{refusal}"
    );
    assert_eq!(app.collaboration(&id(&created)).await["message_count"], 1);
}
