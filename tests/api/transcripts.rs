//! A collaboration's transcript: the whole record as JSON for programs or Markdown for
//! people, streamed a page of events at a time.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, id, problem, spawn_app};

async fn transcript(app: &Api, collaboration: &Value, format: &str) -> reqwest::Response {
    app.get(&format!(
        "/api/v1/collaborations/{}/transcript?format={format}",
        id(collaboration)
    ))
    .await
}

#[tokio::test]
async fn the_json_transcript_is_the_collaboration_and_every_event_as_streamed() {
    let app = spawn_app().await;
    let created = app.scripted_duo(4, 0).await;
    app.wait_until_summarized(&id(&created)).await;
    let response = transcript(&app, &created, "json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(
        document["collaboration"],
        app.get_json(&format!("/api/v1/collaborations/{}", id(&created)))
            .await
    );
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(document["events"].as_array().unwrap(), &history);
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message", "message", "message", "message", "status", "summary"
        ]
    );
}

#[tokio::test]
async fn the_markdown_transcript_reads_as_a_document_and_quotes_what_was_said() {
    let app = spawn_app().await;
    let planner = app
        .scripted("Planner", &["Tapas?\n# Not a heading"], 0)
        .await;
    let scout = app.scripted("Scout", &["Yes, at seven."], 0).await;
    let created = app
        .collaborate(
            &planner,
            &scout,
            json!({"message_cap": 2, "objective": "Plan Friday"}),
        )
        .await;
    app.wait_until_summarized(&id(&created)).await;
    let response = transcript(&app, &created, "markdown").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("# Plan Friday\n"), "{text}");
    let expected = [
        "- Status: completed: the message cap was reached",
        "- Principal: Planner (scripted, `",
        "- Participants: Scout (scripted, `",
        "## Transcript",
        "**Planner** (scripted) · ",
        "> Tapas?\n> # Not a heading\n",
        "**Scout** (scripted) · ",
        "> Yes, at seven.\n",
        "**Ended** (completed: the message cap was reached)",
        "## Summary",
        "_No model is configured, so this summary was composed by Skein",
    ];
    let mut from = 0;
    for part in expected {
        let at = text[from..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} after byte {from} in:\n{text}"));
        from += at + part.len();
    }
}

#[tokio::test]
async fn a_long_channel_comes_whole_across_pages() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Go on."], 0).await;
    let person = app
        .create_agent(json!({"name": "Ada", "kind": "human"}))
        .await;
    let created = app
        .collaborate(&planner, &person, json!({"message_cap": 1000}))
        .await;
    let channel = created["channel_id"].as_str().unwrap().to_owned();
    // More events than one page of the store holds.
    for n in 0..520 {
        let posted = app
            .post(
                &format!("/api/v1/channels/{channel}/messages"),
                &json!({"sender": id(&person), "content": format!("note {n}")}),
            )
            .await;
        assert_eq!(posted.status(), StatusCode::CREATED);
    }
    let document: Value = transcript(&app, &created, "json")
        .await
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = document["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(seqs.len() >= 521, "{}", seqs.len());
}

#[tokio::test]
async fn an_unknown_format_is_422_and_another_account_s_collaboration_404() {
    let app = spawn_app().await;
    let created = app.scripted_duo(2, 0).await;
    let body = problem(
        transcript(&app, &created, "pdf").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "format");
    let account = app
        .create("/api/v1/accounts", json!({"name": "Other"}))
        .await;
    let other = app.with_key(account["key"]["key"].as_str().unwrap());
    problem(
        transcript(&other, &created, "json").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn figures_count_each_member_s_turns_tokens_and_time_per_turn() {
    let app = spawn_app().await;
    // Each scripted turn takes its delay: that is what a turn's time must show.
    let created = app.scripted_duo(4, 200).await;
    app.wait_until_summarized(&id(&created)).await;
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    let members = figures["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["agent"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B"]);
    for member in members {
        assert_eq!(member["turns"], 2, "{member}");
        assert_eq!(member["tokens"], 0, "{member}");
        let p50 = member["latency_ms"]["p50"].as_u64().unwrap();
        let p95 = member["latency_ms"]["p95"].as_u64().unwrap();
        assert!((200..2000).contains(&p50) && p50 <= p95, "{member}");
    }
    // Each message says what its turn cost and took.
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert!(history[0]["ms"].as_u64().unwrap() >= 200, "{}", history[0]);
    // The transcript ends with the same figures.
    let document: Value = transcript(&app, &created, "json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(document["figures"], figures["members"]);
    let text = transcript(&app, &created, "markdown")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("## Figures\n"), "{text}");
    assert!(
        text.contains("\n| A | 2 | 0 (0, 0) | $0.000000 | "),
        "{text}"
    );
}
