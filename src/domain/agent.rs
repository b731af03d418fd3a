//! Agents: identities that can speak in a channel.
//!
//! An agent is referred to by UUID or by address everywhere ([`AgentRef`]). Its kind-specific
//! settings live in [`AgentSpec`], which is stored as JSON so that new kinds need no migration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secrets::Secret;

use super::{AgentAddress, Sender};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Llm,
    Scripted,
    Http,
    A2a,
    Human,
    Uagent,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Scripted => "scripted",
            Self::Http => "http",
            Self::A2a => "a2a",
            Self::Human => "human",
            Self::Uagent => "uagent",
        }
    }
}

/// What makes an agent speak. Serialized with a `kind` tag, flat beside the common fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentSpec {
    /// A model on an OpenAI-compatible endpoint.
    Llm {
        /// Name of a configured provider (`default`, `openai`, `flock`, …).
        provider: String,
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temperature: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u32>,
        /// MCP servers whose tools the model may call during its turn.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<ToolServer>,
    },
    /// Fixed replies spoken in order, cycling: for demos and tests, no model needed.
    Scripted {
        replies: Vec<String>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// A program elsewhere: each turn is a signed POST to `endpoint` answered with
    /// `{"content": "…"}`.
    Http { endpoint: String },
    /// A remote agent speaking Google's Agent2Agent protocol, found through its card.
    A2a {
        card_url: String,
        /// The names of the headers its credentials are sent in (their values are sealed,
        /// in [`Agent::tool_credentials`], and never shown).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        credential_headers: Vec<String>,
    },
    /// A person, speaking through the API or the browser; the engine waits for them.
    Human,
    /// A Fetch.ai uAgent, known by its own `agent1q…` address and spoken to in the chat
    /// protocol; it answers to Skein's `/submit`, so the engine waits for it as for a person.
    Uagent {
        /// Its `/submit` URL; without one, the Almanac (`SKEIN_ALMANAC_URL`) is asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
}

/// An MCP server (streamable HTTP) an `llm` agent may call tools on. Its credentials are
/// kept apart, sealed ([`Agent::tool_credentials`]); only the names of the headers that
/// carry them are shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolServer {
    pub url: String,
    /// How tool events and the UI name the server: the URL's host unless given.
    pub name: String,
    /// The tools the agent may call; every tool the server offers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// The headers sent with stored credentials (their values are never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_headers: Vec<String>,
}

impl AgentSpec {
    pub fn kind(&self) -> AgentKind {
        match self {
            Self::Llm { .. } => AgentKind::Llm,
            Self::Scripted { .. } => AgentKind::Scripted,
            Self::Http { .. } => AgentKind::Http,
            Self::A2a { .. } => AgentKind::A2a,
            Self::Human => AgentKind::Human,
            Self::Uagent { .. } => AgentKind::Uagent,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: Uuid,
    pub account_id: Uuid,
    pub address: AgentAddress,
    pub name: String,
    pub description: Option<String>,
    pub spec: AgentSpec,
    /// The Standard Webhooks secret (`whsec_…`) an `http` agent's requests are signed with.
    /// A credential rather than a setting: shown once when the agent is created, never in a
    /// view after that.
    pub secret: Option<Secret>,
    /// An `llm` agent's tool credentials: a JSON list, one object of headers per server of
    /// its `tools`, in order ([`crate::agents::tools::Credentials`]). Sealed at rest.
    pub tool_credentials: Option<Secret>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Agent {
    /// Whether `reference` names this agent.
    pub fn is(&self, reference: &AgentRef) -> bool {
        match reference {
            AgentRef::Id(id) => self.id == *id,
            AgentRef::Address(address) => self.address == *address,
        }
    }

    /// How the agent is shown in a roster and beside each of its messages.
    pub fn sender(&self) -> Sender {
        Sender {
            id: self.id,
            address: self.address.to_string(),
            name: self.name.clone(),
            kind: self.spec.kind(),
        }
    }
}

/// How a request names an agent: by UUID or by `agent1q…` address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentRef {
    Id(Uuid),
    Address(AgentAddress),
}

impl AgentRef {
    /// Parses a reference; the error is a message fit for a 422 `errors` entry.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if let Ok(id) = Uuid::parse_str(input) {
            return Ok(Self::Id(id));
        }
        if AgentAddress::looks_like_address(input) {
            return AgentAddress::parse(input)
                .map(Self::Address)
                .map_err(|e| format!("`{input}` is not a valid agent address: {e}"));
        }
        Err(format!(
            "`{input}` is neither an agent UUID nor an agent address"
        ))
    }
}

impl std::fmt::Display for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Address(address) => write!(f, "{address}"),
        }
    }
}
