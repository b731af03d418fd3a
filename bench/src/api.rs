//! Skein's REST API as the benchmark uses it: agents, collaborations, a person's message.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::proc::ADMIN_KEY;

#[derive(Clone)]
pub struct Api {
    base: String,
    pub address: SocketAddr,
    http: reqwest::Client,
}

impl Api {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            base: format!("http://{address}/api/v1"),
            address,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("an HTTP client"),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(body)
            .send()
            .await?;
        read(response).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        read(self.send_get(path).await?).await
    }

    /// A GET whose answer is checked and read to its end but not parsed, so that the load
    /// generator's cost per request stays small beside the server's: parsing a 20 KB page
    /// took the generator longer than the server took to make it.
    pub async fn fetch(&self, path: &str) -> anyhow::Result<usize> {
        let response = self.send_get(path).await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body.len())
    }

    async fn send_get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
    }

    /// The server's Prometheus metrics, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://{}/metrics", self.address);
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    pub async fn agent(&self, body: Value) -> anyhow::Result<String> {
        let agent = self.post("/agents", &body).await?;
        id(&agent)
    }

    pub async fn human(&self, name: &str) -> anyhow::Result<String> {
        self.agent(json!({"name": name, "kind": "human"})).await
    }

    pub async fn collaboration(
        &self,
        principal: &str,
        participant: &str,
        message_cap: u32,
    ) -> anyhow::Result<Value> {
        self.post(
            "/collaborations",
            &json!({"principal": principal, "participants": [participant],
                    "message_cap": message_cap, "timeout_window": 86_400,
                    "evaluate_objective_completion": false,
                    "objective": "Benchmark the server."}),
        )
        .await
    }

    /// A person speaks in the channel.
    pub async fn say(&self, channel_id: &str, sender: &str, content: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/channels/{channel_id}/messages"),
            &json!({"sender": sender, "content": content}),
        )
        .await
        .map(drop)
    }

    /// The stream URL of a channel, from after `after_seq`.
    pub fn stream_url(&self, channel_id: &str, after_seq: i64) -> String {
        format!(
            "ws://{}/api/v1/channels/{channel_id}/stream?after_seq={after_seq}",
            self.address
        )
    }
}

async fn read(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(body)
}

pub fn id(value: &Value) -> anyhow::Result<String> {
    value["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {value}"))
}
