//! Money: a price table turns the tokens the provider reports into `cost_usd`, per
//! collaboration and per member, and `cost_budget_usd` ends a collaboration when spent.

use reqwest::StatusCode;
use serde_json::json;
use skein::{agents::Price, config::Config};

use crate::support::{
    default_provider,
    fake_model::{FakeModel, Purpose},
    id, problem, spawn_app_with,
};

/// One dollar per million prompt tokens, two per million answer tokens: every call costs a
/// whole number of millionths, so sums compare exactly.
fn priced(fake: &FakeModel) -> impl FnOnce(&mut Config) {
    let base = fake.base_url();
    move |config: &mut Config| {
        config.providers = vec![default_provider(&base)];
        config.models.prices = [(
            "default/fake-model".to_owned(),
            Price {
                input: 1.0,
                output: 2.0,
            },
        )]
        .into();
    }
}

fn dollars(fake: &FakeModel, purposes: &[Purpose]) -> f64 {
    purposes
        .iter()
        .map(|p| {
            let (input, output) = fake.usage_reported(*p);
            (input + 2 * output) as f64 / 1e6
        })
        .sum()
}

#[tokio::test]
async fn every_model_call_is_priced_and_the_cost_adds_up_per_member_and_in_all() {
    let fake = FakeModel::start().await;
    let app = spawn_app_with(priced(&fake)).await;
    let created = app
        .two_models(json!({"message_cap": 4, "evaluate_objective_completion": true}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    let all = dollars(&fake, &[Purpose::Turn, Purpose::Judge, Purpose::Summary]);
    assert!(all > 0.0);
    assert!(
        (done["cost_usd"].as_f64().unwrap() - all).abs() < 1e-9,
        "{} vs {all}",
        done["cost_usd"]
    );
    // The members' turns, prompts and answers apart.
    let figures = app
        .get_json(&format!("/api/v1/collaborations/{}/figures", id(&created)))
        .await;
    let members = figures["members"].as_array().unwrap();
    let turns: f64 = members
        .iter()
        .map(|m| m["cost_usd"].as_f64().unwrap())
        .sum();
    assert!((turns - dollars(&fake, &[Purpose::Turn])).abs() < 1e-9);
    let (input, output) = fake.usage_reported(Purpose::Turn);
    let sum = |key: &str| {
        members
            .iter()
            .map(|m| m[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("input_tokens"), sum("output_tokens")), (input, output));
    // Each message says what it cost.
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let first = history.iter().find(|e| e["type"] == "message").unwrap();
    assert!(first["cost_usd"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_spent_cost_budget_ends_the_collaboration_saying_so() {
    let fake = FakeModel::start().await;
    let app = spawn_app_with(priced(&fake)).await;
    let created = app
        .two_models(
            json!({"message_cap": 20, "evaluate_objective_completion": false,
               "cost_budget_usd": 0.0005}),
        )
        .await;
    assert_eq!(created["cost_budget_usd"], 0.0005);
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "cost_budget");
    assert_eq!(done["status"], "completed");
    assert!(done["message_count"].as_u64().unwrap() < 20);
    assert!(done["cost_usd"].as_f64().unwrap() >= 0.0005);
    let advisory = done["advisory_message"].as_str().unwrap();
    assert!(advisory.contains("cost budget of $0.0005"), "{advisory}");
}

#[tokio::test]
async fn a_model_without_a_price_costs_nothing_and_never_spends_a_budget() {
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let created = app
        .two_models(
            json!({"message_cap": 3, "evaluate_objective_completion": false,
               "cost_budget_usd": 0.000001}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "message_cap");
    assert_eq!(done["cost_usd"], 0.0);
    assert!(done["tokens_used"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_cost_budget_that_is_not_a_positive_amount_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    let a = app.scripted("A", &["a"], 0).await;
    let b = app.scripted("B", &["b"], 0).await;
    for budget in [json!(0), json!(-1.5), json!(2_000_000), json!("five")] {
        let response = app
            .post(
                "/api/v1/collaborations",
                &json!({"principal": id(&a), "participants": [id(&b)], "message_cap": 2,
                        "timeout_window": 30, "cost_budget_usd": budget}),
            )
            .await;
        let status = response.status();
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{budget}: {status}"
        );
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(body["errors"][0]["field"], "cost_budget_usd", "{body}");
        }
    }
    let listed = app.get_json("/api/v1/collaborations").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn webhooks_say_what_a_collaboration_cost() {
    let fake = FakeModel::start().await;
    let receiver = crate::support::peers::Receiver::start().await;
    let app = spawn_app_with(priced(&fake)).await;
    let secret = crate::webhooks::set_up(&app, Some(receiver.url())).await;
    receiver.trust(&secret);
    let created = app
        .two_models(json!({"message_cap": 2, "evaluate_objective_completion": false}))
        .await;
    let done = app.wait_until_summarized(&id(&created)).await;
    let delivered = crate::webhooks::all_three(&receiver).await;
    let data = |event: &str| {
        delivered
            .iter()
            .find(|d| d.body["type"] == event)
            .map(|d| d.body["data"].clone())
            .unwrap()
    };
    assert_eq!(data("collaboration.started")["cost_usd"], 0.0);
    let summarized = data("collaboration.summary_ready");
    assert!(done["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(summarized["cost_usd"], done["cost_usd"], "{summarized}");
    assert!(summarized["team_id"].is_null());
}
