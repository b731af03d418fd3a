//! The store conformance suite: every test runs the same body against each backend, through
//! `Arc<dyn Store>` only, so the two cannot drift apart unnoticed.
//!
//! SQLite always runs, in a temporary directory. PostgreSQL runs when
//! `SKEIN_TEST_DATABASE_URL` names a database and a user that may create schemas in it, for
//! example `postgres://postgres@127.0.0.1:5432/test` (without a user, sqlx takes `PGUSER` or
//! the login name). Each test gets a fresh schema `skein_t_…`, dropped when the test passes
//! and left behind, named in the test's output, when it fails.
//!
//! ```text
//! cargo test --test store                                     # SQLite
//! SKEIN_TEST_DATABASE_URL=postgres://… cargo test --test store # SQLite, then PostgreSQL
//! ```

// Tests and the bench start their own tasks, which live as long as they run: the rule that
// every task is tracked (clippy.toml) is the server's.
#![allow(clippy::disallowed_methods)]
// A test binary exports nothing; `pub` here only shares helpers between its modules.
#![allow(unreachable_pub)]

mod support;

mod accounts;
mod agents;
mod channel;
mod collaborations;
mod feed;
mod idempotency;
mod leases;
mod postgres;
mod secrets;
mod teams;
mod tickets;
mod webhooks;
