//! The API test suite: one binary, every test against the real server over real sockets.

// A test binary exports nothing; `pub` here only shares helpers between its modules.
#![allow(unreachable_pub)]

mod support;

mod access;
mod agents;
mod browser;
mod byo_agents;
mod cli;
mod cluster;
mod collaborations;
mod humans;
mod idempotency;
mod limits;
mod metrics;
mod models;
mod podcast;
mod recovery;
mod streaming;
mod validation;
mod web;
mod webhooks;
