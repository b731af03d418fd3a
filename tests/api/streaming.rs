//! The live stream: replay then live without gap or duplicate, history, auth, shutdown.

use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{Said, id, seqs, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_late_viewer_receives_every_missed_event_once_then_the_live_ones() {
    let app = spawn_app().await;
    let created = app.scripted_duo(8, 120).await;
    let channel = created["channel_id"].as_str().unwrap();
    // Join late, while it is still running, asking only for what came after seq 3.
    let mut early = app.viewer(channel, 0).await;
    early.frame().await;
    let first = early.until("message").await;
    let mut frames = first;
    while seqs(&frames).last() < Some(&4) {
        frames.extend(early.until("message").await);
    }
    let mut late = app.viewer(channel, 3).await;
    assert_eq!(late.frame().await["type"], "hello");
    let seen = late.until("summary").await;
    assert_eq!(seqs(&seen), (4..=10).collect::<Vec<_>>(), "{seen:#?}");
    let everything = early.until("summary").await;
    let all: Vec<i64> = seqs(&frames).into_iter().chain(seqs(&everything)).collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());

    // After the end, a viewer from seq 3 gets exactly the same stored frames.
    let mut after = app.viewer(channel, 3).await;
    after.frame().await;
    let replay = after.until("summary").await;
    assert_eq!(
        replay,
        seen.into_iter()
            .filter(|f| f["seq"].is_i64())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_viewer_claiming_to_be_ahead_of_the_channel_still_gets_live_events() {
    let app = spawn_app().await;
    let created = app.scripted_duo(3, 100).await;
    let mut viewer = app
        .viewer(created["channel_id"].as_str().unwrap(), 1000)
        .await;
    let hello = viewer.frame().await;
    let last = hello["last_seq"].as_i64().unwrap();
    let frames = viewer.until("summary").await;
    assert_eq!(seqs(&frames), ((last + 1)..=5).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_viewer_that_falls_behind_is_caught_up_from_the_store_not_skipped() {
    // Two buffered frames per channel: a viewer of a fast collaboration falls behind at once.
    let app = spawn_app_with(|c| c.websocket.buffered_frames = 2).await;
    let created = app.scripted_duo(300, 0).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(app.viewer(created["channel_id"].as_str().unwrap(), 0).await);
    }
    for viewer in &mut viewers {
        viewer.frame().await;
        let frames = viewer.until("summary").await;
        assert_eq!(
            seqs(&frames),
            (1..=302).collect::<Vec<_>>(),
            "every event once, in order"
        );
    }
}

#[tokio::test]
async fn viewers_catching_up_together_while_the_channel_grows_each_get_every_event_once() {
    // Several pages of catch-up (256 events each), read by viewers that join together
    // while more is being stored: they share pages, and none may miss what came between.
    let app = spawn_app().await;
    let created = app.scripted_duo(700, 0).await;
    let channel = created["channel_id"].as_str().unwrap();
    let mut first = app.viewer(channel, 0).await;
    first.frame().await;
    let mut seen = first.until("message").await;
    while seqs(&seen).last() < Some(&300) {
        seen.extend(first.until("message").await);
    }
    let mut together = Vec::new();
    for _ in 0..6 {
        together.push(app.viewer(channel, 0).await);
    }
    let every: Vec<i64> = (1..=702).collect();
    for viewer in &mut together {
        viewer.frame().await;
        let frames = viewer.until("summary").await;
        assert_eq!(seqs(&frames), every, "every event once, in order");
    }
    seen.extend(first.until("summary").await);
    assert_eq!(seqs(&seen), every);
}

#[tokio::test]
async fn a_viewer_that_stops_reading_gets_every_event_once_when_it_reads_again() {
    // Two frames may wait for a viewer, and its socket holds a few KiB. The server's own
    // socket buffer grows to at most 4 MiB (`tcp_wmem`): 4.5 MB of replies leave it
    // nowhere to put the next frame. The agents say the same thing over and over, which
    // would stall the conversation: stall detection is off, it is not what this is about.
    let app = spawn_app_with(|c| {
        c.websocket.buffered_frames = 2;
        c.engine.stalls.end_after = 0;
    })
    .await;
    let long = "x".repeat(15_000);
    let a = app.scripted("A", &[&long], 2).await;
    let b = app.scripted("B", &[&long], 2).await;
    let created = app.collaborate(&a, &b, json!({"message_cap": 300})).await;
    let mut viewer = app
        .viewer_with_a_small_window(created["channel_id"].as_str().unwrap(), 0)
        .await;
    assert_eq!(viewer.frame().await["type"], "hello");
    // Not a frame read while it runs to its end.
    app.wait_until_summarized(&id(&created)).await;
    let frames = viewer.until("summary").await;
    assert_eq!(
        seqs(&frames),
        (1..=302).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[tokio::test]
async fn history_pages_by_after_seq_with_the_frames_the_stream_sends() {
    let app = spawn_app().await;
    let created = app.scripted_duo(5, 0).await;
    app.wait_until_summarized(&id(&created)).await;
    let channel = created["channel_id"].as_str().unwrap();
    let page = app
        .get_json(&format!(
            "/api/v1/channels/{channel}/messages?after_seq=2&limit=3"
        ))
        .await;
    assert_eq!(seqs(page["items"].as_array().unwrap()), [3, 4, 5]);
    assert_eq!(page["next_after_seq"], 5);
    let rest = app
        .get_json(&format!("/api/v1/channels/{channel}/messages?after_seq=5"))
        .await;
    assert_eq!(seqs(rest["items"].as_array().unwrap()), [6, 7]);
    let end = app
        .get_json(&format!("/api/v1/channels/{channel}/messages?after_seq=7"))
        .await;
    assert_eq!(end, json!({"items": [], "next_after_seq": 7}));

    let meta = app.get_json(&format!("/api/v1/channels/{channel}")).await;
    assert_eq!(meta["last_seq"], 7);
    assert_eq!(meta["collaboration_id"], created["id"]);

    let streamed = app.watch_to_the_end(&created).await;
    assert_eq!(
        streamed,
        app.history(channel).await,
        "history and stream carry the same frames"
    );
    for bad in ["limit=0", "limit=501", "after_seq=-1", "limit=ten"] {
        let response = app
            .get(&format!("/api/v1/channels/{channel}/messages?{bad}"))
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn a_bad_key_ticket_or_channel_is_closed_with_1008_before_any_frame() {
    let app = spawn_app().await;
    let created = app.scripted_duo(2, 0).await;
    let channel = created["channel_id"].as_str().unwrap();
    let ticket = app.ticket(channel).await;
    assert_eq!(ticket["channel_id"], created["channel_id"]);
    let value = ticket["value"].as_str().unwrap();

    let mut with_ticket = app
        .viewer_at(&format!("/api/v1/channels/{channel}/stream?ticket={value}"))
        .await;
    assert_eq!(with_ticket.frame().await["type"], "hello");
    let refused = [
        format!("/api/v1/channels/{channel}/stream?ticket={value}"), // used already
        format!("/api/v1/channels/{channel}/stream?ticket=wst_made_up"),
        format!("/api/v1/channels/{channel}/stream"),
        format!(
            "/api/v1/channels/{}/stream?ticket={value}",
            uuid::Uuid::new_v4()
        ),
    ];
    for path in refused {
        let mut viewer = app.viewer_at(&path).await;
        match viewer.next().await {
            Said::Closed(code, _) => assert_eq!(code, Some(CloseCode::Policy), "{path}"),
            Said::Frame(frame) => panic!("{path} got a frame: {frame}"),
        }
    }
    // A ticket is bound to its channel.
    let other = app.scripted_duo(2, 0).await;
    let ticket = app.ticket(channel).await;
    let mut elsewhere = app
        .viewer_at(&format!(
            "/api/v1/channels/{}/stream?ticket={}",
            other["channel_id"].as_str().unwrap(),
            ticket["value"].as_str().unwrap()
        ))
        .await;
    assert!(matches!(
        elsewhere.next().await,
        Said::Closed(Some(CloseCode::Policy), _)
    ));
}

#[tokio::test]
async fn a_viewer_that_speaks_where_no_human_takes_part_is_told_why() {
    let app = spawn_app().await;
    let created = app.scripted_duo(2, 0).await;
    let mut viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    viewer.until("summary").await;
    viewer
        .send(json!({"type": "message", "content": "hello"}))
        .await;
    let reply = viewer.frame().await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("invalid"))
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("no human participant"),
        "{reply}"
    );
    viewer.send(json!({"type": "wave"})).await;
    assert_eq!(viewer.frame().await["code"], "bad_frame");
}

#[tokio::test]
async fn shutdown_closes_viewers_with_1001_and_leaves_running_collaborations_running() {
    let app = spawn_app().await;
    let created = app.scripted_duo(100, 200).await;
    let mut viewer = app.viewer(created["channel_id"].as_str().unwrap(), 0).await;
    viewer.frame().await;
    let shutdown = tokio::spawn(app.shut_down_keeping_data());
    loop {
        match viewer.next().await {
            Said::Frame(_) => continue,
            Said::Closed(code, _) => {
                assert_eq!(code, Some(CloseCode::Away));
                break;
            }
        }
    }
    let data = shutdown.await.unwrap();
    let restarted = crate::support::spawn_app_in(data).await;
    let at_restart = restarted.collaboration(&id(&created)).await;
    assert_eq!(
        at_restart["status"], "running",
        "a shutdown must not end a collaboration"
    );
    let said = at_restart["message_count"].as_u64().unwrap();
    // The new process resumes it.
    crate::support::wait_for(|| async {
        let now = restarted.collaboration(&id(&created)).await;
        (now["message_count"].as_u64().unwrap() > said).then_some(())
    })
    .await;
}
