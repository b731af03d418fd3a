//! Bad input: a clear problem+json error, and nothing changed.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, id, problem, spawn_app};

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn invalid_collaborations_are_refused_with_named_fields_and_create_nothing() {
    let app = spawn_app().await;
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    let (a, b) = (id(&a), id(&b));
    let unknown = uuid::Uuid::new_v4().to_string();
    let valid =
        json!({"principal": a, "participants": [b], "message_cap": 3, "timeout_window": 10});
    let with = |patch: Value| {
        let mut body = valid.clone();
        body.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        body
    };
    let cases = [
        (with(json!({"principal": unknown})), "principal"),
        (with(json!({"principal": "not-an-agent"})), "principal"),
        (with(json!({"participants": []})), "participants"),
        (with(json!({"participants": [b, b]})), "participants[1]"),
        (with(json!({"participants": [a]})), "participants[0]"),
        (with(json!({"participants": [unknown]})), "participants[0]"),
        (
            with(json!({"participants": vec![b.clone(); 33]})),
            "participants",
        ),
        (with(json!({"message_cap": 0})), "message_cap"),
        (with(json!({"message_cap": 1_000_000})), "message_cap"),
        (with(json!({"timeout_window": 0})), "timeout_window"),
        (with(json!({"timeout_window": -5})), "timeout_window"),
        (with(json!({"source": "myspace"})), "source"),
        (with(json!({"strategy": "chaos"})), "strategy"),
        (with(json!({"objective": ""})), "objective"),
        (with(json!({"objective": "x".repeat(5000)})), "objective"),
        (with(json!({"message_cap": "three"})), "message_cap"),
        (
            with(json!({"webhook_url": "ftp://example.com"})),
            "webhook_url",
        ),
        (
            json!({"participants": [b], "message_cap": 3, "timeout_window": 10}),
            "principal",
        ),
    ];
    for (body, field) in cases {
        let body = problem(
            app.post("/api/v1/collaborations", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            fields(&body).contains(&field.to_owned()),
            "expected {field} in {body}"
        );
    }
    // The unknown reference is named in the message.
    let body = problem(
        app.post(
            "/api/v1/collaborations",
            &with(json!({"principal": unknown})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains(&unknown));

    for raw in ["{\"principal\":", "[1, 2]", "plain text"] {
        let response = app
            .client
            .post(app.url("/api/v1/collaborations"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::BAD_REQUEST).await;
    }
    let huge = json!({"objective": "x".repeat(300 * 1024)});
    problem(
        app.post("/api/v1/collaborations", &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let list = app.get_json("/api/v1/collaborations").await;
    assert_eq!(
        list["meta"]["total"], 0,
        "a rejected request changed something"
    );
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_and_unknown_things_404() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/collaborations"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    let wrong = app.with_key("sk_wrong").get("/api/v1/collaborations").await;
    problem(wrong, StatusCode::UNAUTHORIZED).await;
    // flockx sends the bare key.
    let response = app
        .client
        .get(app.url("/api/v1/collaborations"))
        .header("Authorization", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    for path in [
        format!("/api/v1/collaborations/{}", uuid::Uuid::new_v4()),
        "/api/v1/collaborations/not-a-uuid".to_owned(),
        format!("/api/v1/channels/{}", uuid::Uuid::new_v4()),
        format!("/api/v1/agents/{}", uuid::Uuid::new_v4()),
        "/api/v1/nothing-here".to_owned(),
    ] {
        problem(app.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    let response = app
        .client
        .put(app.url("/api/v1/collaborations"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    for bad in [
        "page=0",
        "size=0",
        "size=101",
        "status=done",
        "source=x",
        "channel_id=nope",
        "page=abc",
    ] {
        problem(
            app.get(&format!("/api/v1/collaborations?{bad}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
}

#[tokio::test]
async fn health_ready_and_the_api_docs_are_served() {
    let app = spawn_app().await;
    for path in ["/health", "/ready", "/openapi.json", "/docs/", "/"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/api/v1/collaborations"]["post"].is_object());
    let docs = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !docs.contains("cdn") && !docs.contains("unpkg"),
        "the Swagger UI must not load from a CDN"
    );
}
