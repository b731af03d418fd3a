//! Open WebSocket streams: the cap per account, and closing a revoked key's streams.
//!
//! Each open stream holds a [`StreamPass`]; dropping it frees the slot. The cap counts an
//! account's streams whichever of its keys opened them, so a new key brings no new streams.
//! Revoking a key cancels the token every one of that key's passes watches, and refuses new
//! passes for it, so a stream admitted just before the revocation cannot slip through either
//! way: it either got its pass before (and is cancelled) or asks after (and is refused).
//! The token is a child of the server's shutdown token, so a stream waits on one token
//! for both reasons to end (one waiter less in every open stream).

use std::sync::Arc;

use dashmap::{DashMap, DashSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug)]
pub struct Streams {
    /// Open streams per account.
    accounts: DashMap<Uuid, usize>,
    /// Per key: its open streams, and the token they close on when it is revoked.
    keys: DashMap<Uuid, KeyStreams>,
    revoked: DashSet<Uuid>,
    max_per_account: usize,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct KeyStreams {
    count: usize,
    ended: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account has this many open, its cap.
    AtLimit(usize),
    Revoked,
}

/// An open stream's place: under its account's cap, and watching its key's revocation.
#[derive(Debug)]
pub struct StreamPass {
    streams: Arc<Streams>,
    account: Uuid,
    key: Uuid,
    /// Cancelled when the key is revoked or the server shuts down.
    pub ended: CancellationToken,
}

impl Streams {
    /// Streams end, too, when `shutdown` is cancelled.
    pub fn new(max_per_account: usize, shutdown: CancellationToken) -> Self {
        Self {
            accounts: DashMap::new(),
            keys: DashMap::new(),
            revoked: DashSet::new(),
            max_per_account,
            shutdown,
        }
    }

    /// A pass for a stream `key` of `account` opens, unless the account is at its cap or
    /// the key is revoked.
    pub fn admit(self: &Arc<Self>, account: Uuid, key: Uuid) -> Result<StreamPass, Refusal> {
        if self.revoked.contains(&key) {
            return Err(Refusal::Revoked);
        }
        {
            // The account's entry is held while it is counted: two streams opening at once
            // cannot both take its last place.
            let mut open = self.accounts.entry(account).or_insert(0);
            if *open >= self.max_per_account {
                return Err(Refusal::AtLimit(self.max_per_account));
            }
            *open += 1;
        }
        let ended = {
            let mut entry = self.keys.entry(key).or_insert_with(|| KeyStreams {
                count: 0,
                ended: self.shutdown.child_token(),
            });
            entry.count += 1;
            entry.ended.clone()
        };
        if self.revoked.contains(&key) {
            ended.cancel();
        }
        Ok(StreamPass {
            streams: self.clone(),
            account,
            key,
            ended,
        })
    }

    pub fn revoke(&self, key: Uuid) {
        self.revoked.insert(key);
        if let Some(entry) = self.keys.get(&key) {
            entry.ended.cancel();
        }
    }

    /// How many streams the account has open.
    pub fn open_for(&self, account: Uuid) -> usize {
        self.accounts.get(&account).map_or(0, |open| *open)
    }
}

impl Drop for StreamPass {
    fn drop(&mut self) {
        let streams = &self.streams;
        streams.accounts.remove_if_mut(&self.account, |_, open| {
            *open -= 1;
            *open == 0
        });
        streams.keys.remove_if_mut(&self.key, |_, entry| {
            entry.count -= 1;
            entry.count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_gets_at_most_its_cap_whichever_key_asks_and_freed_places_come_back() {
        let streams = Arc::new(Streams::new(2, CancellationToken::new()));
        let (account, one, another) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let first = streams.admit(account, one).unwrap();
        let _second = streams.admit(account, another).unwrap();
        assert_eq!(
            streams.admit(account, Uuid::now_v7()).unwrap_err(),
            Refusal::AtLimit(2),
            "a new key brings no new streams"
        );
        assert!(
            streams.admit(Uuid::now_v7(), Uuid::now_v7()).is_ok(),
            "other accounts are not affected"
        );
        drop(first);
        assert_eq!(streams.open_for(account), 1);
        assert!(streams.admit(account, one).is_ok());
    }

    #[test]
    fn revoking_a_key_cancels_its_streams_only_and_refuses_new_ones() {
        let streams = Arc::new(Streams::new(5, CancellationToken::new()));
        let (account, key, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let pass = streams.admit(account, key).unwrap();
        let kept = streams.admit(account, other).unwrap();
        streams.revoke(key);
        assert!(pass.ended.is_cancelled());
        assert!(!kept.ended.is_cancelled());
        assert_eq!(streams.admit(account, key).unwrap_err(), Refusal::Revoked);
    }

    #[test]
    fn every_stream_ends_when_the_server_shuts_down_even_one_admitted_after() {
        let shutdown = CancellationToken::new();
        let streams = Arc::new(Streams::new(5, shutdown.clone()));
        let account = Uuid::now_v7();
        let open = streams.admit(account, Uuid::now_v7()).unwrap();
        shutdown.cancel();
        assert!(open.ended.is_cancelled());
        let late = streams.admit(account, Uuid::now_v7()).unwrap();
        assert!(late.ended.is_cancelled());
    }
}
