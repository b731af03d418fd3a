//! A map of channel id to a broadcast sender, after mini-redis's pub/sub.
//!
//! Frames are serialized once by the publisher and shared as reference-counted bytes with
//! every subscriber. The map's guard is never held across an `.await`: every method here is
//! synchronous.

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::broadcast;
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

#[derive(Debug)]
pub struct Hub {
    channels: DashMap<Uuid, broadcast::Sender<Frame>>,
    /// Each channel's turn in progress (who speaks now) and its `turn` frame, until the
    /// turn is over: a viewer who connects meanwhile (while a person is awaited, say) is
    /// told after its catch-up, not left guessing until the next turn.
    turns: DashMap<Uuid, (Uuid, Utf8Bytes)>,
    /// How many frames a slow viewer may fall behind before it is caught up from the store.
    capacity: usize,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: DashMap::new(),
            turns: DashMap::new(),
            capacity: capacity.max(1),
        }
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
        self.send(channel_id, || Frame::Event {
            seq: event.seq,
            text: event.frame.clone().into(),
        });
    }

    pub fn publish_delta(&self, channel_id: Uuid, after_seq: i64, json: String) {
        self.send(channel_id, || Frame::Delta {
            after_seq,
            text: json.into(),
        });
    }

    /// Announces whose turn it is: sent like a delta, and kept until [`Hub::end_turn`].
    pub fn publish_turn(&self, channel_id: Uuid, after_seq: i64, turn_id: Uuid, json: String) {
        let text = Utf8Bytes::from(json);
        self.turns.insert(channel_id, (turn_id, text.clone()));
        self.send(channel_id, || Frame::Delta { after_seq, text });
    }

    /// The `turn` frame of the turn in progress, if there is one.
    pub fn current_turn(&self, channel_id: Uuid) -> Option<Utf8Bytes> {
        self.turns.get(&channel_id).map(|turn| turn.1.clone())
    }

    /// The turn is over (its message is stored, or it was dropped).
    pub fn end_turn(&self, channel_id: Uuid, turn_id: Uuid) {
        self.turns
            .remove_if(&channel_id, |_, turn| turn.0 == turn_id);
    }

    /// Nobody has the turn any more: the collaboration is over.
    pub fn end_turns(&self, channel_id: Uuid) {
        self.turns.remove(&channel_id);
    }

    /// Tells every viewer the channel is gone and forgets it.
    pub fn close(&self, channel_id: Uuid) {
        self.turns.remove(&channel_id);
        if let Some((_, sender)) = self.channels.remove(&channel_id) {
            let _ = sender.send(Frame::Closed);
        }
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
