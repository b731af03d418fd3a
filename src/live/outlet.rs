//! One viewer's way out. Every byte sent to a viewer passes through its outlet, whoever
//! sends it: the hub, which writes live frames from the publisher's side, and the viewer's
//! own session (the hello, catch-up from the store, the turn, pings, errors, the close).
//!
//! Why the hub writes: a channel with a thousand viewers would otherwise wake a thousand
//! tasks for every frame, each to make one write. Instead the hub offers each frame to
//! every outlet of the channel, and an outlet that is live and keeping up writes it at once
//! with one non-blocking write, while its session sleeps. The session is woken only when
//! its outlet needs it:
//! - the socket took a frame in part or not at all: the rest waits in the outlet's queue,
//!   and the session finishes it when the socket has room;
//! - an event went past that the outlet could not take (a gap, a full queue, a hub that
//!   lagged): the session catches up from the store;
//! - the channel was deleted.
//!
//! Frames go out whole and in order: while anything waits in the queue, new frames join
//! its end, and a frame the socket took in part is finished before the next begins. The
//! outlet never waits; it is a `std` mutex held for one write at most.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most frames offered, and written, at once.
pub(crate) const BATCH: usize = 16;

/// A frame as the hub offers it to outlets: already in its wire form ([`text_frame`]).
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// A stored event; `seq` lets each outlet keep order and spot gaps.
    Event { seq: i64, wire: Bytes },
    /// Ephemeral streamed text of a turn in progress. `after_seq` is the channel's last seq
    /// when the turn began: once a viewer has an event beyond it, the turn's message has
    /// been delivered and its late deltas are dropped instead of drawing a stale "typing".
    Delta { after_seq: i64, wire: Bytes },
}

static NOTHING: Bytes = Bytes::new();

/// The write side of a viewer's connection.
type Socket = Pin<Box<dyn AsyncWrite + Send>>;

pub(crate) struct Outlet {
    state: Mutex<State>,
    /// What may wait in the queue; beyond it, events are left to the store.
    limit: Limit,
}

/// How much may wait for a viewer's socket: so many frames, and so many bytes, for a
/// viewer of large messages that stops reading must not hold them all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

struct State {
    socket: Socket,
    /// Whole frames not yet written; the first `written` bytes of the first are out.
    queue: VecDeque<Bytes>,
    written: usize,
    /// The bytes of the frames in `queue`.
    queued_bytes: usize,
    mode: Mode,
    /// The `seq` of the last event written or queued.
    last_seq: i64,
    /// An event went past that the outlet did not take: the store has it.
    behind: bool,
    /// Bytes went out since [`Outlet::stalled`] last looked.
    progressed: bool,
    /// A write failed: the peer is gone.
    broken: bool,
    /// The session's task. Every write registers it, so a socket that had no room wakes
    /// the session once it has; it is also woken when the outlet falls behind or is closed.
    session: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The session is sending what the store has; the hub's events only mark the outlet
    /// as behind.
    CatchingUp,
    /// The hub writes events in `seq` order, and deltas.
    Live,
    /// The session is closing the stream: the hub writes nothing more.
    Closed,
    /// The channel was deleted.
    Deleted,
}

/// Why an outlet needs its session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attention {
    /// Events went past: send what the store has after the last one sent.
    CatchUp,
    Deleted,
    /// The connection failed.
    Broken,
}

/// The connection failed; the stream is over.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Broken;

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Outlet")
            .field("mode", &state.mode)
            .field("last_seq", &state.last_seq)
            .field("queued", &state.queue.len())
            .finish_non_exhaustive()
    }
}

impl Outlet {
    /// An outlet that starts catching up after `last_seq`, and lets `limit` wait.
    pub(crate) fn new(
        socket: impl AsyncWrite + Send + 'static,
        last_seq: i64,
        limit: Limit,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                socket: Box::pin(socket),
                queue: VecDeque::new(),
                written: 0,
                queued_bytes: 0,
                mode: Mode::CatchingUp,
                last_seq,
                behind: false,
                progressed: false,
                broken: false,
                session: None,
            }),
            limit: Limit {
                frames: limit.frames.max(1),
                bytes: limit.bytes.max(1),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    // The hub's side. None of these waits: each writes, queues or marks.

    /// Frames in the order the channel published them: what this outlet takes of them is
    /// written in one write (or queued). How many it took.
    pub(crate) fn offer(&self, frames: &[Frame]) -> usize {
        let mut state = self.lock();
        let mut taken = [&NOTHING; BATCH];
        let (mut count, mut bytes) = (0, 0);
        for frame in frames.iter().take(BATCH) {
            let wire = match frame {
                Frame::Event { seq, wire } => match state.mode {
                    Mode::Live | Mode::CatchingUp if *seq <= state.last_seq => continue,
                    Mode::Live if *seq == state.last_seq + 1 => {
                        if state.over(self.limit, count, bytes + wire.len()) {
                            state.fall_behind();
                            continue;
                        }
                        state.last_seq = *seq;
                        wire
                    }
                    // A gap, or anything while catching up: the store has it.
                    Mode::Live | Mode::CatchingUp => {
                        state.fall_behind();
                        continue;
                    }
                    Mode::Closed | Mode::Deleted => continue,
                },
                // Stale once an event past the turn's start is out: its message is.
                Frame::Delta { after_seq, wire } => {
                    if state.mode != Mode::Live || *after_seq < state.last_seq {
                        continue;
                    }
                    if state.over(self.limit, count, bytes + wire.len()) {
                        state.fall_behind();
                        continue;
                    }
                    wire
                }
            };
            taken[count] = wire;
            count += 1;
            bytes += wire.len();
        }
        state.push_all(&taken[..count]);
        count
    }

    /// Frames went past that the hub could not offer (it lagged): catch up from the store.
    pub(crate) fn fall_behind(&self) {
        let mut state = self.lock();
        if matches!(state.mode, Mode::Live | Mode::CatchingUp) {
            state.fall_behind();
        }
    }

    /// The channel is gone.
    pub(crate) fn delete(&self) {
        let mut state = self.lock();
        if state.mode != Mode::Closed {
            state.mode = Mode::Deleted;
            state.wake();
        }
    }

    // The session's side.

    /// What the session must do next, once it must do something.
    pub(crate) async fn attention(&self) -> Attention {
        std::future::poll_fn(|cx| self.poll_attention(cx)).await
    }

    /// Finishes what the socket would not take before; ready when the session must act.
    pub(crate) fn poll_attention(&self, cx: &mut Context<'_>) -> Poll<Attention> {
        let mut state = self.lock();
        state.register(cx);
        state.pump();
        if state.broken {
            return Poll::Ready(Attention::Broken);
        }
        match state.mode {
            Mode::Deleted => Poll::Ready(Attention::Deleted),
            // Once the socket has taken what waits, so that catching up writes straight to
            // it rather than piling up here.
            Mode::CatchingUp if state.behind && state.queue.is_empty() => {
                Poll::Ready(Attention::CatchUp)
            }
            _ => Poll::Pending,
        }
    }

    /// Sends one of the session's own frames, waiting while the queue is full. `seq` if it
    /// is a stored event, as catching up sends them.
    pub(crate) async fn send(&self, frame: Bytes, seq: Option<i64>) -> Result<(), Broken> {
        std::future::poll_fn(|cx| self.poll_send(cx, &frame, seq)).await
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        frame: &Bytes,
        seq: Option<i64>,
    ) -> Poll<Result<(), Broken>> {
        let mut state = self.lock();
        state.register(cx);
        state.pump();
        if state.broken {
            return Poll::Ready(Err(Broken));
        }
        if !state.push(frame, self.limit) {
            // Full: a write that had no room registered this task with the socket.
            return Poll::Pending;
        }
        if let Some(seq) = seq {
            state.last_seq = seq;
        }
        Poll::Ready(Ok(()))
    }

    /// Begins a round of catching up: the `seq` to read the store after. Events that go
    /// past from now on mark the outlet behind again.
    pub(crate) fn begin_catch_up(&self) -> i64 {
        let mut state = self.lock();
        if state.mode == Mode::Live {
            state.mode = Mode::CatchingUp;
        }
        state.behind = false;
        state.last_seq
    }

    /// Never further than `last_seq`: a viewer claiming to be ahead of the channel would
    /// otherwise pass over its events as already sent.
    pub(crate) fn clamp_last_seq(&self, last_seq: i64) {
        let mut state = self.lock();
        state.last_seq = state.last_seq.min(last_seq);
    }

    /// Goes live, unless an event went past since the round began (then another round is
    /// due, and this returns false). The frame of the turn in progress, if `turn` finds one,
    /// is sent first, under the same lock: the hub cannot write the message that ends the
    /// turn before it.
    pub(crate) fn go_live(&self, turn: impl FnOnce() -> Option<Bytes>) -> bool {
        let mut state = self.lock();
        if state.behind {
            return false;
        }
        if state.mode == Mode::CatchingUp {
            if let Some(frame) = turn() {
                // Over the limit at worst by this one frame.
                state.push_all(&[&frame]);
            }
            state.mode = Mode::Live;
        }
        true
    }

    /// The session is closing the stream: from now on only the session writes (its close),
    /// and frames still waiting are dropped, but for one already begun. The close frame
    /// then goes out at once rather than behind them; the viewer gets them from the store
    /// when it reconnects.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.mode = Mode::Closed;
        let begun = usize::from(state.written > 0);
        state.queue.truncate(begun);
        state.queued_bytes = state.queue.iter().map(Bytes::len).sum();
    }

    /// Ready once everything waiting is written (or the connection failed): the session's
    /// close frame has left.
    pub(crate) async fn drained(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            state.register(cx);
            state.pump();
            if state.broken || state.queue.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether frames wait for a peer that took nothing since the last look: one that
    /// stopped reading.
    pub(crate) fn stalled(&self) -> bool {
        let mut state = self.lock();
        let stalled = !state.queue.is_empty() && !state.progressed;
        state.progressed = false;
        stalled
    }

    /// tungstenite's writes: whole frames, like the session's own.
    fn poll_write_bytes(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_send(cx, &Bytes::copy_from_slice(bytes), None) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(bytes.len())),
            Poll::Ready(Err(Broken)) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A flush writes what it can and does not wait for the rest: what tungstenite wrote
    /// is queued in order behind the hub's frames, and waiting for a slow viewer's whole
    /// queue would hold its session (a ping, say) for as long as the queue takes to go.
    /// Whether the viewer keeps reading is [`Outlet::stalled`]'s to judge.
    fn poll_flush_queue(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        state.register(cx);
        state.pump();
        if state.broken {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_shutdown_socket(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        state.register(cx);
        state.pump();
        if !state.broken && !state.queue.is_empty() {
            return Poll::Pending;
        }
        state.socket.as_mut().poll_shutdown(cx)
    }
}

impl State {
    fn register(&mut self, cx: &Context<'_>) {
        if !self
            .session
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.session = Some(cx.waker().clone());
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.session {
            waker.wake_by_ref();
        }
    }

    /// Whether queueing `frames` more, of `bytes`, would take the queue past `limit`. An
    /// empty queue takes anything: a frame the socket does not take at once is queued.
    fn over(&self, limit: Limit, frames: usize, bytes: usize) -> bool {
        !self.queue.is_empty()
            && (self.queue.len() + frames >= limit.frames
                || self.queued_bytes + bytes > limit.bytes)
    }

    fn fall_behind(&mut self) {
        self.mode = Mode::CatchingUp;
        if !self.behind {
            self.behind = true;
            self.wake();
        }
    }

    /// Writes `frame` whole or queues what the socket did not take; false, doing nothing,
    /// if the queue is full.
    fn push(&mut self, frame: &Bytes, limit: Limit) -> bool {
        if self.queue.len() >= limit.frames || self.over(limit, 0, frame.len()) {
            return false;
        }
        self.push_all(&[frame]);
        true
    }

    /// Writes `frames` in one write, or queues them behind what waits; what the socket did
    /// not take is queued. A broken outlet takes everything and sends nothing.
    fn push_all(&mut self, frames: &[&Bytes]) {
        if self.broken || frames.is_empty() {
            return;
        }
        if !self.queue.is_empty() {
            for &frame in frames {
                self.enqueue(frame.clone());
            }
            return;
        }
        let mut slices = [IoSlice::new(&[]); BATCH];
        for (slice, frame) in slices.iter_mut().zip(frames) {
            *slice = IoSlice::new(frame);
        }
        let mut written = match self.write(&slices[..frames.len().min(BATCH)]) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return self.break_down(),
        };
        for &frame in frames {
            if self.queue.is_empty() && written >= frame.len() {
                written -= frame.len();
                continue;
            }
            if self.queue.is_empty() {
                self.written = written;
            }
            self.enqueue(frame.clone());
        }
        if !self.queue.is_empty() {
            // A write the socket took in part leaves nobody to be woken when it has room
            // (tokio clears the readiness without registering a waker): trying again
            // registers the session.
            self.pump();
        }
    }

    /// Writes what waits, until the queue is empty or the socket has no room.
    fn pump(&mut self) {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); BATCH];
            let mut count = 0;
            for (slice, frame) in slices.iter_mut().zip(&self.queue) {
                let skip = if count == 0 { self.written } else { 0 };
                *slice = IoSlice::new(&frame[skip..]);
                count += 1;
            }
            let mut written = match write(&mut self.socket, &self.session, &slices[..count]) {
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.break_down(),
            };
            self.progressed = true;
            while let Some(front) = self.queue.front() {
                let left = front.len() - self.written;
                if written < left {
                    self.written += written;
                    break;
                }
                written -= left;
                self.written = 0;
                if let Some(done) = self.queue.pop_front() {
                    self.queued_bytes -= done.len();
                }
            }
        }
    }

    /// One non-blocking write. With no room, the session's task is registered with the
    /// socket and woken when there is.
    fn write(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let written = write(&mut self.socket, &self.session, slices)?;
        self.progressed = true;
        Ok(written)
    }

    fn enqueue(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn break_down(&mut self) {
        self.broken = true;
        self.queue.clear();
        self.queued_bytes = 0;
        self.written = 0;
        self.wake();
    }
}

/// One non-blocking write of `slices`, in order, on behalf of `session`: with no room,
/// its task is registered with the socket and woken when there is.
fn write(
    socket: &mut Socket,
    session: &Option<Waker>,
    slices: &[IoSlice<'_>],
) -> io::Result<usize> {
    let waker = session.as_ref().unwrap_or(Waker::noop());
    let mut cx = Context::from_waker(waker);
    let poll = match slices {
        [one] => socket.as_mut().poll_write(&mut cx, one),
        _ => socket.as_mut().poll_write_vectored(&mut cx, slices),
    };
    match poll {
        Poll::Ready(Ok(0)) if slices.iter().any(|slice| !slice.is_empty()) => {
            Err(io::ErrorKind::WriteZero.into())
        }
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// A viewer's connection as the WebSocket protocol sees it: it reads from the connection
/// and writes through the outlet, so that what tungstenite sends (pongs, pings, the close)
/// takes its place among the hub's frames. tungstenite hands over whole frames: a write is
/// taken whole or, with the queue full, not at all.
pub(crate) struct ViewerIo<R> {
    read: R,
    outlet: Arc<Outlet>,
}

impl<R> ViewerIo<R> {
    pub(crate) fn new(read: R, outlet: Arc<Outlet>) -> Self {
        Self { read, outlet }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ViewerIo<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ViewerIo<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outlet.poll_write_bytes(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outlet.poll_flush_queue(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outlet.poll_shutdown_socket(cx)
    }
}

/// A text message as a server puts it on the wire: one final frame, unmasked (RFC 6455,
/// section 5.2). Made once per published frame and written as is to every viewer.
pub(crate) fn text_frame(text: &str) -> Bytes {
    let len = text.len();
    let mut frame = BytesMut::with_capacity(len + 10);
    frame.put_u8(0x81);
    if len < 126 {
        frame.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        frame.put_u8(126);
        frame.put_u16(len);
    } else {
        frame.put_u8(127);
        frame.put_u64(len as u64);
    }
    frame.put_slice(text.as_bytes());
    frame.freeze()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test's reader task ends with the test"
)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio_tungstenite::WebSocketStream;
    use tungstenite::{Message, protocol::Role};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    /// A connected pair on loopback: the server's side (to write through an outlet) and a
    /// WebSocket client on the other. `window` limits what both sides' buffers hold.
    async fn pair(window: Option<u32>) -> (TcpStream, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = window {
            client.set_recv_buffer_size(bytes).unwrap();
        }
        let (client, accepted) = tokio::join!(
            client.connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let server = accepted.unwrap().0;
        if let Some(bytes) = window {
            set_send_buffer(&server, bytes);
        }
        let client = WebSocketStream::from_raw_socket(client.unwrap(), Role::Client, None).await;
        (server, client)
    }

    fn set_send_buffer(stream: &TcpStream, bytes: u32) {
        use std::os::fd::AsRawFd;
        let value = bytes as libc::c_int;
        // SAFETY: setsockopt on an open socket, with a pointer to an int and its size.
        let result = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0);
    }

    fn live(socket: TcpStream, limit: usize) -> Outlet {
        let outlet = Outlet::new(
            socket,
            0,
            Limit {
                frames: limit,
                bytes: 1 << 20,
            },
        );
        assert_eq!(outlet.begin_catch_up(), 0);
        assert!(outlet.go_live(|| None));
        outlet
    }

    fn event(seq: i64, text: &str) -> Frame {
        Frame::Event {
            seq,
            wire: text_frame(text),
        }
    }

    fn delta(after_seq: i64, text: &str) -> Frame {
        Frame::Delta {
            after_seq,
            wire: text_frame(text),
        }
    }

    async fn texts(client: &mut WebSocketStream<TcpStream>, count: usize) -> Vec<String> {
        let mut texts = Vec::new();
        while texts.len() < count {
            match tokio::time::timeout(PATIENCE, client.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => texts.push(text.to_string()),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        texts
    }

    fn attention(outlet: &Outlet) -> Poll<Attention> {
        outlet.poll_attention(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_viewer_of_large_frames_that_stops_reading_holds_at_most_its_bytes() {
        let (server, _client) = pair(Some(4096)).await;
        let outlet = Outlet::new(
            server,
            0,
            Limit {
                frames: 1000,
                bytes: 256 * 1024,
            },
        );
        outlet.begin_catch_up();
        assert!(outlet.go_live(|| None));
        let big = "b".repeat(100_000);
        let mut taken = 0;
        for seq in 1..=50 {
            taken += outlet.offer(&[event(seq, &big)]);
        }
        let queued = outlet.lock().queued_bytes;
        // The socket took a little; the queue holds what fits under the limit, no more.
        assert!(queued <= 256 * 1024 + 100_010, "{queued} bytes wait");
        assert!(taken < 10, "{taken} of 50 frames taken");
        assert_eq!(attention(&outlet), Poll::Pending);
        assert!(outlet.lock().behind, "the rest is left to the store");
    }

    #[tokio::test]
    async fn frames_offered_together_arrive_whole_and_in_order_and_stale_ones_not_at_all() {
        let (server, mut client) = pair(None).await;
        let outlet = live(server, 8);
        let batch = [event(1, "one"), delta(1, "typing"), event(2, "two")];
        assert_eq!(outlet.offer(&batch), 3);
        // Already sent, and a delta of a turn whose message is out.
        assert_eq!(outlet.offer(&[event(2, "two again"), delta(1, "late")]), 0);
        assert_eq!(outlet.offer(&[event(3, "three")]), 1);
        assert_eq!(
            texts(&mut client, 4).await,
            ["one", "typing", "two", "three"]
        );
        assert_eq!(attention(&outlet), Poll::Pending);
    }

    #[tokio::test]
    async fn an_event_past_a_gap_asks_the_session_to_catch_up_from_the_last_one_sent() {
        let (server, _client) = pair(None).await;
        let outlet = live(server, 8);
        assert_eq!(outlet.offer(&[event(1, "one"), event(3, "three")]), 1);
        assert_eq!(attention(&outlet), Poll::Ready(Attention::CatchUp));
        assert_eq!(outlet.begin_catch_up(), 1);
        // While catching up, the hub writes nothing.
        assert_eq!(outlet.offer(&[event(2, "two")]), 0);
    }

    #[tokio::test]
    async fn an_event_that_goes_past_while_catching_up_makes_another_round() {
        let (server, mut client) = pair(None).await;
        let outlet = Outlet::new(
            server,
            0,
            Limit {
                frames: 8,
                bytes: 1 << 20,
            },
        );
        assert_eq!(outlet.begin_catch_up(), 0);
        // Published after the session read the store, before it went live.
        assert_eq!(outlet.offer(&[event(1, "one")]), 0);
        assert!(!outlet.go_live(|| None), "a round missed an event");
        assert_eq!(outlet.begin_catch_up(), 0);
        outlet.send(text_frame("one"), Some(1)).await.unwrap();
        assert!(outlet.go_live(|| None));
        assert_eq!(outlet.offer(&[event(1, "one"), event(2, "two")]), 1);
        assert_eq!(texts(&mut client, 2).await, ["one", "two"]);
    }

    #[tokio::test]
    async fn going_live_tells_the_turn_in_progress_before_anything_live() {
        let (server, mut client) = pair(None).await;
        let outlet = Outlet::new(
            server,
            0,
            Limit {
                frames: 8,
                bytes: 1 << 20,
            },
        );
        outlet.begin_catch_up();
        outlet.send(text_frame("one"), Some(1)).await.unwrap();
        assert!(outlet.go_live(|| Some(text_frame("turn"))));
        assert_eq!(outlet.offer(&[event(2, "two")]), 1);
        assert_eq!(texts(&mut client, 3).await, ["one", "turn", "two"]);
    }

    #[tokio::test]
    async fn closing_drops_what_waits_but_the_frame_begun_and_the_close_goes_out_at_once() {
        let (server, mut client) = pair(Some(4096)).await;
        let outlet = live(server, 8);
        let big = "c".repeat(200_000);
        assert_eq!(
            outlet.offer(&[event(1, &big), event(2, &big), event(3, &big)]),
            3
        );
        assert_eq!(
            outlet.lock().queue.len(),
            3,
            "the first in part, two waiting"
        );
        outlet.close();
        assert_eq!(outlet.lock().queue.len(), 1, "the one begun");
        outlet.send(text_frame("goodbye"), None).await.unwrap();
        let reader = tokio::spawn(async move { texts(&mut client, 2).await });
        tokio::time::timeout(PATIENCE, outlet.drained())
            .await
            .expect("drained once the client reads");
        let texts = reader.await.unwrap();
        assert_eq!((texts[0].len(), texts[1].as_str()), (big.len(), "goodbye"));
    }

    #[tokio::test]
    async fn a_flush_does_not_wait_for_a_slow_viewer_s_queue() {
        let (server, _client) = pair(Some(4096)).await;
        let outlet = Arc::new(live(server, 8));
        let big = "f".repeat(200_000);
        assert_eq!(outlet.offer(&[event(1, &big), event(2, &big)]), 2);
        let mut io = ViewerIo::new(tokio::io::empty(), outlet.clone());
        let mut cx = Context::from_waker(Waker::noop());
        // A ping, as tungstenite writes and flushes it.
        let ping = [0x89, 0x00];
        assert!(matches!(
            Pin::new(&mut io).poll_write(&mut cx, &ping),
            Poll::Ready(Ok(2))
        ));
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            outlet.lock().queue.len(),
            3,
            "queued behind the hub's frames"
        );
    }

    #[tokio::test]
    async fn a_viewer_claiming_to_be_ahead_is_held_to_the_channel() {
        let (server, mut client) = pair(None).await;
        let outlet = Outlet::new(
            server,
            1000,
            Limit {
                frames: 8,
                bytes: 1 << 20,
            },
        );
        outlet.clamp_last_seq(4);
        assert_eq!(outlet.begin_catch_up(), 4);
        assert!(outlet.go_live(|| None));
        assert_eq!(outlet.offer(&[event(5, "five")]), 1);
        assert_eq!(texts(&mut client, 1).await, ["five"]);
    }

    #[tokio::test]
    async fn a_full_queue_leaves_events_to_the_store_and_sends_the_rest_whole_once_there_is_room() {
        let (server, mut client) = pair(Some(4096)).await;
        let outlet = live(server, 2);
        let big = "y".repeat(60_000);
        // The client reads nothing: the sockets fill, then the queue.
        let mut seq = 0;
        while seq < 1000 && outlet.offer(&[event(seq + 1, &big)]) == 1 {
            seq += 1;
        }
        assert!(seq < 1000, "the outlet never filled up");
        assert!(outlet.lock().queue.len() <= 2);
        // Behind, but what waits goes out first.
        assert_eq!(outlet.offer(&[event(seq + 2, "later")]), 0);
        // Everything taken arrives, whole and in order, once the client reads.
        let reader = tokio::spawn(async move {
            let texts = texts(&mut client, seq as usize).await;
            (texts, client)
        });
        let asked = tokio::time::timeout(PATIENCE, outlet.attention())
            .await
            .expect("the session is woken once the queue is out");
        assert_eq!(asked, Attention::CatchUp);
        assert_eq!(
            outlet.begin_catch_up(),
            seq,
            "the store is read after the last taken"
        );
        let (texts, _client) = reader.await.unwrap();
        assert!(texts.iter().all(|text| *text == big));
    }

    /// A waker that says when it is woken.
    struct Told(tokio::sync::Notify);

    impl futures::task::ArcWake for Told {
        fn wake_by_ref(told: &Arc<Self>) {
            told.0.notify_one();
        }
    }

    #[tokio::test]
    async fn a_frame_the_socket_took_in_part_wakes_the_session_once_there_is_room() {
        let (server, mut client) = pair(Some(4096)).await;
        let outlet = live(server, 4);
        let told = Arc::new(Told(tokio::sync::Notify::new()));
        let waker = futures::task::waker(told.clone());
        assert_eq!(
            outlet.poll_attention(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        // Far more than the sockets hold: the hub's write is taken in part.
        assert_eq!(outlet.offer(&[event(1, &"w".repeat(1_000_000))]), 1);
        assert_eq!(outlet.lock().queue.len(), 1);
        // Nothing polls the outlet now; the client reads, and the session must hear of it.
        let reader = tokio::spawn(async move { texts(&mut client, 1).await });
        tokio::time::timeout(PATIENCE, told.0.notified())
            .await
            .expect("the session is woken when the socket has room");
        loop {
            let _ = outlet.poll_attention(&mut Context::from_waker(&waker));
            if outlet.lock().queue.is_empty() {
                break;
            }
            tokio::time::timeout(PATIENCE, told.0.notified())
                .await
                .expect("and again, until the frame is out");
        }
        assert_eq!(reader.await.unwrap()[0].len(), 1_000_000);
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_for_a_whole_look_is_stalled() {
        let (server, _client) = pair(Some(4096)).await;
        let outlet = live(server, 4);
        let big = "z".repeat(60_000);
        let mut seq = 0;
        while outlet.lock().queue.is_empty() {
            seq += 1;
            outlet.offer(&[event(seq, &big)]);
        }
        assert!(!outlet.stalled(), "it took frames since the last look");
        assert!(outlet.stalled());
    }

    #[tokio::test]
    async fn a_closed_outlet_takes_nothing_from_the_hub_and_a_deleted_one_says_so() {
        let (server, mut client) = pair(None).await;
        let outlet = live(server, 8);
        outlet.delete();
        assert_eq!(attention(&outlet), Poll::Ready(Attention::Deleted));
        assert_eq!(outlet.offer(&[event(1, "one")]), 0);
        outlet.close();
        // The session's own frames (its close) still go out.
        outlet.send(text_frame("bye"), None).await.unwrap();
        assert_eq!(texts(&mut client, 1).await, ["bye"]);
    }

    #[tokio::test]
    async fn text_frames_of_every_length_encoding_read_back_as_sent() {
        let (server, mut client) = pair(None).await;
        let outlet = live(server, 8);
        let lengths = [0, 1, 125, 126, 127, 65_535, 65_536, 100_000];
        for (seq, len) in (1..).zip(lengths) {
            assert_eq!(outlet.offer(&[event(seq, &"a".repeat(len))]), 1);
        }
        let read: Vec<usize> = texts(&mut client, lengths.len())
            .await
            .iter()
            .map(String::len)
            .collect();
        assert_eq!(read, lengths);
    }
}
