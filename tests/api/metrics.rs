//! `/metrics`: Prometheus text that moves with what the server does.

use serde_json::json;

use crate::support::{Api, default_provider, fake_model::FakeModel, id, spawn_app_with};

/// The value of one series (name with its labels, exactly as rendered), or 0 if absent.
async fn scrape(app: &Api, series: &str) -> f64 {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_a_collaboration_and_are_scraped_without_a_key() {
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let route =
        r#"skein_http_requests_total{route="/api/v1/collaborations",method="POST",status="201"}"#;
    let llm_turns = r#"skein_turns_total{kind="llm"}"#;
    let ended = r#"skein_collaborations_ended_total{status="completed",end_reason="message_cap"}"#;
    let tokens = r#"skein_tokens_total{provider="default",model="fake-model"}"#;
    let before = [
        scrape(&app, route).await,
        scrape(&app, llm_turns).await,
        scrape(&app, ended).await,
        scrape(&app, tokens).await,
        scrape(&app, "skein_collaborations_started_total").await,
    ];

    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let guest = app.scripted("Guest", &["ok"], 0).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 4, "evaluate_objective_completion": false}),
        )
        .await;
    app.watch_to_the_end(&created).await;
    app.wait_until_summarized(&id(&created)).await;

    let after = [
        scrape(&app, route).await,
        scrape(&app, llm_turns).await,
        scrape(&app, ended).await,
        scrape(&app, tokens).await,
        scrape(&app, "skein_collaborations_started_total").await,
    ];
    // Other tests share the process's recorder, so each counter moved by at least this much.
    assert!(
        after[0] >= before[0] + 1.0,
        "POST /collaborations: {before:?} -> {after:?}"
    );
    assert!(after[1] >= before[1] + 2.0, "the Host's two turns");
    assert!(
        after[2] >= before[2] + 1.0,
        "one collaboration ended at its cap"
    );
    assert!(
        after[3]
            >= before[3] + fake.tokens_reported(crate::support::fake_model::Purpose::Turn) as f64
    );
    assert!(after[4] >= before[4] + 1.0);
    assert!(
        scrape(&app, r#"skein_collaborations{status="completed"}"#).await >= 1.0,
        "stored collaborations by status"
    );
    let frames = scrape(&app, "skein_websocket_frames_total").await;
    assert!(
        frames >= 7.0,
        "the viewer got hello, 4 messages, status and summary: {frames}"
    );
}

#[tokio::test]
async fn with_a_metrics_token_only_a_scrape_bearing_it_is_answered() {
    let app = spawn_app_with(|c| c.metrics_token = Some("metrics-token-0123".into())).await;
    let scrape = |token: Option<&'static str>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for refused in [
        None,
        Some("metrics-token-0124"),
        Some(super::support::ADMIN_KEY),
    ] {
        let response = scrape(refused).await.unwrap();
        assert_eq!(response.status(), 401, "{refused:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let answered = scrape(Some("metrics-token-0123")).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert!(answered.text().await.unwrap().contains("skein_"));
}

/// A turn's time is mostly the model's: the message says how long the turn took, and the
/// engine's own part (`skein_turn_overhead_seconds`, from the reply in hand to the message
/// stored and published) is counted once per turn and leaves the model's time out.
#[tokio::test]
async fn the_engine_s_own_time_per_turn_is_measured_apart_from_the_model_s() {
    let fake = FakeModel::start().await;
    fake.answer_after(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_millis(300),
    );
    fake.forget_requests();
    let app = crate::byo_agents::with_fake_model(&fake).await;
    let count = "skein_turn_overhead_seconds_count";
    let sum = "skein_turn_overhead_seconds_sum";
    let before = (scrape(&app, count).await, scrape(&app, sum).await);

    let created = app
        .two_models(json!({"message_cap": 3, "evaluate_objective_completion": false}))
        .await;
    let frames = app.watch_to_the_end(&created).await;
    let took: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message" && f["role"] == "agent")
        .map(|f| f["ms"].as_u64().expect("a turn's time"))
        .collect();
    assert_eq!(took.len(), 3, "{frames:?}");
    assert!(
        took.iter().all(|&ms| ms >= 200),
        "the model's time is in the turn's: {took:?}"
    );

    let after = (scrape(&app, count).await, scrape(&app, sum).await);
    assert!(
        after.0 - before.0 >= 3.0,
        "each turn is counted: {before:?} → {after:?}"
    );
    assert!(
        after.1 - before.1 < 0.6,
        "the model's 200 ms a turn are not the engine's: {before:?} → {after:?}"
    );
}
