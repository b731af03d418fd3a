//! Fan-out in this process: a map of channel id to the channel's audience, its viewers
//! here, after mini-redis's pub/sub.
//!
//! A published frame is made into its wire bytes once and offered to every viewer's
//! [`Outlet`], which writes it to the connection at once when the viewer is live and
//! keeping up. An audience's viewers are split into groups of [`GROUP_SIZE`], each served by
//! a delivery task that takes frames from the channel's broadcast: a frame wakes one task
//! per group rather than one per viewer, and on a runtime with several threads the groups
//! of a large audience are written in parallel. A group that lags behind the broadcast
//! marks its viewers behind, and their sessions catch them up from the store.
//!
//! With several processes, what one hub publishes is also exported (as [`Publication`]) and
//! applied to the hubs of the others, so a viewer on any process sees every frame.
//!
//! The map's guards are never held across an `.await`: every method here is synchronous.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::{
    lock,
    outlet::{BATCH, Frame, Outlet, text_frame},
};
use crate::{domain::StoredEvent, telemetry};

/// Viewers served by one delivery task. Small enough that the groups of a large audience
/// spread over a runtime's threads, large enough that a frame wakes few tasks.
const GROUP_SIZE: usize = 128;

/// What a channel's broadcast carries to its delivery tasks.
#[derive(Debug, Clone)]
enum Broadcast {
    Frame(Frame),
    /// Frames of the channel were lost on their way here: every viewer catches up.
    Lost,
    /// The channel is gone (its collaboration was deleted).
    Closed,
}

/// How many publications may wait to be carried to other processes. Past it (NATS is down
/// or slow), a channel's publications are dropped and the channel is marked lost, which the
/// other processes are told once there is room: their viewers catch up from the store.
pub const EXPORT_QUEUE: usize = 16_384;

/// How many channels may be marked lost at once; past that, the marks themselves are
/// dropped (and counted), and those channels' viewers catch up at their next event.
const LOST_CHANNELS: usize = 65_536;

/// How long a viewer waits for the channel's frames from other processes to be carried
/// here before it reads the store anyway. Past it (NATS is away), frames it then misses
/// show as a gap at the next event and are caught up from the store.
const WATCH_PATIENCE: Duration = Duration::from_secs(2);

/// What a hub's publishing methods did, as it crosses to the hubs of other processes
/// ([`Hub::export_to`], [`Hub::apply_carried`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Publication {
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
    /// Publications of the channel were dropped on the way: its viewers must catch up.
    Lost,
    Closed,
}

#[derive(Debug)]
pub struct Hub {
    channels: DashMap<Uuid, Arc<Audience>>,
    /// Each channel's turn in progress (who speaks now) and its `turn` frame, until the
    /// turn is over: a viewer who connects meanwhile (while a person is awaited, say) is
    /// told after its catch-up, not left guessing until the next turn.
    turns: DashMap<Uuid, TurnNow>,
    /// Where the channels that gain an audience here are announced, to be carried here from
    /// other processes while they have one (see [`Watch`]), when there are other processes.
    watches: OnceLock<mpsc::UnboundedSender<Watch>>,
    /// Numbers audiences, so that frames carried for one are not applied to the next.
    audiences: AtomicU64,
    /// How many frames a delivery task may fall behind the publisher before its viewers
    /// are caught up from the store.
    capacity: usize,
    /// Where what this process publishes goes to reach other processes, when it does.
    exports: OnceLock<mpsc::Sender<(Uuid, Publication)>>,
    /// Channels some of whose publications could not be queued for export.
    lost: Mutex<HashSet<Uuid>>,
    /// The delivery tasks, and the viewers' sessions: all that streams to viewers.
    tasks: TaskTracker,
    /// Accounts' feeds: the collaborations' changes, as channels' frames are the events.
    feed: Arc<super::Feed>,
    /// Catch-up pages, shared by the viewers sending them.
    pages: super::pages::Pages,
}

/// A turn in progress and its `turn` frame.
#[derive(Debug)]
struct TurnNow {
    turn_id: Uuid,
    after_seq: i64,
    text: Utf8Bytes,
    /// Published here, by the process running the collaboration, rather than carried
    /// from it: this process answers when another asks whose turn it is.
    here: bool,
}

/// A channel's viewers in this process.
#[derive(Debug)]
struct Audience {
    id: u64,
    frames: broadcast::Sender<Broadcast>,
    groups: Mutex<Vec<Arc<Group>>>,
    /// Whether the channel's frames from other processes reach this audience yet.
    carried: Arc<watch::Sender<bool>>,
    /// Fires when the audience is gone: its frames need carrying here no more.
    gone: CancellationToken,
}

impl Drop for Audience {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

/// A channel that gained an audience here, for the cluster to carry its frames from other
/// processes to it, and to them only while it lasts: a process receives the frames of the
/// channels it has viewers of, not of every channel.
#[derive(Debug)]
pub struct Watch {
    pub channel_id: Uuid,
    audience: u64,
    carried: Arc<watch::Sender<bool>>,
    /// Fires when the audience is gone.
    pub gone: CancellationToken,
}

impl Watch {
    /// Which audience it is: frames are applied to it only (see [`Hub::apply_carried`]).
    pub fn audience(&self) -> u64 {
        self.audience
    }

    /// The channel's frames from other processes are on their way here: its viewers may
    /// read the store.
    pub fn carried(&self) {
        self.carried.send_replace(true);
    }
}

/// Viewers served by one delivery task.
#[derive(Debug, Default)]
struct Group {
    /// Replaced, not changed in place, when a viewer joins or leaves: the delivery task
    /// takes the list once per frame and writes without holding the lock.
    viewers: Mutex<Arc<[Arc<Outlet>]>>,
    /// Ends the delivery task once the group is empty.
    stop: CancellationToken,
}

/// A viewer's place in an audience: frames are offered to its outlet until it is dropped.
pub(crate) struct Membership {
    hub: Arc<Hub>,
    channel_id: Uuid,
    audience: Arc<Audience>,
    group: Arc<Group>,
    outlet: Arc<Outlet>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: DashMap::new(),
            turns: DashMap::new(),
            capacity: capacity.max(1),
            exports: OnceLock::new(),
            watches: OnceLock::new(),
            audiences: AtomicU64::new(0),
            lost: Mutex::default(),
            tasks: TaskTracker::new(),
            feed: Arc::default(),
            pages: super::pages::Pages::default(),
        }
    }

    /// The catch-up pages being read or sent here.
    pub(crate) fn pages(&self) -> &super::pages::Pages {
        &self.pages
    }

    /// From now on, everything published here is also handed to the returned receiver, to
    /// be carried to other processes. Publishing never waits: past `capacity` waiting, a
    /// channel's publications are dropped and the channel is marked lost (see
    /// [`Hub::take_lost`]).
    pub fn export_to(&self, capacity: usize) -> mpsc::Receiver<(Uuid, Publication)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let _ = self.exports.set(tx);
        rx
    }

    /// From now on, each channel that gains an audience here is handed to the returned
    /// receiver, whose owner carries the channel's frames from other processes to it (see
    /// [`Watch`]); its viewers wait for that before they read the store. Unbounded: there
    /// is one per audience, and audiences are bounded by the streams allowed.
    pub fn watched_by(&self) -> mpsc::UnboundedReceiver<Watch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.watches.set(tx);
        rx
    }

    /// The channels marked lost since the last call: the carrier tells the other processes,
    /// as [`Publication::Lost`], once it has room.
    pub fn take_lost(&self) -> Vec<Uuid> {
        lock(&self.lost).drain().collect()
    }

    /// Who follows accounts' collaborations changing, and how they are told.
    pub fn feed(&self) -> &Arc<super::Feed> {
        &self.feed
    }

    /// What streams to viewers: wait on it, once closed, to let viewers be told goodbye.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Offers the channel's frames, from those published next on, to `outlet`.
    pub(crate) fn join(self: &Arc<Self>, channel_id: Uuid, outlet: Arc<Outlet>) -> Membership {
        // Under the map's entry, so that the audience cannot be dropped as its last viewer
        // leaves while this one joins.
        let entry = self.channels.entry(channel_id).or_insert_with(|| {
            let watches = self.watches.get();
            let audience = Audience {
                id: self.audiences.fetch_add(1, Ordering::Relaxed),
                frames: broadcast::channel(self.capacity).0,
                groups: Mutex::default(),
                carried: Arc::new(watch::Sender::new(watches.is_none())),
                gone: CancellationToken::new(),
            };
            if let Some(watches) = watches {
                let _ = watches.send(Watch {
                    channel_id,
                    audience: audience.id,
                    carried: audience.carried.clone(),
                    gone: audience.gone.clone(),
                });
            }
            Arc::new(audience)
        });
        let audience = entry.value().clone();
        let mut groups = lock(&audience.groups);
        let open = groups
            .iter()
            .find(|group| lock(&group.viewers).len() < GROUP_SIZE)
            .cloned();
        let group = open.unwrap_or_else(|| {
            let group = Arc::new(Group::default());
            self.tasks
                .spawn(deliver(group.clone(), audience.frames.subscribe()));
            groups.push(group.clone());
            group
        });
        let mut viewers = lock(&group.viewers);
        *viewers = viewers.iter().cloned().chain([outlet.clone()]).collect();
        drop((viewers, groups, entry));
        Membership {
            hub: self.clone(),
            channel_id,
            audience,
            group,
            outlet,
        }
    }

    pub fn publish_event(&self, channel_id: Uuid, event: &StoredEvent) {
        self.publish(
            channel_id,
            Publication::Event {
                seq: event.seq,
                text: event.frame.clone().into(),
            },
        );
    }

    /// Publishes a piece of a turn in progress, its JSON made by `json` only if someone
    /// may hear it: a viewer here, or (with a carrier) another process. Most channels
    /// have nobody watching, and a turn streams several pieces.
    pub fn publish_delta(&self, channel_id: Uuid, after_seq: i64, json: impl FnOnce() -> String) {
        // A viewer joining just after this check misses this piece, as it would any
        // piece before it joined: its `turn` frame and the stored message make it whole.
        if self.exports.get().is_none() && !self.channels.contains_key(&channel_id) {
            return;
        }
        self.publish(
            channel_id,
            Publication::Delta {
                after_seq,
                text: json().into(),
            },
        );
    }

    /// Announces whose turn it is: sent like a delta, and kept until [`Hub::end_turn`].
    pub fn publish_turn(&self, channel_id: Uuid, after_seq: i64, turn_id: Uuid, json: String) {
        let text = json.into();
        self.publish(
            channel_id,
            Publication::Turn {
                after_seq,
                turn_id,
                text,
            },
        );
    }

    /// The `turn` frame of the turn in progress, if there is one.
    pub fn current_turn(&self, channel_id: Uuid) -> Option<Utf8Bytes> {
        self.turns.get(&channel_id).map(|turn| turn.text.clone())
    }

    /// Another process began watching the channel: if its turn in progress was published
    /// here, it goes out again to the other processes (not to this one's viewers), after
    /// what went out before it.
    pub fn resend_turn(&self, channel_id: Uuid) {
        let Some(exports) = self.exports.get() else {
            return;
        };
        let turn = self
            .turns
            .get(&channel_id)
            .filter(|turn| turn.here)
            .map(|turn| Publication::Turn {
                after_seq: turn.after_seq,
                turn_id: turn.turn_id,
                text: turn.text.clone(),
            });
        if let Some(turn) = turn {
            // Best effort: past a full queue, the viewers learn of the next turn.
            let _ = exports.try_send((channel_id, turn));
        }
    }

    /// Forgets the turn in progress another process told of: a new audience is about to
    /// be told it again, or (`unless_watched`) none is left here to hear how it ends.
    pub fn forget_carried_turn(&self, channel_id: Uuid, unless_watched: bool) {
        if unless_watched && self.channels.contains_key(&channel_id) {
            return;
        }
        self.turns.remove_if(&channel_id, |_, turn| !turn.here);
    }

    /// Applies what another process published to the channel's audience here, if that is
    /// still `audience`: a frame carried for an audience that has gone is not for the next.
    pub fn apply_carried(&self, channel_id: Uuid, audience: u64, publication: Publication) {
        let current = self
            .channels
            .get(&channel_id)
            .is_some_and(|current| current.id == audience);
        if current {
            self.apply_from(channel_id, publication, false);
        }
    }

    /// The turn is over (its message is stored, or it was dropped).
    pub fn end_turn(&self, channel_id: Uuid, turn_id: Uuid) {
        self.publish(channel_id, Publication::EndTurn { turn_id });
    }

    /// Nobody has the turn any more: the collaboration is over.
    pub fn end_turns(&self, channel_id: Uuid) {
        self.publish(channel_id, Publication::EndTurns);
    }

    /// Tells every viewer the channel is gone and forgets it.
    pub fn close(&self, channel_id: Uuid) {
        self.publish(channel_id, Publication::Closed);
    }

    /// Hands what was published (`here`, or carried from another process) to the viewers.
    fn apply_from(&self, channel_id: Uuid, publication: Publication, here: bool) {
        match publication {
            Publication::Event { seq, text } => self.send(channel_id, || Frame::Event {
                seq,
                wire: text_frame(&text),
            }),
            Publication::Delta { after_seq, text } => self.send(channel_id, || Frame::Delta {
                after_seq,
                wire: text_frame(&text),
            }),
            Publication::Turn {
                after_seq,
                turn_id,
                text,
            } => {
                // Kept before it is sent: a viewer going live meanwhile either gets it from
                // its delivery task or finds it here. A turn told of again (for a process
                // that began watching) is not news to viewers who have it.
                let now = TurnNow {
                    turn_id,
                    after_seq,
                    text: text.clone(),
                    here,
                };
                let news = self
                    .turns
                    .insert(channel_id, now)
                    .is_none_or(|was| was.turn_id != turn_id);
                if news {
                    self.send(channel_id, || Frame::Delta {
                        after_seq,
                        wire: text_frame(&text),
                    });
                }
            }
            Publication::EndTurn { turn_id } => {
                self.turns
                    .remove_if(&channel_id, |_, turn| turn.turn_id == turn_id);
            }
            Publication::EndTurns => {
                self.turns.remove(&channel_id);
            }
            Publication::Lost => {
                if let Some(frames) = self.channels.get(&channel_id).map(|a| a.frames.clone()) {
                    let _ = frames.send(Broadcast::Lost);
                }
            }
            Publication::Closed => {
                self.turns.remove(&channel_id);
                if let Some((_, audience)) = self.channels.remove(&channel_id) {
                    let _ = audience.frames.send(Broadcast::Closed);
                }
            }
        }
    }

    fn publish(&self, channel_id: Uuid, publication: Publication) {
        if let Some(exports) = self.exports.get()
            && let Err(mpsc::error::TrySendError::Full(_)) =
                exports.try_send((channel_id, publication.clone()))
        {
            telemetry::export_dropped();
            let mut lost = lock(&self.lost);
            if lost.len() < LOST_CHANNELS {
                lost.insert(channel_id);
            }
        }
        self.apply_from(channel_id, publication, true);
    }

    /// Hands a frame to the channel's delivery tasks; made only if someone here watches.
    fn send(&self, channel_id: Uuid, frame: impl FnOnce() -> Frame) {
        // Clone the sender out so no map guard is held while sending.
        let Some(frames) = self
            .channels
            .get(&channel_id)
            .map(|audience| audience.frames.clone())
        else {
            return;
        };
        // An error means no delivery task is left, and so no viewer: nothing to do.
        let _ = frames.send(Broadcast::Frame(frame()));
    }
}

impl Membership {
    /// Waits until the channel's frames from other processes reach this viewer (at once
    /// with one process), so that the store it then reads misses nothing they carry.
    pub(crate) async fn carried(&self) {
        let mut carried = self.audience.carried.subscribe();
        let waited = tokio::time::timeout(WATCH_PATIENCE, carried.wait_for(|&yes| yes)).await;
        if waited.is_err() {
            tracing::warn!(channel = %self.channel_id, "frames from other processes are not carried here yet; reading the store");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut groups = lock(&self.audience.groups);
        let mut viewers = lock(&self.group.viewers);
        *viewers = viewers
            .iter()
            .filter(|viewer| !Arc::ptr_eq(viewer, &self.outlet))
            .cloned()
            .collect();
        if viewers.is_empty() {
            groups.retain(|group| !Arc::ptr_eq(group, &self.group));
            self.group.stop.cancel();
        }
        drop(viewers);
        let audience_empty = groups.is_empty();
        drop(groups);
        if audience_empty {
            // Only this audience, and only if nobody joined it meanwhile: that is checked
            // under the map's entry, as joining is.
            self.hub
                .channels
                .remove_if(&self.channel_id, |_, audience| {
                    Arc::ptr_eq(audience, &self.audience) && lock(&audience.groups).is_empty()
                });
        }
    }
}

/// Serves one group: every frame of the channel, offered to each of its viewers. Frames
/// that are waiting together go out together, in one write per viewer.
async fn deliver(group: Arc<Group>, mut broadcast: broadcast::Receiver<Broadcast>) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut received = tokio::select! {
            biased;
            () = group.stop.cancelled() => return,
            received = broadcast.recv() => received,
        };
        let (mut closed, mut lagged) = (false, false);
        loop {
            match received {
                Ok(Broadcast::Frame(frame)) => batch.push(frame),
                Ok(Broadcast::Closed) | Err(RecvError::Closed) => closed = true,
                Ok(Broadcast::Lost) | Err(RecvError::Lagged(_)) => lagged = true,
            }
            if closed || lagged || batch.len() == BATCH {
                break;
            }
            received = match broadcast.try_recv() {
                Ok(next) => Ok(next),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
            };
        }
        let viewers = lock(&group.viewers).clone();
        if !batch.is_empty() {
            // Outside tokio's cooperative budget: every write takes from it, and a group
            // spends it in one batch, after which writes would be refused as if the sockets
            // were full. The task still yields at its next `recv` once the budget is spent.
            let offered = async { viewers.iter().map(|viewer| viewer.offer(&batch)).sum() };
            let taken: usize = tokio::task::unconstrained(offered).await;
            telemetry::frames_sent(taken as u64);
            batch.clear();
        }
        if lagged {
            viewers.iter().for_each(|viewer| viewer.fall_behind());
        }
        if closed {
            viewers.iter().for_each(|viewer| viewer.delete());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        task::{Context, Poll, Waker},
        time::Duration,
    };

    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::live::outlet::Attention;

    const PATIENCE: Duration = Duration::from_secs(10);

    /// A live outlet writing into memory, and the end its bytes come out of.
    fn viewer() -> (Arc<Outlet>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let outlet = Arc::new(Outlet::new(
            ours,
            0,
            crate::live::outlet::Limit {
                frames: 8,
                bytes: 1 << 20,
            },
        ));
        outlet.begin_catch_up();
        assert!(outlet.go_live(|| None));
        (outlet, theirs)
    }

    fn stored(seq: i64) -> StoredEvent {
        StoredEvent {
            seq,
            frame: format!(r#"{{"type":"message","seq":{seq}}}"#),
        }
    }

    async fn read_exactly(end: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        tokio::time::timeout(PATIENCE, end.read_exact(&mut bytes))
            .await
            .expect("the frame arrives")
            .unwrap();
        bytes
    }

    #[tokio::test]
    async fn every_viewer_of_an_audience_of_several_groups_gets_each_frame_once() {
        let hub = Arc::new(Hub::new(16));
        let channel = Uuid::now_v7();
        let viewers: Vec<_> = (0..GROUP_SIZE * 2 + 1).map(|_| viewer()).collect();
        let memberships: Vec<_> = viewers
            .iter()
            .map(|(outlet, _)| hub.join(channel, outlet.clone()))
            .collect();
        assert_eq!(lock(&hub.channels.get(&channel).unwrap().groups).len(), 3);
        hub.publish_event(channel, &stored(1));
        hub.publish_event(channel, &stored(2));
        let expected: Vec<u8> = [stored(1), stored(2)]
            .iter()
            .flat_map(|event| text_frame(&event.frame).to_vec())
            .collect();
        for (_, mut end) in viewers {
            assert_eq!(read_exactly(&mut end, expected.len()).await, expected);
        }
        drop(memberships);
    }

    #[tokio::test]
    async fn the_last_viewer_to_leave_takes_the_channel_and_its_delivery_tasks_with_it() {
        let hub = Arc::new(Hub::new(16));
        let channel = Uuid::now_v7();
        let viewers: Vec<_> = (0..GROUP_SIZE + 1).map(|_| viewer()).collect();
        let memberships: Vec<_> = viewers
            .iter()
            .map(|(outlet, _)| hub.join(channel, outlet.clone()))
            .collect();
        drop(memberships);
        assert!(hub.channels.is_empty());
        hub.tasks().close();
        tokio::time::timeout(PATIENCE, hub.tasks().wait())
            .await
            .expect("every delivery task ends");
        // Published to nobody: nothing is made, nothing fails.
        hub.publish_event(channel, &stored(1));
    }

    #[tokio::test]
    async fn viewers_of_a_deleted_channel_are_told_so() {
        let hub = Arc::new(Hub::new(16));
        let channel = Uuid::now_v7();
        let (outlet, _end) = viewer();
        let _membership = hub.join(channel, outlet.clone());
        hub.close(channel);
        let told = tokio::time::timeout(PATIENCE, outlet.attention())
            .await
            .expect("the viewer's session is woken");
        assert_eq!(told, Attention::Deleted);
        assert!(hub.channels.is_empty());
        assert_eq!(
            outlet.poll_attention(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Attention::Deleted)
        );
    }

    #[tokio::test]
    async fn publications_past_a_full_export_queue_mark_their_channel_lost_there_and_behind_here() {
        let publisher = Hub::new(16);
        let mut exports = publisher.export_to(2);
        let channel = Uuid::now_v7();
        for seq in 1..=5 {
            publisher.publish_event(channel, &stored(seq));
        }
        // Two wait; three were dropped, and their channel is marked, once.
        assert_eq!(publisher.take_lost(), [channel]);
        assert!(publisher.take_lost().is_empty());
        assert!(
            matches!(exports.try_recv(), Ok((c, Publication::Event { seq: 1, .. })) if c == channel)
        );

        // Another process's hub is told, and its viewers of the channel catch up.
        let there = Arc::new(Hub::new(16));
        let (outlet, _end) = viewer();
        let membership = there.join(channel, outlet.clone());
        there.apply_carried(channel, membership.audience.id, Publication::Lost);
        let asked = tokio::time::timeout(PATIENCE, outlet.attention())
            .await
            .expect("the viewer's session is woken");
        assert_eq!(asked, Attention::CatchUp);
    }

    #[tokio::test]
    async fn a_delivery_task_that_lags_behind_its_channel_marks_its_viewers_behind() {
        let hub = Arc::new(Hub::new(2));
        let channel = Uuid::now_v7();
        let (outlet, _end) = viewer();
        let _membership = hub.join(channel, outlet.clone());
        // Published with no chance for the delivery task to run in between.
        for seq in 1..=5 {
            hub.publish_event(channel, &stored(seq));
        }
        let asked = tokio::time::timeout(PATIENCE, outlet.attention())
            .await
            .expect("the viewer's session is woken");
        assert_eq!(asked, Attention::CatchUp);
    }
}
