//! `skein-bench`: starts a real `skein serve` (and, for comparison, its peers: a Node `ws`
//! broadcast server and AutoGen AgentChat), drives them over real sockets, and prints one
//! JSON object per scenario and then a table of figures, ratios and targets.
//!
//! ```text
//! cargo build --release && cargo run --release -p skein-bench -- all
//! cargo run -p skein-bench -- all --tiny --skein target/debug/skein   # seconds; what CI runs
//! ```
//!
//! The server runs on core 0 and the load generator on core 1 (`taskset`), and server costs
//! are read from `/proc/<pid>` as CPU seconds, so figures hold on a busy two-core machine.

// Tests and the bench start their own tasks, which live as long as they run: the rule that
// every task is tracked (clippy.toml) is the server's.
#![allow(clippy::disallowed_methods)]

mod api;
#[path = "../../tests/api/support/fake_model.rs"]
#[allow(dead_code)]
mod fake_model;
mod fleet;
mod floor;
mod proc;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Idle,
    Fanout,
    Burst,
    Turns,
    Rest,
    Context,
    Tracing,
    Catchup,
    BigAccount,
    ModelBound,
    Cluster,
}

#[derive(Parser)]
#[command(name = "skein-bench", about = "Measure Skein against its peers")]
struct Args {
    /// Scenarios to run, in order.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// Seconds-long sizes: to check the benchmark still runs, not to measure.
    #[arg(long)]
    tiny: bool,
    /// The `skein` binary under test.
    #[arg(long, default_value = "target/release/skein")]
    skein: PathBuf,
    /// Runs of each comparison with a peer; figures are medians.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the peers (Node `ws`, AutoGen).
    #[arg(long)]
    no_peers: bool,
    /// A PostgreSQL URL: the `rest` scenario then runs on PostgreSQL too (in a schema of its
    /// own, made with `psql`).
    #[arg(long, env = "SKEIN_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// How many collaborations `model-bound` runs at once.
    #[arg(long, default_value_t = 10_000)]
    collaborations: usize,
    /// A NATS URL: with `--database-url`, the `cluster` scenario runs three processes on
    /// them.
    #[arg(long, env = "SKEIN_BENCH_NATS_URL")]
    nats_url: Option<String>,
    /// Serve a floor instead of measuring (the scenarios start these themselves).
    #[arg(long, value_enum, hide = true)]
    floor: Option<Floor>,
    /// What the HTTP floor answers with.
    #[arg(long, hide = true)]
    floor_body: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Floor {
    Broadcast,
    Http,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fds = proc::raise_fd_limit();
    if let Some(floor) = args.floor {
        // Started pinned to the server's core by the scenario that measures it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return match floor {
            Floor::Broadcast => runtime.block_on(floor::broadcast()),
            Floor::Http => runtime.block_on(floor::http(
                args.floor_body.as_deref().unwrap_or(Path::new("-")),
            )),
        };
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The server on core 0, this process on the last one. Pinned before the runtime starts,
    // so that every thread of the load generator inherits the pin: one thread, on its own
    // core, never on the server's.
    let server_core = (cores > 1).then_some(0);
    if cores > 1 {
        proc::pin_self(cores - 1);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args, fds, cores, server_core))
}

async fn run(args: Args, fds: u64, cores: usize, server_core: Option<usize>) -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the repository")
        .to_path_buf();
    let peers = (!args.no_peers)
        .then(|| scenarios::Peers::install(&root))
        .flatten();
    let mut bench = scenarios::Bench {
        skein: args.skein.clone(),
        server_core,
        tiny: args.tiny,
        repeats: if args.tiny { 1 } else { args.repeats.max(1) },
        peers,
        database_url: args.database_url.clone(),
        nats_url: args.nats_url.clone(),
        collaborations: args.collaborations,
        report: report::Report::default(),
    };
    eprintln!(
        "skein-bench: {} on {cores} cores, open-file limit {fds}, server on core {}",
        args.skein.display(),
        server_core.map_or("any".into(), |c| c.to_string())
    );
    let all = args.scenarios.contains(&Scenario::All);
    let wanted = |scenario| all || args.scenarios.contains(&scenario);
    if wanted(Scenario::Idle) {
        bench.idle().await?;
    }
    if wanted(Scenario::Fanout) {
        bench.fanout().await?;
    }
    if wanted(Scenario::Burst) {
        bench.burst().await?;
    }
    if wanted(Scenario::Turns) {
        bench.turns().await?;
    }
    if wanted(Scenario::Rest) {
        bench.rest().await?;
    }
    if wanted(Scenario::Context) {
        bench.context().await?;
    }
    if wanted(Scenario::Tracing) {
        bench.tracing().await?;
    }
    if wanted(Scenario::Catchup) {
        bench.catchup().await?;
    }
    if wanted(Scenario::BigAccount) {
        bench.big_account().await?;
    }
    if wanted(Scenario::ModelBound) {
        bench.model_bound().await?;
    }
    if wanted(Scenario::Cluster) {
        bench.cluster().await?;
    }
    bench.report.print_table();
    Ok(())
}
