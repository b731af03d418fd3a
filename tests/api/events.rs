//! `GET /api/v1/events`: the account's collaborations changing, live and resumable.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{id, problem, spawn_app, spawn_app_with, sse::SseEvent};

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// A collaboration seen from the account's stream, from its creation to its summary: each
/// lasting change numbered after the last, message counts as they are stored, and nothing
/// of another account's.
#[tokio::test]
async fn the_stream_follows_a_collaboration_from_creation_to_summary() {
    let app = spawn_app().await;
    let mut stream = app.events(None).await;
    let ready = stream.next().await.unwrap();
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.id, Some(0), "a new account's feed is empty");
    assert_eq!(ready.data, json!({"rev": 0}));
    assert_eq!(
        stream.retry_ms,
        Some(2000),
        "the client is told how soon to come back"
    );

    let response = app
        .post("/api/v1/accounts", &json!({"name": "Elsewhere"}))
        .await;
    let other: Value = response.json().await.unwrap();
    let other = app.with_key(other["key"]["key"].as_str().unwrap());
    other.scripted_duo(2, 0).await;

    let collaboration = app.scripted_duo(3, 50).await;
    let cid = id(&collaboration);
    let seen = stream.until_about("summarized", &cid).await;
    assert!(
        seen.iter()
            .all(|e| e.data["collaboration_id"] == cid.as_str()),
        "only this account's collaborations: {seen:?}"
    );
    let lasting: Vec<&SseEvent> = seen.iter().filter(|e| e.id.is_some()).collect();
    assert_eq!(
        lasting.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["created", "ended", "summarized"]
    );
    assert_eq!(
        lasting.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let created = &lasting[0].data;
    assert_eq!(created["rev"], 1);
    assert_eq!(created["change"], "created");
    assert_eq!(created["collaboration"]["id"], cid.as_str());
    assert_eq!(
        created["collaboration"]["objective"],
        collaboration["objective"]
    );
    let ended = &lasting[1].data["collaboration"];
    assert_ne!(ended["status"], "running");
    assert_eq!(ended["end_reason"], "message_cap");
    let summarized = &lasting[2].data["collaboration"];
    assert!(summarized["summary"].is_string(), "{summarized}");
    let counts: Vec<u64> = seen
        .iter()
        .filter(|e| e.event == "messages" && e.data["collaboration_id"] == cid.as_str())
        .map(|e| e.data["message_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3], "each message counted as it is stored");
    assert!(
        seen.iter()
            .filter(|e| e.event == "messages")
            .all(|e| e.id.is_none())
    );
}

/// A client that comes back with the last id it saw gets exactly the changes it missed, in
/// order, then `ready`; more than a page of them comes whole; a deletion is a change too.
#[tokio::test]
async fn a_client_that_comes_back_gets_exactly_what_it_missed() {
    let app = spawn_app_with(|config| config.rate_limits.max_running_per_account = 500).await;
    let a = app.scripted("A", &["a"], 60_000).await;
    let b = app.scripted("B", &["b"], 60_000).await;
    let start = || app.collaborate(&a, &b, json!({"message_cap": 10}));
    let first = start().await;
    let mut stream = app.events(None).await;
    let ready = stream.until("ready").await.pop().unwrap();
    assert_eq!(ready.id, Some(1), "the stream starts where the feed stands");
    drop(stream);

    let mut missed = Vec::new();
    for _ in 0..130 {
        missed.push(id(&start().await));
    }
    let gone = app
        .delete(&format!("/api/v1/collaborations/{}", id(&first)))
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);

    let mut resumed = app.events(Some(1)).await;
    let caught_up = resumed.until("ready").await;
    let changes = &caught_up[..caught_up.len() - 1];
    assert_eq!(
        changes.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        (2..=132).collect::<Vec<_>>(),
        "every change after 1, once, in order: {:?}",
        names(changes)
    );
    let created: Vec<&str> = changes[..130]
        .iter()
        .map(|e| e.data["collaboration_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        missed.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(changes[..130].iter().all(|e| e.event == "created"));
    let deleted = &changes[130];
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.data["collaboration_id"], id(&first).as_str());
    assert!(deleted.data["collaboration"].is_null());
    assert_eq!(caught_up.last().unwrap().id, Some(132));

    // From the middle: only what came after.
    let mut again = app.events(Some(130)).await;
    let tail = again.until("ready").await;
    assert_eq!(
        tail.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        [131, 132, 132]
    );
}

#[tokio::test]
async fn an_id_the_feed_cannot_resume_from_is_answered_with_reset_and_a_bad_one_with_422() {
    let app = spawn_app().await;
    let duo = app.scripted_duo(2, 0).await;
    // Its three changes (created, ended, summarized) made, so that the feed holds still.
    app.wait_until_summarized(&id(&duo)).await;
    // Not an id this database gave: the client reloads, then goes on from `rev`.
    let mut stream = app.events(Some(9_999)).await;
    let told = stream.until("ready").await;
    assert_eq!(names(&told), ["reset", "ready"]);
    assert_eq!(told[0].data, json!({"rev": 3}));
    assert_eq!(told[0].id, Some(3));

    for bad in ["yesterday", "-3", "1.5"] {
        let refused = problem(
            app.events_response(Some(bad)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(refused["errors"][0]["field"], "Last-Event-ID", "{refused}");
    }
}

/// Open streams count against the account's cap, with its WebSockets; a revoked key's
/// stream ends.
#[tokio::test]
async fn streams_are_capped_per_account_and_end_with_their_key() {
    let app = spawn_app_with(|config| config.rate_limits.max_streams_per_account = 2).await;
    let response = app
        .post(
            "/api/v1/keys",
            &json!({"name": "k", "scopes": ["read", "write"]}),
        )
        .await;
    let key: Value = response.json().await.unwrap();
    let user = app.with_key(key["key"].as_str().unwrap());
    let mut first = user.events(None).await;
    assert_eq!(first.next().await.unwrap().event, "ready");
    let _second = app.events(None).await;
    let refused = problem(
        app.events_response(None).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("2 streams"),
        "{refused}"
    );

    let revoked = app.delete(&format!("/api/v1/keys/{}", id(&key))).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert!(first.next().await.is_none(), "the stream ends with its key");
    // Its place is free again.
    let mut third = app.events(None).await;
    assert_eq!(third.next().await.unwrap().event, "ready");
}
