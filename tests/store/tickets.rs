//! WebSocket tickets: redeemed once, for their channel, before they expire, by a live key.

use crate::support::{each_store, later, now, team};

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

/// A ticket that is not there costs a read: redeeming it does not wait for the write lock,
/// which on SQLite every turn and every create shares.
#[tokio::test]
async fn redeeming_a_ticket_that_does_not_exist_takes_no_write_lock() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let store: crate::support::Shared = std::sync::Arc::new(
        skein::store::SqliteStore::open(
            dir.path(),
            &crate::support::tasks(),
            crate::support::vault(),
        )
        .await
        .unwrap(),
    );
    // Another connection holds the write lock, as a long write would.
    let url = format!("sqlite://{}", dir.path().join("skein.db").display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let redeemed = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        store.redeem_ticket("no-such-ticket-hash", uuid::Uuid::now_v7()),
    )
    .await
    .expect("answered without waiting for the write lock");
    assert!(redeemed.unwrap().is_none());
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_tickets_are_purged_used_or_not() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let key = store
            .get_key(team.tenant.id(), team.tenant.key.id)
            .await
            .unwrap()
            .unwrap();
        for (hash, expires) in [
            ("old-used", later(-120)),
            ("old", later(-61)),
            ("live", later(60)),
        ] {
            store
                .insert_ticket(hash, &key, new.channel_id, expires)
                .await
                .unwrap();
        }
        assert_eq!(store.purge_tickets(now()).await.unwrap(), 2);
        assert!(
            store
                .redeem_ticket("live", new.channel_id)
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}
