//! The `skein` CLI, the built binary, against a real server: output for people and for
//! programs, exit codes, the key from the data directory, and `watch` following a
//! collaboration through a server restart.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{ADMIN_KEY, Api, PATIENCE, id, spawn_app, spawn_app_in_with};

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|_| panic!("not JSON: {}", self.stdout))
    }
}

fn skein(app: &Api) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_skein"));
    command
        .env("SKEIN_URL", app.url(""))
        .env("SKEIN_API_KEY", ADMIN_KEY)
        .env_remove("SKEIN_DATA_DIR")
        .kill_on_drop(true);
    command
}

async fn run(mut command: tokio::process::Command, args: &[&str]) -> Ran {
    let output = tokio::time::timeout(PATIENCE, command.args(args).output())
        .await
        .expect("the CLI finishes in time")
        .unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test]
async fn agents_are_made_listed_and_read_as_json_or_as_tables() {
    let app = spawn_app().await;
    let made = run(
        skein(&app),
        &[
            "agents", "create", "--name", "Scout", "--kind", "scripted", "--reply", "hi",
            "--reply", "bye", "--json",
        ],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let scout = made.json();
    assert_eq!(scout["replies"], json!(["hi", "bye"]));
    assert_eq!(
        scout,
        app.get_json(&format!("/api/v1/agents/{}", id(&scout)))
            .await,
        "--json prints exactly the API's JSON"
    );

    let listed = run(skein(&app), &["agents", "list"]).await;
    assert!(listed.ok);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("ADDRESS"),
        "{}",
        listed.stdout
    );
    assert!(lines[1].contains("Scout") && lines[1].contains(scout["address"].as_str().unwrap()));

    // By address, and changed.
    let address = scout["address"].as_str().unwrap();
    let renamed = run(
        skein(&app),
        &["agents", "update", address, "--name", "Scout Two", "--json"],
    )
    .await;
    assert_eq!(renamed.json()["name"], "Scout Two");
    let read = run(skein(&app), &["agents", "get", address]).await;
    assert!(
        read.stdout.contains("name") && read.stdout.contains("Scout Two"),
        "{}",
        read.stdout
    );
    let deleted = run(skein(&app), &["agents", "delete", address]).await;
    assert!(deleted.ok);
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 0);
}

#[tokio::test]
async fn a_failure_exits_1_with_an_error_line_or_an_error_object() {
    let app = spawn_app().await;
    let args = [
        "collab",
        "create",
        "--principal",
        "nobody",
        "--participant",
        "x",
        "--message-cap",
        "0",
        "--timeout-window",
        "5",
    ];
    let plain = run(skein(&app), &args).await;
    assert!(!plain.ok);
    assert!(plain.stdout.is_empty());
    assert!(plain.stderr.starts_with("error: "), "{}", plain.stderr);
    assert!(plain.stderr.contains("message_cap"), "{}", plain.stderr);

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let machine = run(skein(&app), &with_json).await;
    assert!(!machine.ok);
    let error = machine.json();
    assert_eq!(error["status"], 422);
    assert!(error["code"].is_string());
    assert!(error["error"].as_str().unwrap().contains("principal"));

    let mut nowhere = skein(&app);
    nowhere.env("SKEIN_URL", "http://127.0.0.1:9");
    let unreachable = run(nowhere, &["agents", "list", "--json"]).await;
    assert!(!unreachable.ok);
    assert_eq!(unreachable.json()["code"], "unreachable");
}

#[tokio::test]
async fn without_a_key_it_reads_the_admin_key_in_the_data_directory() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.key"), format!("{ADMIN_KEY}\n")).unwrap();
    let mut command = skein(&app);
    command
        .env_remove("SKEIN_API_KEY")
        .env("SKEIN_DATA_DIR", dir.path());
    let listed = run(command, &["agents", "list", "--json"]).await;
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.json()["meta"]["total"], 0);

    let mut keyless = skein(&app);
    keyless
        .env_remove("SKEIN_API_KEY")
        .env("SKEIN_DATA_DIR", dir.path().join("nowhere"));
    let refused = run(keyless, &["agents", "list"]).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("no API key"), "{}", refused.stderr);
}

#[tokio::test]
async fn keys_are_made_listed_and_revoked() {
    let app = spawn_app().await;
    let made = run(
        skein(&app),
        &[
            "keys", "create", "--name", "ci", "--scope", "read", "--json",
        ],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let key = made.json();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(
        app.with_key(secret).get("/api/v1/agents").await.status(),
        200
    );
    let listed = run(skein(&app), &["keys", "list"]).await;
    assert!(
        listed.stdout.contains("ci") && listed.stdout.contains("read"),
        "{}",
        listed.stdout
    );
    let revoked = run(
        skein(&app),
        &["keys", "revoke", key["id"].as_str().unwrap()],
    )
    .await;
    assert!(revoked.ok);
    assert_eq!(
        app.with_key(secret).get("/api/v1/agents").await.status(),
        401
    );
}

#[tokio::test]
async fn collab_create_watch_follows_it_to_the_summary() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Tapas?", "Booked."], 50).await;
    let scout = app.scripted("Scout", &["Yes, at seven."], 50).await;
    let ran = run(
        skein(&app),
        &[
            "collab",
            "create",
            "--principal",
            &id(&planner),
            "--participant",
            scout["address"].as_str().unwrap(),
            "--message-cap",
            "3",
            "--timeout-window",
            "30",
            "--watch",
        ],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("waiting for the first message"),
        "{}",
        ran.stderr
    );
    let said: Vec<&str> = ran.stdout.lines().take(3).collect();
    assert_eq!(
        said,
        [
            "Planner (scripted): Tapas?",
            "Scout (scripted): Yes, at seven.",
            "Planner (scripted): Booked."
        ]
    );
    assert!(
        ran.stdout.contains("— completed: message cap"),
        "{}",
        ran.stdout
    );
    let listed = app.get_json("/api/v1/collaborations").await;
    let headline = listed["items"][0]["headline"].as_str().unwrap();
    assert!(
        ran.stdout.contains(headline),
        "ends with the summary: {}",
        ran.stdout
    );
}

#[tokio::test]
async fn watch_carries_on_through_a_server_restart_and_prints_each_message_once() {
    let app = spawn_app().await;
    let address = app.address;
    let created = app.scripted_duo(12, 250).await;
    let mut watch = skein(&app);
    watch
        .args(["collab", "watch", &id(&created), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = watch.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frames = Vec::new();
    // A few messages in, the server goes away and comes back.
    while frames
        .iter()
        .filter(|f: &&Value| f["type"] == "message")
        .count()
        < 3
    {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        frames.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let data = app.shut_down_keeping_data().await;
    let app = spawn_app_in_with(data, move |c| c.bind = address).await;
    while let Some(line) = tokio::time::timeout(PATIENCE * 2, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        frames.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let seqs: Vec<i64> = frames.iter().filter_map(|f| f["seq"].as_i64()).collect();
    let last = app
        .get_json(&format!(
            "/api/v1/channels/{}",
            created["channel_id"].as_str().unwrap()
        ))
        .await["last_seq"]
        .as_i64()
        .unwrap();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every stored event once, in order"
    );
    assert_eq!(frames.last().unwrap()["type"], "summary");
}

#[tokio::test]
async fn a_uagent_is_added_by_its_address_and_read_back_by_it() {
    let app = spawn_app().await;
    let submit = app.url("/submit");
    let Some(peer) =
        crate::support::peers::UagentPeer::start("echo", "cli-seed", &["--skein", &submit]).await
    else {
        return;
    };
    let made = run(
        skein(&app),
        &[
            "agents",
            "create",
            "--name",
            "Chef",
            "--kind",
            "uagent",
            "--address",
            &peer.address,
            "--endpoint",
            &peer.endpoint,
            "--json",
        ],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    assert_eq!(made.json()["kind"], "uagent");
    let read = run(skein(&app), &["agents", "get", &peer.address]).await;
    assert!(read.ok, "{}", read.stderr);
    assert!(read.stdout.contains("uagent"), "{}", read.stdout);
    assert!(read.stdout.contains(&peer.endpoint), "{}", read.stdout);

    let other = run(
        skein(&app),
        &[
            "agents",
            "create",
            "--name",
            "Nobody",
            "--kind",
            "uagent",
            "--address",
            "agent1qtxuczv57xhkd7ff76lmmcg5kxmplsklst4thlyxkfuc6hkry8n2zfklc38",
            "--endpoint",
            &peer.endpoint,
        ],
    )
    .await;
    assert!(!other.ok);
    assert!(other.stderr.contains("endpoint"), "{}", other.stderr);
}

#[tokio::test]
async fn watch_prints_each_of_the_judge_s_verdicts() {
    let fake = crate::support::fake_model::FakeModel::start().await;
    fake.verdicts(&[false, true]);
    let base = fake.base_url();
    let app = crate::support::spawn_app_with(move |c| {
        c.providers = vec![crate::support::default_provider(&base)]
    })
    .await;
    let planner = app.scripted("Planner", &["Tapas?"], 0).await;
    let scout = app.scripted("Scout", &["Yes, at seven."], 0).await;
    let ran = run(
        skein(&app),
        &[
            "collab",
            "create",
            "--principal",
            &id(&planner),
            "--participant",
            &id(&scout),
            "--message-cap",
            "6",
            "--timeout-window",
            "30",
            "--watch",
        ],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    let verdicts: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|line| line.starts_with("— the judge: "))
        .collect();
    assert_eq!(verdicts.len(), 2, "{}", ran.stdout);
    assert!(
        verdicts[0].starts_with("— the judge: not met yet ("),
        "{}",
        ran.stdout
    );
    assert!(
        verdicts[1].starts_with("— the judge: objective met ("),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("— completed: objective met"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("Action items:\n  - Scout: Book the table\nOpen questions:\n  - Who drives?"),
        "the outcome follows the summary: {}",
        ran.stdout
    );
}

#[tokio::test]
async fn a_transcript_prints_as_markdown_or_as_json() {
    let app = spawn_app().await;
    let created = app.scripted_duo(2, 0).await;
    app.wait_until_summarized(&id(&created)).await;
    let markdown = run(skein(&app), &["collab", "transcript", &id(&created)]).await;
    assert!(markdown.ok, "{}", markdown.stderr);
    assert!(markdown.stdout.starts_with("# "), "{}", markdown.stdout);
    assert!(markdown.stdout.contains("> a1\n"), "{}", markdown.stdout);
    assert!(
        markdown.stdout.contains("## Summary"),
        "{}",
        markdown.stdout
    );
    let json = run(
        skein(&app),
        &["collab", "transcript", &id(&created), "--format", "json"],
    )
    .await;
    assert!(json.ok, "{}", json.stderr);
    let document: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(document["collaboration"]["id"], created["id"]);
    let figures = run(skein(&app), &["collab", "figures", &id(&created)]).await;
    assert!(figures.ok, "{}", figures.stderr);
    let lines: Vec<&str> = figures.stdout.lines().collect();
    assert!(
        lines[0].starts_with("MEMBER") && lines[0].contains("TOKENS"),
        "{}",
        figures.stdout
    );
    assert!(
        lines[1].starts_with("A ") && lines[2].starts_with("B "),
        "{}",
        figures.stdout
    );
    let missing = run(
        skein(&app),
        &[
            "collab",
            "transcript",
            "01a00000-0000-7000-8000-000000000000",
        ],
    )
    .await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[tokio::test]
async fn an_agent_gets_tools_from_the_cli_and_watch_shows_each_call_and_result() {
    let Some(mcp) = crate::support::peers::McpPeer::start(Some("cli-token-19")).await else {
        return;
    };
    let fake = crate::support::fake_model::FakeModel::start().await;
    fake.call_tools(&[("add", json!({"a": 40, "b": 2}))]);
    fake.reply_with(&["It is 42."]);
    let base = fake.base_url();
    let app = crate::support::spawn_app_with(move |c| {
        c.providers = vec![crate::support::default_provider(&base)]
    })
    .await;
    let tool = json!({"url": mcp.url, "name": "calc", "bearer": "cli-token-19", "allow": ["add"]})
        .to_string();
    let made = run(
        skein(&app),
        &[
            "agents", "create", "--name", "Analyst", "--kind", "llm", "--tool", &tool,
        ],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    assert!(
        made.stdout
            .contains(&format!("tools    calc ({}): add", mcp.url)),
        "{}",
        made.stdout
    );
    assert!(!made.stdout.contains("cli-token-19"));
    let listed = run(skein(&app), &["agents", "tools", "Analyst"]).await;
    // By name is not a reference: the CLI reports the API's 404.
    assert!(!listed.ok);
    let analyst = app.get_json("/api/v1/agents").await["items"][0].clone();
    let listed = run(skein(&app), &["agents", "tools", &id(&analyst)]).await;
    assert!(listed.ok, "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines[0].starts_with("FUNCTION"), "{}", listed.stdout);
    assert!(
        lines[1].contains("add")
            && lines[1].contains("calc")
            && lines[1].contains("Adds two numbers."),
        "{}",
        listed.stdout
    );

    let host = app.scripted("Host", &["@Analyst add them"], 0).await;
    let ran = run(
        skein(&app),
        &[
            "collab",
            "create",
            "--principal",
            &id(&host),
            "--participant",
            &id(&analyst),
            "--message-cap",
            "2",
            "--timeout-window",
            "30",
            "--watch",
        ],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("  ⚙ Analyst (llm) calls calc/add {\"a\":40,\"b\":2}\n  ⚙ calc/add ok ("),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("ms): 42\n"), "{}", ran.stdout);
}

#[tokio::test]
async fn a_team_is_saved_shown_and_run_with_watch_from_the_cli() {
    let app = spawn_app().await;
    let planner = app.scripted("Planner", &["Tapas?", "Booked."], 50).await;
    let scout = app.scripted("Scout", &["Yes, at seven."], 50).await;
    let made = run(
        skein(&app),
        &[
            "teams",
            "create",
            "--name",
            "Night out",
            "--principal",
            &id(&planner),
            "--participant",
            scout["address"].as_str().unwrap(),
            "--message-cap",
            "3",
            "--strategy",
            "round_robin",
            "--no-evaluate",
            "--json",
        ],
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let team = made.json();
    assert_eq!(team["evaluate_objective_completion"], false);
    let team_id = id(&team);

    let shown = run(
        skein(&app),
        &["teams", "get", team["address"].as_str().unwrap()],
    )
    .await;
    assert!(shown.ok, "{}", shown.stderr);
    assert!(shown.stdout.contains("Night out"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("participants   Scout"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains(&format!("/a2a/teams/{team_id}/.well-known/agent-card.json")),
        "{}",
        shown.stdout
    );
    let listed = run(skein(&app), &["teams", "list"]).await;
    assert!(listed.stdout.contains("Night out"), "{}", listed.stdout);

    let ran = run(
        skein(&app),
        &["teams", "run", &team_id, "Plan Friday", "--watch"],
    )
    .await;
    assert!(ran.ok, "{}", ran.stderr);
    let said: Vec<&str> = ran.stdout.lines().take(3).collect();
    assert_eq!(
        said,
        [
            "Planner (scripted): Tapas?",
            "Scout (scripted): Yes, at seven.",
            "Planner (scripted): Booked."
        ]
    );
    let runs = run(skein(&app), &["teams", "runs", &team_id, "--json"]).await;
    let runs = runs.json();
    assert_eq!(runs["meta"]["total"], 1);
    assert_eq!(runs["items"][0]["objective"], "Plan Friday");
    assert_eq!(runs["items"][0]["status"], "completed");

    // No objective to speak of: refused, and the exit code says so.
    let refused = run(skein(&app), &["teams", "run", &team_id, " "]).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("objective"), "{}", refused.stderr);
}

/// `collab events` follows the account: each change as a line (JSON for programs), and
/// `--after` starts from an id it printed, so nothing is missed between two runs.
#[tokio::test]
async fn collab_events_follows_the_account_and_starts_again_after_an_id() {
    let app = spawn_app().await;
    let mut events = skein(&app);
    events
        .args(["collab", "events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = events.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("the command goes on");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await["event"], "ready");
    let created = app.scripted_duo(2, 0).await;
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|e: &Value| e["event"] != "summarized")
    {
        seen.push(next().await);
    }
    child.kill().await.unwrap();
    assert!(
        seen.iter()
            .all(|e| e["data"]["collaboration_id"] == id(&created).as_str())
    );
    let first = &seen[0];
    assert_eq!(first["event"], "created");
    assert_eq!(first["id"], 1);
    assert_eq!(
        first["data"]["collaboration"]["objective"],
        created["objective"]
    );

    // Again, after the `created` it printed, for people.
    let mut again = skein(&app);
    again
        .args(["collab", "events", "--after", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = again.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed
        .last()
        .is_none_or(|l: &String| !l.starts_with("(following"))
    {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push(line);
    }
    child.kill().await.unwrap();
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert!(printed[0].starts_with("#2     ended"), "{printed:?}");
    assert!(
        printed[0].contains("completed (message_cap), 2 messages"),
        "{printed:?}"
    );
    assert!(printed[1].starts_with("#3     summarized"), "{printed:?}");
    assert_eq!(printed[2], "(following changes after #3)");
}
