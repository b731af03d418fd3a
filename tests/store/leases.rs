//! Leases: one process runs a collaboration, expired leases pass to whoever claims them, and
//! the database refuses writes made under a lease that has moved on (fencing).

use std::{collections::HashSet, time::Duration};

use skein::{
    domain::EndReason,
    store::{Claim, LeaseTo, Spent, StoreError},
};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{each_store, ending, team};

const LONG: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_collaboration_stored_with_a_lease_is_held_from_the_start() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.collaboration(10);
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let lease = store
            .insert_collaboration(
                &new,
                100,
                Some(LeaseTo {
                    owner: first,
                    ttl: SHORT,
                }),
            )
            .await
            .unwrap()
            .expect("a lease was asked for");
        assert_eq!((lease.collaboration_id, lease.owner), (new.id, first));
        assert_eq!(store.lease_holder(new.id).await.unwrap(), Some(first));
        // Nobody else can take it while it is held, and its holder may write.
        for which in [Claim::One(new.id), Claim::Expired { limit: 10 }] {
            let taken = store.claim_leases(second, LONG, which).await.unwrap();
            assert!(taken.is_empty(), "{taken:?}");
        }
        store
            .append_message(&lease, &team.message("mine"), Spent::tokens(1))
            .await
            .unwrap()
            .expect("stored under the lease it was stored with");
        assert_eq!(store.renew_leases(first, SHORT).await.unwrap(), vec![lease]);

        // It expires like any lease, and whoever claims it next fences the first holder out.
        tokio::time::sleep(SHORT * 2).await;
        let taken = store
            .claim_leases(second, LONG, Claim::Expired { limit: 10 })
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        assert!(taken[0].epoch > lease.epoch);
        let refused = store
            .append_message(&lease, &team.message("late"), Spent::tokens(1))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn a_lease_is_held_by_one_process_until_it_expires() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());

        let held = store
            .claim_leases(first, SHORT, Claim::One(new.id))
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        let lease = held[0];
        assert_eq!((lease.collaboration_id, lease.owner), (new.id, first));
        assert_eq!(store.lease_holder(new.id).await.unwrap(), Some(first));
        for which in [Claim::One(new.id), Claim::Expired { limit: 10 }] {
            assert!(
                store
                    .claim_leases(second, LONG, which)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        store
            .append_message(&lease, &team.message("mine"), Spent::tokens(1))
            .await
            .unwrap()
            .expect("stored under a live lease");

        tokio::time::sleep(SHORT * 2).await;
        assert_eq!(store.lease_holder(new.id).await.unwrap(), None);
        // Expired: the first process may no longer write, even before anyone claims it.
        let refused = store
            .append_message(&lease, &team.message("late"), Spent::tokens(1))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
        assert!(store.renew_leases(first, LONG).await.unwrap().is_empty());

        let taken = store
            .claim_leases(second, LONG, Claim::Expired { limit: 10 })
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].owner, second);
        assert!(taken[0].epoch > lease.epoch);
        assert_eq!(store.lease_holder(new.id).await.unwrap(), Some(second));
        let refused = store
            .finish_collaboration(new.id, Some(&lease), &ending(EndReason::Cancelled))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");

        // Nothing the stale lease tried was written.
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.message_count, 1);
        assert!(stored.end_reason.is_none());
        assert_eq!(
            store
                .read_events(new.channel_id, 0, 100)
                .await
                .unwrap()
                .len(),
            1
        );
        store
            .append_message(&taken[0], &team.message("theirs"), Spent::tokens(1))
            .await
            .unwrap()
            .expect("the new holder writes");
    })
    .await;
}

#[tokio::test]
async fn a_lease_claimed_again_by_the_same_process_fences_its_earlier_runner() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let owner = Uuid::new_v4();
        let before = store
            .claim_leases(owner, SHORT, Claim::One(new.id))
            .await
            .unwrap()[0];
        tokio::time::sleep(SHORT * 2).await;
        let after = store
            .claim_leases(owner, LONG, Claim::One(new.id))
            .await
            .unwrap()[0];
        assert_eq!(after.epoch, before.epoch + 1);
        let refused = store
            .append_message(&before, &team.message("old"), Spent::tokens(1))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
        assert!(
            store
                .append_message(&after, &team.message("new"), Spent::tokens(1))
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn renewal_keeps_leases_and_release_hands_them_over_at_once() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let (one, two) = (team.start(&store, 10).await, team.start(&store, 10).await);
        let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
        let leases = store
            .claim_leases(owner, SHORT, Claim::Expired { limit: 10 })
            .await
            .unwrap();
        assert_eq!(leases.len(), 2);

        // Renewed before they expire, they outlive their first term.
        for _ in 0..3 {
            tokio::time::sleep(SHORT / 2).await;
            let mut renewed = store.renew_leases(owner, SHORT).await.unwrap();
            renewed.sort_by_key(|lease| lease.collaboration_id);
            let mut expected = leases.clone();
            expected.sort_by_key(|lease| lease.collaboration_id);
            assert_eq!(renewed, expected, "renewal keeps owner and epoch");
        }
        assert!(
            store
                .claim_leases(other, LONG, Claim::Expired { limit: 10 })
                .await
                .unwrap()
                .is_empty()
        );

        store.release_lease(&leases[0]).await.unwrap();
        let released = leases[0].collaboration_id;
        assert_eq!(store.lease_holder(released).await.unwrap(), None);
        let taken = store
            .claim_leases(other, LONG, Claim::Expired { limit: 10 })
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].collaboration_id, released);

        assert_eq!(store.release_leases(owner).await.unwrap(), 1);
        let rest = store
            .claim_leases(other, LONG, Claim::Expired { limit: 10 })
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        let ids: HashSet<Uuid> = [taken[0], rest[0]]
            .iter()
            .map(|l| l.collaboration_id)
            .collect();
        assert_eq!(ids, HashSet::from([one.id, two.id]));
    })
    .await;
}

#[tokio::test]
async fn only_collaborations_that_need_a_runner_are_claimed() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let running = team.start(&store, 10).await;
        let unsummarized = team.start(&store, 10).await;
        let done = team.start(&store, 10).await;
        for ended in [&unsummarized, &done] {
            store
                .finish_collaboration(ended.id, None, &ending(EndReason::MessageCap))
                .await
                .unwrap()
                .unwrap();
        }
        store
            .record_summary(
                &crate::support::lease(&store, done.id).await,
                "Done",
                "All said.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap()
            .unwrap();

        let owner = Uuid::new_v4();
        let mut claimed: Vec<Uuid> = store
            .claim_leases(owner, LONG, Claim::Expired { limit: 10 })
            .await
            .unwrap()
            .into_iter()
            .map(|lease| lease.collaboration_id)
            .collect();
        claimed.sort();
        let mut expected = vec![running.id, unsummarized.id];
        expected.sort();
        assert_eq!(claimed, expected);
        assert!(
            store
                .claim_leases(owner, LONG, Claim::One(done.id))
                .await
                .unwrap()
                .is_empty()
        );

        // `All` takes live leases too: a lone server starting after a crash.
        let heir = Uuid::new_v4();
        let taken = store.claim_leases(heir, LONG, Claim::All).await.unwrap();
        assert_eq!(taken.len(), 2);
        assert!(taken.iter().all(|lease| lease.owner == heir));
        assert!(store.renew_leases(owner, LONG).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_claiming_at_once_never_get_the_same_collaboration() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let mut ids = HashSet::new();
        for _ in 0..30 {
            ids.insert(team.start(&store, 10).await.id);
        }
        let mut claims = JoinSet::new();
        for _ in 0..4 {
            let store = store.clone();
            claims.spawn(async move {
                let owner = Uuid::new_v4();
                let mut mine = Vec::new();
                for _ in 0..5 {
                    let leases = store
                        .claim_leases(owner, LONG, Claim::Expired { limit: 3 })
                        .await
                        .unwrap();
                    mine.extend(leases.into_iter().map(|lease| lease.collaboration_id));
                }
                mine
            });
        }
        let claimed: Vec<Uuid> = claims.join_all().await.into_iter().flatten().collect();
        let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            claimed.len(),
            "a collaboration was claimed twice"
        );
        assert!(distinct.is_subset(&ids));
        // 4 processes × 5 scans × 3 could take 60: all 30 are taken, each once.
        assert_eq!(distinct, ids);
    })
    .await;
}

#[tokio::test]
async fn tokens_the_summary_and_the_podcast_are_written_only_under_a_lease_still_held() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let lease = store
            .claim_leases(first, SHORT, Claim::One(new.id))
            .await
            .unwrap()
            .pop()
            .expect("a free lease");
        store
            .finish_collaboration(new.id, Some(&lease), &ending(EndReason::MessageCap))
            .await
            .unwrap()
            .expect("ended under the lease");
        store.add_tokens(&lease, 5, 0).await.unwrap();

        // The lease lapses and another process claims the collaboration, to summarize it.
        tokio::time::sleep(SHORT * 2).await;
        let theirs = store
            .claim_leases(second, LONG, Claim::One(new.id))
            .await
            .unwrap()
            .pop()
            .expect("the lapsed lease");
        let tokens = store.add_tokens(&lease, 100, 0).await;
        assert!(matches!(tokens, Err(StoreError::LeaseLost)), "{tokens:?}");
        let summary = store
            .record_summary(&lease, "Late", "Too late.", &Default::default())
            .await;
        assert!(matches!(summary, Err(StoreError::LeaseLost)), "{summary:?}");
        let audio = store.record_audio(&lease, Some("/late.wav"), None).await;
        assert!(matches!(audio, Err(StoreError::LeaseLost)), "{audio:?}");

        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.tokens_used, 5);
        assert_eq!(stored.summary, None);
        assert_eq!(stored.audio_url, None);
        // The new holder writes.
        store
            .record_summary(
                &theirs,
                "Done",
                "Summarized by the second process.",
                &Default::default(),
            )
            .await
            .unwrap()
            .expect("the summary");
    })
    .await;
}

#[tokio::test]
async fn a_message_written_again_is_answered_as_stored_and_counted_once() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let lease = crate::support::lease(&store, new.id).await;
        let message = team.message("once");
        let first = store
            .append_message(&lease, &message, Spent::tokens(7))
            .await
            .unwrap()
            .expect("stored");
        // The same write again, as a retry after a commit whose answer was lost would be.
        let again = store
            .append_message(&lease, &message, Spent::tokens(7))
            .await
            .unwrap()
            .expect("answered");
        assert_eq!(again, first);
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!((stored.message_count, stored.tokens_used), (1, 7));
        let events = store.read_events(new.channel_id, 0, 100).await.unwrap();
        assert_eq!(events, [first]);
        // Another message, with its own id, is another event.
        let next = store
            .append_message(&lease, &team.message("twice"), Spent::tokens(1))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(next.seq, 2);
    })
    .await;
}
