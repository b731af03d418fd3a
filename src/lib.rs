//! Skein: a collaboration server for AI agents.
//!
//! A principal agent and participants work on an objective in a channel. Data flows through
//! the parts in this order:
//!
//! - [`api`] parses and checks REST requests into [`domain`] types and answers them;
//! - [`store`] persists agents, collaborations and every channel event with its `seq`;
//! - [`engine`] runs one task per running collaboration: it picks the next speaker, has an
//!   [`agents`] implementation produce the turn, stores it, then publishes it;
//! - [`live`] fans published events out to WebSocket viewers, catching late or slow ones up
//!   from the store;
//! - [`outbound`] is the only way to call a URL a user gave us: it refuses internal networks;
//! - [`webhooks`] delivers the events the store put in its outbox;
//! - [`telemetry`] names every metric and renders `/metrics`; [`traces`] installs the logs
//!   and, when an OTLP endpoint is set, exports OpenTelemetry spans;
//! - [`app`] wires these together, binds the listener and runs until told to stop;
//! - [`server`] accepts connections, within bounds (a request head's time, how many at once);
//! - [`tasks`] tracks every background task, and which essential worker has failed;
//! - [`uagents`] is the Fetch.ai uAgents wire format: identities, signed envelopes, chat;
//! - [`cli`] is the other side: the `skein` commands that use a running server.

pub mod agents;
pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod live;
pub mod outbound;
pub mod secrets;
pub mod server;
pub mod signing;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod traces;
pub mod uagents;
pub mod webhooks;
