//! Several real `skein serve` processes on one PostgreSQL database and one NATS server.
//!
//! They run when `SKEIN_TEST_DATABASE_URL` and `SKEIN_TEST_NATS_URL` are set (as `.ci/run`
//! sets them); otherwise the tests pass over themselves, saying so, unless
//! `SKEIN_CLUSTER_TESTS=required`. Each cluster gets a schema of its own, dropped at the end.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

use super::{
    process::Process,
    schema::{Schema, database_url},
    wait_for,
};

/// How long a lease lasts in these clusters: short, so that a test sees takeovers.
pub const LEASE_SECS: u64 = 3;

pub struct Cluster {
    pub processes: Vec<Option<Member>>,
    schema: Schema,
}

pub struct Member {
    pub process: Process,
    /// The id the process holds its leases under.
    pub owner: Uuid,
    _data_dir: TempDir,
}

impl Cluster {
    /// `count` processes, started one after another (the first creates the admin key's
    /// account). `None`, with a note, where PostgreSQL or NATS is not configured.
    pub async fn start(count: usize) -> Option<Self> {
        Self::start_with(count, &[]).await
    }

    /// The same, with more of the processes' environment (set after, so it wins).
    pub async fn start_with(count: usize, more: &[(&str, &str)]) -> Option<Self> {
        let urls = (database_url(), std::env::var("SKEIN_TEST_NATS_URL").ok());
        let (Some(base_url), Some(nats_url)) = urls else {
            assert!(
                std::env::var("SKEIN_CLUSTER_TESTS").as_deref() != Ok("required"),
                "SKEIN_CLUSTER_TESTS=required but SKEIN_TEST_DATABASE_URL or SKEIN_TEST_NATS_URL is not set"
            );
            eprintln!("no SKEIN_TEST_DATABASE_URL / SKEIN_TEST_NATS_URL: skipping");
            return None;
        };
        let schema = Schema::create(&base_url, "skein_cluster").await;
        let lease = LEASE_SECS.to_string();
        // One secret key for the whole cluster, as the README asks: what one process seals
        // (and the uAgent identities it derives) the others must open.
        let secret_key = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        };
        let mut processes = Vec::new();
        for _ in 0..count {
            let data_dir = tempfile::tempdir().unwrap();
            let mut env = vec![
                ("RUST_LOG", "warn"),
                ("DATABASE_URL", schema.url.as_str()),
                ("SKEIN_NATS_URL", nats_url.as_str()),
                ("SKEIN_LEASE_SECS", lease.as_str()),
                ("SKEIN_SECRET_KEY", secret_key.as_str()),
                ("SKEIN_RATE_LIMIT_PER_MINUTE", "1000000"),
                ("SKEIN_RATE_LIMIT_BURST", "100000"),
            ];
            env.extend_from_slice(more);
            let process = Process::start_with(data_dir.path(), &env).await;
            // Printed after the address, so maybe not read yet.
            let owner = wait_for(|| async {
                process
                    .output()
                    .lines()
                    .find_map(|line| line.strip_prefix("Instance: ")?.parse().ok())
            })
            .await;
            processes.push(Some(Member {
                process,
                owner,
                _data_dir: data_dir,
            }));
        }
        Some(Self { processes, schema })
    }

    pub fn member(&self, index: usize) -> &Member {
        self.processes[index].as_ref().expect("a live member")
    }

    /// Indices of the members still running.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.processes.len())
            .filter(|&i| self.processes[i].is_some())
            .collect()
    }

    /// A connection to the cluster's schema, to look at what it stored.
    pub async fn database(&self) -> PgConnection {
        PgConnection::connect(&self.schema.url).await.unwrap()
    }

    /// Stops the processes (killed when dropped) and drops the cluster's schema.
    pub async fn remove(mut self) {
        self.processes.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.schema.drop().await;
    }
}
