//! The servers under test, as child processes pinned to their own core, and what `/proc`
//! says about them: CPU seconds (user + system) and resident memory.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const ADMIN_KEY: &str = "sk_bench_admin_key_0123456789abcdef";

/// A server under test.
pub struct Served {
    child: Child,
    pub address: SocketAddr,
    pub pid: u32,
    _data_dir: Option<TempDir>,
}

impl Served {
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid)
    }

    /// Bytes of the SQLite database and its write-ahead log, for a Skein on SQLite.
    pub fn database_bytes(&self) -> u64 {
        let Some(dir) = &self._data_dir else { return 0 };
        ["skein.db", "skein.db-wal"]
            .iter()
            .filter_map(|name| std::fs::metadata(dir.path().join(name)).ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// SIGTERM, and wait for it to go.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `skein serve` on a free port with a fresh data directory, limits lifted for load, and
/// `env` on top; pinned to `core` when given.
pub async fn skein(
    binary: &Path,
    core: Option<usize>,
    env: &[(&str, String)],
) -> anyhow::Result<Served> {
    let data_dir = tempfile::tempdir()?;
    let mut command = pinned(binary, core);
    command
        .arg("serve")
        .env("SKEIN_BIND", "127.0.0.1:0")
        .env("SKEIN_DATA_DIR", data_dir.path())
        .env("SKEIN_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .env("SKEIN_RATE_LIMIT_PER_MINUTE", "1000000000")
        .env("SKEIN_RATE_LIMIT_BURST", "100000000")
        .env("SKEIN_MAX_STREAMS_PER_KEY", "1000000")
        .env("SKEIN_MAX_RUNNING_PER_KEY", "1000000")
        .env("SKEIN_MAX_MESSAGE_CAP", "1000000")
        .env("SKEIN_ALLOW_PRIVATE_URLS", "true")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (child, address) = start(command, "Skein listening on http://").await?;
    Ok(Served {
        pid: child.id().context("the server has a pid")?,
        child,
        address,
        _data_dir: Some(data_dir),
    })
}

/// The Node `ws` broadcast peer (`bench/peers/node-ws/server.js`).
pub async fn node_ws(peers: &Path, core: Option<usize>) -> anyhow::Result<Served> {
    let mut command = pinned(Path::new("node"), core);
    command.arg(peers.join("node-ws/server.js")).arg("0");
    peer(command).await
}

/// A floor server (`skein-bench --floor <kind>`, see `floor.rs`) with `args` after.
pub async fn floor(kind: &str, core: Option<usize>, args: &[&str]) -> anyhow::Result<Served> {
    let this = std::env::current_exe().context("the benchmark's own path")?;
    let mut command = pinned(&this, core);
    command.args(["--floor", kind]).args(args);
    peer(command).await
}

/// A server that prints `listening <port>` once ready and keeps no data.
async fn peer(command: Command) -> anyhow::Result<Served> {
    let (child, address) = start(command, "listening ").await?;
    Ok(Served {
        pid: child.id().context("the server has a pid")?,
        child,
        address,
        _data_dir: None,
    })
}

fn pinned(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(core) if which("taskset") => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        _ => Command::new(program),
    }
}

/// Starts `command` and reads its stdout until a line starting with `ready`; what follows
/// is the address (or, for a bare port, a port on 127.0.0.1).
async fn start(mut command: Command, ready: &str) -> anyhow::Result<(Child, SocketAddr)> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().context("starting a server under test")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(ready) {
                let rest = rest.trim();
                return Ok(match rest.parse::<SocketAddr>() {
                    Ok(address) => address,
                    Err(_) => SocketAddr::from(([127, 0, 0, 1], rest.parse::<u16>()?)),
                });
            }
        }
        bail!("the server exited before it listened")
    })
    .await
    .context("the server did not listen within a minute")??;
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// User plus system CPU time of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

/// Resident memory of a process (user space: socket buffers live in the kernel).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Pins this process to `core`, so that the load generator and the server do not share one.
pub fn pin_self(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Raises this process's open-file limit to its hard limit: thousands of sockets.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur
    }
}
