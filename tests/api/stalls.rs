//! Stalls: a conversation that goes in circles is nudged, then ended as `stalled`.

use serde_json::{Value, json};

use crate::support::{
    default_provider,
    fake_model::{FakeModel, Purpose},
    id, spawn_app, spawn_app_with,
};

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn scripted_agents_that_loop_are_nudged_then_ended_as_stalled() {
    let app = spawn_app().await;
    let host = app.scripted("Host", &["Shall we go out tonight?"], 0).await;
    let guest = app.scripted("Guest", &["Sounds good, where to?"], 0).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 40, "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "stalled", "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["message_count"], 8,
        "six turns in circles after the first two"
    );
    let advisory = done["advisory_message"].as_str().unwrap();
    assert!(
        advisory.starts_with("The conversation stalled: "),
        "{advisory}"
    );
    let events = app.history(created["channel_id"].as_str().unwrap()).await;
    // The nudge came after the third turn in circles, to the manager.
    assert_eq!(
        kinds(&events),
        [
            "message", "message", "message", "message", "message", "nudge", "message", "message",
            "message", "status", "summary"
        ]
    );
    let nudge = &events[5];
    assert_eq!(nudge["to"]["name"], "Host");
    assert!(
        nudge["reason"]
            .as_str()
            .unwrap()
            .contains("Host said again what they had said"),
        "{nudge}"
    );
}

#[tokio::test]
async fn the_manager_s_model_is_told_what_repeats_on_its_next_turn() {
    let fake = FakeModel::start().await;
    fake.reply_with(&["Let us meet at seven by the river."; 8]);
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let guest = app.scripted("Guest", &["Fine by me."], 0).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 40, "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "stalled", "{done}");
    let told: Vec<bool> = fake
        .requests(Purpose::Turn)
        .iter()
        .map(|r| {
            r.body
                .to_string()
                .contains("[From Skein, to you as the manager]")
        })
        .collect();
    // Its turns: 1, 3, 5 before the nudge; the one after it is told, and only that one.
    assert_eq!(told, [false, false, false, true], "{told:?}");
}

#[tokio::test]
async fn with_stall_detection_off_the_loop_runs_to_its_cap() {
    let app = spawn_app_with(|c| c.engine.stalls.end_after = 0).await;
    let host = app.scripted("Host", &["Again?"], 0).await;
    let guest = app.scripted("Guest", &["Again."], 0).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 12, "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "message_cap");
}
