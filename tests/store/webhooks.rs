//! Webhooks: the account's settings, the outbox the events write, and claims on deliveries.

use std::collections::HashSet;

use chrono::{DateTime, SubsecRound, Utc};
use skein::domain::{
    EndReason, PageRequest,
    webhook::{AttemptOutcome, DeliveryStatus, DueDelivery, NextStep, WebhookSettings},
};
use skein::secrets::Secret;
use skein::store::Spent;
use uuid::Uuid;

use crate::support::{Shared, Team, each_store, ending, later, lease, now, team};

const DEFAULT_URL: &str = "https://hooks.example/default";

fn settings(account_id: Uuid, default_url: Option<&str>) -> WebhookSettings {
    let at = now();
    WebhookSettings {
        account_id,
        default_url: default_url.map(str::to_owned),
        secret: Secret::new("whsec_Zmlyc3Q="),
        created_at: at,
        updated_at: at,
    }
}

/// A team whose account sends webhooks to [`DEFAULT_URL`].
async fn hooked_team(store: &Shared) -> Team {
    let team = team(store, "hooked").await;
    assert!(
        store
            .create_webhook_settings(&settings(team.tenant.id(), Some(DEFAULT_URL)))
            .await
            .unwrap()
    );
    team
}

/// Claims everything due in the next second, for a minute. The times are the clock's own,
/// nanoseconds and all, as the delivery worker's are: a claim must still be recognized once
/// PostgreSQL has kept only its microseconds.
async fn claim_due(store: &Shared, limit: u32) -> (Vec<DueDelivery>, DateTime<Utc>) {
    let now = Utc::now() + chrono::Duration::seconds(1);
    let claim_until = now + chrono::Duration::seconds(59);
    let claimed = store.claim_webhooks(now, claim_until, limit).await.unwrap();
    (claimed, claim_until)
}

/// A time as every backend keeps it.
fn kept(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

#[tokio::test]
async fn settings_are_made_once_then_changed_in_place() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        assert!(store.webhook_settings(account).await.unwrap().is_none());
        assert!(
            !store
                .set_webhook_default_url(account, Some(DEFAULT_URL), now())
                .await
                .unwrap()
        );
        assert!(
            !store
                .rotate_webhook_secret(account, &Secret::new("whsec_bmV3"), now())
                .await
                .unwrap()
        );

        let first = settings(account, None);
        assert!(store.create_webhook_settings(&first).await.unwrap());
        let mut second = settings(account, Some(DEFAULT_URL));
        second.secret = Secret::new("whsec_c2Vjb25k");
        assert!(!store.create_webhook_settings(&second).await.unwrap());
        let stored = store.webhook_settings(account).await.unwrap().unwrap();
        assert_eq!(stored.secret, first.secret);
        assert_eq!(stored.default_url, None);
        assert_eq!(stored.created_at, first.created_at);

        let changed_at = later(10);
        assert!(
            store
                .set_webhook_default_url(account, Some(DEFAULT_URL), changed_at)
                .await
                .unwrap()
        );
        let stored = store.webhook_settings(account).await.unwrap().unwrap();
        assert_eq!(stored.default_url.as_deref(), Some(DEFAULT_URL));
        assert_eq!(stored.updated_at, changed_at);
        assert_eq!(stored.secret, first.secret);

        assert!(
            store
                .rotate_webhook_secret(account, &Secret::new("whsec_bmV3"), later(20))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_webhook_default_url(account, None, later(30))
                .await
                .unwrap()
        );
        let stored = store.webhook_settings(account).await.unwrap().unwrap();
        assert_eq!(stored.secret.expose(), "whsec_bmV3");
        assert_eq!(stored.default_url, None);
        assert_eq!(stored.created_at, first.created_at);
    })
    .await;
}

#[tokio::test]
async fn each_event_writes_its_delivery_with_the_change() {
    each_store(|store| async move {
        let team = hooked_team(&store).await;
        let account = team.tenant.id();
        let new = team.start(&store, 10).await;
        store
            .append_message(&lease(&store, new.id).await, &team.message("hello"), Spent::tokens(3))
            .await
            .unwrap()
            .unwrap();
        store
            .finish_collaboration(new.id, None, &ending(EndReason::ObjectiveMet))
            .await
            .unwrap()
            .unwrap();
        // Neither a second ending nor a second summary is an event.
        store
            .finish_collaboration(new.id, None, &ending(EndReason::Cancelled))
            .await
            .unwrap();
        store
            .record_summary(
                &crate::support::lease(&store, new.id).await,
                "Agreed",
                "They agreed on a name.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap()
            .unwrap();
        store
            .record_summary(
                &crate::support::lease(&store, new.id).await,
                "Again",
                "Again.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap();

        let (deliveries, total) = store
            .list_webhook_deliveries(account, PageRequest::default())
            .await
            .unwrap();
        assert_eq!(total, 3);
        let events: Vec<&str> = deliveries.iter().map(|d| d.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "collaboration.summary_ready",
                "collaboration.ended",
                "collaboration.started"
            ]
        );
        for delivery in &deliveries {
            assert_eq!(delivery.collaboration_id, new.id);
            assert_eq!(delivery.url, DEFAULT_URL);
            assert_eq!(delivery.status, DeliveryStatus::Pending);
            assert_eq!(delivery.attempts, 0);
            assert!(delivery.next_attempt_at.is_some());
        }

        let (due, _) = claim_due(&store, 10).await;
        assert_eq!(due.len(), 3);
        let mut payloads: Vec<serde_json::Value> = due
            .iter()
            .map(|d| {
                assert_eq!(d.account_id, account);
                assert_eq!(d.secret.expose(), "whsec_Zmlyc3Q=");
                assert_eq!(d.attempts, 0);
                serde_json::from_str(&d.payload).unwrap()
            })
            .collect();
        payloads.sort_by_key(|p| p["type"].as_str().unwrap().to_owned());
        let seen: Vec<(&str, &str)> = payloads
            .iter()
            .map(|p| {
                assert_eq!(p["data"]["id"], new.id.to_string());
                (
                    p["type"].as_str().unwrap(),
                    p["data"]["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("collaboration.ended", "completed"),
                ("collaboration.started", "running"),
                ("collaboration.summary_ready", "completed"),
            ]
        );
        // What each event tells is the collaboration as that event's transaction left it.
        assert_eq!(payloads[0]["data"]["message_count"], 1);
        assert_eq!(payloads[0]["data"]["summary"], serde_json::Value::Null);
        assert_eq!(payloads[2]["data"]["headline"], "Agreed");
        assert!(
            payloads[2]["data"]["outcome"].is_object(),
            "{}",
            payloads[2]
        );
        // The started event tells of the collaboration as it was created, whole.
        assert_eq!(
            payloads[1]["data"],
            serde_json::json!({
                "id": new.id, "channel_id": new.channel_id, "objective": new.objective,
                "status": "running", "end_reason": null, "message_count": 0, "tokens_used": 0, "cost_usd": 0.0, "team_id": null,
                "started_at": new.created_at, "ended_at": null, "headline": null,
                "summary": null, "outcome": null, "advisory_message": null, "error_message": null,
            })
        );
    })
    .await;
}

#[tokio::test]
async fn a_delivery_goes_to_the_collaborations_own_url_and_needs_a_secret() {
    each_store(|store| async move {
        let team = hooked_team(&store).await;
        let mut own = team.collaboration(10);
        own.webhook_url = Some("https://hooks.example/own".into());
        store.insert_collaboration(&own, 10, None).await.unwrap();
        let (deliveries, _) = store
            .list_webhook_deliveries(team.tenant.id(), PageRequest::default())
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].url, "https://hooks.example/own");

        // No settings: no secret to sign with, so nothing is queued, URL or not.
        let unsigned = crate::support::team(&store, "unsigned").await;
        let mut with_url = unsigned.collaboration(10);
        with_url.webhook_url = Some("https://hooks.example/own".into());
        store
            .insert_collaboration(&with_url, 10, None)
            .await
            .unwrap();
        // Settings without a default URL, and a collaboration naming none: nowhere to send.
        let nowhere = crate::support::team(&store, "nowhere").await;
        store
            .create_webhook_settings(&settings(nowhere.tenant.id(), None))
            .await
            .unwrap();
        nowhere.start(&store, 10).await;
        for account in [unsigned.tenant.id(), nowhere.tenant.id()] {
            let (_, total) = store
                .list_webhook_deliveries(account, PageRequest::default())
                .await
                .unwrap();
            assert_eq!(total, 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_take_the_same_delivery() {
    each_store(|store| async move {
        let team = hooked_team(&store).await;
        for _ in 0..12 {
            team.start(&store, 10).await;
        }
        let (deliveries, _) = store
            .list_webhook_deliveries(team.tenant.id(), PageRequest::default())
            .await
            .unwrap();
        let queued: HashSet<Uuid> = deliveries.iter().map(|d| d.id).collect();
        assert_eq!(queued.len(), 12);

        // Each round is later than the claims of the one before have lapsed: everything is
        // due again, and eight workers contend for it.
        for round in 1..=10 {
            let at = later(120 * round);
            let mut claims = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let store = store.clone();
                claims.spawn(async move {
                    store
                        .claim_webhooks(at, at + chrono::Duration::seconds(60), 12)
                        .await
                        .unwrap()
                });
            }
            let claimed: Vec<Uuid> = claims
                .join_all()
                .await
                .into_iter()
                .flatten()
                .map(|d| d.id)
                .collect();
            let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
            assert_eq!(distinct.len(), claimed.len(), "claimed twice: {claimed:?}");
            // A delivery is passed over only while another worker holds it.
            assert_eq!(distinct, queued);
        }
    })
    .await;
}

#[tokio::test]
async fn an_attempt_counts_only_under_the_claim_it_was_made_under() {
    each_store(|store| async move {
        let team = hooked_team(&store).await;
        let account = team.tenant.id();
        team.start(&store, 10).await;
        team.start(&store, 10).await;

        let (due, first_claim) = claim_due(&store, 10).await;
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.claimed_until == first_claim));
        // Claimed: not due again until the claim lapses.
        assert!(claim_due(&store, 10).await.0.is_empty());

        // The claim lapses (the worker died, say) and another worker takes over.
        let second_claim = first_claim + chrono::Duration::seconds(60);
        let retaken = store
            .claim_webhooks(first_claim + chrono::Duration::seconds(1), second_claim, 10)
            .await
            .unwrap();
        assert_eq!(retaken.len(), 2);

        let delivered = &due[0];
        let outcome = AttemptOutcome {
            at: later(2),
            status: Some(204),
            error: None,
            next: NextStep::Delivered,
        };
        // The first worker's late report changes nothing.
        store
            .record_webhook_attempt(delivered.id, first_claim, &outcome)
            .await
            .unwrap();
        let find = |id: Uuid| {
            let store = store.clone();
            async move {
                let (deliveries, _) = store
                    .list_webhook_deliveries(account, PageRequest::default())
                    .await
                    .unwrap();
                deliveries.into_iter().find(|d| d.id == id).unwrap()
            }
        };
        let untouched = find(delivered.id).await;
        assert_eq!(untouched.status, DeliveryStatus::Pending);
        assert_eq!(untouched.attempts, 0);
        assert_eq!(
            untouched.next_attempt_at.map(kept),
            Some(kept(second_claim))
        );

        // Under the claim that holds, it counts.
        store
            .record_webhook_attempt(delivered.id, second_claim, &outcome)
            .await
            .unwrap();
        let done = find(delivered.id).await;
        assert_eq!(done.status, DeliveryStatus::Delivered);
        assert_eq!(done.attempts, 1);
        assert_eq!(done.last_status, Some(204));
        assert_eq!(done.delivered_at, Some(outcome.at));
        assert_eq!(done.last_attempt_at, Some(outcome.at));
        assert_eq!(done.next_attempt_at, None);

        // A failed attempt is retried when it says, and given up on when it says so.
        let retried = &due[1];
        let retry_at = later(300);
        store
            .record_webhook_attempt(
                retried.id,
                second_claim,
                &AttemptOutcome {
                    at: later(3),
                    status: Some(503),
                    error: Some("service unavailable".into()),
                    next: NextStep::RetryAt(retry_at),
                },
            )
            .await
            .unwrap();
        let pending = find(retried.id).await;
        assert_eq!(pending.status, DeliveryStatus::Pending);
        assert_eq!(pending.attempts, 1);
        assert_eq!(pending.next_attempt_at, Some(retry_at));
        assert_eq!(pending.last_error.as_deref(), Some("service unavailable"));
        assert!(claim_due(&store, 10).await.0.is_empty());

        let again = store
            .claim_webhooks(retry_at, later(400), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        store
            .record_webhook_attempt(
                retried.id,
                again[0].claimed_until,
                &AttemptOutcome {
                    at: later(310),
                    status: None,
                    error: Some("connection refused".into()),
                    next: NextStep::GiveUp,
                },
            )
            .await
            .unwrap();
        let failed = find(retried.id).await;
        assert_eq!(failed.status, DeliveryStatus::Failed);
        assert_eq!(failed.attempts, 2);
        assert_eq!(failed.last_status, None);
        assert_eq!(failed.next_attempt_at, None);
        assert!(
            store
                .claim_webhooks(later(10_000), later(10_060), 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn a_claimed_delivery_put_back_is_due_again_and_settled_ones_are_purged() {
    each_store(|store| async move {
        let team = hooked_team(&store).await;
        let account = team.tenant.id();
        team.start(&store, 10).await;
        team.start(&store, 10).await;
        let (due, claimed_until) = claim_due(&store, 10).await;
        assert_eq!(due.len(), 2);
        // One goes back, to be due at once; a stale claim changes nothing.
        store
            .unclaim_webhook(due[0].id, claimed_until, now())
            .await
            .unwrap();
        store
            .unclaim_webhook(due[1].id, later(-1000), now())
            .await
            .unwrap();
        let (again, _) = claim_due(&store, 10).await;
        assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [due[0].id]);

        // Settled: delivered. Purged once older than the cut-off, pending ones never.
        let delivered = AttemptOutcome {
            at: now(),
            status: Some(200),
            error: None,
            next: NextStep::Delivered,
        };
        store
            .record_webhook_attempt(due[1].id, claimed_until, &delivered)
            .await
            .unwrap();
        assert_eq!(store.purge_webhook_deliveries(later(-60)).await.unwrap(), 0);
        assert_eq!(store.purge_webhook_deliveries(later(60)).await.unwrap(), 1);
        let (left, total) = store
            .list_webhook_deliveries(account, PageRequest::default())
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(left[0].id, due[0].id);
    })
    .await;
}
