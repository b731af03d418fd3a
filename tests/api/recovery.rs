//! A crash mid-collaboration: the real binary is killed with SIGKILL and started again on
//! the same data directory.

use std::{path::Path, process::Stdio};

use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::support::{ADMIN_KEY, Api, PATIENCE, id, wait_for};

struct Process {
    child: Child,
    api: Api,
}

impl Process {
    async fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skein"))
            .arg("serve")
            .env("SKEIN_BIND", "127.0.0.1:0")
            .env("SKEIN_DATA_DIR", data_dir)
            .env("SKEIN_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the skein binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(address) = line.strip_prefix("Skein listening on http://") {
                    return address.parse().unwrap();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens in time");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            api: Api::new(address),
        }
    }
}

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
