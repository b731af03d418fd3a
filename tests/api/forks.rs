//! Forks: a new collaboration that starts with another's conversation up to a `seq`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, id, problem, spawn_app};

/// A and B, three lines each, round robin, four messages; ended and summarized.
async fn finished(app: &TestApp) -> (Value, Value, Value) {
    let a = app.scripted("A", &["a1", "a2", "a3"], 0).await;
    let b = app.scripted("B", &["b1", "b2", "b3"], 0).await;
    let created = app
        .collaborate(
            &a,
            &b,
            json!({"message_cap": 4, "strategy": "round_robin",
                   "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    (done, a, b)
}

fn contents(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["content"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_fork_starts_with_the_copied_conversation_and_goes_on_live() {
    let app = spawn_app().await;
    let (original, _, _) = finished(&app).await;
    let before = app.history(original["channel_id"].as_str().unwrap()).await;
    let response = app
        .post(
            &format!("/api/v1/collaborations/{}/fork", id(&original)),
            &json!({"at_seq": 2, "objective": "Try the other way", "message_cap": 2}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let fork: Value = response.json().await.unwrap();
    assert_eq!(
        fork["forked_from"],
        json!({"collaboration_id": id(&original), "at_seq": 2})
    );
    assert_eq!(fork["objective"], "Try the other way");
    assert_eq!(fork["principal"], original["principal"]);
    let done = app.wait_until_summarized(&id(&fork)).await;
    assert_eq!(done["end_reason"], "message_cap");
    assert_eq!(
        done["message_count"], 2,
        "the cap counts the fork's own messages"
    );
    let events = app.history(fork["channel_id"].as_str().unwrap()).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=6).collect::<Vec<_>>(),
        "gap-free, copied ones first"
    );
    // The conversation carries on from where it was forked: A's next line, then B's.
    assert_eq!(contents(&events), ["a1", "b1", "a2", "b2"]);
    for (event, seq) in events[..2].iter().zip([1, 2]) {
        assert_eq!(
            event["copied"],
            json!({"collaboration_id": id(&original), "seq": seq})
        );
    }
    assert!(events[2]["copied"].is_null());
    // The original is as it was.
    assert_eq!(
        app.history(original["channel_id"].as_str().unwrap()).await,
        before
    );
}

#[tokio::test]
async fn a_fork_can_change_the_roster_and_keeps_the_words_of_former_members() {
    let app = spawn_app().await;
    let (original, a, _) = finished(&app).await;
    let c = app.scripted("C", &["c1"], 0).await;
    let fork = app
        .create(
            &format!("/api/v1/collaborations/{}/fork", id(&original)),
            json!({"at_seq": 3, "participants": [id(&c)], "message_cap": 1}),
        )
        .await;
    assert_eq!(fork["participants"][0]["name"], "C");
    assert_eq!(fork["principal"]["id"], a["id"]);
    app.wait_until_summarized(&id(&fork)).await;
    let events = app.history(fork["channel_id"].as_str().unwrap()).await;
    // B is no longer a member; what B said stays, in B's name.
    assert_eq!(contents(&events), ["a1", "b1", "a2", "c1"]);
    assert_eq!(events[1]["sender"]["name"], "B");
}

#[tokio::test]
async fn a_fork_from_a_seq_that_is_not_there_is_refused_and_makes_nothing() {
    let app = spawn_app().await;
    let (original, _, _) = finished(&app).await;
    for at_seq in [json!(0), json!(99)] {
        let response = app
            .post(
                &format!("/api/v1/collaborations/{}/fork", id(&original)),
                &json!({"at_seq": at_seq}),
            )
            .await;
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "at_seq", "{body}");
    }
    let response = app
        .post(
            "/api/v1/collaborations/0190b0f0-0000-7000-8000-000000000000/fork",
            &json!({"at_seq": 1}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let listed = app.get_json("/api/v1/collaborations").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}
