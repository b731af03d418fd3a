//! Several Skein processes on one PostgreSQL database and one NATS server: when the process
//! running most collaborations dies (SIGKILL) or stops (SIGTERM), the others take them over,
//! every collaboration completes, and viewers on the surviving processes see every event once,
//! in order. Skipped without PostgreSQL and NATS (see `support::cluster`).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio::{task::JoinHandle, time::Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

use crate::support::{
    Api, Said, Viewer,
    cluster::{Cluster, LEASE_SECS},
    id,
};

const PROCESSES: usize = 3;
const MESSAGE_CAP: i64 = 10;
/// Each turn takes this long, so collaborations are mid-way when a process goes.
const TURN_MS: u64 = 250;

#[tokio::test]
async fn collaborations_of_a_killed_process_are_taken_over_and_viewers_miss_nothing() {
    failover(Departure::Killed, 20).await;
}

#[tokio::test]
async fn a_process_stopped_with_sigterm_hands_its_collaborations_over_at_once() {
    failover(Departure::Terminated, 10).await;
}

/// A process frozen (SIGSTOP) past its leases loses them; when it wakes it must write
/// nothing more: its runners are halted, and the database refuses their stale leases.
#[tokio::test]
async fn a_process_that_wakes_after_losing_its_leases_writes_nothing() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (frozen, other) = (cluster.member(0), cluster.member(1));
    let api = frozen.process.api.clone();
    let a = api.scripted("A", &["a1", "a2", "a3"], TURN_MS).await;
    let b = api.scripted("B", &["b1", "b2"], TURN_MS).await;
    let mut created = Vec::new();
    for _ in 0..4 {
        let settings = json!({"message_cap": MESSAGE_CAP, "timeout_window": 60});
        created.push(api.collaborate(&a, &b, settings).await);
    }
    let (frozen_owner, other_owner) = (frozen.owner, other.owner);
    let pid = frozen.process.child.id().expect("running") as i32;
    let survivor = other.process.api.clone();
    let mut db = cluster.database().await;
    tokio::time::sleep(Duration::from_millis(3 * TURN_MS)).await;
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let frozen_at = Instant::now();
    loop {
        let taken: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM collaborations WHERE lease_owner = $1 OR summary IS NOT NULL",
        )
        .bind(other_owner)
        .fetch_one(&mut db)
        .await
        .unwrap();
        if taken == created.len() as i64 {
            break;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(LEASE_SECS + 10),
            "the other process never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_all_completed(&survivor, &created, &mut db).await;
    // It noticed: by its renewal or by a write the database refused.
    let woken = cluster.member(0).process.output();
    assert!(
        woken.contains("lease"),
        "the woken process said nothing of its leases: {woken}"
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM collaborations WHERE lease_owner = $1")
            .bind(frozen_owner)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(held, 0);
    cluster.remove().await;
}

#[tokio::test]
async fn a_key_revoked_through_one_process_is_refused_by_the_others_and_its_streams_close() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (here, there) = (
        cluster.member(0).process.api.clone(),
        cluster.member(1).process.api.clone(),
    );
    let created: Value = here
        .post(
            "/api/v1/keys",
            &json!({"name": "short-lived", "scopes": ["read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    let collaboration = here.scripted_duo(400, 100).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    // The other process has just found the key, and keeps it for its next requests.
    let there = there.with_key(key);
    assert_eq!(there.get("/api/v1/agents").await.status(), 200);
    let mut viewer = there.viewer(channel, 0).await;
    assert_eq!(viewer.frame().await["type"], "hello");

    let revoked = here.delete(&format!("/api/v1/keys/{}", id(&created))).await;
    assert_eq!(revoked.status(), 204);
    let at = Instant::now();
    assert_eq!(here.with_key(key).get("/api/v1/agents").await.status(), 401);
    // Only the word over NATS closes the stream there: nothing else would end it.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match viewer.next().await {
                Said::Frame(_) => continue,
                Said::Closed(code, reason) => break (code, reason),
            }
        }
    })
    .await
    .expect("the stream on the other process stayed open");
    assert_eq!(closed.0, Some(CloseCode::from(4403)), "{}", closed.1);
    assert!(closed.1.contains("revoked"), "{}", closed.1);
    wait_until(Duration::from_secs(5), || async {
        (there.get("/api/v1/agents").await.status() == 401).then_some(())
    })
    .await;
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    cluster.remove().await;
}

/// An account's event stream on one process hears of collaborations another process runs,
/// as they happen: the nudges cross over NATS (the stream's own look at the store comes only
/// every 30 s, past the patience of `next`).
#[tokio::test]
async fn an_event_stream_hears_of_collaborations_another_process_runs() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (here, there) = (
        cluster.member(0).process.api.clone(),
        cluster.member(1).process.api.clone(),
    );
    let mut stream = there.events(None).await;
    assert_eq!(stream.next().await.unwrap().event, "ready");
    let collaboration = here.scripted_duo(3, 50).await;
    let cid = id(&collaboration);
    let seen = stream.until_about("summarized", &cid).await;
    let lasting: Vec<&str> = seen
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(lasting, ["created", "ended", "summarized"]);
    let counts: Vec<u64> = seen
        .iter()
        .filter(|e| e.event == "messages")
        .map(|e| e.data["message_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3], "message counts cross too");
    cluster.remove().await;
}

/// A process receives the frames of the channels its viewers watch and no others, and a
/// viewer that joins mid-turn on a process that does not run the collaboration is told
/// whose turn it is before the turn's message arrives.
#[tokio::test]
async fn a_process_hears_only_the_channels_watched_there_and_a_late_viewer_learns_whose_turn_it_is()
{
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let apis: Vec<Api> = (0..3)
        .map(|i| cluster.member(i).process.api.clone())
        .collect();
    // Process 0 runs it; each turn takes 1.5 s, so a viewer joining at 0.5 s finds one on.
    let collaboration = apis[0].scripted_duo(2, 1500).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut viewer = apis[1].viewer(channel, 0).await;
    let mut frames = Vec::new();
    while let Said::Frame(frame) = viewer.next().await {
        let done = frame["type"] == "summary";
        frames.push(frame);
        if done {
            break;
        }
    }
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let first = frames
        .iter()
        .position(|f| f["type"] == "message")
        .expect("a message");
    assert!(
        frames[..first]
            .iter()
            .any(|f| f["type"] == "turn" && f["turn_id"] == frames[first]["turn_id"]),
        "told whose turn it was before its message: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");

    let received = |api: &Api| {
        let api = api.clone();
        async move {
            let metrics = api.get("/metrics").await.text().await.unwrap();
            metrics
                .lines()
                .find_map(|line| line.strip_prefix("skein_cluster_frames_received_total "))
                .map_or(0.0, |n| n.trim().parse::<f64>().unwrap())
        }
    };
    assert!(
        received(&apis[1]).await > 0.0,
        "the watching process hears the channel"
    );
    assert_eq!(
        received(&apis[2]).await,
        0.0,
        "a process with no viewer hears nothing"
    );
    cluster.remove().await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Departure {
    Killed,
    Terminated,
}

async fn failover(departure: Departure, count: usize) {
    let Some(mut cluster) = Cluster::start(PROCESSES).await else {
        return;
    };
    let apis: Vec<Api> = (0..PROCESSES)
        .map(|i| cluster.member(i).process.api.clone())
        .collect();
    let a = apis[0].scripted("A", &["a1", "a2", "a3"], TURN_MS).await;
    let b = apis[1].scripted("B", &["b1", "b2"], TURN_MS).await;
    // Spread over the processes: the one that creates a collaboration runs it.
    let mut created = Vec::new();
    for i in 0..count {
        let settings = json!({"message_cap": MESSAGE_CAP, "timeout_window": 60});
        created.push(apis[i % PROCESSES].collaborate(&a, &b, settings).await);
    }
    let mut watching = Vec::new();
    for collaboration in &created {
        let channel = collaboration["channel_id"].as_str().unwrap();
        for (process, api) in apis.iter().enumerate() {
            watching.push((process, watch(api.viewer(channel, 0).await)));
        }
    }
    let mut db = cluster.database().await;
    // Some turns in, and every collaboration still has turns to go.
    tokio::time::sleep(Duration::from_millis(4 * TURN_MS)).await;
    let (victim, held) = busiest_owner(&mut db).await;
    let index = cluster
        .alive()
        .into_iter()
        .find(|&i| cluster.member(i).owner == victim)
        .expect("the busiest owner is one of the processes");
    assert!(held > 0);
    let member = cluster.processes[index].take().unwrap();
    let departed = Instant::now();
    match departure {
        Departure::Killed => member.process.kill().await,
        Departure::Terminated => {
            member.process.stop().await;
            // Released on the way out, not left to expire.
            let still_held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM collaborations WHERE lease_owner = $1")
                    .bind(victim)
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
            assert_eq!(still_held, 0, "a stopped process keeps no lease");
        }
    }
    let takeover = loop {
        let orphans: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM collaborations WHERE (status = 'running' OR summary IS NULL) \
             AND (lease_owner IS NULL OR lease_owner = $1)",
        )
        .bind(victim)
        .fetch_one(&mut db)
        .await
        .unwrap();
        if orphans == 0 {
            break departed.elapsed();
        }
        assert!(
            departed.elapsed() < Duration::from_secs(LEASE_SECS + 10),
            "{orphans} collaborations were never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "{departure:?}: {held} collaborations taken over {} ms after the process went (lease {LEASE_SECS} s)",
        takeover.as_millis()
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_SECS + 1),
        "takeover took {takeover:?}"
    );
    let survivor = &apis[cluster.alive()[0]];
    assert_all_completed(survivor, &created, &mut db).await;
    let mut checked = 0;
    for (process, viewer) in watching {
        let frames = viewer.await.unwrap();
        if process == index {
            continue;
        }
        let seqs: Vec<i64> = frames.iter().filter_map(|f| f["seq"].as_i64()).collect();
        let last = frames.last().expect("frames");
        assert_eq!(last["type"], "summary", "the viewer saw the end: {last}");
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "every seq once, in order");
        checked += 1;
    }
    assert_eq!(checked, count * (PROCESSES - 1));
    cluster.remove().await;
}

/// Reads a viewer's frames after `hello` until the summary or the end of the stream.
fn watch(mut viewer: Viewer) -> JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut frames = Vec::new();
        match viewer.next().await {
            Said::Frame(hello) => assert_eq!(hello["type"], "hello"),
            Said::Closed(..) => return frames,
        }
        while let Said::Frame(frame) = viewer.next().await {
            let done = frame["type"] == "summary";
            frames.push(frame);
            if done {
                break;
            }
        }
        frames
    })
}

/// The process holding the most unexpired leases, and how many it holds.
async fn busiest_owner(db: &mut PgConnection) -> (Uuid, i64) {
    sqlx::query_as(
        "SELECT lease_owner, count(*) FROM collaborations \
         WHERE lease_owner IS NOT NULL AND lease_expires_at > now() \
         GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Every collaboration completes (read through `survivor`) with a whole log.
async fn assert_all_completed(survivor: &Api, created: &[Value], db: &mut PgConnection) {
    for collaboration in created {
        let id = id(collaboration);
        let ended = wait_until(Duration::from_secs(60), || async {
            let c = survivor.collaboration(&id).await;
            (!c["summary"].is_null()).then_some(c)
        })
        .await;
        assert_eq!(ended["status"], "completed", "{ended}");
        assert_eq!(ended["message_count"], MESSAGE_CAP);
        let channel: Uuid = collaboration["channel_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_log_is_whole(db, channel).await;
    }
}

/// The stored log of a channel: seq 1..N with no gap, and no turn stored twice.
async fn assert_log_is_whole(db: &mut PgConnection, channel: Uuid) {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, kind, frame FROM events WHERE channel_id = $1 ORDER BY seq")
            .bind(channel)
            .fetch_all(&mut *db)
            .await
            .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|row| row.0).collect();
    assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>());
    let turns: Vec<String> = rows
        .iter()
        .filter(|row| row.1 == "message")
        .map(|row| {
            let frame: Value = serde_json::from_str(&row.2).unwrap();
            frame["turn_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(turns.len() as i64, MESSAGE_CAP);
    let mut unique = turns.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), turns.len(), "a turn was stored twice");
}

/// Polls `probe` every 50 ms until it yields, failing after `patience`.
async fn wait_until<T, F, Fut>(patience: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up after {patience:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A NATS server of the test's own on a free port, started with `args`, stopped (by its
/// pid) when dropped. `None` where there is no `nats-server` and NATS tests are not required.
struct OwnNats {
    child: tokio::process::Child,
    port: u16,
}

impl OwnNats {
    async fn start(args: &[&str]) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|path| {
            std::process::Command::new(path)
                .arg("--version")
                .output()
                .is_ok()
        });
        let Some(binary) = binary else {
            assert!(
                std::env::var("SKEIN_CLUSTER_TESTS").as_deref() != Ok("required"),
                "SKEIN_CLUSTER_TESTS=required but there is no nats-server"
            );
            eprintln!("no nats-server: skipping");
            return None;
        };
        let child = tokio::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        crate::support::wait_for(|| async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn a_nats_server_that_asks_for_credentials_gets_them_and_a_missing_one_is_said_plainly() {
    let Some(nats) = OwnNats::start(&["--auth", "nats-token-0123"]).await else {
        return;
    };
    let app = crate::support::spawn_app_with(|config| {
        config.nats_url = Some(nats.url().into());
        config.nats_auth.token = Some("nats-token-0123".into());
    })
    .await;
    let collaboration = app.scripted_duo(2, 0).await;
    app.wait_until_summarized(&id(&collaboration)).await;

    let dir = tempfile::tempdir().unwrap();
    let refused = skein::app::App::build(skein::config::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nats_url: Some(nats.url().into()),
        ..Default::default()
    })
    .await
    .err()
    .expect("no token, no connection");
    let said = format!("{refused:#}");
    assert!(said.contains("connecting to NATS"), "{said}");
    assert!(said.to_lowercase().contains("authoriz"), "{said}");
}

#[tokio::test]
async fn a_password_in_the_nats_url_is_used_and_never_shown() {
    let Some(nats) = OwnNats::start(&["--user", "skein", "--pass", "nats-pass-4567"]).await else {
        return;
    };
    let with = format!("nats://skein:nats-pass-4567@127.0.0.1:{}", nats.port);
    let app = crate::support::spawn_app_with(|config| config.nats_url = Some(with.into())).await;
    assert_eq!(app.get("/ready").await.status(), 200);

    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("nats://skein:wrong-pass-89@127.0.0.1:{}", nats.port);
    let refused = skein::app::App::build(skein::config::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nats_url: Some(wrong.into()),
        ..Default::default()
    })
    .await
    .err()
    .expect("a wrong password, no connection");
    let said = format!("{refused:#}");
    assert!(said.contains("connecting to NATS"), "{said}");
    assert!(
        !said.contains("wrong-pass-89"),
        "the password was shown: {said}"
    );
}
