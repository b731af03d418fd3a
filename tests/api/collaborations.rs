//! The flockx collaboration lifecycle: create, run to an end, list, stop, delete.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Said, id, seqs, spawn_app};

const FLOCKX_FIELDS: [&str; 13] = [
    "id",
    "objective",
    "started_at",
    "message_cap",
    "timeout_window",
    "evaluate_objective_completion",
    "channel_id",
    "principal_agent_id",
    "ended_at",
    "summary",
    "error_message",
    "advisory_message",
    "audio_url",
];

#[tokio::test]
async fn a_flockx_collaboration_streams_to_its_message_cap_and_ends_with_a_summary() {
    let app = spawn_app().await;
    let planner = app
        .scripted("Planner", &["Let's plan. @Scout ideas?", "Booked it."], 50)
        .await;
    let scout = app
        .scripted("Scout", &["Jazz bar at eight?", "Perfect."], 50)
        .await;
    // The principal by UUID, the participant by address, as flockx allows.
    let created = app
        .create_collaboration(json!({
            "principal": id(&planner),
            "participants": [scout["address"]],
            "message_cap": 4,
            "timeout_window": 30,
            "source": "FLOCKX",
        }))
        .await;
    for field in FLOCKX_FIELDS {
        assert!(
            created.get(field).is_some(),
            "missing flockx field {field}: {created}"
        );
    }
    assert_eq!(created["objective"], "Plan a night out with my friends");
    assert_eq!(created["evaluate_objective_completion"], true);
    assert_eq!(created["principal_agent_id"], planner["id"]);
    assert_eq!(created["participants"][0]["address"], scout["address"]);
    assert_eq!(created["source"], "flockx");

    let channel = created["channel_id"].as_str().unwrap();
    let mut viewer = app.viewer(channel, 0).await;
    let hello = viewer.frame().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["collaboration_id"], created["id"]);
    let everything = viewer.until("summary").await;
    // Who is about to speak comes first, as an ephemeral `turn` frame naming the turn that
    // the message will carry. The first may be out before this viewer connected; one that
    // is on when it connects may come twice (after the catch-up, and live).
    let turns: Vec<usize> = (0..everything.len())
        .filter(|&i| everything[i]["type"] == "turn")
        .collect();
    assert!(turns.len() >= 3, "{everything:#?}");
    for i in turns {
        let turn = &everything[i];
        let said = everything[i + 1..]
            .iter()
            .find(|f| !(f["type"] == "turn" && f["turn_id"] == turn["turn_id"]))
            .unwrap();
        assert_eq!(said["type"], "message", "{everything:#?}");
        assert_eq!(said["turn_id"], turn["turn_id"]);
        assert_eq!(said["sender"], turn["sender"]);
    }
    let frames: Vec<Value> = everything
        .into_iter()
        .filter(|f| f["seq"].is_i64())
        .collect();
    assert_eq!(seqs(&frames), (1..=6).collect::<Vec<_>>(), "{frames:#?}");
    let messages: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message").collect();
    let spoken: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        spoken,
        [
            "Let's plan. @Scout ideas?",
            "Jazz bar at eight?",
            "Booked it.",
            "Perfect."
        ]
    );
    assert_eq!(messages[0]["sender"]["name"], "Planner");
    assert_eq!(messages[0]["sender"]["kind"], "scripted");
    assert_eq!(messages[0]["role"], "agent");
    let status = &frames[4];
    assert_eq!(
        (status["type"].as_str(), status["status"].as_str()),
        (Some("status"), Some("completed"))
    );
    assert_eq!(status["end_reason"], "message_cap");
    assert!(
        frames[5]["summary"]
            .as_str()
            .unwrap()
            .contains("not written by a model")
    );
    // Without a model there is no reading of decisions; the outcome says so, plainly.
    let outcome = &frames[5]["outcome"];
    assert_eq!(outcome["decisions"], serde_json::json!([]));
    assert!(
        outcome["note"]
            .as_str()
            .unwrap()
            .contains("not written by a model"),
        "{outcome}"
    );

    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["end_reason"], "message_cap");
    assert_eq!(done["message_count"], 4);
    assert!(done["ended_at"].is_string());
    assert!(
        done["advisory_message"]
            .as_str()
            .unwrap()
            .contains("message cap")
    );
    assert_eq!(done["headline"], frames[5]["headline"]);
}

#[tokio::test]
async fn collaborations_list_with_flockx_paging_and_filters() {
    let app = spawn_app().await;
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    let c = app.scripted("C", &["c"], 0).await;
    let mut made = Vec::new();
    for (principal, participant, source) in
        [(&a, &b, "FLOCKX"), (&a, &c, "asi_one"), (&b, &c, "ASI1")]
    {
        made.push(
            app.create_collaboration(json!({
                "principal": id(principal), "participants": [id(participant)],
                "message_cap": 2, "timeout_window": 30, "source": source,
            }))
            .await,
        );
    }
    let page = app.get_json("/api/v1/collaborations?page=1&size=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["meta"],
        json!({"total": 3, "page": 1, "size": 2, "has_next": true, "has_previous": false})
    );
    let second = app.get_json("/api/v1/collaborations?page=2&size=2").await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            second["meta"]["has_next"].as_bool(),
            second["meta"]["has_previous"].as_bool()
        ),
        (Some(false), Some(true))
    );

    let count = |query: String| {
        let app = &app;
        async move {
            let page = app
                .get_json(&format!("/api/v1/collaborations?{query}"))
                .await;
            page["meta"]["total"].as_u64().unwrap()
        }
    };
    assert_eq!(count(format!("agent={}", id(&a))).await, 2);
    assert_eq!(
        count(format!("agent={}", c["address"].as_str().unwrap())).await,
        2
    );
    assert_eq!(count("source=asi_one".into()).await, 2);
    assert_eq!(count("source=FLOCKX".into()).await, 1);
    assert_eq!(
        count(format!(
            "channel_id={}",
            made[1]["channel_id"].as_str().unwrap()
        ))
        .await,
        1
    );
    assert_eq!(count(format!("agent={}", uuid::Uuid::new_v4())).await, 0);
    for collaboration in &made {
        app.wait_until_summarized(&id(collaboration)).await;
    }
    assert_eq!(count("status=completed".into()).await, 3);
    assert_eq!(count("status=running".into()).await, 0);
}

#[tokio::test]
async fn stop_ends_a_running_collaboration_as_cancelled_and_keeps_what_was_said() {
    let app = spawn_app().await;
    let created = app.scripted_duo(200, 100).await;
    let channel = created["channel_id"].as_str().unwrap();
    let mut viewer = app.viewer(channel, 0).await;
    viewer.frame().await; // hello
    viewer.until("message").await;
    viewer.until("message").await;

    let response = app
        .post(
            &format!("/api/v1/collaborations/{}/stop", id(&created)),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let stopped: Value = response.json().await.unwrap();
    assert_eq!(stopped["status"], "cancelled");
    assert_eq!(stopped["end_reason"], "cancelled");
    assert!(stopped["ended_at"].is_string());

    let rest = viewer.until("summary").await;
    let status = rest.iter().find(|f| f["type"] == "status").unwrap();
    assert_eq!(status["end_reason"], "cancelled");
    let history = app.history(channel).await;
    let said = history.iter().filter(|e| e["type"] == "message").count();
    assert!(said >= 2, "{history:#?}");
    assert_eq!(
        app.collaboration(&id(&created)).await["message_count"],
        said
    );

    let again = app
        .post(
            &format!("/api/v1/collaborations/{}/stop", id(&created)),
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn delete_removes_the_collaboration_everywhere_and_closes_its_stream() {
    let app = spawn_app().await;
    let created = app.scripted_duo(200, 100).await;
    let (collaboration, channel) = (
        id(&created),
        created["channel_id"].as_str().unwrap().to_owned(),
    );
    let mut viewer = app.viewer(&channel, 0).await;
    viewer.frame().await;
    viewer.until("message").await;

    assert_eq!(
        app.delete(&format!("/api/v1/collaborations/{collaboration}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    loop {
        match viewer.next().await {
            Said::Frame(frame) => assert!(
                ["message", "turn"].contains(&frame["type"].as_str().unwrap()),
                "only messages and turns may precede the close: {frame}"
            ),
            Said::Closed(code, _) => {
                // 4410: the collaboration was deleted.
                assert_eq!(code.map(u16::from), Some(4410));
                break;
            }
        }
    }
    for path in [
        format!("/api/v1/collaborations/{collaboration}"),
        format!("/api/v1/channels/{channel}"),
        format!("/api/v1/channels/{channel}/messages"),
    ] {
        assert_eq!(
            app.get(&path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let list = app.get_json("/api/v1/collaborations").await;
    assert_eq!(list["meta"]["total"], 0);
    assert_eq!(
        app.delete(&format!("/api/v1/collaborations/{collaboration}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
