//! The channel log: dense `seq` numbers, the message cap, the ending and the summary.

use std::sync::Arc;

use skein::{
    domain::{CollaborationStatus, EndReason, StoredEvent},
    store::{Spent, StoreError},
};
use tokio::task::JoinSet;

use crate::support::{Shared, Team, each_store, ending, frame, lease, sqlite_refusing, team};

/// Every event of the channel, in order.
async fn history(store: &Shared, channel_id: uuid::Uuid) -> Vec<StoredEvent> {
    store.read_events(channel_id, 0, 10_000).await.unwrap()
}

#[tokio::test]
async fn appended_messages_are_numbered_from_one_and_counted() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        for (i, content) in ["one", "two", "three"].into_iter().enumerate() {
            let event = store
                .append_message(
                    &lease(&store, new.id).await,
                    &team.message(content),
                    Spent::tokens(10 + i as u64),
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(event.seq, i as i64 + 1);
            let sent = frame(&event.frame);
            assert_eq!(sent["type"], "message");
            assert_eq!(sent["seq"], i + 1);
            assert_eq!(sent["content"], content);
            assert_eq!(sent["sender"]["id"], team.principal.id.to_string());
        }
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.message_count, 3);
        assert_eq!(stored.tokens_used, 10 + 11 + 12);
        let channel = store
            .get_channel(new.account_id, new.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.last_seq, 3);

        store
            .add_tokens(&crate::support::lease(&store, new.id).await, 100, 0)
            .await
            .unwrap();
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.tokens_used, 133);
        assert_eq!(stored.message_count, 3);
    })
    .await;
}

#[tokio::test]
async fn the_message_cap_holds_in_the_store() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 2).await;
        for _ in 0..2 {
            assert!(
                store
                    .append_message(
                        &lease(&store, new.id).await,
                        &team.message("hi"),
                        Spent::tokens(1)
                    )
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store
                .append_message(
                    &lease(&store, new.id).await,
                    &team.message("one too many"),
                    Spent::tokens(1)
                )
                .await
                .unwrap(),
            None
        );
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!((stored.message_count, stored.tokens_used), (2, 2));
        assert_eq!(history(&store, new.channel_id).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_collaboration_ends_once_and_is_summarized_once() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        store
            .append_message(
                &lease(&store, new.id).await,
                &team.message("hello"),
                Spent::tokens(1),
            )
            .await
            .unwrap()
            .unwrap();

        let mut ended = ending(EndReason::Error);
        ended.error_message = Some("the participant failed".into());
        let status = store
            .finish_collaboration(new.id, Some(&lease(&store, new.id).await), &ended)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.seq, 2);
        let sent = frame(&status.frame);
        assert_eq!(sent["type"], "status");
        assert_eq!(sent["status"], "failed");
        assert_eq!(sent["end_reason"], "error");
        assert_eq!(sent["error_message"], "the participant failed");
        assert!(
            store
                .finish_collaboration(new.id, None, &ending(EndReason::Cancelled))
                .await
                .unwrap()
                .is_none()
        );
        // Nothing more is said in an ended collaboration, cap or no cap.
        assert!(
            store
                .append_message(
                    &lease(&store, new.id).await,
                    &team.message("too late"),
                    Spent::tokens(1)
                )
                .await
                .unwrap()
                .is_none()
        );

        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.status, CollaborationStatus::Failed);
        assert_eq!(stored.end_reason, Some(EndReason::Error));
        assert_eq!(stored.ended_at, Some(ended.ended_at));
        assert_eq!(stored.advisory_message, ended.advisory_message);
        assert_eq!(stored.error_message, ended.error_message);
        assert_eq!(stored.message_count, 1);
        let channel = store
            .get_channel(new.account_id, new.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.status, CollaborationStatus::Failed);

        let summary = store
            .record_summary(
                &crate::support::lease(&store, new.id).await,
                "Failed early",
                "The participant failed.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summary.seq, 3);
        assert_eq!(frame(&summary.frame)["type"], "summary");
        assert_eq!(frame(&summary.frame)["headline"], "Failed early");
        assert!(
            store
                .record_summary(
                    &crate::support::lease(&store, new.id).await,
                    "Again",
                    "Twice.",
                    &skein::domain::Outcome::default(),
                )
                .await
                .unwrap()
                .is_none()
        );
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.headline.as_deref(), Some("Failed early"));
        assert_eq!(stored.summary.as_deref(), Some("The participant failed."));

        let seqs: Vec<i64> = history(&store, new.channel_id)
            .await
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    })
    .await;
}

#[tokio::test]
async fn the_podcast_is_recorded_or_explained() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        store
            .finish_collaboration(new.id, None, &ending(EndReason::ObjectiveMet))
            .await
            .unwrap()
            .unwrap();
        let advisory = ending(EndReason::ObjectiveMet).advisory_message.unwrap();

        store
            .record_audio(
                &crate::support::lease(&store, new.id).await,
                None,
                Some("No podcast: no voice."),
            )
            .await
            .unwrap();
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.audio_url, None);
        assert_eq!(
            stored.advisory_message,
            Some(format!("{advisory} No podcast: no voice."))
        );

        store
            .record_audio(
                &crate::support::lease(&store, new.id).await,
                Some("/audio/x.wav"),
                None,
            )
            .await
            .unwrap();
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.audio_url.as_deref(), Some("/audio/x.wav"));
        assert_eq!(
            stored.advisory_message,
            Some(format!("{advisory} No podcast: no voice."))
        );

        // With no advisory message yet, the note becomes it.
        let quiet = team.start(&store, 10).await;
        store
            .record_audio(
                &crate::support::lease(&store, quiet.id).await,
                None,
                Some("No podcast."),
            )
            .await
            .unwrap();
        let stored = store
            .collaboration_unscoped(quiet.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.advisory_message.as_deref(), Some("No podcast."));
    })
    .await;
}

#[tokio::test]
async fn events_are_read_in_pages_after_a_seq() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 10).await;
        let mut appended = Vec::new();
        for i in 0..5 {
            let event = store
                .append_message(
                    &lease(&store, new.id).await,
                    &team.message(&format!("m{i}")),
                    Spent::default(),
                )
                .await
                .unwrap()
                .unwrap();
            appended.push(event);
        }
        assert_eq!(
            store.read_events(new.channel_id, 0, 2).await.unwrap(),
            appended[..2]
        );
        assert_eq!(
            store.read_events(new.channel_id, 2, 10).await.unwrap(),
            appended[2..]
        );
        assert_eq!(
            store.read_events(new.channel_id, 4, 1).await.unwrap(),
            appended[4..]
        );
        assert!(
            store
                .read_events(new.channel_id, 5, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .read_events(uuid::Uuid::now_v7(), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

/// Appends from `tasks` writers at once, `each` messages apiece; returns the seqs stored.
async fn append_concurrently(
    store: &Shared,
    team: &Arc<Team>,
    id: uuid::Uuid,
    tasks: usize,
    each: usize,
) -> Vec<i64> {
    let lease = lease(store, id).await;
    let mut writers = JoinSet::new();
    for task in 0..tasks {
        let store = store.clone();
        let team = team.clone();
        writers.spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                let message = team.message(&format!("task {task}, message {i}"));
                if let Some(event) = store
                    .append_message(&lease, &message, Spent::tokens(1))
                    .await
                    .unwrap()
                {
                    assert_eq!(frame(&event.frame)["seq"], event.seq);
                    seqs.push(event.seq);
                }
            }
            seqs
        });
    }
    let mut seqs: Vec<i64> = writers.join_all().await.into_iter().flatten().collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_dense_distinct_seqs() {
    each_store(|store| async move {
        let team = Arc::new(team(&store, "team").await);
        let new = team.start(&store, 1000).await;
        let seqs = append_concurrently(&store, &team, new.id, 8, 25).await;
        assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());

        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!((stored.message_count, stored.tokens_used), (200, 200));
        let events = history(&store, new.channel_id).await;
        let stored_seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(stored_seqs, seqs);
        assert!(events.iter().all(|e| frame(&e.frame)["seq"] == e.seq));
        let channel = store
            .get_channel(new.account_id, new.channel_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel.last_seq, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_stop_exactly_at_the_cap() {
    each_store(|store| async move {
        let team = Arc::new(team(&store, "team").await);
        let new = team.start(&store, 50).await;
        let seqs = append_concurrently(&store, &team, new.id, 8, 10).await;
        assert_eq!(seqs, (1..=50).collect::<Vec<i64>>());
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(stored.message_count, 50);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ending_among_concurrent_writers_is_the_last_event_before_the_summary() {
    each_store(|store| async move {
        let team = Arc::new(team(&store, "team").await);
        let new = team.start(&store, 1000).await;
        let writers = {
            let (store, team) = (store.clone(), team.clone());
            tokio::spawn(async move { append_concurrently(&store, &team, new.id, 6, 20).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let status = store
            .finish_collaboration(new.id, None, &ending(EndReason::Cancelled))
            .await
            .unwrap()
            .unwrap();
        let messages = writers.await.unwrap();
        let summary = store
            .record_summary(
                &crate::support::lease(&store, new.id).await,
                "Stopped",
                "Someone stopped it.",
                &skein::domain::Outcome::default(),
            )
            .await
            .unwrap()
            .unwrap();

        let expected: Vec<i64> = (1..status.seq).collect();
        assert_eq!(messages, expected, "messages after the ending");
        assert_eq!(summary.seq, status.seq + 1);
        let events = history(&store, new.channel_id).await;
        let kinds: Vec<String> = events
            .iter()
            .map(|e| frame(&e.frame)["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds.len(), status.seq as usize + 1);
        assert!(kinds[..kinds.len() - 2].iter().all(|k| k == "message"));
        assert_eq!(kinds[kinds.len() - 2..], ["status", "summary"]);
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(i64::from(stored.message_count), status.seq - 1);
    })
    .await;
}

/// Turns of many collaborations at once, as a busy server writes them (SQLite commits them
/// together): each keeps its own outcome. A turn under a lost lease or past its cap is
/// refused and writes nothing, and the turns beside it are stored as if it were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_written_at_once_keep_their_own_outcomes() {
    each_store(|store| async move {
        let team = Arc::new(team(&store, "team").await);
        const EACH: usize = 12;
        const SPENT: Spent = Spent {
            tokens: 3,
            cost_micros: 250,
        };
        let mut collaborations = Vec::new();
        for kind in 0..EACH {
            // Every third collaboration has room for one message only.
            let cap = if kind % 3 == 2 { 1 } else { 100 };
            let new = team.start(&store, cap).await;
            let mut lease = lease(&store, new.id).await;
            if kind % 3 == 1 {
                // Every third is written under a lease some other process holds.
                lease.owner = uuid::Uuid::new_v4();
            }
            collaborations.push((kind % 3, new, lease));
        }
        let mut writers = JoinSet::new();
        for (kind, new, lease) in collaborations.clone() {
            for round in 0..4 {
                let (store, team) = (store.clone(), team.clone());
                writers.spawn(async move {
                    let message = team.message(&format!("{} round {round}", new.id));
                    (kind, store.append_message(&lease, &message, SPENT).await)
                });
            }
        }
        for (kind, outcome) in writers.join_all().await {
            match kind {
                0 => assert!(matches!(outcome, Ok(Some(_))), "{outcome:?}"),
                1 => assert!(matches!(outcome, Err(StoreError::LeaseLost)), "{outcome:?}"),
                _ => assert!(outcome.is_ok(), "{outcome:?}"),
            }
        }
        for (kind, new, _) in &collaborations {
            let seqs: Vec<i64> = history(&store, new.channel_id)
                .await
                .iter()
                .map(|event| event.seq)
                .collect();
            let expected = match kind {
                0 => vec![1, 2, 3, 4],
                1 => vec![],
                _ => vec![1],
            };
            assert_eq!(seqs, expected, "collaboration of kind {kind}");
            let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
            assert_eq!(stored.message_count as usize, expected.len());
            // Each turn's spend counted once (SQLite counts a batch's in one statement).
            let n = expected.len() as u64;
            assert_eq!(
                (stored.tokens_used, stored.cost_micros),
                (SPENT.tokens * n, SPENT.cost_micros * n)
            );
        }
    })
    .await;
}

/// SQLite writes turns many to a transaction. When the database refuses one of them, the
/// transaction fails as a whole; the turn must then fail alone, and the turns it shared the
/// transaction with must still be stored, once each, with nothing of the refused one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_the_database_refuses_fails_alone() {
    let (_dir, store) = sqlite_refusing(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.frame LIKE '%poison%' \
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
    )
    .await;

    let team = Arc::new(team(&store, "team").await);
    let mut collaborations = Vec::new();
    for _ in 0..6 {
        let new = team.start(&store, 100).await;
        let lease = lease(&store, new.id).await;
        collaborations.push((new, lease));
    }
    let mut writers = JoinSet::new();
    for (i, (new, lease)) in collaborations.iter().cloned().enumerate() {
        for round in 0..3 {
            let (store, team) = (store.clone(), team.clone());
            let poisoned = i == 0 && round == 1;
            writers.spawn(async move {
                let content = if poisoned { "poison" } else { "fine" };
                let outcome = store
                    .append_message(&lease, &team.message(content), Spent::tokens(1))
                    .await;
                (new.id, poisoned, outcome)
            });
        }
    }
    for (id, poisoned, outcome) in writers.join_all().await {
        if poisoned {
            assert!(
                matches!(outcome, Err(StoreError::Database(_))),
                "{id}: {outcome:?}"
            );
        } else {
            assert!(matches!(outcome, Ok(Some(_))), "{id}: {outcome:?}");
        }
    }
    for (i, (new, _)) in collaborations.iter().enumerate() {
        let events = history(&store, new.channel_id).await;
        let expected = if i == 0 { 2 } else { 3 };
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=expected).collect::<Vec<i64>>()
        );
        assert!(events.iter().all(|e| frame(&e.frame)["content"] == "fine"));
        let stored = store.collaboration_unscoped(new.id).await.unwrap().unwrap();
        assert_eq!(
            stored.message_count as i64, expected,
            "the refused turn is not counted"
        );
    }
}

#[tokio::test]
async fn a_page_of_large_events_is_bounded_in_bytes_and_the_rest_follows() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let new = team.start(&store, 20).await;
        let lease = lease(&store, new.id).await;
        let large = "x".repeat(300_000);
        for _ in 0..8 {
            store
                .append_message(&lease, &team.message(&large), Spent::tokens(0))
                .await
                .unwrap()
                .unwrap();
        }
        let huge = "y".repeat(2_500_000);
        store
            .append_message(&lease, &team.message(&huge), Spent::tokens(0))
            .await
            .unwrap()
            .unwrap();
        let mut pages = Vec::new();
        let mut after = 0;
        loop {
            let page = store.read_events(new.channel_id, after, 500).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            // A page cut by its size says more may follow.
            assert!(skein::store::page_may_continue(&page, 500));
            pages.push(page.iter().map(|e| e.seq).collect::<Vec<_>>());
        }
        // Each page stops once it holds a mebibyte; an event larger than that comes alone.
        assert_eq!(pages, [vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9]]);
        // The count still bounds a page of small ones.
        assert_eq!(
            store.read_events(new.channel_id, 0, 2).await.unwrap().len(),
            2
        );
    })
    .await;
}
