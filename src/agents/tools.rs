//! Tools: the MCP servers an `llm` agent may call during its turn, reached over streamable
//! HTTP with the official Rust SDK (`rmcp`).
//!
//! A turn opens a [`Toolbox`]: one MCP session per server of the agent, each server's tools
//! listed and filtered by its allow-list, and each tool given a function name that is unique
//! across the agent's servers (what the model calls it). Every call is bounded in time and
//! its result in size; a tool that fails or times out is an error *result* the model reads,
//! while a server that cannot be reached at all fails the turn. The sessions close with the
//! turn.

use std::{collections::BTreeMap, collections::HashMap, sync::Arc, time::Duration};

use rmcp::{
    ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
        Implementation, JsonObject, ResourceContents,
    },
    service::{RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    config::ToolSettings,
    domain::{ToolRef, ToolServer},
    outbound::Outbound,
    secrets::Secret,
};

/// The largest message read from an MCP server (one JSON answer or one SSE event): more is
/// refused by the transport, not buffered.
const MAX_WIRE_BYTES: usize = 4 * 1024 * 1024;

/// Headers (credentials) sent to each of an agent's tool servers, in the order of its
/// `tools`; sealed at rest as one JSON list ([`crate::domain::Agent::tool_credentials`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Credentials(pub Vec<BTreeMap<String, String>>);

impl Credentials {
    pub fn open(secret: Option<&Secret>) -> Self {
        secret
            .and_then(|s| serde_json::from_str(s.expose()).ok())
            .unwrap_or_default()
    }

    /// Sealed form, or `None` when no server has any.
    pub fn seal(&self) -> Option<Secret> {
        self.0
            .iter()
            .any(|headers| !headers.is_empty())
            .then(|| Secret::new(serde_json::to_string(self).expect("headers serialize")))
    }

    fn for_server(&self, index: usize) -> BTreeMap<String, String> {
        self.0.get(index).cloned().unwrap_or_default()
    }
}

/// Why the tools could not be had: the turn (or the request) fails with it.
#[derive(Debug, thiserror::Error)]
#[error("the MCP server {server} ({url}) {why}")]
pub struct ToolError {
    pub server: String,
    pub url: String,
    pub why: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Offered {
    /// The name the model calls it by: the tool's own, unless another server of the agent
    /// has a tool of that name (then prefixed with its server's name).
    pub function: String,
    pub tool: ToolRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of its arguments, as the server gave it.
    #[schema(value_type = Object)]
    pub input_schema: Arc<JsonObject>,
    #[serde(skip)]
    server: usize,
}

/// What one call came to, as the model and the channel see it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub content: String,
    pub took: Duration,
}

/// Open MCP sessions with an agent's servers, and the tools they offer it.
pub struct Toolbox {
    sessions: Vec<RunningService<RoleClient, ClientConfig>>,
    offered: Vec<Offered>,
    settings: ToolSettings,
}

impl Toolbox {
    /// Opens a session with each server and lists its tools, asking again (`retries` times,
    /// with `backoff`) a server that cannot be reached.
    pub async fn open(
        servers: &[ToolServer],
        credentials: &Credentials,
        outbound: &Outbound,
        settings: &ToolSettings,
        retries: u32,
        backoff: impl Fn(u32) -> Duration,
    ) -> Result<Self, ToolError> {
        let mut sessions = Vec::with_capacity(servers.len());
        let mut listed = Vec::with_capacity(servers.len());
        for (index, server) in servers.iter().enumerate() {
            let headers = credentials.for_server(index);
            let mut attempt = 0;
            let (session, tools) = loop {
                match connect(server, &headers, outbound, settings).await {
                    Ok(opened) => break opened,
                    Err(Failure::Lasting(why)) => return Err(error(server, why)),
                    Err(Failure::Passing(why)) if attempt >= retries => {
                        return Err(error(server, why));
                    }
                    Err(Failure::Passing(why)) => {
                        tracing::warn!(server = %server.name, %why, attempt, "MCP server unreachable; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        super::retry::noted();
                        attempt += 1;
                    }
                }
            };
            sessions.push(session);
            listed.push(tools);
        }
        Ok(Self {
            sessions,
            offered: offer(servers, listed),
            settings: settings.clone(),
        })
    }

    pub fn offered(&self) -> &[Offered] {
        &self.offered
    }

    /// The tool the model calls `function`.
    pub fn find(&self, function: &str) -> Option<&Offered> {
        self.offered.iter().find(|o| o.function == function)
    }

    /// Calls `tool` with the arguments the model wrote (a JSON object), as call `call_id` of
    /// the model. Never fails: what went wrong is the result the model reads.
    pub async fn call(
        &self,
        tool: &Offered,
        arguments: &serde_json::Value,
        call_id: &str,
    ) -> Outcome {
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format!("execute_tool {}", tool.tool.name),
            otel.kind = "internal",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %tool.tool.name,
            gen_ai.tool.call.id = %call_id,
            gen_ai.tool.type = "function",
            gen_ai.conversation.id = tracing::field::Empty,
            skein.tool.server = %tool.tool.server,
            error.type = tracing::field::Empty,
        );
        if let Some(id) = crate::traces::conversation() {
            span.record("gen_ai.conversation.id", tracing::field::display(id));
        }
        let outcome =
            tracing::Instrument::instrument(self.call_in_span(tool, arguments), span.clone()).await;
        if !outcome.ok {
            span.record("error.type", "tool_error");
        }
        outcome
    }

    async fn call_in_span(&self, tool: &Offered, arguments: &serde_json::Value) -> Outcome {
        let started = Instant::now();
        let limit = self.settings.call_timeout;
        let (ok, content, label) = match arguments {
            serde_json::Value::Object(arguments) => {
                let mut params = CallToolRequestParams::new(tool.tool.name.clone());
                params.arguments = Some(arguments.clone());
                // The call's own trace context, where MCP carries it (`_meta`, SEP-414).
                let trace = crate::traces::headers();
                if !trace.is_empty() {
                    let mut meta = rmcp::model::RequestMetaObject::new();
                    for (name, value) in trace {
                        meta.0.0.insert(name, serde_json::Value::String(value));
                    }
                    params.meta = Some(meta);
                }
                let session = &self.sessions[tool.server];
                match tokio::time::timeout(limit, session.call_tool(params)).await {
                    Ok(Ok(result)) => {
                        let ok = !result.is_error.unwrap_or(false);
                        (ok, text_of(result), if ok { "ok" } else { "error" })
                    }
                    Ok(Err(e)) => (false, format!("the tool call failed: {e}"), "error"),
                    Err(_) => (
                        false,
                        format!(
                            "the tool did not answer within {} s (SKEIN_TOOL_TIMEOUT_SECS)",
                            limit.as_secs()
                        ),
                        "timeout",
                    ),
                }
            }
            _ => (
                false,
                "the arguments must be a JSON object matching the tool's input schema".into(),
                "error",
            ),
        };
        let took = started.elapsed();
        crate::telemetry::tool_call(&tool.tool.server, &tool.tool.name, label, took);
        Outcome {
            ok,
            content: cut(content, self.settings.max_result_chars),
            took,
        }
    }

    /// Ends the sessions (each server is told, as the protocol asks).
    pub async fn close(self) {
        for session in self.sessions {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.cancel()).await;
        }
    }
}

/// The tools each server of the agent offers it now, after its allow-list: for
/// `GET /agents/{id}/tools` and the check made when tools are set.
pub async fn list(
    servers: &[ToolServer],
    credentials: &Credentials,
    outbound: &Outbound,
    settings: &ToolSettings,
) -> Result<Vec<Offered>, ToolError> {
    let toolbox = Toolbox::open(servers, credentials, outbound, settings, 0, |_| {
        Duration::ZERO
    })
    .await?;
    let offered = toolbox.offered.clone();
    toolbox.close().await;
    Ok(offered)
}

/// Why a server could not be used: worth asking again, or not.
enum Failure {
    Passing(String),
    Lasting(String),
}

fn error(server: &ToolServer, why: String) -> ToolError {
    ToolError {
        server: server.name.clone(),
        url: server.url.clone(),
        why,
    }
}

async fn connect(
    server: &ToolServer,
    headers: &BTreeMap<String, String>,
    outbound: &Outbound,
    settings: &ToolSettings,
) -> Result<
    (
        RunningService<RoleClient, ClientConfig>,
        Vec<rmcp::model::Tool>,
    ),
    Failure,
> {
    let url = outbound
        .check(&server.url)
        .await
        .map_err(|e| Failure::Lasting(format!("is refused: {e}")))?;
    let client = outbound
        .session_client(&url)
        .map_err(|e| Failure::Lasting(format!("is refused: {e}")))?;
    let mut custom = HashMap::new();
    // The turn's trace context goes with every request of the session.
    for (name, value) in crate::traces::headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            custom.insert(name, value);
        }
    }
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Failure::Lasting(format!("has a bad header name `{name}`")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| Failure::Lasting(format!("has a bad value for header `{name}`")))?;
        custom.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str())
        .custom_headers(custom)
        .max_sse_event_size(MAX_WIRE_BYTES)
        .max_json_response_size(MAX_WIRE_BYTES);
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let me = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("skein", env!("CARGO_PKG_VERSION")),
    );
    let limit = settings.connect_timeout;
    let opening = async {
        let session = me
            .serve(transport)
            .await
            .map_err(|e| Failure::Passing(format!("could not be reached: {e}")))?;
        let tools = session
            .list_all_tools()
            .await
            .map_err(|e| Failure::Passing(format!("did not list its tools: {e}")))?;
        Ok((session, tools))
    };
    tokio::time::timeout(limit, opening)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Passing(format!(
                "did not answer within {} s (SKEIN_TOOL_CONNECT_SECS)",
                limit.as_secs()
            )))
        })
}

/// The tools offered to the model: each server's, after its allow-list, with function names
/// unique across servers and in the form OpenAI accepts (`[A-Za-z0-9_-]{1,64}`).
fn offer(servers: &[ToolServer], listed: Vec<Vec<rmcp::model::Tool>>) -> Vec<Offered> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let kept: Vec<(usize, rmcp::model::Tool)> = listed
        .into_iter()
        .enumerate()
        .flat_map(|(server, tools)| tools.into_iter().map(move |tool| (server, tool)))
        .filter(|(server, tool)| {
            servers[*server]
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|name| name == tool.name.as_ref()))
        })
        .collect();
    for (_, tool) in &kept {
        *counts.entry(function_name(&tool.name)).or_default() += 1;
    }
    let mut taken = std::collections::HashSet::new();
    kept.into_iter()
        .map(|(server, tool)| {
            let plain = function_name(&tool.name);
            let base = if counts[&plain] > 1 {
                function_name(&format!("{}_{}", servers[server].name, tool.name))
            } else {
                plain
            };
            let mut function = base.clone();
            let mut n = 2;
            while !taken.insert(function.clone()) {
                let suffix = format!("_{n}");
                function = format!("{}{suffix}", truncate(&base, 64 - suffix.len()));
                n += 1;
            }
            Offered {
                function,
                tool: ToolRef {
                    server: servers[server].name.clone(),
                    name: tool.name.to_string(),
                },
                description: tool.description.map(|d| d.to_string()),
                input_schema: tool.input_schema,
                server,
            }
        })
        .collect()
}

fn function_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = if cleaned.is_empty() {
        "tool".to_owned()
    } else {
        cleaned
    };
    truncate(&cleaned, 64).to_owned()
}

fn truncate(ascii: &str, max: usize) -> &str {
    &ascii[..ascii.len().min(max)]
}

/// A result as text for the model: text blocks as they are, structured content as JSON when
/// there is no text, other blocks described.
fn text_of(result: CallToolResult) -> String {
    let mut parts: Vec<String> = result
        .content
        .into_iter()
        .map(|block| match block {
            ContentBlock::Text(text) => text.text,
            ContentBlock::Image(image) => format!("[an image, {}]", image.mime_type),
            ContentBlock::Audio(audio) => format!("[audio, {}]", audio.mime_type),
            ContentBlock::Resource(embedded) => match embedded.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    format!("[resource {uri}]\n{text}")
                }
                ResourceContents::BlobResourceContents { uri, mime_type, .. } => format!(
                    "[resource {uri}, {}]",
                    mime_type.as_deref().unwrap_or("binary")
                ),
                _ => "[a resource of a kind Skein does not read]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link {}]", link.uri),
            _ => "[content of a kind Skein does not read]".to_owned(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = result.structured_content
    {
        parts.push(structured.to_string());
    }
    parts.join("\n")
}

/// At most `max` characters of a result, with a note to the model when more was cut.
fn cut(content: String, max: usize) -> String {
    let Some((at, _)) = content.char_indices().nth(max) else {
        return content;
    };
    let total = content.chars().count();
    let mut kept = content;
    kept.truncate(at);
    kept.push_str(&format!(
        "\n[Cut by Skein: the result was {total} characters; only the first {max} are shown.]"
    ));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, allow: Option<&[&str]>) -> ToolServer {
        ToolServer {
            url: format!("http://{name}.example/mcp"),
            name: name.into(),
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            credential_headers: Vec::new(),
        }
    }

    fn tool(name: &str) -> rmcp::model::Tool {
        rmcp::model::Tool::new(name.to_owned(), "d", Arc::new(JsonObject::new()))
    }

    #[test]
    fn names_stay_unique_across_servers_and_allow_lists_hide_tools() {
        let servers = [server("a", None), server("b", Some(&["search", "x y"]))];
        let offered = offer(
            &servers,
            vec![
                vec![tool("search"), tool("fetch")],
                vec![tool("search"), tool("x y"), tool("hidden")],
            ],
        );
        let names: Vec<_> = offered.iter().map(|o| o.function.as_str()).collect();
        assert_eq!(names, ["a_search", "fetch", "b_search", "x_y"]);
        assert_eq!(offered[2].tool.server, "b");
        assert_eq!(offered[2].tool.name, "search");
    }

    #[test]
    fn a_long_result_is_cut_with_a_note() {
        assert_eq!(cut("short".into(), 10), "short");
        let long = cut("é".repeat(50), 10);
        assert!(long.starts_with(&"é".repeat(10)));
        assert!(long.contains("was 50 characters"));
    }
}
