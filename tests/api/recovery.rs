//! A crash mid-collaboration: the real binary is killed with SIGKILL and started again on
//! the same data directory.

use serde_json::json;

use crate::support::{id, process::Process, wait_for};

#[tokio::test]
async fn a_collaboration_killed_mid_run_resumes_with_gap_free_seqs_and_nothing_said_twice() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut first = Process::start(data_dir.path()).await;
    let api = &first.api;
    let p_lines: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let q_lines: Vec<String> = (0..8).map(|i| format!("q{i}")).collect();
    let p = api
        .create_agent(json!({"name": "P", "kind": "scripted", "replies": p_lines, "delay_ms": 120}))
        .await;
    let q = api
        .create_agent(json!({"name": "Q", "kind": "scripted", "replies": q_lines, "delay_ms": 120}))
        .await;
    let created = api
        .create_collaboration(
            json!({"principal": id(&p), "participants": [id(&q)], "message_cap": 16,
                                     "timeout_window": 30, "strategy": "round_robin"}),
        )
        .await;
    let channel = created["channel_id"].as_str().unwrap().to_owned();
    wait_for(|| async { (api.history(&channel).await.len() >= 5).then_some(()) }).await;

    let stored_before_crash = api.history(&channel).await.len();
    first.child.kill().await.expect("SIGKILL");
    assert!(stored_before_crash < 16, "the crash must come mid-run");

    let second = Process::start(data_dir.path()).await;
    let done = second.api.wait_until_summarized(&id(&created)).await;
    assert_eq!(done["end_reason"], "message_cap");
    assert_eq!(done["message_count"], 16);
    let events = second.api.history(&channel).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=18).collect::<Vec<_>>(),
        "no seq duplicated or skipped"
    );
    let spoken: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..8)
        .flat_map(|i| [format!("p{i}"), format!("q{i}")])
        .collect();
    assert_eq!(
        spoken, expected,
        "each line spoken once, in order, across the crash"
    );
    let kinds: Vec<&str> = events[16..]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["status", "summary"]);
}
