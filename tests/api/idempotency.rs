//! `Idempotency-Key` on POST: a retry does the work once.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, id, on_postgres, problem, spawn_app, spawn_app_in};

async fn post_with(
    api: &Api,
    path: &str,
    header: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    api.client
        .post(api.url(path))
        .bearer_auth(&api.key)
        .header(header, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_create_replays_the_first_response_and_creates_nothing_even_after_a_restart() {
    let app = spawn_app().await;
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    let body = json!({"principal": id(&a), "participants": [id(&b)], "message_cap": 2, "timeout_window": 5});
    let path = "/api/v1/collaborations";

    let first = post_with(&app, path, "Idempotency-Key", "create-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].clone();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let created: Value = first.json().await.unwrap();

    // The same JSON, written differently, is the same request.
    let reordered = json!({"timeout_window": 5, "message_cap": 2, "participants": [id(&b)], "principal": id(&a)});
    let again = post_with(&app, path, "Idempotency-Key", "create-1", &reordered).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), created);

    let data_dir = app.shut_down_keeping_data().await;
    let app = spawn_app_in(data_dir).await;
    let after_restart = post_with(&app, path, "X-Idempotency-Key", "create-1", &body).await;
    assert_eq!(after_restart.status(), StatusCode::CREATED);
    assert_eq!(
        after_restart.json::<Value>().await.unwrap()["id"],
        created["id"]
    );
    assert_eq!(app.get_json(path).await["meta"]["total"], 1, "created once");

    // Another key value is another request.
    let other = post_with(&app, path, "Idempotency-Key", "create-2", &body).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_ne!(other.json::<Value>().await.unwrap()["id"], created["id"]);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let path = "/api/v1/agents";
    let first = json!({"name": "A", "kind": "scripted", "replies": ["a"]});
    let response = post_with(&app, path, "Idempotency-Key", "agent-1", &first).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let second = json!({"name": "B", "kind": "scripted", "replies": ["b"]});
    let response = post_with(&app, path, "Idempotency-Key", "agent-1", &second).await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
    // The same key on another endpoint is a different request too.
    let response = post_with(
        &app,
        "/api/v1/keys",
        "Idempotency-Key",
        "agent-1",
        &json!({"name": "k"}),
    )
    .await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let agents = app.get_json(path).await;
    assert_eq!(agents["meta"]["total"], 1);
    assert_eq!(agents["items"][0]["name"], "A");
}

#[tokio::test]
async fn a_request_whose_key_is_still_in_flight_is_409() {
    if on_postgres() {
        eprintln!("this test writes into the SQLite file: skipped on PostgreSQL");
        return;
    }
    let app = spawn_app().await;
    let account = app.get_json("/api/v1/keys").await["items"][0]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another process has claimed the key and not finished: its claim is in the database.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.data_dir.path().join("skein.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (account_id, idempotency_key, request_hash, created_at) \
         VALUES (?, 'busy', 'elsewhere', ?)",
    )
    .bind(&account)
    .bind(chrono::Utc::now())
    .execute(&pool)
    .await
    .unwrap();
    let body = json!({"name": "A", "kind": "scripted", "replies": ["a"]});
    let response = post_with(&app, "/api/v1/agents", "Idempotency-Key", "busy", &body).await;
    let problem = problem(response, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().unwrap().contains("in progress"));
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 0);
}

#[tokio::test]
async fn concurrent_retries_create_once_and_each_gets_the_response_or_a_409() {
    let app = spawn_app().await;
    let body = json!({"name": "A", "kind": "scripted", "replies": ["a"]});
    let attempts =
        (0..12).map(|_| post_with(&app, "/api/v1/agents", "Idempotency-Key", "race", &body));
    let responses = futures::future::join_all(attempts).await;
    let mut created = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => {
                created.push(response.json::<Value>().await.unwrap()["id"].clone())
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|id| *id == created[0]), "{created:?}");
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 1);
}

#[tokio::test]
async fn a_created_key_replayed_to_another_api_key_is_not_revealed() {
    let app = spawn_app().await;
    let body = json!({"name": "ci"});
    let make_key = |api: &Api| {
        let api = api.clone();
        let body = body.clone();
        async move { post_with(&api, "/api/v1/keys", "Idempotency-Key", "k-1", &body).await }
    };
    let first = make_key(&app).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let secret = first.json::<Value>().await.unwrap()["key"].clone();
    // Another admin key of the same account retries with the same idempotency key.
    let response = app
        .post(
            "/api/v1/keys",
            &json!({"name": "admin 2", "scopes": ["admin"]}),
        )
        .await;
    let other: Value = response.json().await.unwrap();
    let other = app.with_key(other["key"].as_str().unwrap());
    let text = make_key(&other).await.text().await.unwrap();
    assert!(
        !text.contains(secret.as_str().unwrap()),
        "the secret went to another key: {text}"
    );
    // The key that made it gets it back.
    let mine = make_key(&app).await;
    assert_eq!(mine.json::<Value>().await.unwrap()["key"], secret);
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_idempotency_key() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/v1/keys",
            &json!({"name": "reader", "scopes": ["read"]}),
        )
        .await;
    let reader: Value = response.json().await.unwrap();
    let reader = app.with_key(reader["key"].as_str().unwrap());
    let body = json!({"name": "A", "kind": "scripted", "replies": ["a"]});
    let refused = post_with(
        &reader,
        "/api/v1/agents",
        "Idempotency-Key",
        "shared",
        &body,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The 403 was not kept: the same key, from a key that may write, does the work.
    let created = post_with(&app, "/api/v1/agents", "Idempotency-Key", "shared", &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(created.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 1);
}
