//! Collaborations: stored with roster and channel, capped per key, listed, deleted.

use chrono::Duration;
use skein::{
    domain::{CollaborationStatus, EndReason, PageRequest, Scope, Source},
    store::{CollaborationFilter, Spent, SqliteStore, StoreError},
};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{
    agent, each_store, ending, later, lease, needing_runner, new_key, now, sqlite_refusing, team,
};

#[tokio::test]
async fn a_collaboration_is_stored_with_its_roster_and_channel() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let third = agent(&store, team.tenant.id(), "third").await;
        let mut new = team.collaboration(12);
        new.participants = vec![third.id, team.participant.id];
        new.source = Some(Source::AsiOne);
        new.strategy = skein::domain::Strategy::Manager;
        new.webhook_url = Some("https://hooks.example/skein".into());
        new.token_budget = Some(5000);
        new.podcast = true;
        new.allow_interjections = false;
        new.evaluate_objective_completion = false;
        store.insert_collaboration(&new, 5, None).await.unwrap();

        let stored = store
            .get_collaboration(new.account_id, new.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.id, new.id);
        assert_eq!(stored.channel_id, new.channel_id);
        assert_eq!(stored.objective, new.objective);
        assert_eq!(stored.principal, team.principal.sender());
        assert_eq!(
            stored.participants,
            [third.sender(), team.participant.sender()]
        );
        assert_eq!(stored.message_cap, 12);
        assert_eq!(stored.timeout_window, 60);
        assert!(!stored.evaluate_objective_completion);
        assert_eq!(stored.source, Some(Source::AsiOne));
        assert_eq!(stored.strategy, skein::domain::Strategy::Manager);
        assert_eq!(stored.webhook_url, new.webhook_url);
        assert_eq!(stored.token_budget, Some(5000));
        assert!(stored.podcast);
        assert!(!stored.allow_interjections);
        assert_eq!(stored.status, CollaborationStatus::Running);
        assert_eq!(stored.end_reason, None);
        assert_eq!(stored.message_count, 0);
        assert_eq!(stored.tokens_used, 0);
        assert_eq!(stored.started_at, new.created_at);
        assert_eq!(stored.created_at, new.created_at);
        assert_eq!(stored.ended_at, None);
        // What the create handler answers with, without reading it back.
        assert_eq!(
            stored,
            new.started(&[team.principal.clone(), third, team.participant.clone()])
        );

        let channel = store
            .get_channel(new.account_id, new.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.collaboration_id, new.id);
        assert_eq!(channel.account_id, new.account_id);
        assert_eq!(channel.last_seq, 0);
        assert_eq!(channel.status, CollaborationStatus::Running);
        assert_eq!(channel.created_at, new.created_at);

        // Scoped to the account; the engine's view is not.
        let other = crate::support::tenant(&store, "other").await;
        assert!(
            store
                .get_collaboration(other.id(), new.id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_channel(other.id(), new.channel_id)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store
                .collaboration_unscoped(new.id)
                .await
                .unwrap()
                .map(|c| c.id),
            Some(new.id)
        );
        assert!(
            store
                .collaboration_unscoped(Uuid::now_v7())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(needing_runner(&store).await, [new.id]);
    })
    .await;
}

#[tokio::test]
async fn an_account_runs_at_most_max_running_collaborations_whichever_key_starts_them() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let first = team.collaboration(10);
        store.insert_collaboration(&first, 2, None).await.unwrap();
        store
            .insert_collaboration(&team.collaboration(10), 2, None)
            .await
            .unwrap();
        match store
            .insert_collaboration(&team.collaboration(10), 2, None)
            .await
        {
            Err(StoreError::Conflict(message)) => assert_eq!(
                message,
                "this account already has 2 running collaborations, the limit \
                 (SKEIN_MAX_RUNNING_PER_ACCOUNT = 2); stop one or wait for one to end"
            ),
            other => panic!("a third collaboration started: {other:?}"),
        }

        // Another key of the account has no places of its own.
        let key = new_key(team.tenant.id(), "second", vec![Scope::Write], false);
        store.insert_key(&key, 100).await.unwrap();
        let mut by_other_key = team.collaboration(10);
        by_other_key.created_by = key.id;
        assert!(matches!(
            store.insert_collaboration(&by_other_key, 2, None).await,
            Err(StoreError::Conflict(_))
        ));
        // Another account does.
        let others = crate::support::team(&store, "others").await;
        others.start(&store, 10).await;

        // An ended collaboration frees its slot.
        store
            .finish_collaboration(first.id, None, &ending(EndReason::Cancelled))
            .await
            .unwrap()
            .unwrap();
        store
            .insert_collaboration(&team.collaboration(10), 2, None)
            .await
            .unwrap();
        // Two running here, one in the other account, and the cancelled one until its
        // summary is written.
        assert_eq!(needing_runner(&store).await.len(), 4);

        // So does a deleted one.
        let third = team.collaboration(10);
        assert!(matches!(
            store.insert_collaboration(&third, 2, None).await,
            Err(StoreError::Conflict(_))
        ));
        let (running, _) = store
            .list_collaborations(
                team.tenant.id(),
                &skein::store::CollaborationFilter {
                    status: Some(skein::domain::CollaborationStatus::Running),
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let deleted = &running[0].id;
        assert!(
            store
                .delete_collaboration(team.tenant.id(), *deleted)
                .await
                .unwrap()
        );
        store.insert_collaboration(&third, 2, None).await.unwrap();
    })
    .await;
}

/// SQLite keeps each account's count by status (migration 0007), which the running cap
/// reads. A database upgraded with collaborations already running starts from their
/// number, so the cap still holds.
#[tokio::test]
async fn an_upgraded_database_counts_the_collaborations_already_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_at(dir.path()).await;
    let team = team(&store, "team").await;
    let ended = team.start(&store, 10).await;
    store
        .finish_collaboration(ended.id, None, &ending(EndReason::Cancelled))
        .await
        .unwrap()
        .unwrap();
    team.start(&store, 10).await;
    team.start(&store, 10).await;
    drop(store);

    // Back to the schema before 0007, with the three collaborations in it.
    rewind(
        dir.path(),
        "DROP TRIGGER collaboration_counted; DROP TRIGGER collaboration_uncounted; \
         DROP TRIGGER collaboration_recounted; DROP TABLE collaboration_counts; \
         DELETE FROM _sqlx_migrations WHERE version = 7",
    )
    .await;
    let store = sqlite_at(dir.path()).await;
    match store
        .insert_collaboration(&team.collaboration(10), 2, None)
        .await
    {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("already has 2 running"), "{message}")
        }
        other => panic!("the upgrade lost count of what runs: {other:?}"),
    }
    store
        .insert_collaboration(&team.collaboration(10), 3, None)
        .await
        .unwrap();
}

/// Collaborations stored before lists were ordered by feed revision (migration 0022) keep
/// their place, newest first, below the ones created after the upgrade.
#[tokio::test]
async fn an_upgraded_database_lists_its_collaborations_in_the_order_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_at(dir.path()).await;
    let team = team(&store, "team").await;
    let mut made = Vec::new();
    for i in 0..3 {
        let mut new = team.collaboration(10);
        new.created_at = later(0) + Duration::seconds(i);
        store.insert_collaboration(&new, 100, None).await.unwrap();
        made.push(new.id);
    }
    drop(store);

    // Back to the schema before 0022, with the three collaborations in it.
    rewind(
        dir.path(),
        "DROP TRIGGER tallied; DROP TRIGGER untallied; DROP TRIGGER retallied; \
         DROP TABLE collaboration_tallies; DROP INDEX collaborations_by_lease_owner; \
         DROP INDEX collaborations_by_account; DROP INDEX collaborations_by_account_status; \
         ALTER TABLE collaborations DROP COLUMN ordinal; \
         CREATE INDEX collaborations_by_account ON collaborations (account_id, created_at DESC, id); \
         CREATE INDEX collaborations_by_account_status \
             ON collaborations (account_id, status, created_at DESC, id); \
         DELETE FROM _sqlx_migrations WHERE version = 22",
    )
    .await;
    let store = sqlite_at(dir.path()).await;
    made.push(team.start(&store, 10).await.id);
    let (listed, total) = store
        .list_collaborations(
            team.tenant.id(),
            &CollaborationFilter::default(),
            PageRequest { page: 1, size: 10 },
        )
        .await
        .unwrap();
    made.reverse();
    assert_eq!(
        (listed.into_iter().map(|c| c.id).collect::<Vec<_>>(), total),
        (made, 4)
    );
}

/// A SQLite store on the database in `dir`, made or migrated as it opens.
async fn sqlite_at(dir: &std::path::Path) -> crate::support::Shared {
    std::sync::Arc::new(
        SqliteStore::open(dir, &crate::support::tasks(), crate::support::vault())
            .await
            .unwrap(),
    )
}

/// Runs `sql` on the closed database in `dir`: a schema taken back to before a migration.
async fn rewind(dir: &std::path::Path, sql: &'static str) {
    use sqlx::Connection;

    let url = format!("sqlite://{}", dir.join("skein.db").display());
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut raw).await.unwrap();
    raw.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_do_not_share_the_last_slots() {
    each_store(|store| async move {
        let team = std::sync::Arc::new(team(&store, "team").await);
        let mut starts = JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            let team = team.clone();
            starts.spawn(async move {
                store
                    .insert_collaboration(&team.collaboration(10), 3, None)
                    .await
            });
        }
        let results = starts.join_all().await;
        let started = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
            .count();
        assert_eq!((started, refused), (3, 5), "{results:?}");
        assert_eq!(needing_runner(&store).await.len(), 3);
    })
    .await;
}

/// SQLite writes creates many to a transaction. A create the database refuses after its
/// first rows are written fails alone, with none of its rows kept; the creates beside it
/// are stored, and the running cap still counts exactly the ones that were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_the_database_refuses_fails_alone() {
    // The channel is the last row a create writes, after the collaboration and its roster.
    let (_dir, store) = sqlite_refusing(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON channels WHEN (SELECT objective \
         FROM collaborations WHERE id = NEW.collaboration_id) = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
    )
    .await;
    let team = std::sync::Arc::new(team(&store, "team").await);
    // The refused create is another account's, so the cap (counted per account) never
    // stops it first, whichever order the creates reach the writer in.
    let other = std::sync::Arc::new(crate::support::team(&store, "other").await);
    let mut starts = JoinSet::new();
    for i in 0..12 {
        let (store, team, other) = (store.clone(), team.clone(), other.clone());
        starts.spawn(async move {
            let mut new = team.collaboration(10);
            if i == 5 {
                new = other.collaboration(10);
                new.objective = "poison".into();
            }
            let outcome = store.insert_collaboration(&new, 8, None).await;
            (new, outcome)
        });
    }
    let (mut stored, mut capped, mut refused) = (Vec::new(), 0, 0);
    for (new, outcome) in starts.join_all().await {
        match outcome {
            Ok(_) => stored.push(new.id),
            Err(StoreError::Conflict(_)) => capped += 1,
            Err(error) => {
                assert_eq!(new.objective, "poison", "{error}");
                assert!(
                    store
                        .collaboration_unscoped(new.id)
                        .await
                        .unwrap()
                        .is_none()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((stored.len(), capped, refused), (8, 3, 1));
    stored.sort();
    assert_eq!(needing_runner(&store).await, stored);
    let (_, total) = store
        .list_collaborations(
            team.tenant.id(),
            &CollaborationFilter::default(),
            PageRequest { page: 1, size: 50 },
        )
        .await
        .unwrap();
    assert_eq!(total, 8);
    // Nor does the other account's running cap count it: one more fits a cap of one.
    store
        .insert_collaboration(&other.collaboration(10), 1, None)
        .await
        .expect("the refused create is not counted");
}

/// A page thousands of rows deep is found from the tallies of runs of ordinals (SQLite,
/// migration 0022) or stepped to in the index (PostgreSQL): either way it holds what the
/// same rows of the whole list do, with some collaborations ended and some deleted, over
/// several runs, and filtered by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_deep_in_a_long_list_holds_what_the_whole_list_does_there() {
    each_store(|store| async move {
        let team = std::sync::Arc::new(team(&store, "team").await);
        let account = team.tenant.id();
        let mut starts = JoinSet::new();
        let mut made = Vec::new();
        for i in 0..6000 {
            let (store, team) = (store.clone(), team.clone());
            starts.spawn(async move {
                let new = team.collaboration(10);
                store
                    .insert_collaboration(&new, 10_000, None)
                    .await
                    .unwrap();
                new.id
            });
            if i % 64 == 63 {
                made.extend(starts.join_all().await);
                starts = JoinSet::new();
            }
        }
        made.extend(starts.join_all().await);
        for (i, id) in made.iter().enumerate() {
            if i % 3 == 0 {
                store
                    .finish_collaboration(*id, None, &ending(EndReason::ObjectiveMet))
                    .await
                    .unwrap();
            }
            if i % 11 == 0 {
                assert!(store.delete_collaboration(account, *id).await.unwrap());
            }
        }
        let list = |filter: CollaborationFilter, page: u32, size: u32| {
            let store = store.clone();
            async move {
                let (items, total) = store
                    .list_collaborations(account, &filter, PageRequest { page, size })
                    .await
                    .unwrap();
                (items.into_iter().map(|c| c.id).collect::<Vec<_>>(), total)
            }
        };
        for status in [None, Some(CollaborationStatus::Running)] {
            let filter = CollaborationFilter {
                status,
                ..Default::default()
            };
            // The whole list, in one page from the top.
            let (whole, total) = list(filter.clone(), 1, 10_000).await;
            assert_eq!(whole.len() as u64, total);
            let expected = made
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 11 != 0 && (status.is_none() || i % 3 != 0))
                .count();
            assert_eq!(whole.len(), expected, "{status:?}");
            for page in 1..=(whole.len() as u32).div_ceil(100) {
                let start = (page as usize - 1) * 100;
                let rows = &whole[start..(start + 100).min(whole.len())];
                assert_eq!(
                    list(filter.clone(), page, 100).await,
                    (rows.to_vec(), total),
                    "page {page} of {status:?}"
                );
            }
            let past = (whole.len() as u32).div_ceil(100) + 3;
            assert_eq!(list(filter, past, 100).await, (vec![], total));
        }
    })
    .await;
}

#[tokio::test]
async fn collaborations_are_filtered_and_paged_newest_first() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let outsider = agent(&store, account, "outsider").await;
        let mut made = Vec::new();
        for i in 0..5 {
            let mut new = team.collaboration(10);
            new.created_at = later(0) + Duration::seconds(i);
            new.source = (i % 2 == 0).then_some(Source::Flockx);
            if i >= 3 {
                new.participants.push(outsider.id);
            }
            store.insert_collaboration(&new, 100, None).await.unwrap();
            made.push(new);
        }
        store
            .finish_collaboration(made[1].id, None, &ending(EndReason::ObjectiveMet))
            .await
            .unwrap()
            .unwrap();
        // Another account's collaborations are never listed.
        let other = crate::support::team(&store, "other").await;
        other.start(&store, 10).await;

        let list = |filter: CollaborationFilter, page: u32, size: u32| {
            let store = store.clone();
            async move {
                let (items, total) = store
                    .list_collaborations(account, &filter, PageRequest { page, size })
                    .await
                    .unwrap();
                (items.into_iter().map(|c| c.id).collect::<Vec<_>>(), total)
            }
        };
        let all = CollaborationFilter::default();
        assert_eq!(
            list(all.clone(), 1, 2).await,
            (vec![made[4].id, made[3].id], 5)
        );
        assert_eq!(
            list(all.clone(), 2, 2).await,
            (vec![made[2].id, made[1].id], 5)
        );
        assert_eq!(list(all.clone(), 3, 2).await, (vec![made[0].id], 5));
        assert_eq!(list(all, 4, 2).await, (vec![], 5));

        let by_agent = CollaborationFilter {
            agent: Some(outsider.id),
            ..Default::default()
        };
        assert_eq!(
            list(by_agent, 1, 10).await,
            (vec![made[4].id, made[3].id], 2)
        );
        let principal = CollaborationFilter {
            agent: Some(team.principal.id),
            ..Default::default()
        };
        assert_eq!(list(principal, 1, 1).await.1, 5);
        let by_channel = CollaborationFilter {
            channel_id: Some(made[2].channel_id),
            ..Default::default()
        };
        assert_eq!(list(by_channel, 1, 10).await, (vec![made[2].id], 1));
        let completed = CollaborationFilter {
            status: Some(CollaborationStatus::Completed),
            ..Default::default()
        };
        assert_eq!(list(completed, 1, 10).await, (vec![made[1].id], 1));
        let running_from_flockx = CollaborationFilter {
            status: Some(CollaborationStatus::Running),
            source: Some(Source::Flockx),
            ..Default::default()
        };
        assert_eq!(
            list(running_from_flockx, 1, 10).await,
            (vec![made[4].id, made[2].id, made[0].id], 3)
        );
        let none = CollaborationFilter {
            source: Some(Source::FetchBusiness),
            ..Default::default()
        };
        assert_eq!(list(none, 1, 10).await, (vec![], 0));

        // Totals follow ends and deletes (SQLite keeps them as counts, not counted).
        let running = CollaborationFilter {
            status: Some(CollaborationStatus::Running),
            ..Default::default()
        };
        assert_eq!(list(running.clone(), 1, 1).await.1, 4);
        assert!(
            store
                .delete_collaboration(account, made[4].id)
                .await
                .unwrap()
        );
        store
            .finish_collaboration(made[3].id, None, &ending(EndReason::Cancelled))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            list(running, 1, 10).await,
            (vec![made[2].id, made[0].id], 2)
        );
        assert_eq!(
            list(CollaborationFilter::default(), 3, 2).await,
            (vec![], 4)
        );
    })
    .await;
}

#[tokio::test]
async fn statuses_are_counted_and_unsummarized_endings_found() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let running = team.start(&store, 10).await;
        let completed = team.start(&store, 10).await;
        let failed = team.start(&store, 10).await;
        store
            .finish_collaboration(completed.id, None, &ending(EndReason::MessageCap))
            .await
            .unwrap()
            .unwrap();
        store
            .finish_collaboration(failed.id, None, &ending(EndReason::Error))
            .await
            .unwrap()
            .unwrap();
        store
            .record_summary(
                &crate::support::lease(&store, completed.id).await,
                "Done",
                "They agreed.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap()
            .unwrap();

        let mut counts = store.count_by_status().await.unwrap();
        counts.sort_by_key(|(status, _)| status.name());
        assert_eq!(
            counts,
            [
                (CollaborationStatus::Completed, 1),
                (CollaborationStatus::Failed, 1),
                (CollaborationStatus::Running, 1),
            ]
        );
        // Running, or ended without a summary: what a process must take up.
        let mut expected = vec![running.id, failed.id];
        expected.sort();
        assert_eq!(needing_runner(&store).await, expected);
    })
    .await;
}

#[tokio::test]
async fn deleting_a_collaboration_takes_its_channel_and_events_along() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let doomed = team.start(&store, 10).await;
        let kept = team.start(&store, 10).await;
        for new in [&doomed, &kept] {
            store
                .append_message(
                    &lease(&store, new.id).await,
                    &team.message("hello"),
                    Spent::tokens(1),
                )
                .await
                .unwrap()
                .unwrap();
        }
        let key = store
            .get_key(account, team.tenant.key.id)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_ticket("ticket", &key, doomed.channel_id, later(60))
            .await
            .unwrap();

        let other = crate::support::tenant(&store, "other").await;
        assert!(
            !store
                .delete_collaboration(other.id(), doomed.id)
                .await
                .unwrap()
        );
        assert!(
            store
                .delete_collaboration(account, doomed.id)
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_collaboration(account, doomed.id)
                .await
                .unwrap()
        );

        assert!(
            store
                .get_collaboration(account, doomed.id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_channel(account, doomed.channel_id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read_events(doomed.channel_id, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .redeem_ticket("ticket", doomed.channel_id)
                .await
                .unwrap()
                .is_none()
        );
        // The other collaboration is untouched.
        assert_eq!(
            store
                .read_events(kept.channel_id, 0, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let channel = store
            .get_channel(account, kept.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.last_seq, 1);
    })
    .await;
}

#[tokio::test]
async fn a_uagent_identity_names_its_collaboration_once_and_goes_with_it() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let one = team.start(&store, 10).await;
        let two = team.start(&store, 10).await;
        store.remember_identity("agent1qone", one.id).await.unwrap();
        // Noting it again, even for another collaboration, changes nothing.
        store.remember_identity("agent1qone", one.id).await.unwrap();
        store.remember_identity("agent1qone", two.id).await.unwrap();
        assert_eq!(
            store.identity_collaboration("agent1qone").await.unwrap(),
            Some(one.id)
        );
        assert_eq!(
            store.identity_collaboration("agent1qtwo").await.unwrap(),
            None
        );
        assert!(
            store
                .delete_collaboration(team.tenant.id(), one.id)
                .await
                .unwrap()
        );
        assert_eq!(
            store.identity_collaboration("agent1qone").await.unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn what_a_uagent_was_asked_and_its_kept_replies_serve_the_runner_that_resumes() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let made = team.start(&store, 10).await;
        let lease = lease(&store, made.id).await;
        let agent = Uuid::now_v7();
        assert_eq!(store.uagent_ask(made.id, agent).await.unwrap(), None);
        let first = now();
        store
            .note_uagent_ask(&lease, agent, 3, first)
            .await
            .unwrap();
        let again = first + Duration::seconds(5);
        store
            .note_uagent_ask(&lease, agent, 5, again)
            .await
            .unwrap();
        let (seq, at) = store.uagent_ask(made.id, agent).await.unwrap().unwrap();
        assert_eq!(seq, 5);
        assert_eq!(at.timestamp_micros(), again.timestamp_micros());

        // Replies kept while no runner held it: each msg_id once, and a bounded number.
        let replied = Uuid::now_v7();
        assert!(
            store
                .keep_uagent_reply(made.id, agent, replied, "Salad.")
                .await
                .unwrap()
        );
        assert!(
            !store
                .keep_uagent_reply(made.id, agent, replied, "Salad.")
                .await
                .unwrap()
        );
        let mut kept = 1;
        while store
            .keep_uagent_reply(made.id, agent, Uuid::now_v7(), "More.")
            .await
            .unwrap()
        {
            kept += 1;
            assert!(kept < 100, "the replies kept are bounded");
        }
        assert_eq!(kept, skein::store::KEPT_UAGENT_REPLIES);
        let taken = store
            .take_uagent_reply(&lease, agent, first - Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(taken.as_deref(), Some("Salad."));
        assert_eq!(
            store
                .take_uagent_reply(&lease, agent, first - Duration::seconds(60))
                .await
                .unwrap(),
            None,
            "taking one clears them all"
        );
        // Only under the runner's lease.
        let stale = skein::store::Lease {
            epoch: lease.epoch + 1,
            ..lease
        };
        assert!(
            store
                .note_uagent_ask(&stale, agent, 6, now())
                .await
                .is_err()
        );
        assert!(store.take_uagent_reply(&stale, agent, first).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn an_event_that_is_not_a_message_is_appended_under_the_lease_while_running() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let made = team.start(&store, 10).await;
        let lease = lease(&store, made.id).await;
        let verdict = skein::domain::EventBody::Verdict {
            met: false,
            reason: "no date yet".into(),
            judged_seq: 0,
            created_at: now(),
        };
        let stored = store.append_event(&lease, &verdict).await.unwrap().unwrap();
        assert!(
            stored.frame.contains("\"type\":\"verdict\""),
            "{}",
            stored.frame
        );
        let read = store.read_events(made.channel_id, 0, 10).await.unwrap();
        assert_eq!(read, std::slice::from_ref(&stored));
        let collaboration = store
            .get_collaboration(team.tenant.id(), made.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(collaboration.message_count, 0, "not a message");

        let stale = skein::store::Lease {
            epoch: lease.epoch + 1,
            ..lease
        };
        assert!(store.append_event(&stale, &verdict).await.is_err());
        store
            .finish_collaboration(made.id, Some(&lease), &ending(EndReason::Cancelled))
            .await
            .unwrap();
        assert_eq!(store.append_event(&lease, &verdict).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_uagent_message_is_heard_once_until_it_is_forgotten() {
    each_store(|store| async move {
        let msg_id = Uuid::new_v4();
        assert!(store.hear_uagent_message(msg_id).await.unwrap());
        assert!(
            !store.hear_uagent_message(msg_id).await.unwrap(),
            "a replay"
        );
        assert_eq!(store.purge_uagent_heard(later(-60)).await.unwrap(), 0);
        assert_eq!(store.purge_uagent_heard(later(60)).await.unwrap(), 1);
        assert!(store.hear_uagent_message(msg_id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_uagent_registration_holds_until_it_lapses_and_a_new_one_replaces_it() {
    each_store(|store| async move {
        let address = "agent1qregistered";
        assert_eq!(store.registered_uagent(address, now()).await.unwrap(), None);
        assert!(
            store
                .register_uagent(address, "http://127.0.0.1:8001/submit", later(60))
                .await
                .unwrap()
        );
        assert!(
            store
                .register_uagent(address, "http://127.0.0.1:8002/submit", later(60))
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .registered_uagent(address, now())
                .await
                .unwrap()
                .as_deref(),
            Some("http://127.0.0.1:8002/submit")
        );
        assert_eq!(
            store.registered_uagent(address, later(61)).await.unwrap(),
            None
        );
        assert_eq!(
            store.purge_uagent_registrations(later(61)).await.unwrap(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn a_fork_is_stored_with_its_origin_and_its_channel_begins_with_what_it_copied() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let original = team.start(&store, 10).await;
        let mut fork = team.collaboration(10);
        let copied: Vec<serde_json::Value> = ["first", "second"]
            .iter()
            .enumerate()
            .map(|(i, words)| {
                let mut body = serde_json::to_value(crate::support::message_from(
                    team.principal.sender(),
                    words,
                ))
                .unwrap();
                body["copied"] = serde_json::json!({"collaboration_id": original.id, "seq": i + 1});
                body
            })
            .collect();
        cost_budget_and_fork(&mut fork, original.id, copied);
        store.insert_collaboration(&fork, 5, None).await.unwrap();
        let stored = store
            .get_collaboration(fork.account_id, fork.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.forked_from,
            Some(skein::domain::ForkedFrom {
                collaboration_id: original.id,
                at_seq: 2
            })
        );
        assert_eq!(stored.cost_budget_micros, Some(1_500_000));
        assert_eq!(
            stored,
            fork.started(&[team.principal.clone(), team.participant.clone()])
        );
        let events = store.read_events(fork.channel_id, 0, 10).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2]);
        let first: serde_json::Value = serde_json::from_str(&events[0].frame).unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(first["content"], "first");
        assert_eq!(first["copied"]["seq"], 1);
        assert!(
            events[0].body().is_some(),
            "a copied frame reads back as an event"
        );
        // The channel's counter goes on after them.
        let channel = store
            .get_channel(fork.account_id, fork.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.last_seq, 2);
    })
    .await;
}

fn cost_budget_and_fork(
    new: &mut skein::domain::NewCollaboration,
    from: Uuid,
    events: Vec<serde_json::Value>,
) {
    new.cost_budget_micros = Some(1_500_000);
    new.fork = Some(skein::domain::Fork {
        from,
        at_seq: 2,
        events,
    });
}

/// The synopsis a runner writes is kept with its collaboration, for the runner that
/// resumes it; only the lease holder may write it.
#[tokio::test]
async fn a_synopsis_is_kept_by_the_lease_holder_and_read_back_with_the_collaboration() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 20).await;
        let account = team.tenant.id();
        let stored = store
            .get_collaboration(account, new.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.synopsis, None);
        let held = lease(&store, new.id).await;
        let synopsis = skein::domain::Synopsis {
            text: "Tapas at seven; Scout books.".into(),
            through_seq: 8,
        };
        store.record_synopsis(&held, &synopsis).await.unwrap();
        let read = store
            .get_collaboration(account, new.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.synopsis, Some(synopsis.clone()));
        let stale = skein::store::Lease {
            epoch: held.epoch + 1,
            ..held
        };
        assert!(matches!(
            store
                .record_synopsis(
                    &stale,
                    &skein::domain::Synopsis {
                        text: "not this".into(),
                        through_seq: 9
                    }
                )
                .await,
            Err(StoreError::LeaseLost)
        ));
        let read = store
            .get_collaboration(account, new.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.synopsis, Some(synopsis));
    })
    .await;
}
