//! The scenarios. Each starts its own servers, measures, prints its JSON line and adds its
//! rows to the table.

use std::{
    path::{Path, PathBuf},
    process::Command as StdCommand,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    api::{self, Api},
    fake_model::{self, FakeModel, Purpose},
    fleet::{self, Fleet},
    proc::{self, ADMIN_KEY, Served},
    report::{Report, Row, kib, median, ms, percentile_f, ratio},
};

const MESSAGE_BYTES: usize = 200;

/// The peers, once installed by `bench/peers/setup.sh`.
pub struct Peers {
    dir: PathBuf,
    node: bool,
    python: Option<PathBuf>,
}

impl Peers {
    pub fn install(root: &Path) -> Option<Self> {
        let dir = root.join("bench/peers");
        let venv = root.join("target/bench-venv");
        let installed = StdCommand::new("bash")
            .arg(dir.join("setup.sh"))
            .env("BENCH_VENV", &venv)
            .status();
        if !installed.is_ok_and(|status| status.success()) {
            eprintln!("skein-bench: the peers could not be installed; figures without ratios");
            return None;
        }
        let python = venv.join("bin/python");
        Some(Self {
            node: dir.join("node-ws/node_modules/ws").exists(),
            python: python.exists().then_some(python),
            dir,
        })
    }
}

pub struct Bench {
    pub skein: PathBuf,
    pub server_core: Option<usize>,
    pub tiny: bool,
    pub repeats: usize,
    pub peers: Option<Peers>,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub collaborations: usize,
    pub report: Report,
}

/// A channel with a person who speaks on the benchmark's behalf.
struct Channel {
    id: String,
    poster: String,
}

/// One message sent to every viewer at a fixed rate, or once.
enum Publisher {
    Skein {
        api: Api,
        channel: Channel,
    },
    /// A client whose messages the server relays to every other (Node, the floor).
    Relay {
        socket: Box<WsSocket>,
    },
}

type WsSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Publisher {
    async fn send(&mut self, k: u32) -> anyhow::Result<()> {
        let text = fleet::message(k, MESSAGE_BYTES);
        match self {
            Self::Skein { api, channel } => api.say(&channel.id, &channel.poster, &text).await,
            Self::Relay { socket } => Ok(socket.send(Message::Text(text.into())).await?),
        }
    }
}

/// What a server under test is, for the scenarios that run on several.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Skein,
    Node,
    /// One write per delivery and nothing else (`floor.rs`).
    Floor,
}

impl Bench {
    async fn start_skein(&self, env: &[(&str, String)]) -> anyhow::Result<Served> {
        proc::skein(&self.skein, self.server_core, env).await
    }

    fn node(&self) -> Option<&Path> {
        self.peers
            .as_ref()
            .filter(|peers| peers.node)
            .map(|peers| peers.dir.as_path())
    }

    /// A server of `target` with `viewers` connected to one channel, and a publisher.
    async fn broadcast_setup(
        &self,
        target: Target,
    ) -> anyhow::Result<(Served, String, Option<String>, Publisher)> {
        match target {
            Target::Skein => {
                let served = self.start_skein(&[]).await?;
                let api = Api::new(served.address);
                let poster = api.human("poster").await?;
                let other = api.human("other").await?;
                let collaboration = api.collaboration(&poster, &other, 1_000_000).await?;
                let id = collaboration["channel_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let url = api.stream_url(&id, 0);
                let publisher = Publisher::Skein {
                    api,
                    channel: Channel { id, poster },
                };
                Ok((served, url, Some(ADMIN_KEY.to_owned()), publisher))
            }
            Target::Node | Target::Floor => {
                let served = match target {
                    Target::Node => {
                        let dir = self.node().expect("the Node peer is installed");
                        proc::node_ws(dir, self.server_core).await?
                    }
                    _ => proc::floor("broadcast", self.server_core, &[]).await?,
                };
                let url = format!("ws://{}/", served.address);
                let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
                let publisher = Publisher::Relay {
                    socket: Box::new(socket),
                };
                Ok((served, url, None, publisher))
            }
        }
    }

    /// Skein, Node when installed, and the floor where a scenario's figures have one.
    fn targets(&self, floor: bool) -> Vec<Target> {
        let mut targets = vec![Target::Skein];
        if self.node().is_some() {
            targets.push(Target::Node);
        }
        if floor {
            targets.push(Target::Floor);
        }
        targets
    }

    /// Idle viewers: server memory per connection at each step.
    pub async fn idle(&mut self) -> anyhow::Result<()> {
        let steps: &[usize] = if self.tiny {
            &[50]
        } else {
            &[1000, 5000, 10_000]
        };
        let mut figures = json!({});
        let mut results = std::collections::HashMap::new();
        for target in self.targets(false) {
            let mut runs: Vec<Vec<f64>> = Vec::new();
            for _ in 0..self.repeats {
                let (served, url, key, _publisher) = self.broadcast_setup(target).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let before = served.rss_bytes();
                let mut fleet = Fleet::connect(&url, key.as_deref(), 0).await?;
                let mut run = Vec::new();
                for &step in steps {
                    fleet.grow(&url, key.as_deref(), step - fleet.len()).await?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let grown = served.rss_bytes().saturating_sub(before);
                    run.push(grown as f64 / step as f64);
                }
                fleet.finish().await;
                served.stop().await;
                runs.push(run);
            }
            let medians: Vec<f64> = (0..steps.len())
                .map(|i| median(&mut runs.iter().map(|run| run[i]).collect::<Vec<_>>()))
                .collect();
            figures[name(target)] = steps
                .iter()
                .zip(&medians)
                .map(|(step, bytes)| (step.to_string(), json!(kib(*bytes))))
                .collect::<serde_json::Map<_, _>>()
                .into();
            results.insert(name(target), medians);
        }
        figures["unit"] = "KiB per connection (server RSS growth ÷ viewers)".into();
        self.report.scenario("idle", figures);
        let last = steps.len() - 1;
        let skein = results["skein"][last] / 1024.0;
        let peer = results.get("node").map(|node| node[last] / 1024.0);
        self.report.row(Row {
            figure: format!("idle memory per viewer at {}", steps[last]),
            skein: format!("{skein:.2} KiB"),
            peer: peer.map_or("-".into(), |p| format!("{p:.2} KiB")),
            ratio: ratio(skein, peer),
            target: "≤ 3 KiB".into(),
            met: Some(skein <= 3.0),
        });
        Ok(())
    }

    /// Viewers on one channel, messages at a fixed rate: deliveries per second and per
    /// server CPU-second, and publish-to-receive latency.
    pub async fn fanout(&mut self) -> anyhow::Result<()> {
        let (viewers, seconds, rates): (usize, f64, &[u32]) = if self.tiny {
            (20, 1.0, &[10])
        } else {
            (1000, 5.0, &[20, 100])
        };
        let mut figures =
            json!({"viewers": viewers, "message_bytes": MESSAGE_BYTES, "seconds": seconds});
        for &rate in rates {
            let mut by_target = std::collections::HashMap::new();
            for target in self.targets(true) {
                let mut runs = Vec::new();
                for _ in 0..self.repeats {
                    runs.push(self.fanout_once(target, viewers, rate, seconds).await?);
                }
                let pick = |field: &str| {
                    median(
                        &mut runs
                            .iter()
                            .map(|run| run[field].as_f64().unwrap_or(0.0))
                            .collect::<Vec<_>>(),
                    )
                };
                let summary = json!({
                    "deliveries_per_second": pick("deliveries_per_second").round(),
                    "deliveries_per_cpu_second": pick("deliveries_per_cpu_second").round(),
                    "p50_ms": pick("p50_ms"), "p99_ms": pick("p99_ms"), "max_ms": pick("max_ms"),
                    "delivered_share": pick("delivered_share"),
                });
                by_target.insert(name(target), summary);
            }
            figures[format!("{rate}_per_second")] = json!(by_target);
            let skein = &by_target["skein"];
            let node = by_target.get("node");
            let efficiency = skein["deliveries_per_cpu_second"].as_f64().unwrap_or(0.0);
            let node_efficiency = node.and_then(|n| n["deliveries_per_cpu_second"].as_f64());
            let offered = rate as usize * viewers;
            self.report.row(Row {
                figure: format!("fanout deliveries per server CPU-second ({offered}/s offered)"),
                skein: format!("{efficiency:.0}"),
                peer: node_efficiency.map_or("-".into(), |n| format!("{n:.0}")),
                ratio: ratio(efficiency, node_efficiency),
                target: "≥ 150k and ≥ 1.8× Node".into(),
                met: Some(
                    efficiency >= 150_000.0
                        && node_efficiency.is_none_or(|n| efficiency >= 1.8 * n),
                ),
            });
            let p99 = skein["p99_ms"].as_f64().unwrap_or(0.0);
            let node_p99 = node.and_then(|n| n["p99_ms"].as_f64());
            self.report.row(Row {
                figure: format!("fanout latency p99 at {offered} deliveries/s"),
                skein: format!("{p99:.2} ms"),
                peer: node_p99.map_or("-".into(), |n| format!("{n:.2} ms")),
                ratio: ratio(p99, node_p99),
                target: if offered == 20_000 {
                    "≤ 20 ms".into()
                } else {
                    "-".into()
                },
                met: (offered == 20_000).then_some(p99 <= 20.0),
            });
            let floor = by_target.get("floor");
            if let Some(floor) = floor.and_then(|f| f["deliveries_per_cpu_second"].as_f64()) {
                self.report.row(Row::against_floor(
                    format!("fanout deliveries per server CPU-second ({offered}/s offered)"),
                    (efficiency, floor),
                    |n| format!("{n:.0}"),
                ));
            }
        }
        self.report.scenario("fanout", figures);
        Ok(())
    }

    async fn fanout_once(
        &self,
        target: Target,
        viewers: usize,
        rate: u32,
        seconds: f64,
    ) -> anyhow::Result<Value> {
        let (served, url, key, publisher) = self.broadcast_setup(target).await?;
        let fleet = Fleet::connect(&url, key.as_deref(), viewers).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = (f64::from(rate) * seconds) as u32;
        let cpu_before = served.cpu_seconds();
        let started = Instant::now();
        let sent = send_at_rate(publisher, rate, count).await?;
        let sending = started.elapsed().as_secs_f64();
        // Let the last messages arrive.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let cpu = served.cpu_seconds() - cpu_before;
        let arrivals = fleet.finish().await;
        served.stop().await;
        let mut latencies: Vec<f64> = arrivals.iter().flatten().map(|a| a.1 as f64).collect();
        let deliveries = latencies.len() as f64;
        Ok(json!({
            "deliveries_per_second": deliveries / sending,
            "deliveries_per_cpu_second": deliveries / cpu.max(0.01),
            "p50_ms": ms(percentile_f(&mut latencies, 50.0)),
            "p99_ms": ms(percentile_f(&mut latencies, 99.0)),
            "max_ms": ms(percentile_f(&mut latencies, 100.0)),
            "delivered_share": deliveries / (f64::from(sent) * viewers as f64),
        }))
    }

    /// One message to many viewers: the time until the last has it.
    pub async fn burst(&mut self) -> anyhow::Result<()> {
        let (viewers, bursts) = if self.tiny { (50, 3) } else { (10_000, 10) };
        let mut figures = json!({"viewers": viewers, "bursts": bursts});
        let mut p99s = std::collections::HashMap::new();
        for target in self.targets(true) {
            let mut runs = Vec::new();
            for _ in 0..self.repeats {
                let (served, url, key, mut publisher) = self.broadcast_setup(target).await?;
                let fleet = Fleet::connect(&url, key.as_deref(), viewers).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let cpu_before = served.cpu_seconds();
                for k in 0..bursts {
                    publisher.send(k).await?;
                    tokio::time::sleep(Duration::from_millis(if self.tiny { 300 } else { 1500 }))
                        .await;
                }
                // What one burst costs the server: with the last-viewer time, it tells the
                // server's share of that time from the load generator's.
                let cpu_per_burst = (served.cpu_seconds() - cpu_before) / bursts as f64;
                let arrivals = fleet.finish().await;
                served.stop().await;
                // Per burst: the latency of the last viewer to get it, and how many did.
                let mut last = vec![0u64; bursts as usize];
                let mut reached = vec![0usize; bursts as usize];
                for (k, latency) in arrivals.iter().flatten() {
                    if let Some(slot) = last.get_mut(*k as usize) {
                        *slot = (*slot).max(*latency);
                        reached[*k as usize] += 1;
                    }
                }
                let mut lasts: Vec<f64> = last.iter().map(|&n| n as f64).collect();
                runs.push(json!({
                    "p50_ms": ms(percentile_f(&mut lasts, 50.0)),
                    "p99_ms": ms(percentile_f(&mut lasts, 99.0)),
                    "everyone_reached": reached.iter().all(|&n| n == viewers),
                    "server_cpu_ms": ms(cpu_per_burst * 1e9),
                }));
            }
            let pick = |field: &str| {
                median(
                    &mut runs
                        .iter()
                        .map(|run| run[field].as_f64().unwrap_or(0.0))
                        .collect::<Vec<_>>(),
                )
            };
            let summary = json!({
                "last_viewer_p50_ms": pick("p50_ms"),
                "last_viewer_p99_ms": pick("p99_ms"),
                "server_cpu_ms_per_burst": pick("server_cpu_ms"),
                "everyone_reached": runs.iter().all(|run| run["everyone_reached"] == true),
            });
            p99s.insert(name(target), (pick("p99_ms"), pick("server_cpu_ms")));
            figures[name(target)] = summary;
        }
        self.report.scenario("burst", figures);
        let (skein, skein_cpu) = p99s["skein"];
        let node = p99s.get("node").map(|(p99, _)| *p99);
        self.report.row(Row {
            figure: format!("burst: one message to {viewers} viewers, last one p99"),
            skein: format!("{skein:.1} ms"),
            peer: node.map_or("-".into(), |n| format!("{n:.1} ms")),
            ratio: ratio(skein, node),
            target: "≤ 100 ms".into(),
            met: Some(skein <= 100.0),
        });
        if let Some(&(floor, floor_cpu)) = p99s.get("floor") {
            let ms = |n: f64| format!("{n:.1} ms");
            self.report.row(Row::against_floor(
                format!("burst to {viewers} viewers, last one p99"),
                (skein, floor),
                ms,
            ));
            self.report.row(Row::against_floor(
                format!("server CPU per burst to {viewers} viewers"),
                (skein_cpu, floor_cpu),
                ms,
            ));
        }
        Ok(())
    }

    /// Many collaborations of zero-latency scripted agents at once: turns per second, the
    /// engine's time per turn, what SQLite wrote.
    pub async fn turns(&mut self) -> anyhow::Result<()> {
        // Long enough that all of them run at once for a while: the first ones created are
        // still running when the last one starts.
        let (collaborations, cap) = if self.tiny { (5, 4) } else { (500, 100) };
        let served = self.start_skein(&[]).await?;
        let api = Api::new(served.address);
        let scripted = |name: &str| json!({"name": name, "kind": "scripted", "replies": ["one", "two", "three"], "delay_ms": 0});
        let a = api.agent(scripted("A")).await?;
        let b = api.agent(scripted("B")).await?;
        let cpu_before = served.cpu_seconds();
        let started = Instant::now();
        let created: Vec<Value> = stream::iter(0..collaborations)
            .map(|_| api.collaboration(&a, &b, cap))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        loop {
            let running = api.get("/collaborations?status=running&size=1").await?;
            if running["meta"]["total"].as_u64() == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = served.cpu_seconds() - cpu_before;
        let turns = (collaborations * cap as usize) as f64;
        // When each message was stored, per collaboration, as the store tells it.
        let timelines: Vec<Vec<chrono::DateTime<chrono::Utc>>> = stream::iter(&created)
            .map(|collaboration| {
                let channel = collaboration["channel_id"].as_str().unwrap_or_default();
                let path = format!("/channels/{channel}/messages?after_seq=0&limit=500");
                let api = api.clone();
                async move {
                    let page = api.get(&path).await?;
                    anyhow::Ok(
                        page["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|event| event["type"] == "message")
                            .filter_map(|event| event["created_at"].as_str()?.parse().ok())
                            .collect::<Vec<_>>(),
                    )
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        // The figure is taken while all of them run: from the first message of the
        // collaboration that started last to the last message of the one that ended first.
        let all_running_from = timelines.iter().filter_map(|times| times.first()).max();
        let all_running_until = timelines.iter().filter_map(|times| times.last()).min();
        let concurrent = match (all_running_from, all_running_until) {
            (Some(&from), Some(&until)) if until > from => {
                let stored = timelines
                    .iter()
                    .flatten()
                    .filter(|&&at| at >= from && at <= until)
                    .count();
                let seconds = (until - from).num_microseconds().unwrap_or(0) as f64 / 1e6;
                Some((stored as f64 / seconds, seconds))
            }
            _ => None,
        };
        // The engine's time per turn: between one message and the next of a collaboration
        // whose agents answer at once (store, publish, choose, speak).
        let mut gaps: Vec<f64> = timelines
            .iter()
            .take(50)
            .flat_map(|times| {
                times
                    .windows(2)
                    .map(|pair| (pair[1] - pair[0]).num_microseconds().unwrap_or(0) as f64 * 1000.0)
            })
            .collect();
        let database = served.database_bytes();
        served.stop().await;
        let overall = turns / elapsed;
        let (turns_per_second, window) = concurrent.unwrap_or((overall, 0.0));
        let p50 = ms(percentile_f(&mut gaps, 50.0));
        let p99 = ms(percentile_f(&mut gaps, 99.0));
        self.report.scenario(
            "turns",
            json!({
                "collaborations": collaborations, "messages_each": cap,
                "turns_per_second": turns_per_second.round(),
                "all_running_seconds": (window * 100.0).round() / 100.0,
                // Creating the collaborations and writing their summaries included.
                "turns_per_second_overall": overall.round(),
                "server_cpu_ms_per_turn_overall": ms(cpu / turns * 1e9),
                "engine_ms_per_turn_p50": p50, "engine_ms_per_turn_p99": p99,
                // A message, and per collaboration its start, status and summary.
                "events_written_per_second": ((turns + 2.0 * collaborations as f64) / elapsed).round(),
                "database_bytes": database,
            }),
        );
        self.report.row(Row::alone(
            format!("turns/s, {collaborations} concurrent collaborations, SQLite"),
            format!("{turns_per_second:.0}"),
            Some(("≥ 5,000".into(), turns_per_second >= 5000.0)),
        ));
        self.report.row(Row::alone(
            "turns/s with creating and summarizing them".into(),
            format!("{overall:.0}"),
            None,
        ));
        self.report.row(Row::alone(
            "engine time per turn p50 / p99 (persist + publish)".into(),
            format!("{p50:.2} / {p99:.2} ms"),
            None,
        ));
        Ok(())
    }

    /// What exporting traces costs a turn: the server's CPU per turn of scripted
    /// collaborations, with no OTLP endpoint and with one (a sink in this process that
    /// answers 200 to every export), medians of the repeats.
    pub async fn tracing(&mut self) -> anyhow::Result<()> {
        let (collaborations, cap) = if self.tiny { (5, 4) } else { (200, 50) };
        let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", sink.local_addr()?);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(|_: axum::body::Bytes| async { axum::http::StatusCode::OK }),
        );
        let sink = tokio::spawn(async move { axum::serve(sink, app).await });
        let traced = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "500".to_owned()),
        ];
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..self.repeats {
            off.push(self.cpu_per_turn(&[], collaborations, cap).await?);
            on.push(self.cpu_per_turn(&traced, collaborations, cap).await?);
        }
        sink.abort();
        let (off, on) = (median(&mut off), median(&mut on));
        self.report.scenario(
            "tracing",
            json!({"collaborations": collaborations, "messages_each": cap,
                   "server_cpu_ms_per_turn_untraced": ms(off), "server_cpu_ms_per_turn_traced": ms(on)}),
        );
        self.report.row(Row::alone(
            "server CPU per turn, traces exported over OTLP vs none".into(),
            format!(
                "{:.3} ms vs {:.3} ms ({:.2}×)",
                ms(on),
                ms(off),
                on / off.max(f64::MIN_POSITIVE)
            ),
            None,
        ));
        Ok(())
    }

    /// The server's CPU time per turn (ns) of `collaborations` scripted ones of `cap`
    /// messages, all started at once, with `env` set.
    async fn cpu_per_turn(
        &self,
        env: &[(&str, String)],
        collaborations: usize,
        cap: u32,
    ) -> anyhow::Result<f64> {
        let served = self.start_skein(env).await?;
        let api = Api::new(served.address);
        let scripted = |name: &str| json!({"name": name, "kind": "scripted", "replies": ["one", "two", "three"], "delay_ms": 0});
        let a = api.agent(scripted("A")).await?;
        let b = api.agent(scripted("B")).await?;
        let cpu_before = served.cpu_seconds();
        stream::iter(0..collaborations)
            .map(|_| api.collaboration(&a, &b, cap))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        loop {
            let running = api.get("/collaborations?status=running&size=1").await?;
            if running["meta"]["total"].as_u64() == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = served.cpu_seconds() - cpu_before;
        served.stop().await;
        Ok(cpu / (collaborations as f64 * f64::from(cap)) * 1e9)
    }

    /// Creating and listing collaborations at a fixed concurrency.
    pub async fn rest(&mut self) -> anyhow::Result<()> {
        let mut backends = vec![("sqlite", Vec::new())];
        if let Some(url) = &self.database_url {
            match pg_schema(url, "rest") {
                Some(in_schema) => backends.push(("postgres", vec![("DATABASE_URL", in_schema)])),
                None => {
                    eprintln!("skein-bench: could not make a schema with psql; rest on SQLite only")
                }
            }
        }
        let (creates, lists, concurrency) = if self.tiny {
            (20, 50, 4)
        } else {
            (2000, 5000, 16)
        };
        let mut figures = json!({"concurrency": concurrency});
        let mut list_page = None;
        for (backend, env) in backends {
            let served = self.start_skein(&env).await?;
            let api = Api::new(served.address);
            let poster = api.human("poster").await?;
            let other = api.human("other").await?;
            let cpu_at_start = served.cpu_seconds();
            let rss_at_start = served.rss_bytes();
            let mut create = measure(creates, concurrency, |_| {
                let api = api.clone();
                let (poster, other) = (poster.clone(), other.clone());
                async move { api.collaboration(&poster, &other, 10).await.map(drop) }
            })
            .await?;
            let cpu_after_creates = served.cpu_seconds();
            // Every collaboration created is still running (its people never speak): what
            // the server holds per running collaboration, its store's caches included.
            let grown = served.rss_bytes().saturating_sub(rss_at_start);
            create["server_rss_kib_per_running_collaboration"] =
                json!(kib(grown as f64 / creates as f64));
            let mut list = measure(lists, concurrency, |_| {
                let api = api.clone();
                async move { api.fetch("/collaborations?size=20").await.map(drop) }
            })
            .await?;
            // The server's CPU per request: with the server on one core, the bound on
            // requests/s that holds whatever the load generator manages.
            let cpu_per = |seconds: f64, count: usize| ms(seconds / count as f64 * 1e9);
            create["server_cpu_ms_per_request"] =
                json!(cpu_per(cpu_after_creates - cpu_at_start, creates));
            list["server_cpu_ms_per_request"] =
                json!(cpu_per(served.cpu_seconds() - cpu_after_creates, lists));
            if backend == "sqlite" {
                let page = api.get("/collaborations?size=20").await?;
                list_page = Some(serde_json::to_vec(&page)?);
            }
            served.stop().await;
            self.report.row(Row::alone(
                format!("server memory per running collaboration, {backend} (RSS growth over the creates)"),
                format!("{} KiB", create["server_rss_kib_per_running_collaboration"]),
                None,
            ));
            figures[backend] = json!({"create": create, "list": list});
            let rate = |figures: &Value| figures["per_second"].as_f64().unwrap_or(0.0);
            for (what, figures, target) in [("list", &list, 15_000.0), ("create", &create, 3_000.0)]
            {
                self.report.row(Row::alone(
                    format!("REST {what}, {backend}: requests/s (p99; server CPU per request)"),
                    format!(
                        "{:.0} ({} ms; {} ms)",
                        rate(figures),
                        figures["p99_ms"],
                        figures["server_cpu_ms_per_request"]
                    ),
                    (backend == "sqlite")
                        .then(|| (format!("≥ {target:.0}/s"), rate(figures) >= target)),
                ));
            }
        }
        if let Some(page) = list_page {
            let floor = self.rest_floor(&page, lists, concurrency).await?;
            let skein = figures["sqlite"]["list"]["server_cpu_ms_per_request"]
                .as_f64()
                .unwrap_or(0.0);
            let floor_cpu = floor["server_cpu_ms_per_request"].as_f64().unwrap_or(0.0);
            self.report.row(Row::against_floor(
                "REST list server CPU per request (the same page from memory)".into(),
                (skein, floor_cpu),
                |n| format!("{n:.3} ms"),
            ));
            figures["floor"] = json!({"list": floor, "page_bytes": page.len()});
        }
        if let Some(url) = &self.database_url {
            drop_pg_schema(url, "rest");
        }
        self.report.scenario("rest", figures);
        Ok(())
    }

    /// Lists against the HTTP floor, which answers with `page` from memory.
    async fn rest_floor(
        &self,
        page: &[u8],
        lists: usize,
        concurrency: usize,
    ) -> anyhow::Result<Value> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), page)?;
        let path = file.path().to_string_lossy().into_owned();
        let served = proc::floor("http", self.server_core, &["--floor-body", &path]).await?;
        let api = Api::new(served.address);
        // Four times as many: the floor's CPU is read in ticks of 10 ms.
        let lists = lists * 4;
        let cpu_before = served.cpu_seconds();
        let mut list = measure(lists, concurrency, |_| {
            let api = api.clone();
            async move { api.fetch("/collaborations?size=20").await.map(drop) }
        })
        .await?;
        list["server_cpu_ms_per_request"] =
            json!(ms((served.cpu_seconds() - cpu_before) / lists as f64 * 1e9));
        served.stop().await;
        Ok(list)
    }

    /// A long collaboration of two model agents against the fake model: prompt tokens per
    /// turn as it goes on, and time per turn, beside AutoGen on the same fake model.
    pub async fn context(&mut self) -> anyhow::Result<()> {
        let turns: usize = if self.tiny { 20 } else { 500 };
        let checkpoints: Vec<usize> = [10, 20, 100, 200, 500]
            .into_iter()
            .filter(|&turn| turn <= turns)
            .collect();
        let fake = FakeModel::start().await;
        fake.reply_with(&replies(turns));
        let served = self.start_skein(&on_fake_model(&fake)).await?;
        let api = Api::new(served.address);
        let a = api.agent(llm_agent("alice")).await?;
        let b = api.agent(llm_agent("bob")).await?;
        let started = Instant::now();
        let collaboration = api.collaboration(&a, &b, turns as u32).await?;
        let id = api::id(&collaboration)?;
        loop {
            let now = api.get(&format!("/collaborations/{id}")).await?;
            if now["status"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let skein_seconds = started.elapsed().as_secs_f64();
        served.stop().await;
        let skein_tokens = prompt_tokens(&fake, &checkpoints);
        let mut figures = json!({"turns": turns, "skein": {
            "prompt_tokens_at_turn": skein_tokens.clone(), "ms_per_turn": ms(skein_seconds / turns as f64 * 1e9)}});

        let mut autogen_ms = None;
        let mut autogen_tokens = None;
        if let Some(python) = self.peers.as_ref().and_then(|p| p.python.as_ref()) {
            let fake = FakeModel::start().await;
            fake.reply_with(&replies(turns));
            let script = self.peers.as_ref().map(|p| p.dir.join("autogen/run.py"));
            let output = tokio::process::Command::new(python)
                .arg(script.unwrap_or_default())
                .args(["--base-url", &fake.base_url(), "--api-key", fake_model::KEY])
                .args([
                    "--model",
                    "fake-model",
                    "--messages",
                    &(turns + 1).to_string(),
                ])
                .output()
                .await?;
            let line = String::from_utf8_lossy(&output.stdout);
            match serde_json::from_str::<Value>(line.trim().lines().last().unwrap_or("")) {
                Ok(result) => {
                    let seconds = result["seconds"].as_f64().unwrap_or(0.0);
                    autogen_ms = Some(ms(seconds / turns as f64 * 1e9));
                    let tokens = prompt_tokens(&fake, &checkpoints);
                    figures["autogen"] = json!({"prompt_tokens_at_turn": tokens.clone(),
                                                "ms_per_turn": autogen_ms});
                    autogen_tokens = Some(tokens);
                }
                Err(_) => eprintln!(
                    "skein-bench: AutoGen failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
            }
        }
        self.report.scenario("context", figures);

        let first = checkpoints
            .iter()
            .find(|&&t| t >= 20)
            .copied()
            .unwrap_or(checkpoints[0]);
        let last = *checkpoints.last().unwrap_or(&first);
        let growth = |tokens: &Value| {
            let at = |turn: usize| tokens[turn.to_string()].as_f64().unwrap_or(0.0);
            at(last) / at(first).max(1.0) - 1.0
        };
        let skein_growth = growth(&skein_tokens);
        self.report.row(Row {
            figure: format!("prompt tokens, turn {last} vs turn {first}"),
            skein: format!("{:+.0}%", skein_growth * 100.0),
            peer: autogen_tokens.as_ref().map_or("-".into(), |t| {
                format!("{:+.0}% (AutoGen)", growth(t) * 100.0)
            }),
            ratio: "-".into(),
            target: "≤ +10%".into(),
            met: Some(skein_growth <= 0.10),
        });
        let skein_ms = ms(skein_seconds / turns as f64 * 1e9);
        self.report.row(Row {
            figure: "time per turn on an instant fake model".into(),
            skein: format!("{skein_ms:.2} ms"),
            peer: autogen_ms.map_or("-".into(), |m| format!("{m:.2} ms (AutoGen)")),
            ratio: ratio(skein_ms, autogen_ms),
            target: "≤ 0.1× AutoGen".into(),
            met: autogen_ms.map(|m| skein_ms <= 0.1 * m),
        });
        Ok(())
    }
}

impl Bench {
    /// A long channel, and viewers joining it at `after_seq=0`: how fast each catches up,
    /// alone and with many at once, and how much server memory the catching up takes.
    pub async fn catchup(&mut self) -> anyhow::Result<()> {
        // Two crowds: memory that does not grow with the crowd is shared, not per viewer.
        let (events, crowds) = if self.tiny {
            (2_000, [2, 5])
        } else {
            (100_000, [10, 100])
        };
        let served = self.start_skein(&[]).await?;
        let api = Api::new(served.address);
        let scripted = |name: &str| json!({"name": name, "kind": "scripted", "replies": ["one", "two", "three"], "delay_ms": 0});
        let a = api.agent(scripted("A")).await?;
        let b = api.agent(scripted("B")).await?;
        let collaboration = api.collaboration(&a, &b, events).await?;
        let id = api::id(&collaboration)?;
        let channel = collaboration["channel_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let filled = Instant::now();
        loop {
            let now = api.get(&format!("/collaborations/{id}")).await?;
            if !now["summary"].is_null() {
                break;
            }
            anyhow::ensure!(
                filled.elapsed() < Duration::from_secs(600),
                "the channel never filled"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let url = api.stream_url(&channel, 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = served.rss_bytes();
        let mut rates = Vec::new();
        for _ in 0..3 {
            let seconds = catch_up(&url).await?;
            rates.push(f64::from(events) / seconds);
        }
        let alone = median(&mut rates);
        let alone_peak = served.rss_bytes().saturating_sub(baseline);
        let mut figures = json!({
            "events": events,
            "alone_events_per_second": alone.round(),
            "alone_server_rss_growth_kib": kib(alone_peak as f64),
        });
        let mut peaks = Vec::new();
        for crowd in crowds {
            let (peak, rate, delivered) = catch_up_together(&served, &url, events, crowd).await?;
            let peak = peak.saturating_sub(baseline);
            figures[format!("{crowd}_at_once")] = json!({
                "each_events_per_second_median": rate.round(),
                "events_delivered_per_second": delivered.round(),
                "server_rss_peak_growth_kib": kib(peak as f64),
            });
            peaks.push((crowd, peak));
        }
        served.stop().await;
        self.report.scenario("catchup", figures);
        self.report.row(Row::alone(
            format!("catch-up of a {events}-event channel, one viewer"),
            format!("{alone:.0} events/s"),
            Some(("≥ 200,000".into(), alone >= 200_000.0)),
        ));
        let [(few, few_peak), (many, many_peak)] = peaks[..] else {
            anyhow::bail!("two crowds");
        };
        // Memory that grows with the crowd is per viewer; what does not is shared.
        let each = many_peak.saturating_sub(few_peak) as f64 / (many - few) as f64;
        self.report.row(Row::alone(
            format!("server memory while {few} / {many} viewers catch up at once"),
            format!(
                "{:.0} / {:.0} KiB ({:.1} KiB per added viewer)",
                kib(few_peak as f64),
                kib(many_peak as f64),
                kib(each)
            ),
            None,
        ));
        Ok(())
    }
}

/// `crowd` viewers catch up at once: the server's peak RSS meanwhile, each viewer's rate
/// (median) and the events delivered per second in all.
async fn catch_up_together(
    served: &proc::Served,
    url: &str,
    events: u32,
    crowd: usize,
) -> anyhow::Result<(u64, f64, f64)> {
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = {
        let (peak, pid) = (peak.clone(), served.pid);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(proc::rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut each: Vec<f64> = stream::iter(0..crowd)
        .map(|_| catch_up(url))
        .buffer_unordered(crowd)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|seconds| seconds.map(|s| f64::from(events) / s))
        .collect::<anyhow::Result<_>>()?;
    let together = started.elapsed().as_secs_f64();
    sampling.abort();
    let delivered = f64::from(events) * crowd as f64 / together;
    Ok((
        peak.load(std::sync::atomic::Ordering::Relaxed),
        median(&mut each),
        delivered,
    ))
}

/// Reads a channel's stream from `after_seq=0` to the `seq` its hello says is the last, and
/// returns how long that took, from the connection on.
async fn catch_up(url: &str) -> anyhow::Result<f64> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {ADMIN_KEY}").parse()?);
    let started = Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let mut last = None;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        // The seq is read without parsing the frame: the reader's cost stays small beside
        // the server's.
        let seq = |field: &str| -> Option<i64> {
            let at = text.find(field)? + field.len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        match last {
            None => last = seq("\"last_seq\":"),
            Some(last) if seq("\"seq\":").is_some_and(|seq| seq >= last) => break,
            Some(_) => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = socket.close(None).await;
    anyhow::ensure!(last.is_some(), "no hello");
    Ok(seconds)
}

/// A fresh schema of the benchmark's own in the PostgreSQL database at `url`, made with
/// `psql`, as a URL that puts connections in it.
fn pg_schema(url: &str, scenario: &str) -> Option<String> {
    let schema = format!("skein_bench_{scenario}_{}", std::process::id());
    let made = psql(
        url,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    );
    made.then(|| {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    })
}

/// Drops the schema [`pg_schema`] made for `scenario`.
fn drop_pg_schema(url: &str, scenario: &str) {
    let schema = format!("skein_bench_{scenario}_{}", std::process::id());
    if !psql(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")) {
        eprintln!("skein-bench: could not drop the schema {schema}");
    }
}

fn psql(url: &str, command: &str) -> bool {
    StdCommand::new("psql")
        .env("PGOPTIONS", "--client-min-messages=warning")
        .args([url, "-qc", command])
        .status()
        .is_ok_and(|status| status.success())
}

fn name(target: Target) -> &'static str {
    match target {
        Target::Skein => "skein",
        Target::Node => "node",
        Target::Floor => "floor",
    }
}

/// Sends `count` messages at `rate` per second, each on its own task so that a slow answer
/// does not lower the offered rate. Returns how many were sent.
async fn send_at_rate(publisher: Publisher, rate: u32, count: u32) -> anyhow::Result<u32> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    match publisher {
        Publisher::Skein { api, channel } => {
            let channel = Arc::new(channel);
            let mut sends = tokio::task::JoinSet::new();
            for k in 0..count {
                tick.tick().await;
                let (api, channel) = (api.clone(), channel.clone());
                sends.spawn(async move {
                    let text = fleet::message(k, MESSAGE_BYTES);
                    api.say(&channel.id, &channel.poster, &text).await
                });
            }
            for sent in sends.join_all().await {
                sent?;
            }
        }
        Publisher::Relay { mut socket } => {
            for k in 0..count {
                tick.tick().await;
                let text = fleet::message(k, MESSAGE_BYTES);
                socket.send(Message::Text(text.into())).await?;
            }
        }
    }
    Ok(count)
}

/// Runs `count` requests `concurrency` at a time; requests per second and latency.
async fn measure<F, Fut>(count: usize, concurrency: usize, request: F) -> anyhow::Result<Value>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut latencies: Vec<f64> = stream::iter(0..count)
        .map(|i| {
            let call = request(i);
            async move {
                let at = Instant::now();
                call.await.map(|()| at.elapsed().as_nanos() as f64)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "requests": count,
        "per_second": (count as f64 / elapsed).round(),
        "p50_ms": ms(percentile_f(&mut latencies, 50.0)),
        "p99_ms": ms(percentile_f(&mut latencies, 99.0)),
    }))
}

/// A server's settings for the fake model as its default provider.
fn on_fake_model(fake: &FakeModel) -> [(&'static str, String); 4] {
    [
        ("SKEIN_LLM_BASE_URL", fake.base_url()),
        ("SKEIN_LLM_API_KEY", fake_model::KEY.to_owned()),
        ("SKEIN_LLM_MODEL", "fake-model".to_owned()),
        // The fake model says much the same every turn: a stall, which would end the
        // conversation long before the turns measured.
        ("SKEIN_STALL_END_AFTER", "0".to_owned()),
    ]
}

/// An llm agent on the fake model.
fn llm_agent(name: &str) -> Value {
    json!({"name": name, "kind": "llm", "provider": "default", "model": "fake-model",
           "system_prompt": "Keep it short."})
}

/// What the fake model answers each turn: a few sentences, as a model would (its default
/// "turn N" is so short that the synopsis would take hundreds of turns to fill).
fn replies(turns: usize) -> Vec<&'static str> {
    const REPLY: &str = "I have looked at where we are. The strongest option so far is the \
        second one: it is short, easy to say, and nobody else in town uses it. I would keep \
        the colours we agreed on and ask the others for one more idea before we settle, so \
        that we do not stop at the first good name.";
    vec![REPLY; turns]
}

/// Prompt tokens of the agents' turns the fake model saw, at the given turns (1-based),
/// counted the way the fake model counts them (characters of the messages ÷ 4).
fn prompt_tokens(fake: &FakeModel, turns: &[usize]) -> Value {
    let requests = fake.requests(Purpose::Turn);
    turns
        .iter()
        .filter_map(|&turn| {
            let request = requests.get(turn - 1)?;
            let chars: usize = request.body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum();
            Some((turn.to_string(), json!(chars / 4 + 1)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl Bench {
    /// An account with a long history: pages at the top and the bottom of its list, a page
    /// deep in a list filtered by status, and lists by agent, 16 requests at a time.
    pub async fn big_account(&mut self) -> anyhow::Result<()> {
        let (collaborations, agents, requests) = if self.tiny {
            (2_000, 200, 200)
        } else {
            (100_000, 10_000, 4_000)
        };
        let concurrency = 16;
        let size = 20;
        let served = self.start_skein(&[]).await?;
        let api = Api::new(served.address);
        let filled = Instant::now();
        let ids: Vec<String> = stream::iter(0..agents)
            .map(|i| {
                api.agent(json!({"name": format!("agent {i}"), "kind": "scripted",
                                 "replies": ["Done."], "delay_ms": 0}))
            })
            .buffered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        // Three agents each, every agent in as many; each ends after one turn.
        stream::iter(0..collaborations)
            .map(|i| {
                let roster = [0, 1, 2].map(|k| ids[(i + k) % agents].clone());
                let api = api.clone();
                async move {
                    api.post(
                        "/collaborations",
                        &json!({"principal": roster[0], "participants": [roster[1], roster[2]],
                                "message_cap": 1, "timeout_window": 60,
                                "evaluate_objective_completion": false,
                                "objective": "Answer once."}),
                    )
                    .await
                    .map(drop)
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()?;
        loop {
            let running = api.get("/collaborations?status=running&size=1").await?;
            if running["meta"]["total"].as_u64() == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let fill_seconds = filled.elapsed().as_secs_f64();
        let ended = api.get("/collaborations?size=1").await?;
        let status = ended["items"][0]["status"]
            .as_str()
            .unwrap_or("completed")
            .to_owned();
        let last_page = collaborations.div_ceil(size);
        let ids = Arc::new(ids);
        let lists: [(&str, PathOf); 5] = [
            (
                "first page",
                Box::new(move |_| format!("/collaborations?page=1&size={size}")),
            ),
            (
                "page in the middle",
                Box::new(move |_| format!("/collaborations?page={}&size={size}", last_page / 2)),
            ),
            (
                "last page",
                Box::new(move |_| format!("/collaborations?page={last_page}&size={size}")),
            ),
            (
                "last page by status",
                Box::new(move |_| {
                    format!("/collaborations?status={status}&page={last_page}&size={size}")
                }),
            ),
            ("by agent", {
                let ids = ids.clone();
                Box::new(move |i| {
                    format!("/collaborations?agent={}&size={size}", ids[i % ids.len()])
                })
            }),
        ];
        let mut figures = json!({
            "collaborations": collaborations, "agents": agents, "page_size": size,
            "concurrency": concurrency, "requests_each": requests,
            "fill_seconds": (fill_seconds * 10.0).round() / 10.0,
        });
        let mut p99s = Vec::new();
        for (name, path) in &lists {
            let cpu_before = served.cpu_seconds();
            let mut measured = measure(requests, concurrency, |i| {
                let (api, path) = (api.clone(), path(i));
                async move { api.fetch(&path).await.map(drop) }
            })
            .await?;
            measured["server_cpu_ms_per_request"] = json!(ms((served.cpu_seconds() - cpu_before)
                / requests as f64
                * 1e9));
            p99s.push((*name, measured["p99_ms"].as_f64().unwrap_or(0.0)));
            figures[name.replace(' ', "_")] = measured;
        }
        served.stop().await;
        self.report.scenario("big-account", figures);
        let first = p99s[0].1;
        for (name, p99) in &p99s {
            let deep = name.contains("last");
            self.report.row(Row {
                figure: format!(
                    "list, {name}, {collaborations} collaborations, p99 at {concurrency}"
                ),
                skein: format!("{p99:.2} ms"),
                peer: if deep {
                    format!("{first:.2} ms (first page)")
                } else {
                    "-".into()
                },
                ratio: if deep {
                    ratio(*p99, Some(first))
                } else {
                    "-".into()
                },
                target: if deep {
                    "≤ 1.5× the first page".into()
                } else {
                    "-".into()
                },
                met: deep.then_some(*p99 <= 1.5 * first),
            });
        }
        Ok(())
    }
}

impl Bench {
    /// Thousands of collaborations at once, each of three llm agents, against a fake model
    /// that takes 1–2 s to stream each answer: turns served against what the model offers,
    /// the engine's own time per turn, memory per running collaboration, CPU per turn.
    pub async fn model_bound(&mut self) -> anyhow::Result<()> {
        let (collaborations, (from, to), window) = if self.tiny {
            (
                50,
                (Duration::from_millis(50), Duration::from_millis(100)),
                3.0,
            )
        } else {
            (
                self.collaborations,
                (Duration::from_secs(1), Duration::from_secs(2)),
                30.0,
            )
        };
        let fake = FakeModel::start().await;
        fake.answer_after(from, to);
        fake.forget_requests();
        let served = self.start_skein(&on_fake_model(&fake)).await?;
        let api = Api::new(served.address);
        let roster = [
            api.agent(llm_agent("alice")).await?,
            api.agent(llm_agent("bob")).await?,
            api.agent(llm_agent("carol")).await?,
        ];
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baseline = served.rss_bytes();
        let started = Instant::now();
        let body = json!({"principal": roster[0], "participants": [roster[1], roster[2]],
                          "message_cap": 100_000, "timeout_window": 86_400,
                          "evaluate_objective_completion": false,
                          "objective": "Plan the week's menu together."});
        stream::iter(0..collaborations)
            .map(|_| api.post("/collaborations", &body))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        let create_seconds = started.elapsed().as_secs_f64();
        // Every collaboration past its first turns before the window opens.
        tokio::time::sleep(to * 3).await;
        let before = Sample::take(&api, &served).await?;
        tokio::time::sleep(Duration::from_secs_f64(window)).await;
        let after = Sample::take(&api, &served).await?;
        let rss = served.rss_bytes();
        served.stop().await;

        let turns = after.turns - before.turns;
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let served_rate = turns / seconds;
        // Each collaboration waits on one model call at a time (its turns, the manager's
        // choice of speaker, the synopsis): the share of the window it spent waiting is
        // what the model allowed, and the rest the engine took. All of it served, nothing
        // falling behind, is a share near 1.
        let calls = after.model_calls.1 - before.model_calls.1;
        let model_seconds = after.model_calls.0 - before.model_calls.0;
        let waiting = model_seconds / (collaborations as f64 * seconds);
        let offered = served_rate / waiting.max(0.001);
        let overhead: Vec<(f64, f64)> = after
            .overhead
            .iter()
            .zip(&before.overhead)
            .map(|(&(le, now), &(_, then))| (le, now - then))
            .collect();
        let p50 = quantile(&overhead, 0.50) * 1000.0;
        let p99 = quantile(&overhead, 0.99) * 1000.0;
        let per_collaboration = rss.saturating_sub(baseline) as f64 / collaborations as f64;
        let model_ms = model_seconds / calls.max(1.0) * 1000.0;
        let cpu_per_turn = (after.cpu - before.cpu) / turns.max(1.0);
        self.report.scenario(
            "model-bound",
            json!({
                "collaborations": collaborations, "agents_each": 3,
                "model_latency_ms": [from.as_millis(), to.as_millis()],
                "create_seconds": (create_seconds * 100.0).round() / 100.0,
                "window_seconds": (seconds * 10.0).round() / 10.0,
                "turns_per_second": served_rate.round(),
                "offered_turns_per_second": offered.round(),
                "share_of_time_waiting_on_the_model": (waiting * 1000.0).round() / 1000.0,
                "model_calls_per_turn": ((calls / turns.max(1.0)) * 100.0).round() / 100.0,
                "model_call_ms_mean_seen_by_server": model_ms.round(),
                "engine_overhead_ms_p50": (p50 * 100.0).round() / 100.0,
                "engine_overhead_ms_p99": (p99 * 100.0).round() / 100.0,
                "server_kib_per_running_collaboration": kib(per_collaboration),
                "server_cpu_ms_per_turn": ms(cpu_per_turn * 1e9),
                "server_cpu_share": ((after.cpu - before.cpu) / seconds * 100.0).round() / 100.0,
            }),
        );
        self.report.row(Row::alone(
            format!(
                "model-bound: turns/s, {collaborations} collaborations on a {}–{} ms model",
                from.as_millis(),
                to.as_millis()
            ),
            format!(
                "{served_rate:.0} of {offered:.0} offered (waiting on the model {:.0}% of the time)",
                waiting * 100.0
            ),
            Some(("all of it (≥ 95%)".into(), waiting >= 0.95)),
        ));
        self.report.row(Row::alone(
            "model-bound: engine's own time per turn (reply → stored, published), p99".into(),
            format!("{p99:.1} ms (p50 {p50:.1} ms)"),
            Some(("≤ 50 ms".into(), p99 <= 50.0)),
        ));
        self.report.row(Row::alone(
            "model-bound: server memory per running collaboration".into(),
            format!("{:.1} KiB", kib(per_collaboration)),
            Some(("≤ 100 KiB".into(), kib(per_collaboration) <= 100.0)),
        ));
        self.report.row(Row::alone(
            "model-bound: server CPU per turn".into(),
            format!("{:.3} ms", ms(cpu_per_turn * 1e9)),
            None,
        ));
        Ok(())
    }
}

/// The path of a scenario's `i`th request.
type PathOf = Box<dyn Fn(usize) -> String>;

/// What the server's metrics and `/proc` say at one moment of a measuring window.
struct Sample {
    at: Instant,
    turns: f64,
    cpu: f64,
    /// `skein_turn_overhead_seconds`: (upper bound, observations at or under it).
    overhead: Vec<(f64, f64)>,
    /// `skein_model_call_seconds`, all models: seconds in all, and calls.
    model_calls: (f64, f64),
}

impl Sample {
    async fn take(api: &Api, served: &Served) -> anyhow::Result<Self> {
        let text = api.metrics().await?;
        let (at, cpu) = (Instant::now(), served.cpu_seconds());
        let value = |line: &str| -> f64 {
            line.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0)
        };
        let turns = text
            .lines()
            .filter(|line| line.starts_with("skein_turns_total"))
            .map(value)
            .sum();
        let summed = |prefix: &str| -> f64 {
            text.lines()
                .filter(|line| line.starts_with(prefix))
                .map(value)
                .sum()
        };
        let model_calls = (
            summed("skein_model_call_seconds_sum"),
            summed("skein_model_call_seconds_count"),
        );
        let overhead = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("skein_turn_overhead_seconds_bucket{le=\"")?;
                let (le, _) = rest.split_once('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, value(line)))
            })
            .collect();
        Ok(Self {
            at,
            turns,
            cpu,
            overhead,
            model_calls,
        })
    }
}

/// The `q` quantile of a Prometheus histogram's cumulative buckets, interpolated within
/// the bucket it falls in, as Prometheus's `histogram_quantile` does.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank && count > below {
            if le.is_infinite() {
                return lower;
            }
            return lower + (le - lower) * (rank - below) / (count - below);
        }
        (lower, below) = (le, count);
    }
    lower
}

impl Bench {
    /// Three processes on one PostgreSQL database and one NATS server, people's channels
    /// spread over them, viewers spread at random: what each process receives over NATS
    /// against the channels watched there, and how long a message takes to reach a viewer
    /// on another process than the one running its channel.
    pub async fn cluster(&mut self) -> anyhow::Result<()> {
        let (Some(database), Some(nats)) = (self.database_url.clone(), self.nats_url.clone())
        else {
            eprintln!("skein-bench: cluster needs --database-url and --nats-url; skipped");
            return Ok(());
        };
        let Some(in_schema) = pg_schema(&database, "cluster") else {
            eprintln!("skein-bench: could not make a schema with psql; cluster skipped");
            return Ok(());
        };
        let (channels, viewers, rate, seconds) = if self.tiny {
            (12, 24, 20, 2.0)
        } else {
            (300, 600, 300, 10.0)
        };
        const PROCESSES: usize = 3;
        let env = [("DATABASE_URL", in_schema), ("SKEIN_NATS_URL", nats)];
        let mut processes = Vec::new();
        for _ in 0..PROCESSES {
            processes.push(self.start_skein(&env).await?);
        }
        let apis: Vec<Api> = processes.iter().map(|p| Api::new(p.address)).collect();
        let poster = apis[0].human("poster").await?;
        let other = apis[0].human("other").await?;
        // A person's channel runs on the process that created it, and waits for people.
        let mut ids = Vec::new();
        for c in 0..channels {
            let created = apis[c % PROCESSES]
                .collaboration(&poster, &other, 1_000_000)
                .await?;
            ids.push(
                created["channel_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        // Viewers at random (a fixed sequence, so runs compare): which process, which channel.
        let mut picks = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            picks ^= picks << 13;
            picks ^= picks >> 7;
            picks ^= picks << 17;
            (picks % n as u64) as usize
        };
        let mut placed: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
        for _ in 0..viewers {
            // Six in ten viewers on the first process, three on the second, one on the
            // third: what each receives should follow.
            let process = match next(10) {
                0..=5 => 0,
                6..=8 => 1,
                _ => 2,
            };
            *placed.entry((process, next(channels))).or_default() += 1;
        }
        let mut fleets = Vec::new();
        for (&(process, channel), &count) in &placed {
            let url = apis[process].stream_url(&ids[channel], 0);
            let fleet = Fleet::connect(&url, Some(ADMIN_KEY), count).await?;
            // Across processes when the channel runs elsewhere.
            fleets.push((process != channel % PROCESSES, channel, fleet));
        }
        let watched: Vec<usize> = (0..PROCESSES)
            .map(|p| placed.keys().filter(|(process, _)| *process == p).count())
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let received_before = frames_received(&apis).await?;

        // Messages at `rate` over all channels in turn, each posted through any process.
        let count = (f64::from(rate) * seconds) as u32;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        let mut sends = tokio::task::JoinSet::new();
        let mut per_channel = vec![0u32; channels];
        for k in 0..count {
            tick.tick().await;
            let channel = k as usize % channels;
            per_channel[channel] += 1;
            let (api, id, poster) = (
                apis[k as usize % PROCESSES].clone(),
                ids[channel].clone(),
                poster.clone(),
            );
            sends.spawn(async move {
                let text = fleet::message(k, MESSAGE_BYTES);
                api.say(&id, &poster, &text).await
            });
        }
        for sent in sends.join_all().await {
            sent?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let received_after = frames_received(&apis).await?;
        let mut across = Vec::new();
        let mut same = Vec::new();
        let (mut delivered, mut expected) = (0usize, 0usize);
        for (crossing, channel, fleet) in fleets {
            let viewers = fleet.len();
            let arrivals = fleet.finish().await;
            expected += viewers * per_channel[channel] as usize;
            delivered += arrivals.iter().map(Vec::len).sum::<usize>();
            let latencies = arrivals.iter().flatten().map(|&(_, ns)| ns as f64);
            if crossing {
                across.extend(latencies);
            } else {
                same.extend(latencies);
            }
        }
        for process in processes {
            process.stop().await;
        }
        drop_pg_schema(&database, "cluster");
        let received: Vec<f64> = received_after
            .iter()
            .zip(&received_before)
            .map(|(after, before)| after - before)
            .collect();
        let messages_each = f64::from(count) / channels as f64;
        let per_process: Vec<Value> = (0..PROCESSES)
            .map(|p| {
                json!({"channels_watched": watched[p], "frames_received": received[p],
                       "frames_per_watched_channel_per_message":
                           ((received[p] / (watched[p].max(1) as f64 * messages_each)) * 100.0).round() / 100.0})
            })
            .collect();
        let p99 = ms(percentile_f(&mut across, 99.0));
        let same_p99 = ms(percentile_f(&mut same, 99.0));
        // Were every process subscribed to every channel (`skein.channel.*`, as before), each
        // would receive the frames of every message, its own back included.
        let everything = f64::from(count);
        self.report.scenario(
            "cluster",
            json!({
                "processes": PROCESSES, "channels": channels, "viewers": viewers,
                "messages": count, "messages_per_second": rate,
                "per_process": per_process,
                "delivered_share": delivered as f64 / expected.max(1) as f64,
                "cross_process_p50_ms": ms(percentile_f(&mut across, 50.0)),
                "cross_process_p99_ms": p99,
                "same_process_p99_ms": same_p99,
            }),
        );
        // Received per channel watched and message sent to it: the same on every process
        // when what a process receives is in proportion to what is watched there.
        let per_watched: Vec<f64> = (0..PROCESSES)
            .filter(|&p| watched[p] > 0)
            .map(|p| received[p] / (watched[p] as f64 * messages_each))
            .collect();
        let spread = per_watched.iter().copied().fold(0.0, f64::max)
            / per_watched.iter().copied().fold(f64::INFINITY, f64::min);
        let shown: Vec<String> = (0..PROCESSES)
            .map(|p| format!("{:.0} for {} channels", received[p], watched[p]))
            .collect();
        self.report.row(Row::alone(
            format!("cluster: NATS frames received by each of {PROCESSES} processes ({channels} channels)"),
            format!(
                "{} ({:.0} each if all subscribed)",
                shown.join(", "),
                everything * per_watched.first().copied().unwrap_or(0.0)
            ),
            Some(("∝ channels watched (±20%)".into(), spread <= 1.2)),
        ));
        self.report.row(Row::alone(
            "cluster: delivery to a viewer on another process, p99".into(),
            format!("{p99:.2} ms (same process {same_p99:.2} ms)"),
            Some(("≤ 20 ms".into(), p99 <= 20.0)),
        ));
        self.report.row(Row::alone(
            "cluster: every message reached every viewer of its channel".into(),
            format!("{delivered} of {expected}"),
            Some(("all".into(), delivered == expected)),
        ));
        Ok(())
    }
}

/// `skein_cluster_frames_received_total` of each process.
async fn frames_received(apis: &[Api]) -> anyhow::Result<Vec<f64>> {
    let mut counts = Vec::new();
    for api in apis {
        let text = api.metrics().await?;
        counts.push(
            text.lines()
                .find_map(|line| line.strip_prefix("skein_cluster_frames_received_total "))
                .map_or(0.0, |n| n.trim().parse().unwrap_or(0.0)),
        );
    }
    Ok(counts)
}
