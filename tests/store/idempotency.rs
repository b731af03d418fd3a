//! Idempotency keys: what a request finds when it claims one.

use chrono::Duration;
use skein::store::IdempotencyClaim;
use tokio::task::JoinSet;

use crate::support::{each_store, later, tenant};

/// Claims made before this are expired: none, in most tests.
fn a_day_ago() -> chrono::DateTime<chrono::Utc> {
    later(0) - Duration::hours(24)
}

#[tokio::test]
async fn a_claim_goes_from_in_flight_to_completed() {
    each_store(|store| async move {
        let account = tenant(&store, "tenant").await.id();
        let claim = |hash: &'static str| {
            let store = store.clone();
            async move {
                store
                    .claim_idempotency(account, "key-1", hash, a_day_ago(), a_day_ago())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(claim("hash-a").await, IdempotencyClaim::Claimed);
        assert_eq!(claim("hash-a").await, IdempotencyClaim::InFlight);
        // While in flight, even a different request only hears that it is.
        assert_eq!(claim("hash-b").await, IdempotencyClaim::InFlight);

        store
            .complete_idempotency(account, "key-1", 201, b"sealed response")
            .await
            .unwrap();
        assert_eq!(
            claim("hash-a").await,
            IdempotencyClaim::Completed {
                status: 201,
                response: b"sealed response".to_vec()
            }
        );
        assert_eq!(claim("hash-b").await, IdempotencyClaim::Mismatch);

        // Releasing is for claims that did not finish: a completed one stays.
        store.release_idempotency(account, "key-1").await.unwrap();
        assert!(matches!(
            claim("hash-a").await,
            IdempotencyClaim::Completed { status: 201, .. }
        ));
    })
    .await;
}

#[tokio::test]
async fn a_released_claim_is_free_again() {
    each_store(|store| async move {
        let account = tenant(&store, "tenant").await.id();
        let claim = store
            .claim_idempotency(account, "key-1", "hash-a", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(claim, IdempotencyClaim::Claimed);
        store.release_idempotency(account, "key-1").await.unwrap();
        let claim = store
            .claim_idempotency(account, "key-1", "hash-b", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(claim, IdempotencyClaim::Claimed);
    })
    .await;
}

#[tokio::test]
async fn keys_belong_to_an_account_and_expire() {
    each_store(|store| async move {
        let account = tenant(&store, "tenant").await.id();
        let other = tenant(&store, "other").await.id();
        for who in [account, other] {
            let claim = store
                .claim_idempotency(who, "key-1", "hash-a", a_day_ago(), a_day_ago())
                .await
                .unwrap();
            assert_eq!(claim, IdempotencyClaim::Claimed);
        }
        store
            .complete_idempotency(account, "key-1", 200, b"first")
            .await
            .unwrap();

        // Everything claimed before a minute from now has expired: the claim starts over,
        // for another request too, and what was kept of the first is gone.
        let claim = store
            .claim_idempotency(account, "key-1", "hash-b", later(60), a_day_ago())
            .await
            .unwrap();
        assert_eq!(claim, IdempotencyClaim::Claimed);
        let claim = store
            .claim_idempotency(account, "key-1", "hash-b", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(claim, IdempotencyClaim::InFlight);
        store
            .complete_idempotency(account, "key-1", 202, b"second")
            .await
            .unwrap();
        let claim = store
            .claim_idempotency(account, "key-1", "hash-b", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(
            claim,
            IdempotencyClaim::Completed {
                status: 202,
                response: b"second".to_vec()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn purging_removes_expired_claims_and_on_request_those_in_flight() {
    each_store(|store| async move {
        let account = tenant(&store, "tenant").await.id();
        for key in ["done", "in-flight"] {
            store
                .claim_idempotency(account, key, "hash", a_day_ago(), a_day_ago())
                .await
                .unwrap();
        }
        store
            .complete_idempotency(account, "done", 200, b"")
            .await
            .unwrap();

        assert_eq!(
            store.purge_idempotency(a_day_ago(), false).await.unwrap(),
            0
        );
        assert_eq!(store.purge_idempotency(a_day_ago(), true).await.unwrap(), 1);
        let claim = store
            .claim_idempotency(account, "done", "hash", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(
            claim,
            IdempotencyClaim::Completed {
                status: 200,
                response: Vec::new()
            }
        );
        assert_eq!(store.purge_idempotency(later(60), false).await.unwrap(), 1);
        let claim = store
            .claim_idempotency(account, "done", "hash", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(claim, IdempotencyClaim::Claimed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claims_exactly_one_goes_through() {
    each_store(|store| async move {
        let account = tenant(&store, "tenant").await.id();
        for round in 0..5 {
            let key = format!("key-{round}");
            let mut claims = JoinSet::new();
            for _ in 0..8 {
                let store = store.clone();
                let key = key.clone();
                claims.spawn(async move {
                    store
                        .claim_idempotency(account, &key, "hash", a_day_ago(), a_day_ago())
                        .await
                        .unwrap()
                });
            }
            let claims = claims.join_all().await;
            let claimed = claims
                .iter()
                .filter(|c| **c == IdempotencyClaim::Claimed)
                .count();
            assert_eq!(claimed, 1, "{claims:?}");
            assert!(
                claims
                    .iter()
                    .all(|c| matches!(c, IdempotencyClaim::Claimed | IdempotencyClaim::InFlight)),
                "{claims:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_claim_left_in_flight_by_a_process_that_died_is_taken_over_once_abandoned() {
    each_store(|store| async move {
        let account = tenant(&store, "acme").await.id();
        let first = store
            .claim_idempotency(account, "key-1", "hash-a", a_day_ago(), a_day_ago())
            .await
            .unwrap();
        assert_eq!(first, IdempotencyClaim::Claimed);
        // Its process died: the claim stays in flight, and holds the key meanwhile.
        assert_eq!(
            store
                .claim_idempotency(account, "key-1", "hash-a", a_day_ago(), a_day_ago())
                .await
                .unwrap(),
            IdempotencyClaim::InFlight
        );
        // Past the age at which a request in flight is taken for abandoned, the key is free.
        assert_eq!(
            store
                .claim_idempotency(account, "key-1", "hash-a", a_day_ago(), later(1))
                .await
                .unwrap(),
            IdempotencyClaim::Claimed
        );
        // A finished one is never taken for abandoned: it replays.
        store
            .complete_idempotency(account, "key-1", 201, b"kept")
            .await
            .unwrap();
        assert!(matches!(
            store
                .claim_idempotency(account, "key-1", "hash-a", a_day_ago(), later(1))
                .await
                .unwrap(),
            IdempotencyClaim::Completed { status: 201, .. }
        ));
    })
    .await;
}
