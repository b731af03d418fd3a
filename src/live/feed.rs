//! Accounts' feeds, live: who in this process follows an account's collaborations
//! changing (`GET /events`), and the nudges that tell them to look.
//!
//! A nudge carries no change itself. [`Nudge::Changed`] says the account's stored feed has
//! moved on, and each follower reads what it has not seen from the store, in order and
//! exactly once whatever nudges were lost, doubled or merged on the way. Only
//! [`Nudge::Messages`], a running collaboration's message count, travels as data: it changes
//! with every message, so it is not stored as a change, and a lost one is made good by the
//! next (or by the collaboration's `ended` change, which carries its final count).
//!
//! With several processes, every nudge is also exported, and those of the others applied
//! here, as the hub does with frames.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// Nudges a follower may fall behind by before it is told it lagged (and then reads the
/// store, as after a [`Nudge::Changed`]).
const FOLLOWER_BUFFER: usize = 256;

/// How many nudges may wait to be carried to other processes; past it they are dropped
/// (followers there catch up at the next nudge, or at their own periodic look).
pub const FEED_EXPORT_QUEUE: usize = 4_096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Nudge {
    /// The account's feed has new changes: read them from the store.
    Changed,
    /// A collaboration's message count, as just stored.
    Messages {
        collaboration_id: Uuid,
        message_count: u32,
    },
}

#[derive(Debug, Default)]
pub struct Feed {
    followed: DashMap<Uuid, broadcast::Sender<Nudge>>,
    exports: OnceLock<mpsc::Sender<(Uuid, Nudge)>>,
}

/// A follower's place: nudges for its account until it is dropped.
pub struct Following {
    feed: Arc<Feed>,
    account: Uuid,
    nudges: Option<broadcast::Receiver<Nudge>>,
}

impl Feed {
    /// The account's stored feed has moved on.
    pub fn changed(&self, account: Uuid) {
        self.nudge(account, Nudge::Changed);
    }

    /// A collaboration of the account now has `message_count` messages.
    pub fn messages(&self, account: Uuid, collaboration_id: Uuid, message_count: u32) {
        self.nudge(
            account,
            Nudge::Messages {
                collaboration_id,
                message_count,
            },
        );
    }

    fn nudge(&self, account: Uuid, nudge: Nudge) {
        if let Some(exports) = self.exports.get() {
            // Never waits: see `FEED_EXPORT_QUEUE`.
            let _ = exports.try_send((account, nudge.clone()));
        }
        self.apply(account, nudge);
    }

    /// Hands a nudge to this process's followers of the account (one from another process,
    /// or from [`Self::changed`] and [`Self::messages`]).
    pub fn apply(&self, account: Uuid, nudge: Nudge) {
        if let Some(followers) = self.followed.get(&account) {
            let _ = followers.send(nudge);
        }
    }

    /// From now on, every nudge given here is also handed to the returned receiver, to be
    /// carried to other processes.
    pub fn export_to(&self, capacity: usize) -> mpsc::Receiver<(Uuid, Nudge)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let _ = self.exports.set(tx);
        rx
    }

    /// Nudges for `account`, from now until the returned follower is dropped.
    pub fn follow(self: &Arc<Self>, account: Uuid) -> Following {
        // Subscribed under the map's entry, so that the last follower leaving cannot
        // remove the sender this one is joining.
        let entry = self
            .followed
            .entry(account)
            .or_insert_with(|| broadcast::channel(FOLLOWER_BUFFER).0);
        let nudges = entry.subscribe();
        drop(entry);
        Following {
            feed: self.clone(),
            account,
            nudges: Some(nudges),
        }
    }

    /// How many accounts have followers here.
    pub fn followed(&self) -> usize {
        self.followed.len()
    }
}

impl Following {
    /// The next nudge; `Changed` also when nudges were missed (the follower lagged), since
    /// the store then has to be read anyway.
    pub async fn next(&mut self) -> Nudge {
        let nudges = self.nudges.as_mut().expect("held until dropped");
        match nudges.recv().await {
            Ok(nudge) => nudge,
            Err(broadcast::error::RecvError::Lagged(_)) => Nudge::Changed,
            // The sender lives in the map while this receiver does.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        drop(self.nudges.take());
        self.feed.followed.remove_if(&self.account, |_, followers| {
            followers.receiver_count() == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_hear_their_account_only_and_the_last_to_leave_frees_it() {
        let feed = Arc::new(Feed::default());
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut first = feed.follow(mine);
        let mut second = feed.follow(mine);
        feed.changed(other);
        feed.messages(mine, other, 3);
        let heard = Nudge::Messages {
            collaboration_id: other,
            message_count: 3,
        };
        assert_eq!(
            first.next().await,
            heard,
            "the other account's nudge is not heard"
        );
        assert_eq!(second.next().await, heard);
        drop(first);
        assert_eq!(feed.followed(), 1);
        drop(second);
        assert_eq!(
            feed.followed(),
            0,
            "nothing is kept for an account nobody follows"
        );
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_to_read_the_store() {
        let feed = Arc::new(Feed::default());
        let account = Uuid::now_v7();
        let mut following = feed.follow(account);
        for count in 0..=FOLLOWER_BUFFER as u32 {
            feed.messages(account, Uuid::nil(), count);
        }
        assert_eq!(following.next().await, Nudge::Changed);
    }

    #[tokio::test]
    async fn every_nudge_is_exported_too() {
        let feed = Arc::new(Feed::default());
        let mut exported = feed.export_to(8);
        let account = Uuid::now_v7();
        feed.changed(account);
        assert_eq!(exported.recv().await, Some((account, Nudge::Changed)));
    }
}
