//! WebSocket tickets: redeemed once, for their channel, before they expire, by a live key.

use crate::support::{each_store, later, team};

#[tokio::test]
async fn a_ticket_is_redeemed_once_and_only_for_its_channel() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let watched = team.start(&store, 10).await;
        let elsewhere = team.start(&store, 10).await;
        let key = store
            .get_key(account, team.tenant.key.id)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_ticket("ticket-hash", &key, watched.channel_id, later(60))
            .await
            .unwrap();

        assert!(
            store
                .redeem_ticket("ticket-hash", elsewhere.channel_id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .redeem_ticket("no such ticket", watched.channel_id)
                .await
                .unwrap()
                .is_none()
        );
        let credential = store
            .redeem_ticket("ticket-hash", watched.channel_id)
            .await
            .unwrap()
            .expect("the ticket is good for its channel");
        assert_eq!(credential.key.id, key.id);
        assert_eq!(credential.key.account_id, account);
        assert!(!credential.operator);
        assert!(
            store
                .redeem_ticket("ticket-hash", watched.channel_id)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn an_expired_ticket_or_a_revoked_key_lets_nobody_in() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let new = team.start(&store, 10).await;
        let key = store
            .get_key(account, team.tenant.key.id)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_ticket("expired", &key, new.channel_id, later(-1))
            .await
            .unwrap();
        assert!(
            store
                .redeem_ticket("expired", new.channel_id)
                .await
                .unwrap()
                .is_none()
        );

        store
            .insert_ticket("revoked", &key, new.channel_id, later(60))
            .await
            .unwrap();
        store.revoke_key(account, key.id, later(0)).await.unwrap();
        assert!(
            store
                .redeem_ticket("revoked", new.channel_id)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_redemptions_one_gets_in() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let key = store
            .get_key(team.tenant.id(), team.tenant.key.id)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_ticket("contested", &key, new.channel_id, later(60))
            .await
            .unwrap();
        let mut redemptions = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            redemptions.spawn(async move {
                store
                    .redeem_ticket("contested", new.channel_id)
                    .await
                    .unwrap()
                    .is_some()
            });
        }
        let admitted = redemptions.join_all().await;
        assert_eq!(admitted.iter().filter(|a| **a).count(), 1, "{admitted:?}");
    })
    .await;
}
