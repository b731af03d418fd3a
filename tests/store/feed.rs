//! An account's feed: its collaborations' lasting changes numbered without gaps, in the
//! order they commit, read after any number, and forgotten after a while.

use std::sync::Arc;

use skein::domain::{
    EndReason, Outcome,
    feed::{ChangeKind, FeedPage},
};
use tokio::task::JoinSet;

use crate::support::{each_store, ending, later, lease, team, tenant};

#[tokio::test]
async fn an_accounts_changes_are_numbered_in_order_and_read_after_any_number() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let other = tenant(&store, "other").await;
        assert_eq!(
            store.account_feed(account, 0, 100).await.unwrap(),
            FeedPage::default(),
            "a new account's feed is empty"
        );

        let first = team.start(&store, 10).await;
        let second = team.start(&store, 10).await;
        let held = lease(&store, first.id).await;
        store
            .finish_collaboration(first.id, Some(&held), &ending(EndReason::Cancelled))
            .await
            .unwrap()
            .unwrap();
        store
            .record_summary(&held, "Done", "It ended.", &Outcome::default())
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .delete_collaboration(account, second.id)
                .await
                .unwrap()
        );
        // What changes nothing is not a change: a second end, a second summary.
        assert!(
            store
                .finish_collaboration(first.id, Some(&held), &ending(EndReason::Cancelled))
                .await
                .unwrap()
                .is_none()
        );

        let page = store.account_feed(account, 0, 100).await.unwrap();
        let seen: Vec<(i64, _, _)> = page
            .changes
            .iter()
            .map(|c| (c.rev, c.collaboration_id, c.kind))
            .collect();
        assert_eq!(
            seen,
            [
                (1, first.id, ChangeKind::Created),
                (2, second.id, ChangeKind::Created),
                (3, first.id, ChangeKind::Ended),
                (4, first.id, ChangeKind::Summarized),
                (5, second.id, ChangeKind::Deleted),
            ]
        );
        assert_eq!((page.latest, page.gap), (5, false));

        let after = store.account_feed(account, 3, 1).await.unwrap();
        assert_eq!(after.changes.len(), 1, "at most the limit");
        assert_eq!(after.changes[0].rev, 4);
        assert!(!after.gap);
        assert_eq!(
            store.account_feed(other.id(), 0, 100).await.unwrap(),
            FeedPage::default(),
            "another account sees none of it"
        );

        // Forgotten changes cannot be resumed after: the reader is told so.
        assert_eq!(store.purge_account_feed(later(60)).await.unwrap(), 5);
        let purged = store.account_feed(account, 2, 100).await.unwrap();
        assert!(purged.changes.is_empty());
        assert_eq!((purged.latest, purged.gap), (5, true));
        assert!(!store.account_feed(account, 5, 100).await.unwrap().gap);
        let next = team.start(&store, 10).await;
        let page = store.account_feed(account, 5, 100).await.unwrap();
        assert_eq!(page.changes[0].rev, 6, "numbers go on after a purge");
        assert_eq!(page.changes[0].collaboration_id, next.id);
    })
    .await;
}

/// Creates racing on one account (on PostgreSQL, from several connections) take distinct
/// numbers with no gaps, and every number read was committed before any later one.
#[tokio::test]
async fn concurrent_changes_take_distinct_numbers_without_gaps() {
    each_store(|store| async move {
        let team = Arc::new(team(&store, "team").await);
        let account = team.tenant.id();
        let mut starts = JoinSet::new();
        for _ in 0..24 {
            let (store, team) = (store.clone(), team.clone());
            starts.spawn(async move {
                store
                    .insert_collaboration(&team.collaboration(10), 100, None)
                    .await
            });
        }
        for started in starts.join_all().await {
            started.unwrap();
        }
        let page = store.account_feed(account, 0, 100).await.unwrap();
        let revs: Vec<i64> = page.changes.iter().map(|c| c.rev).collect();
        assert_eq!(revs, (1..=24).collect::<Vec<_>>());
        assert_eq!(page.latest, 24);
    })
    .await;
}
