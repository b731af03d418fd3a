//! Agents: identities by UUID or address, kinds and their settings.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    default_provider, fake_model::FakeModel, id, problem, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn an_agent_gets_a_uagents_address_and_is_found_by_uuid_or_address() {
    let app = spawn_app().await;
    let agent = app.scripted("Scout", &["hi"], 0).await;
    let address = agent["address"].as_str().unwrap();
    assert!(
        address.starts_with("agent1q") && address.len() == 65,
        "{address}"
    );
    let by_address = app.get_json(&format!("/api/v1/agents/{address}")).await;
    assert_eq!(by_address["id"], agent["id"]);

    // An address of its own is kept; its checksum is checked; it is unique per account.
    let own = by_address["address"].as_str().unwrap().to_owned();
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Twin", "kind": "scripted", "replies": ["x"], "address": own}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let mut broken = own.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'q' { 'p' } else { 'q' });
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Bad", "kind": "scripted", "replies": ["x"], "address": broken}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let patched: Value = app
        .patch(
            &format!("/api/v1/agents/{}", id(&agent)),
            &json!({"name": "Scout Two", "replies": ["a", "b"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "Scout Two");
    assert_eq!(patched["replies"], json!(["a", "b"]));
    assert_eq!(patched["address"], agent["address"]);

    let list = app.get_json("/api/v1/agents?size=1").await;
    assert_eq!(list["meta"]["total"], 1);

    // An agent that took part in a collaboration cannot be deleted from under it.
    let other = app.scripted("Other", &["o"], 0).await;
    let collaboration = app
        .create_collaboration(json!({"principal": id(&agent), "participants": [id(&other)], "message_cap": 1, "timeout_window": 5}))
        .await;
    assert_eq!(
        app.delete(&format!("/api/v1/agents/{}", id(&agent)))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    app.wait_until_summarized(&id(&collaboration)).await;
    assert_eq!(
        app.delete(&format!("/api/v1/collaborations/{}", id(&collaboration)))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("/api/v1/agents/{address}"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/agents/{}", id(&agent)))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn llm_agents_need_a_configured_provider() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "Thinker", "kind": "llm", "model": "m"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no model provider is configured"),
        "{body}"
    );

    let fake = FakeModel::start().await;
    let app = spawn_app_with(|c| c.providers = vec![default_provider(&fake.base_url())]).await;
    let agent = app
        .create_agent(json!({"name": "Thinker", "kind": "llm", "system_prompt": "Be brief."}))
        .await;
    assert_eq!(
        (agent["provider"].as_str(), agent["model"].as_str()),
        (Some("default"), Some("fake-model"))
    );
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "T", "kind": "llm", "provider": "nope"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "T", "kind": "llm", "temperature": 9}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Beyond any model's output, and beyond the 32-bit integer the API document promises.
    let response = app
        .post(
            "/api/v1/agents",
            &json!({"name": "T", "kind": "llm", "max_tokens": 2_147_483_648u64}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = app
        .post("/api/v1/agents", &json!({"name": "", "kind": "robot"}))
        .await;
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "kind"]);
}

#[tokio::test]
async fn an_agent_keeps_its_kind_while_it_takes_part_in_a_running_collaboration() {
    let app = spawn_app().await;
    let created = app.scripted_duo(50, 300).await;
    let member = created["participants"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/agents/{member}");
    let refused = app.patch(&path, &json!({"kind": "human"})).await;
    problem(refused, StatusCode::CONFLICT).await;
    // Other changes are fine.
    let renamed = app.patch(&path, &json!({"name": "Bea"})).await;
    assert_eq!(renamed.status(), StatusCode::OK);
    app.post(
        &format!(
            "/api/v1/collaborations/{}/stop",
            created["id"].as_str().unwrap()
        ),
        &json!({}),
    )
    .await;
    let changed = app.patch(&path, &json!({"kind": "human"})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(app.get_json(&path).await["kind"], "human");
}
