//! Live delivery: the hub fans events out to viewers in this process; the session module
//! runs one viewer's WebSocket; `streams` counts open streams per API key.
//!
//! The hub is a convenience, not the source of truth: a viewer that misses frames (it lagged,
//! or connected late) is caught up from the store by `seq`, never skipped.

mod hub;
pub mod session;
pub mod streams;

pub use hub::{Frame, Hub, Wire};
pub use streams::{Refusal, StreamPass, Streams};
