//! A map of channel id to a broadcast sender, after mini-redis's pub/sub.
//!
//! With several processes, what one hub publishes is also exported (as [`Wire`]) and
//! applied to the hubs of the others, so a viewer on any process sees every frame.
//!
//! Frames are serialized once by the publisher and shared as reference-counted bytes with
//! every subscriber. The map's guard is never held across an `.await`: every method here is
//! synchronous.

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::domain::StoredEvent;

#[derive(Debug, Clone)]
pub enum Frame {
    /// A stored event; `seq` lets the viewer spot gaps and duplicates.
    Event { seq: i64, text: Utf8Bytes },
    /// Ephemeral streamed text of a turn in progress. `after_seq` is the channel's last seq
    /// when the turn began: once a viewer has an event beyond it, the turn's message has
    /// been delivered and its late deltas are dropped instead of drawing a stale "typing".
    Delta { after_seq: i64, text: Utf8Bytes },
    /// The channel is gone (its collaboration was deleted).
    Closed,
}

/// What a hub's publishing methods did, as it crosses to the hubs of other processes
/// ([`Hub::export_to`], [`Hub::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    Event {
        seq: i64,
        text: Utf8Bytes,
    },
    Delta {
        after_seq: i64,
        text: Utf8Bytes,
    },
    Turn {
        after_seq: i64,
        turn_id: Uuid,
        text: Utf8Bytes,
    },
    EndTurn {
        turn_id: Uuid,
    },
    EndTurns,
    Closed,
}

#[derive(Debug)]
pub struct Hub {
    channels: DashMap<Uuid, broadcast::Sender<Frame>>,
    /// Each channel's turn in progress (who speaks now) and its `turn` frame, until the
    /// turn is over: a viewer who connects meanwhile (while a person is awaited, say) is
    /// told after its catch-up, not left guessing until the next turn.
    turns: DashMap<Uuid, (Uuid, Utf8Bytes)>,
    /// How many frames a slow viewer may fall behind before it is caught up from the store.
    capacity: usize,
    /// Where what this process publishes goes to reach other processes, when it does.
    exports: OnceLock<mpsc::UnboundedSender<(Uuid, Wire)>>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: DashMap::new(),
            turns: DashMap::new(),
            capacity: capacity.max(1),
            exports: OnceLock::new(),
        }
    }

    /// From now on, everything published here is also handed to the returned receiver, to
    /// be carried to other processes. Unbounded so that publishing never waits; a carrier
    /// that falls behind holds frames in memory rather than lose them.
    pub fn export_to(&self) -> mpsc::UnboundedReceiver<(Uuid, Wire)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.exports.set(tx);
        rx
    }

    pub fn subscribe(&self, channel_id: Uuid) -> broadcast::Receiver<Frame> {
        self.channels
            .entry(channel_id)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Drops the channel's sender once its last viewer has gone.
    pub fn release(&self, channel_id: Uuid) {
        self.channels
            .remove_if(&channel_id, |_, sender| sender.receiver_count() == 0);
    }

    pub fn publish_event(&self, channel_id: Uuid, event: &StoredEvent) {
        self.publish(
            channel_id,
            Wire::Event {
                seq: event.seq,
                text: event.frame.clone().into(),
            },
        );
    }

    pub fn publish_delta(&self, channel_id: Uuid, after_seq: i64, json: String) {
        self.publish(
            channel_id,
            Wire::Delta {
                after_seq,
                text: json.into(),
            },
        );
    }

    /// Announces whose turn it is: sent like a delta, and kept until [`Hub::end_turn`].
    pub fn publish_turn(&self, channel_id: Uuid, after_seq: i64, turn_id: Uuid, json: String) {
        let text = json.into();
        self.publish(
            channel_id,
            Wire::Turn {
                after_seq,
                turn_id,
                text,
            },
        );
    }

    /// The `turn` frame of the turn in progress, if there is one.
    pub fn current_turn(&self, channel_id: Uuid) -> Option<Utf8Bytes> {
        self.turns.get(&channel_id).map(|turn| turn.1.clone())
    }

    /// The turn is over (its message is stored, or it was dropped).
    pub fn end_turn(&self, channel_id: Uuid, turn_id: Uuid) {
        self.publish(channel_id, Wire::EndTurn { turn_id });
    }

    /// Nobody has the turn any more: the collaboration is over.
    pub fn end_turns(&self, channel_id: Uuid) {
        self.publish(channel_id, Wire::EndTurns);
    }

    /// Tells every viewer the channel is gone and forgets it.
    pub fn close(&self, channel_id: Uuid) {
        self.publish(channel_id, Wire::Closed);
    }

    /// Does here what another process's hub did: the frame reaches this process's viewers.
    pub fn apply(&self, channel_id: Uuid, wire: Wire) {
        match wire {
            Wire::Event { seq, text } => self.send(channel_id, || Frame::Event { seq, text }),
            Wire::Delta { after_seq, text } => {
                self.send(channel_id, || Frame::Delta { after_seq, text })
            }
            Wire::Turn {
                after_seq,
                turn_id,
                text,
            } => {
                self.turns.insert(channel_id, (turn_id, text.clone()));
                self.send(channel_id, || Frame::Delta { after_seq, text });
            }
            Wire::EndTurn { turn_id } => {
                self.turns
                    .remove_if(&channel_id, |_, turn| turn.0 == turn_id);
            }
            Wire::EndTurns => {
                self.turns.remove(&channel_id);
            }
            Wire::Closed => {
                self.turns.remove(&channel_id);
                if let Some((_, sender)) = self.channels.remove(&channel_id) {
                    let _ = sender.send(Frame::Closed);
                }
            }
        }
    }

    fn publish(&self, channel_id: Uuid, wire: Wire) {
        if let Some(exports) = self.exports.get() {
            let _ = exports.send((channel_id, wire.clone()));
        }
        self.apply(channel_id, wire);
    }

    fn send(&self, channel_id: Uuid, frame: impl FnOnce() -> Frame) {
        // Clone the sender out so no map guard is held while sending.
        let Some(sender) = self.channels.get(&channel_id).map(|s| s.clone()) else {
            return;
        };
        if sender.send(frame()).is_err() {
            self.release(channel_id);
        }
    }
}
