//! LLM agents against the fake provider: streaming, usage, the judge, faults and retries.

use std::time::Duration;

use serde_json::{Value, json};
use skein::config::Config;

use crate::support::{
    TestApp, default_provider,
    fake_model::{FakeModel, Fault, KEY, Purpose},
    id, messages, spawn_app_with,
};

async fn llm_pair(app: &TestApp) -> (Value, Value) {
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm", "system_prompt": "You organise."}))
        .await;
    let guest = app
        .create_agent(json!({"name": "Guest", "kind": "llm"}))
        .await;
    (host, guest)
}

/// A collaboration of `host` and `guest` that ends only at `message_cap`: no judge.
async fn unjudged(app: &TestApp, host: &Value, guest: &Value, message_cap: u32) -> Value {
    app.collaborate(
        host,
        guest,
        json!({"message_cap": message_cap, "evaluate_objective_completion": false}),
    )
    .await
}

async fn with_fake(fake: &FakeModel) -> TestApp {
    let base = fake.base_url();
    spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await
}

#[tokio::test]
async fn streamed_turns_send_deltas_that_add_up_to_the_message_and_usage_is_counted() {
    let fake = FakeModel::start_expecting(
        "authorization",
        &format!("Bearer {KEY}"),
        Duration::from_millis(30),
    )
    .await;
    fake.reply_with(&[
        "Welcome all, let us pick a venue.",
        "I suggest the old jazz bar.",
        "Agreed, jazz bar it is.",
    ]);
    let app = with_fake(&fake).await;
    let (host, guest) = llm_pair(&app).await;
    let created = unjudged(&app, &host, &guest, 3).await;
    let frames = app.watch_to_the_end(&created).await;
    let messages = messages(&frames);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["content"], "I suggest the old jazz bar.");
    let mut fully_streamed = 0;
    for message in &messages {
        let text: String = frames
            .iter()
            .filter(|f| f["type"] == "delta" && f["turn_id"] == message["turn_id"])
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(
            message["content"].as_str().unwrap().ends_with(&text),
            "deltas are pieces of the message"
        );
        if text == message["content"] {
            fully_streamed += 1;
        }
    }
    assert!(
        fully_streamed >= 2,
        "a viewer connected from the start sees whole turns stream: {frames:#?}"
    );
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "delta" || f["seq"].is_null()),
        "deltas are ephemeral"
    );

    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["headline"], "Fake headline");
    let reported: u64 = [
        Purpose::Turn,
        Purpose::Summary,
        Purpose::Judge,
        Purpose::Selector,
    ]
    .into_iter()
    .map(|p| fake.tokens_reported(p))
    .sum();
    assert!(reported > 0);
    assert_eq!(done["tokens_used"], reported);
    // The persona and the objective reach the model.
    let first = &fake.requests(Purpose::Turn)[0].body;
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("You organise.") && system.contains("Plan a night out"),
        "{system}"
    );
    assert_eq!(first["stream"], true);
}

/// Who spoke, in order, once the collaboration has been summarized.
async fn speakers(app: &TestApp, created: Value) -> Vec<String> {
    app.wait_until_summarized(&id(&created)).await;
    app.history(created["channel_id"].as_str().unwrap())
        .await
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["sender"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_manager_strategy_follows_the_selector_model_and_falls_back_to_round_robin() {
    let fake = FakeModel::start().await;
    fake.select("Bob");
    let app = with_fake(&fake).await;
    let host = app
        .create_agent(json!({"name": "Host", "kind": "llm"}))
        .await;
    let ann = app
        .create_agent(json!({"name": "Ann", "kind": "llm"}))
        .await;
    let bob = app
        .create_agent(json!({"name": "Bob", "kind": "llm"}))
        .await;
    let body = json!({"principal": id(&host), "participants": [id(&ann), id(&bob)], "message_cap": 2,
                      "timeout_window": 30, "evaluate_objective_completion": false});
    let chosen = speakers(&app, app.create_collaboration(body.clone()).await).await;
    assert_eq!(
        chosen,
        ["Host", "Bob"],
        "the selector's choice, not round robin's Ann"
    );
    let asked = &fake.requests(Purpose::Selector)[0].body;
    let roster =
        asked["response_format"]["json_schema"]["schema"]["properties"]["speaker"]["enum"].clone();
    assert_eq!(
        roster,
        json!(["Ann", "Bob"]),
        "the last speaker is not offered"
    );

    fake.select("Mallory");
    let fallback = speakers(&app, app.create_collaboration(body).await).await;
    assert_eq!(
        fallback,
        ["Host", "Ann"],
        "an invalid choice falls back to round robin"
    );
}

#[tokio::test]
async fn the_judge_ends_the_collaboration_when_the_objective_is_met() {
    let fake = FakeModel::start().await;
    fake.verdicts(&[false, true]);
    let app = with_fake(&fake).await;
    let (host, guest) = llm_pair(&app).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 10, "objective": "Pick a restaurant"}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "objective_met");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["message_count"], 2);
    assert!(
        done["advisory_message"]
            .as_str()
            .unwrap()
            .contains("met is true")
    );
    assert_eq!(done["summary"], "Fake summary of the collaboration.");
    // The outcome the summarizer returned, in REST and in the summary frame alike.
    let outcome = json!({
        "decisions": ["Tapas at seven"],
        "action_items": [{"owner": "Scout", "task": "Book the table"}],
        "open_questions": ["Who drives?"],
    });
    assert_eq!(done["outcome"], outcome);
    let summarized = fake.requests(Purpose::Summary);
    assert_eq!(
        summarized[0].body["response_format"]["json_schema"]["schema"]["required"],
        json!(["headline", "summary", "outcome"])
    );
    let judged = fake.requests(Purpose::Judge);
    assert_eq!(judged.len(), 2);
    let quoted = judged[1].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        quoted.starts_with("<transcript>") && quoted.contains("Host: turn 1"),
        "{quoted}"
    );
    // Every judgement is on the record, after the message it judged, and the ending points
    // at the one that ended it.
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message", "verdict", "message", "verdict", "status", "summary"
        ]
    );
    assert_eq!(history[1]["met"], false);
    assert_eq!(history[1]["judged_seq"], history[0]["seq"]);
    assert_eq!(history[3]["met"], true);
    assert_eq!(history[3]["judged_seq"], history[2]["seq"]);
    assert!(
        history[3]["reason"]
            .as_str()
            .unwrap()
            .contains("met is true")
    );
    assert_eq!(history[4]["verdict_seq"], history[3]["seq"]);
    assert_eq!(history[5]["outcome"], outcome);
    // What each member's turns cost, message by message and added up.
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    for (member, message) in figures["members"].as_array().unwrap().iter().zip([0, 2]) {
        let tokens = history[message]["tokens"].as_u64().unwrap();
        assert!(tokens > 0, "{}", history[message]);
        assert_eq!(member["tokens"], tokens, "{member}");
        assert_eq!(member["turns"], 1);
    }
}

#[tokio::test]
async fn a_resumed_collaboration_is_not_judged_again_on_what_was_already_judged() {
    let fake = FakeModel::start().await;
    let app = with_fake(&fake).await;
    let created = app
        .collaborate(
            &app.scripted("Planner", &["How about Friday?"], 1500).await,
            &app.scripted("Scout", &["Friday works."], 1500).await,
            json!({"message_cap": 3, "objective": "Pick a day"}),
        )
        .await;
    let channel = created["channel_id"].as_str().unwrap().to_owned();
    // The first message is judged; the server stops while the second is being spoken.
    crate::support::wait_for(|| async {
        let history = app.history(&channel).await;
        history.iter().any(|e| e["type"] == "verdict").then_some(())
    })
    .await;
    let data = app.shut_down_keeping_data().await;
    let base = fake.base_url();
    let app = crate::support::spawn_app_in_with(data, move |c| {
        c.providers = vec![default_provider(&base)]
    })
    .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "message_cap", "{done}");
    let history = app.history(&channel).await;
    let messages: Vec<i64> = history
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let judged: Vec<i64> = history
        .iter()
        .filter(|e| e["type"] == "verdict")
        .map(|e| e["judged_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(judged, messages, "each message judged once");
    assert_eq!(fake.requests(Purpose::Judge).len(), messages.len());
}

#[tokio::test]
async fn a_hanging_model_ends_the_collaboration_after_the_inactivity_window() {
    let fake = FakeModel::start().await;
    fake.fail_always(Purpose::Turn, Fault::Hang);
    let app = with_fake(&fake).await;
    let (host, guest) = llm_pair(&app).await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 10, "timeout_window": 1}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "inactivity_timeout");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["message_count"], 0);
    assert!(
        done["advisory_message"]
            .as_str()
            .unwrap()
            .contains("1-second")
    );
}

/// A collaboration of an llm pair against `fake`, to its summary: the app, the host, the
/// collaboration as created and as it ended.
async fn ended_llm_collaboration(fake: &FakeModel) -> (TestApp, Value, Value, Value) {
    let app = with_fake(fake).await;
    let (host, guest) = llm_pair(&app).await;
    let created = app
        .collaborate(&host, &guest, json!({"message_cap": 10}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    (app, host, created, done)
}

#[tokio::test]
async fn a_model_that_keeps_failing_fails_the_collaboration_after_its_retries() {
    let fake = FakeModel::start().await;
    fake.fail_always(Purpose::Turn, Fault::ServerError);
    let (app, host, created, done) = ended_llm_collaboration(&fake).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["end_reason"], "error");
    let error = done["error_message"].as_str().unwrap();
    assert!(
        error.contains("Host failed") && error.contains("500"),
        "{error}"
    );
    assert_eq!(
        fake.requests(Purpose::Turn).len(),
        1 + Config::default().models.max_retries as usize
    );
    // The figures say whose turn failed.
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    let failures: Vec<(&str, u64)> = figures["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["agent"]["name"].as_str().unwrap(),
                m["failures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(failures, [("Host", 1), ("Guest", 0)]);
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let status = history.iter().find(|e| e["type"] == "status").unwrap();
    assert_eq!(status["failed_agent"], host["id"]);
}

#[tokio::test]
async fn a_refused_streamed_turn_fails_at_once_in_the_provider_s_own_words() {
    let fake = FakeModel::start().await;
    fake.fail_next(Purpose::Turn, Fault::Refused);
    let (_, _, _, done) = ended_llm_collaboration(&fake).await;
    assert_eq!(done["status"], "failed");
    let error = done["error_message"].as_str().unwrap();
    assert!(
        error.contains("Host failed")
            && error.contains("400")
            && error.contains("invalid_request_error: the prompt is longer than this model reads"),
        "{error}"
    );
    // A request refused as it stands is not sent again.
    assert_eq!(fake.requests(Purpose::Turn).len(), 1);
    assert_eq!(fake.requests(Purpose::Turn)[0].body["stream"], true);
}

#[tokio::test]
async fn a_rate_limited_call_waits_for_retry_after_then_succeeds() {
    let fake = FakeModel::start().await;
    fake.fail_next(
        Purpose::Turn,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    fake.reply_with(&["Made it."]);
    let app = with_fake(&fake).await;
    let (host, guest) = llm_pair(&app).await;
    let created = unjudged(&app, &host, &guest, 1).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "message_cap");
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(history[0]["content"], "Made it.");
    let turns = fake.requests(Purpose::Turn);
    assert_eq!(turns.len(), 2);
    let waited = turns[1].at - turns[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before Retry-After"
    );
}

#[tokio::test]
async fn a_server_error_and_a_broken_stream_are_retried_and_viewers_restart_the_turn() {
    let fake = FakeModel::start().await;
    fake.fail_next(Purpose::Turn, Fault::ServerError);
    fake.fail_next(Purpose::Turn, Fault::BrokenStream);
    fake.reply_with(&["Third time lucky."]);
    let app = with_fake(&fake).await;
    // A scripted principal opens slowly, so the viewer is watching when the model's turn comes.
    let host = app.scripted("Host", &["Over to you."], 300).await;
    let guest = app
        .create_agent(json!({"name": "Guest", "kind": "llm"}))
        .await;
    let created = unjudged(&app, &host, &guest, 2).await;
    let frames = app.watch_to_the_end(&created).await;
    let messages = messages(&frames);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["content"], "Third time lucky.");
    let deltas: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "delta" && f["turn_id"] == messages[1]["turn_id"])
        .collect();
    let restart = deltas
        .iter()
        .rposition(|d| d["restart"] == true)
        .expect("the broken attempt is announced");
    let after: String = deltas[restart + 1..]
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        after, "Third time lucky.",
        "the text after the restart is the whole message"
    );
    assert_eq!(
        fake.requests(Purpose::Turn).len(),
        3,
        "500, broken stream, success"
    );
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(
        history.iter().filter(|e| e["type"] == "message").count(),
        2,
        "the turn is stored once"
    );
    // It says it was tried again twice, and so do the figures; the host's turn was not.
    let stored: Vec<&Value> = history.iter().filter(|e| e["type"] == "message").collect();
    assert_eq!(stored[1]["retries"], 2);
    assert!(stored[0].get("retries").is_none());
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    assert_eq!(figures["members"][0]["retries"], 0);
    assert_eq!(figures["members"][1]["retries"], 2);
    assert_eq!(figures["members"][1]["failures"], 0);
}

/// An app whose model streams its pieces 600 ms apart, five pauses (three seconds in all),
/// with a call timeout of two seconds, and a collaboration of a scripted host and an llm
/// guest, two messages long: the finished collaboration and its two messages.
async fn slow_stream_collaboration(fake: &FakeModel) -> (Value, Vec<Value>) {
    let base = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.providers = vec![default_provider(&base)];
        c.models.call_timeout = Duration::from_secs(2);
    })
    .await;
    let host = app.scripted("Host", &["Over to you."], 0).await;
    let guest = app
        .create_agent(json!({"name": "Guest", "kind": "llm"}))
        .await;
    let created = unjudged(&app, &host, &guest, 2).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let stored = history
        .into_iter()
        .filter(|e| e["type"] == "message")
        .collect();
    (done, stored)
}

async fn slow_fake() -> FakeModel {
    FakeModel::start_expecting(
        "authorization",
        &format!("Bearer {KEY}"),
        Duration::from_millis(600),
    )
    .await
}

/// A stream is cut off when it has been quiet for the call timeout, not when it has
/// lasted that long: a reply that goes quiet is retried, and a slow one that keeps coming is
/// read to its end.
#[tokio::test]
async fn a_stream_that_goes_quiet_is_retried_and_a_slow_steady_one_is_kept() {
    let fake = slow_fake().await;
    fake.fail_next(Purpose::Turn, Fault::GoesQuiet);
    fake.reply_with(&["Slow but steady."]);
    let (done, stored) = slow_stream_collaboration(&fake).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1]["content"], "Slow but steady.");
    assert_eq!(stored[1]["retries"], 1);
    assert_eq!(fake.requests(Purpose::Turn).len(), 2, "quiet, then slow");
}

/// Comments in the stream (a proxy keeping the connection open while a model reasons) are
/// not silence: the model is waited for, up to the call's deadline.
#[tokio::test]
async fn a_model_that_keeps_its_stream_alive_while_it_thinks_is_waited_for() {
    let fake = slow_fake().await;
    fake.fail_next(Purpose::Turn, Fault::KeepsAlive);
    let (done, stored) = slow_stream_collaboration(&fake).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(stored[1]["content"], "Thought long, said little.");
    assert!(stored[1].get("retries").is_none(), "{}", stored[1]);
    assert_eq!(fake.requests(Purpose::Turn).len(), 1);
}

#[tokio::test]
async fn the_flock_provider_from_the_environment_sends_its_key_in_x_litellm_api_key() {
    let fake = FakeModel::start_expecting("x-litellm-api-key", KEY, Duration::ZERO).await;
    fake.reply_with(&["Hello from FLock."]);
    let base = fake.base_url();
    let env = Config::from_lookup(|name| match name {
        "FLOCK_LLM_API_KEY" => Some(KEY.to_owned()),
        "FLOCK_LLM_BASE_URL" => Some(base.clone()),
        _ => None,
    })
    .unwrap();
    let app = spawn_app_with(move |c| c.providers = env.providers).await;
    let host = app.create_agent(json!({"name": "Host", "kind": "llm", "provider": "flock", "model": "qwen3-30b-a3b-instruct-2507"})).await;
    let guest = app.scripted("Guest", &["hi"], 0).await;
    let created = unjudged(&app, &host, &guest, 1).await;
    app.wait_until_summarized(&id(&created)).await;
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    assert_eq!(history[0]["content"], "Hello from FLock.");
    let request = &fake.requests(Purpose::Turn)[0];
    assert_eq!(request.headers["x-litellm-api-key"], KEY);
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.body["model"], "qwen3-30b-a3b-instruct-2507");
}

#[tokio::test]
async fn a_provider_that_trickles_its_answer_forever_is_cut_off_at_the_deadline() {
    let fake = FakeModel::start().await;
    fake.fail_always(Purpose::Turn, Fault::Trickle);
    let base = fake.base_url();
    let app = spawn_app_with(move |config| {
        config.providers = vec![default_provider(&base)];
        config.models.deadline = Duration::from_secs(2);
    })
    .await;
    let (host, guest) = llm_pair(&app).await;
    let asked = std::time::Instant::now();
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 4, "timeout_window": 600}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    let took = asked.elapsed();
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["end_reason"], "error");
    let error = done["error_message"].as_str().unwrap();
    assert!(error.contains("SKEIN_LLM_DEADLINE_SECS"), "{error}");
    // The deadline, not the 10-minute inactivity window, ended it.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_provider_s_models_are_listed_for_the_picker_and_an_unknown_one_is_404() {
    let fake = FakeModel::start().await;
    let app = with_fake(&fake).await;
    let listed = app.get_json("/api/v1/providers/default/models").await;
    assert_eq!(
        listed,
        json!({"items": [{"id": "fake-model"}, {"id": "fake-model-large"}]})
    );
    let unknown = app.get("/api/v1/providers/nope/models").await;
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    // A provider that refuses the key: 502, saying so.
    let refusing =
        FakeModel::start_expecting("authorization", "Bearer other", Duration::ZERO).await;
    let app = with_fake(&refusing).await;
    let response = app.get("/api/v1/providers/default/models").await;
    let body = crate::support::problem(response, reqwest::StatusCode::BAD_GATEWAY).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("did not list its models"),
        "{body}"
    );
}

#[tokio::test]
async fn older_turns_are_folded_into_a_model_written_synopsis_that_later_prompts_carry() {
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c: &mut Config| {
        c.providers = vec![default_provider(&base)];
        c.engine.context_window = 4;
        // The fake answers "turn N" each time: distinct, so no stall.
    })
    .await;
    let (host, guest) = llm_pair(&app).await;
    let created = unjudged(&app, &host, &guest, 14).await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["message_count"], 14);

    // With a window of 4, eight messages had left it after the twelfth: one synopsis of
    // messages 1–8, read by the model as quoted data.
    let written = fake.requests(Purpose::Synopsis);
    assert_eq!(written.len(), 1, "one synopsis for 14 messages");
    let material = written[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(material.starts_with("<transcript>\n"), "{material}");
    assert_eq!(material.matches("\n").count(), 9, "eight lines: {material}");
    // The turns after it carry it in place of excerpts of those messages.
    let turns = fake.requests(Purpose::Turn);
    let last = turns.last().unwrap().body.to_string();
    assert!(
        last.contains("Synopsis of 8 messages, the last: "),
        "{last}"
    );
    let first = turns[0].body.to_string();
    assert!(!first.contains("Synopsis of"), "{first}");
    // Its tokens count with the rest.
    let (prompt, completion) = fake.usage_reported(Purpose::Synopsis);
    assert!(prompt > 0 && completion > 0);
    let turns_and_more: u64 = done["tokens_used"].as_u64().unwrap();
    assert!(turns_and_more >= fake.tokens_reported(Purpose::Turn) + prompt + completion);

    // Without a model for it, the synopsis stays excerpts (and nothing fails).
    fake.fail_always(Purpose::Synopsis, Fault::ServerError);
    let again = unjudged(&app, &host, &guest, 14).await;
    let done = app.wait_until_summarized(&id(&again)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let last = fake
        .requests(Purpose::Turn)
        .last()
        .unwrap()
        .body
        .to_string();
    assert!(
        last.contains("- Host: turn") && !last.contains("Synopsis of"),
        "excerpts stand in: {last}"
    );
}
