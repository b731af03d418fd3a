//! The web UI's files as the server hands them out: from the binary, with a strict policy,
//! revalidated by ETag. What a browser does with them is in `browser.rs`.

use reqwest::StatusCode;
use serde_json::json;
use skein::config::Config;

use crate::support::{default_provider, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_page_is_served_with_a_policy_that_allows_only_this_server() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/assets/app.js">"#));
    assert!(!page.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn every_asset_the_page_loads_is_served_with_its_type() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/channel.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], kind, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let missing = app
        .client
        .get(app.url("/assets/nope.js"))
        .send()
        .await
        .unwrap();
    problem(missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_unchanged_asset_is_answered_with_304_and_a_stale_tag_with_the_file() {
    let app = spawn_app().await;
    let first = app
        .client
        .get(app.url("/assets/app.js"))
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].clone();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let again = app
        .client
        .get(app.url("/assets/app.js"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    let stale = app
        .client
        .get(app.url("/assets/app.js"))
        .header("if-none-match", "\"0123\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn providers_lists_the_configured_names_and_models_and_no_secret() {
    let app = spawn_app_with(|c: &mut Config| {
        c.providers = vec![default_provider("http://127.0.0.1:9/v1")];
    })
    .await;
    let response = app.get("/api/v1/providers").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"items": [{"name": "default", "default_model": "fake-model"}]})
    );
    assert!(!body.contains("127.0.0.1") && !body.contains(crate::support::fake_model::KEY));

    let none = spawn_app().await;
    assert_eq!(
        none.get_json("/api/v1/providers").await,
        json!({"items": []})
    );
    let anonymous = none
        .client
        .get(none.url("/api/v1/providers"))
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}
