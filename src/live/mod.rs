//! Live delivery: the hub fans events out to viewers in this process, writing each frame
//! through the viewer's outlet; the session module runs one viewer's WebSocket; `upgrade`
//! opens it; `pages` shares catch-up pages between the viewers reading them; `streams`
//! counts open streams per API key; `close` names why a stream ends;
//! `feed` tells who follows an account (`GET /events`) that its collaborations changed.
//! What the frames say is [`crate::domain::Frame`].
//!
//! The hub is a convenience, not the source of truth: a viewer that misses frames (it lagged,
//! or connected late) is caught up from the store by `seq`, never skipped.

mod close;
mod feed;
mod hub;
mod outlet;
mod pages;
pub mod session;
pub mod streams;
pub mod upgrade;

pub use close::Close;
pub use feed::{FEED_EXPORT_QUEUE, Feed, Following, Nudge};
pub use hub::{EXPORT_QUEUE, Hub, Publication, Watch};
pub use streams::{Refusal, StreamPass, Streams};

/// Locks a mutex of this module. Nothing panics while holding one, so a poisoned lock's
/// data is still whole.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
