//! The REST side of the CLI: one authenticated client, and errors that say what went wrong
//! in the server's own words (its problem+json).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Global;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The server said no: its status, the problem's short code, and its detail.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached, or its answer broke off.
    Unreachable(String),
    /// The command cannot run as given (no key, say).
    Usage(String),
}

impl CliError {
    pub(super) fn status(&self) -> u16 {
        match self {
            Self::Api { status, .. } => *status,
            Self::Unreachable(_) | Self::Usage(_) => 0,
        }
    }

    pub(super) fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            Self::Unreachable(_) => "unreachable",
            Self::Usage(_) => "usage",
        }
    }

    /// One sentence: the server's own (a 422's names every field).
    pub(super) fn message(&self) -> String {
        match self {
            Self::Api { message, .. } | Self::Unreachable(message) | Self::Usage(message) => {
                message.clone()
            }
        }
    }
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub(super) fn new(global: &Global) -> Result<Self, CliError> {
        let key = match &global.key {
            Some(key) => key.trim().to_owned(),
            None => {
                let file = global.data_dir.join("admin.key");
                std::fs::read_to_string(&file)
                    .map(|k| k.trim().to_owned())
                    .map_err(|_| {
                        CliError::Usage(format!(
                            "no API key: pass --key, set SKEIN_API_KEY, or run where the \
                             server keeps {}",
                            file.display()
                        ))
                    })?
            }
        };
        let base = global.url.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self { http, base, key })
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The WebSocket URL of an API path.
    pub(super) fn ws_url(&self, path: &str) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}/api/v1{path}")
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub(super) async fn patch(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub(super) async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.call(Method::DELETE, path, None).await.map(|_| ())
    }

    /// Writes the answer to stdout as it arrives (a document, not JSON to print), or
    /// returns the server's problem as an error.
    pub(super) async fn copy_to_stdout(&self, path: &str) -> Result<(), CliError> {
        use futures::StreamExt;
        use std::io::Write;
        let url = format!("{}/api/v1{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| {
                CliError::Unreachable(format!("cannot reach Skein at {}: {e}", self.base))
            })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(problem(status, &json, &text));
        }
        let mut chunks = response.bytes_stream();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|e| CliError::Unreachable(format!("the answer broke off: {e}")))?;
            out.write_all(&chunk)
                .map_err(|e| CliError::Usage(format!("cannot write the output: {e}")))?;
        }
        out.flush()
            .map_err(|e| CliError::Usage(format!("cannot write the output: {e}")))
    }

    /// `GET /events` (after `last_id`), once it answers 200: its body is the stream. No
    /// overall timeout, as the stream lasts; connecting still has one.
    pub(super) async fn open_events(
        &self,
        last_id: Option<i64>,
    ) -> Result<reqwest::Response, CliError> {
        let url = format!("{}/api/v1/events", self.base);
        let streaming = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot make an HTTP client: {e}")))?;
        let mut request = streaming.get(&url).bearer_auth(&self.key);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|e| {
            CliError::Unreachable(format!("cannot reach Skein at {}: {e}", self.base))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(problem(status, &json, &text))
    }

    /// The answer's JSON (`null` for a 204), or the server's problem as an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::Unreachable(format!("cannot reach Skein at {}: {e}", self.base))
        })?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response
            .text()
            .await
            .map_err(|e| CliError::Unreachable(format!("the answer broke off: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        Err(problem(status, &json, &text))
    }
}

/// The server's problem+json as an error.
fn problem(status: StatusCode, json: &Value, text: &str) -> CliError {
    let code = json["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .filter(|c| !c.is_empty())
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
    let message = json["detail"]
        .as_str()
        .or(json["title"].as_str())
        .map_or_else(|| format!("{status}: {}", text.trim()), str::to_owned);
    CliError::Api {
        status: status.as_u16(),
        code,
        message,
    }
}
