//! Open WebSocket streams per API key: the per-key cap, and closing a revoked key's streams.
//!
//! Each open stream holds a [`StreamPass`]; dropping it frees the slot. Revoking a key
//! cancels the token every one of its passes watches, and refuses new passes for it, so a
//! stream admitted just before the revocation cannot slip through either way: it either got
//! its pass before (and is cancelled) or asks after (and is refused).

use std::sync::Arc;

use dashmap::{DashMap, DashSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug)]
pub struct Streams {
    open: DashMap<Uuid, KeyStreams>,
    revoked: DashSet<Uuid>,
    max_per_key: usize,
}

#[derive(Debug)]
struct KeyStreams {
    count: usize,
    revoked: CancellationToken,
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key already has this many streams open.
    AtLimit(usize),
    Revoked,
}

/// One open stream's slot.
#[derive(Debug)]
pub struct StreamPass {
    streams: Arc<Streams>,
    key: Uuid,
    /// Cancelled when the key is revoked.
    pub revoked: CancellationToken,
}

impl Streams {
    pub fn new(max_per_key: usize) -> Self {
        Self {
            open: DashMap::new(),
            revoked: DashSet::new(),
            max_per_key,
        }
    }

    /// A slot for one more stream of `key`.
    pub fn admit(self: &Arc<Self>, key: Uuid) -> Result<StreamPass, Refusal> {
        if self.revoked.contains(&key) {
            return Err(Refusal::Revoked);
        }
        let mut entry = self.open.entry(key).or_insert_with(|| KeyStreams {
            count: 0,
            revoked: CancellationToken::new(),
        });
        if entry.count >= self.max_per_key {
            return Err(Refusal::AtLimit(self.max_per_key));
        }
        entry.count += 1;
        let revoked = entry.revoked.clone();
        drop(entry);
        // Revoked between the check above and taking the slot: the token may already have
        // been cancelled and removed, so look again.
        if self.revoked.contains(&key) {
            revoked.cancel();
        }
        Ok(StreamPass {
            streams: self.clone(),
            key,
            revoked,
        })
    }

    /// Closes the key's open streams and refuses new ones.
    pub fn revoke(&self, key: Uuid) {
        self.revoked.insert(key);
        if let Some(entry) = self.open.get(&key) {
            entry.revoked.cancel();
        }
    }

    /// Streams open for `key`.
    pub fn open_for(&self, key: Uuid) -> usize {
        self.open.get(&key).map_or(0, |entry| entry.count)
    }
}

impl Drop for StreamPass {
    fn drop(&mut self) {
        self.streams.open.remove_if_mut(&self.key, |_, entry| {
            entry.count -= 1;
            entry.count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_at_most_its_cap_and_freed_slots_come_back() {
        let streams = Arc::new(Streams::new(2));
        let key = Uuid::now_v7();
        let first = streams.admit(key).unwrap();
        let _second = streams.admit(key).unwrap();
        assert_eq!(streams.admit(key).unwrap_err(), Refusal::AtLimit(2));
        assert!(
            streams.admit(Uuid::now_v7()).is_ok(),
            "other keys are not affected"
        );
        drop(first);
        assert_eq!(streams.open_for(key), 1);
        assert!(streams.admit(key).is_ok());
    }

    #[test]
    fn revoking_a_key_cancels_its_streams_and_refuses_new_ones() {
        let streams = Arc::new(Streams::new(5));
        let key = Uuid::now_v7();
        let pass = streams.admit(key).unwrap();
        streams.revoke(key);
        assert!(pass.revoked.is_cancelled());
        assert_eq!(streams.admit(key).unwrap_err(), Refusal::Revoked);
    }
}
