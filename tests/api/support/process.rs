//! The real `skein` binary as a child process: for crashes (SIGKILL) and for reading what
//! the server writes to its terminal.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

use super::{ADMIN_KEY, Api, PATIENCE, POSTGRES_LEASE, postgres_for};

pub struct Process {
    pub child: Child,
    pub api: Api,
    /// Every line the server wrote to stdout and stderr so far.
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `skein serve` on a free port with `RUST_LOG=warn`.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[("RUST_LOG", "warn")]).await
    }

    /// Starts `skein serve` with extra environment variables. `SKEIN_TEST_BINARY` names
    /// another build to start instead (an earlier one, to measure against).
    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let binary = std::env::var("SKEIN_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_skein").into());
        let mut command = Command::new(binary);
        if let Some(url) = postgres_for(data_dir).await {
            let lease = POSTGRES_LEASE.as_secs().to_string();
            command
                .env("DATABASE_URL", url)
                .env("SKEIN_LEASE_SECS", lease);
        }
        let mut child = command
            .arg("serve")
            .env("SKEIN_BIND", "127.0.0.1:0")
            .env("SKEIN_DATA_DIR", data_dir)
            .env("SKEIN_ADMIN_KEY", ADMIN_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the skein binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        // Keep draining both pipes so the server never blocks on a full one.
        collect(child.stderr.take().unwrap(), output.clone());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                output.lock().unwrap().push(line.clone());
                if let Some(address) = line.strip_prefix("Skein listening on http://") {
                    return address.parse().unwrap();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens in time");
        collect(lines.into_inner(), output.clone());
        Self {
            child,
            api: Api::new(address),
            output,
        }
    }

    /// The server's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("still running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc")
    }

    /// Everything the server wrote so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills the server with SIGKILL: no shutdown of any kind.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("the server is running");
        let _ = self.child.wait().await;
    }

    /// Stops the server with SIGTERM, waits for it, and returns everything it wrote.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the server stops in time")
            .unwrap();
        // Let the readers take the last lines off the pipes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.output.lock().unwrap().join("\n")
    }
}

fn collect(pipe: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
}
