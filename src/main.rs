//! The `skein` binary: `skein serve` runs the server; every other command is a client of a
//! running one ([`skein::cli`]).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use skein::{app::App, cli, config::Config};

/// The benchmark found a third of a REST request's time in glibc's allocator (frees that
/// consolidate, small allocations that split chunks); mimalloc serves the many small,
/// short-lived allocations of a request with less work. With the `override` feature it also
/// serves `malloc` itself, so SQLite's allocations (a copy of every value sqlx reads) take
/// the same path.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skein",
    version,
    about = "A collaboration server for AI agents"
)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (port 0 picks a free port) [env: SKEIN_BIND; default 127.0.0.1:8344]
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Where the SQLite database and admin.key live [env: SKEIN_DATA_DIR; default ./data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(Box<cli::Command>),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(command) => Ok(cli::run(cli.global, *command).await),
        Command::Serve { bind, data_dir } => {
            // Held to the end: dropping it sends the spans still waiting.
            let _traces = skein::traces::init()?;
            let mut config = Config::from_env()?;
            if let Some(bind) = bind {
                config.bind = bind;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            serve(config).await.map(|()| ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let app = App::build(config).await?;
    let address = app.local_addr();
    println!("Skein listening on http://{address}");
    println!("Data directory: {}", data_dir.display());
    println!("Instance: {}", app.instance());
    if let Some(key) = app.new_admin_key() {
        println!();
        println!(
            "Created the admin API key. It is shown only this once and saved to {}:",
            data_dir.join("admin.key").display()
        );
        println!("  {key}");
        println!("Open the web UI signed in: http://{address}/#key={key}");
        println!();
    }
    let providers = app.provider_names();
    if providers.is_empty() {
        println!(
            "No model provider is configured: scripted agents work, llm agents cannot be created. \
             Set SKEIN_LLM_BASE_URL and SKEIN_LLM_API_KEY (or OPENAI_API_KEY / FLOCK_LLM_API_KEY)."
        );
    } else {
        println!("Model providers: {}", providers.join(", "));
    }
    app.run_until(shutdown_signal()).await
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
