//! The API test suite: one binary, every test against the real server over real sockets.

// A test binary exports nothing; `pub` here only shares helpers between its modules.
#![allow(unreachable_pub)]
// Tests start their own servers and peers, which live as long as the test: the rule that
// every task is tracked (clippy.toml) is the server's.
#![allow(clippy::disallowed_methods)]

mod support;

mod access;
mod agents;
mod browser;
mod byo_agents;
mod cli;
mod cluster;
mod collaborations;
mod costs;
mod events;
mod exposure;
mod faults;
mod forks;
mod humans;
mod idempotency;
mod limits;
mod metrics;
mod models;
mod podcast;
mod recovery;
mod stalls;
mod streaming;
mod teams;
mod tools;
mod tracing;
mod transcripts;
mod uagents;
mod validation;
mod web;
mod webhooks;
