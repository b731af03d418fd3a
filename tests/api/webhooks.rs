//! Webhooks: set up with a secret shown once, written to an outbox with the change they
//! tell of, delivered signed with one `webhook-id` per event however many attempts it takes,
//! across a restart, and given up on only after the retry window.

use std::{collections::HashSet, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, id,
    peers::{Received, Receiver},
    problem, spawn_app, spawn_app_in_with, spawn_app_with, wait_for,
};

/// Sets webhooks up with `default_url` and returns the secret.
pub(crate) async fn set_up(app: &Api, default_url: Option<String>) -> String {
    let response = app
        .client
        .put(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.key)
        .json(&json!({"default_url": default_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

fn event_of(received: &Received) -> String {
    received.body["type"].as_str().unwrap().to_owned()
}

fn id_of(received: &Received) -> String {
    received.headers["webhook-id"].to_str().unwrap().to_owned()
}

const EVENTS: [&str; 3] = [
    "collaboration.started",
    "collaboration.ended",
    "collaboration.summary_ready",
];

/// Waits until the receiver has accepted one delivery of each event.
pub(crate) async fn all_three(receiver: &Receiver) -> Vec<Received> {
    wait_for(|| async {
        let accepted = receiver.accepted();
        let events: HashSet<String> = accepted.iter().map(event_of).collect();
        (events.len() == 3).then_some(accepted)
    })
    .await
}

#[tokio::test]
async fn every_event_arrives_signed_with_one_webhook_id_however_many_attempts() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let secret = set_up(&app, Some(receiver.url())).await;
    receiver.trust(&secret);
    receiver.fail_first(2);
    let created = app.scripted_duo(2, 0).await;
    let done = app.wait_until_summarized(&id(&created)).await;

    let accepted = all_three(&receiver).await;
    let mut events: Vec<String> = accepted.iter().map(event_of).collect();
    events.sort();
    let mut expected = EVENTS.map(str::to_owned);
    expected.sort();
    assert_eq!(events, expected, "each event accepted once");
    let received = receiver.received();
    assert!(
        received.iter().all(|(r, _)| r.signed),
        "every attempt is signed"
    );
    // The two refused attempts were of events later accepted, under the same id.
    let accepted_ids: HashSet<String> = accepted.iter().map(id_of).collect();
    assert_eq!(accepted_ids.len(), 3);
    for (attempt, ok) in &received {
        assert!(
            accepted_ids.contains(&id_of(attempt)),
            "retried under its own id"
        );
        if !ok {
            let later = accepted
                .iter()
                .find(|a| id_of(a) == id_of(attempt))
                .unwrap();
            assert_eq!(later.body, attempt.body, "the same body on every attempt");
        }
    }

    let by_event =
        |name: &str| accepted.iter().find(|r| event_of(r) == name).unwrap().body["data"].clone();
    assert_eq!(by_event("collaboration.started")["id"], created["id"]);
    assert_eq!(by_event("collaboration.started")["status"], "running");
    assert_eq!(by_event("collaboration.ended")["end_reason"], "message_cap");
    assert_eq!(by_event("collaboration.ended")["message_count"], 2);
    assert_eq!(
        by_event("collaboration.summary_ready")["headline"],
        done["headline"]
    );

    // The receiver has them all; the server records the last outcome a moment later.
    let items = wait_for(|| async {
        let deliveries = app.get_json("/api/v1/webhooks/deliveries").await;
        let items = deliveries["items"].as_array().unwrap().clone();
        (items.len() == 3 && items.iter().all(|d| d["status"] == "delivered")).then_some(items)
    })
    .await;
    let attempts: u64 = items.iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 5, "two refused, three accepted");
    assert!(items.iter().any(|d| d["last_status"] == 204));
}

#[tokio::test]
async fn a_receiver_down_across_a_restart_still_gets_every_event_once() {
    let receiver = Receiver::start().await;
    let port = receiver.port;
    receiver.down().await;
    let app = spawn_app().await;
    let address = app.address;
    let secret = set_up(&app, None).await;
    receiver.trust(&secret);
    // This collaboration names its own URL; the account has no default.
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    let created = app
        .collaborate(
            &a,
            &b,
            json!({"message_cap": 2, "webhook_url": receiver.url()}),
        )
        .await;
    app.wait_until_summarized(&id(&created)).await;
    // Every event has been tried, and refused at the door.
    wait_for(|| async {
        let deliveries = app.get_json("/api/v1/webhooks/deliveries").await;
        let items = deliveries["items"].as_array().unwrap().clone();
        (items.len() == 3 && items.iter().all(|d| d["attempts"].as_u64() >= Some(1))).then_some(())
    })
    .await;
    assert!(receiver.received().is_empty());

    let data = app.shut_down_keeping_data().await;
    let receiver = receiver.up(port).await;
    let app = spawn_app_in_with(data, move |c| c.bind = address).await;

    let accepted = all_three(&receiver).await;
    let ids: HashSet<String> = accepted.iter().map(id_of).collect();
    assert_eq!(ids.len(), 3, "one id per event");
    let settled = wait_for(|| async {
        let deliveries = app.get_json("/api/v1/webhooks/deliveries").await;
        let items = deliveries["items"].as_array().unwrap().clone();
        items
            .iter()
            .all(|d| d["status"] == "delivered")
            .then_some(items)
    })
    .await;
    for delivery in settled {
        assert!(delivery["attempts"].as_u64().unwrap() >= 2, "{delivery}");
        assert!(ids.contains(delivery["id"].as_str().unwrap()));
        assert_eq!(delivery["url"], receiver.url());
    }
}

#[tokio::test]
async fn a_delivery_is_given_up_on_only_after_the_retry_window() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| c.webhooks.give_up_after = Duration::from_millis(600)).await;
    let secret = set_up(&app, Some(receiver.url())).await;
    receiver.trust(&secret);
    receiver.fail_first(usize::MAX);
    let created = app.scripted_duo(2, 0).await;
    app.wait_until_summarized(&id(&created)).await;
    let items = wait_for(|| async {
        let deliveries = app.get_json("/api/v1/webhooks/deliveries").await;
        let items = deliveries["items"].as_array().unwrap().clone();
        (items.len() == 3 && items.iter().all(|d| d["status"] == "failed")).then_some(items)
    })
    .await;
    for delivery in items {
        assert!(
            delivery["attempts"].as_u64().unwrap() >= 2,
            "retried first: {delivery}"
        );
        assert_eq!(delivery["last_status"], 500);
        assert!(delivery["next_attempt_at"].is_null());
    }
}

#[tokio::test]
async fn the_secret_is_shown_once_and_a_webhook_url_needs_one() {
    let app = spawn_app().await;
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    let early = app
        .post(
            "/api/v1/collaborations",
            &json!({"principal": id(&a), "participants": [id(&b)], "message_cap": 1,
                    "timeout_window": 5, "webhook_url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    let refused = problem(early, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(refused["errors"][0]["field"], "webhook_url");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/webhooks")
    );
    problem(app.get("/api/v1/webhooks").await, StatusCode::NOT_FOUND).await;

    let secret = set_up(&app, None).await;
    assert!(secret.starts_with("whsec_"));
    let read = app.get_json("/api/v1/webhooks").await;
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!(read["secret_prefix"], secret[..12]);
    let again = app
        .client
        .put(app.url("/api/v1/webhooks"))
        .bearer_auth(&app.key)
        .json(&json!({"default_url": "http://127.0.0.1:9/other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert!(again.get("secret").is_none());
    assert_eq!(again["default_url"], "http://127.0.0.1:9/other");

    let rotated = app.post("/api/v1/webhooks/secret", &json!({})).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    assert_ne!(rotated["secret"], secret.as_str());

    // Only admin keys manage webhooks; a read key may look at deliveries.
    let writer = app
        .post("/api/v1/keys", &json!({"name": "w", "scopes": ["write"]}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let writer = app.with_key(writer["key"].as_str().unwrap());
    problem(
        writer.post("/api/v1/webhooks/secret", &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        writer.get("/api/v1/webhooks/deliveries").await.status(),
        StatusCode::OK
    );
    let late = app
        .post(
            "/api/v1/collaborations",
            &json!({"principal": id(&a), "participants": [id(&b)], "message_cap": 1,
                    "timeout_window": 5, "webhook_url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(late.status(), StatusCode::CREATED);
}

/// A receiver that takes requests and never answers them.
async fn hanging_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, holding)
}

#[tokio::test]
async fn a_receiver_that_hangs_holds_up_nobody_elses_deliveries() {
    let app = spawn_app_with(|config| {
        config.webhooks.attempt_timeout = Duration::from_secs(4);
    })
    .await;
    // Account A's receiver hangs, with more deliveries due than attempts run at once.
    let (hanging, _holding) = hanging_receiver().await;
    set_up(&app, Some(hanging)).await;
    for _ in 0..12 {
        app.scripted_duo(400, 1000).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Account B's receiver answers.
    let created = app.post("/api/v1/accounts", &json!({"name": "B"})).await;
    let created: Value = created.json().await.unwrap();
    let b = app.with_key(created["key"]["key"].as_str().unwrap());
    let receiver = Receiver::start().await;
    let secret = set_up(&b, Some(receiver.url())).await;
    receiver.trust(&secret);
    let asked = std::time::Instant::now();
    b.scripted_duo(400, 1000).await;
    wait_for(|| async {
        receiver
            .accepted()
            .iter()
            .any(|received| event_of(received) == "collaboration.started")
            .then_some(())
    })
    .await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "B's delivery waited {took:?} behind A's receiver"
    );
    // A's are attempted, two at a time, and time out as failures to retry, not lost.
    wait_for(|| async {
        let deliveries = app.get_json("/api/v1/webhooks/deliveries?size=100").await;
        deliveries["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| {
                d["attempts"].as_u64() > Some(0)
                    && d["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no answer within"))
            })
            .then_some(())
    })
    .await;
}
