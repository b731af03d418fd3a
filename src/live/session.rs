//! One viewer's WebSocket: `hello`, then every stored event after `after_seq`, then live
//! frames, with no gap and no duplicate at the seam.
//!
//! The session joins the channel's audience *before* reading the store, with its outlet
//! catching up: an event published meanwhile is either in what the store returns or marks
//! the outlet behind, and the session reads the store again before it lets the hub write
//! (see [`Outlet::go_live`]). Once live, the hub writes to the viewer directly and this
//! task sleeps; it wakes for the viewer's own frames, pings, and what its outlet asks of
//! it: finishing a write the socket had no room for, catching up from the store after
//! events went past, a deleted channel.
//!
//! A viewer may also speak as a human participant with a `{"type": "message"}` frame; the
//! session hands it to the [`Speak`] it was given and answers only a refusal.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, future::BoxFuture};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tungstenite::{
    Message,
    protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
};

use super::{
    Close, Hub, StreamPass,
    outlet::{Attention, Limit, Outlet, ViewerIo, text_frame},
};
use crate::{
    domain::{ErrorCode, Frame},
    store::{ChannelInfo, Store},
    telemetry,
};

/// Events read from the store at once while catching a viewer up. A page is held until it
/// is sent, and shared meanwhile with the viewers reading the same one (see `pages`): 256
/// keeps a lone viewer of a 100k-event channel above 250k events/s (BENCHMARKS.md,
/// `catchup`).
const CATCH_UP_PAGE: u32 = 256;
/// A stream's read buffer, and the most read from its socket at once: a viewer sends
/// pongs and, rarely, a message, and an idle stream should hold next to nothing.
const READ_BUFFER: usize = 128;
/// How long a stream closed for an oversized message stays open for its close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(250);
/// The longest a close frame may wait for a peer that does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a viewer speaks as a human participant: the API layer checks and posts what a
/// viewer said; an error is a code and a message for an `error` frame. Handed in so that
/// this module stays about streaming. One is shared by every stream: what differs between
/// viewers travels in the [`Speech`].
pub type Speak =
    Arc<dyn Fn(Speech) -> BoxFuture<'static, Result<(), (ErrorCode, String)>> + Send + Sync>;

/// What a viewer said, and where.
pub struct Speech {
    pub channel: ChannelInfo,
    /// Whether the viewer's key may write, which speaking needs.
    pub may_write: bool,
    /// The frame's `sender`, if any.
    pub sender: Option<String>,
    pub content: String,
}

/// A viewer's connection, as the WebSocket protocol reads and writes it.
type Socket = WebSocketStream<ViewerIo<tokio::io::ReadHalf<TokioIo<Upgraded>>>>;

/// How a stream's connection is set up.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub ping_interval: Duration,
    /// The largest message or frame a viewer may send.
    pub max_message_bytes: usize,
    /// Frames, and bytes of them, that may wait for a viewer's socket; one that falls
    /// further behind is caught up from the store instead.
    pub queued_frames: usize,
    pub queued_bytes: usize,
}

pub struct Session {
    pub speak: Speak,
    /// Whether the viewer's key may write, so speak.
    pub may_write: bool,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub channel: ChannelInfo,
    pub after_seq: i64,
    pub settings: StreamSettings,
    pub shutdown: CancellationToken,
    /// The stream's slot under its key's cap; its token fires when the key is revoked or
    /// the server shuts down.
    pub pass: StreamPass,
}

/// Why a session ended: the peer went, or the server closes it, saying why.
enum End {
    Peer,
    Closed(Close),
}

impl Session {
    /// Serves the viewer until either side ends the stream. An open stream is mostly this
    /// future waiting, so it is kept small: the session is held once (an `async fn` would
    /// hold its arguments twice), and what runs rarely (catching up, a viewer's message) is
    /// boxed while it runs rather than reserved for the stream's life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice, and this future lives as long as the stream"
    )]
    pub fn run(self: Box<Self>, upgraded: Upgraded) -> impl Future<Output = ()> + Send {
        async move {
            let (outlet, mut socket) = open(upgraded, self.after_seq, &self.settings).await;
            self.serve_until_closed(&mut socket, &outlet).await
        }
    }

    async fn serve_until_closed(&self, socket: &mut Socket, outlet: &Arc<Outlet>) {
        let membership = self.hub.join(self.channel.id, outlet.clone());
        membership.carried().await;
        let connected = telemetry::ViewerConnected::new();
        let end = self.serve(socket, outlet).await;
        outlet.close();
        drop(membership);
        drop(connected);
        if let End::Closed(close) = end {
            Box::pin(close_stream(socket, outlet, close)).await;
        }
    }

    async fn serve(&self, socket: &mut Socket, outlet: &Outlet) -> End {
        if let Err(end) = Box::pin(self.begin(outlet)).await {
            return end;
        }
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        // After a long catch-up, one late tick, not a burst that outruns the pong.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut peer_alive = true;
        loop {
            // What an idle stream holds while it waits is this select's state; what runs
            // rarely (catching up, a viewer's message, a ping) is boxed while it runs.
            tokio::select! {
                _ = self.pass.ended.cancelled() => return End::Closed(self.why_ended()),
                attention = outlet.attention() => match attention {
                    // Events went past (a gap, a full queue, a hub that lagged): the store
                    // has them all, and the turn frame it may have missed is in the hub.
                    Attention::CatchUp => {
                        telemetry::viewer_caught_up();
                        if let Err(end) = Box::pin(self.catch_up(outlet)).await {
                            return end;
                        }
                    }
                    Attention::Deleted => return End::Closed(Close::Deleted),
                    Attention::Broken => return End::Peer,
                },
                incoming = socket.next() => match incoming {
                    Some(Err(tungstenite::Error::Capacity(_))) => return End::Closed(Close::TooBig),
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::Peer,
                    Some(Ok(Message::Text(text))) => {
                        peer_alive = true;
                        if let Err(end) = Box::pin(self.answer(outlet, &text)).await {
                            return end;
                        }
                    }
                    Some(Ok(_)) => peer_alive = true,
                },
                _ = ping.tick() => {
                    // Frames waiting for a whole interval, and nothing taken: the viewer
                    // stopped reading. Waiting longer would only hold its frames.
                    if !peer_alive || outlet.stalled() {
                        telemetry::viewer_dropped();
                        tracing::debug!(channel = %self.channel.id, "viewer stopped reading or answering pings");
                        return End::Peer;
                    }
                    peer_alive = false;
                    let ping = socket.send(Message::Ping(Bytes::new()));
                    match Box::pin(tokio::time::timeout(self.settings.ping_interval, ping)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return End::Peer,
                    }
                }
            }
        }
    }

    /// Why the stream's pass ended: the server is shutting down, or the key was revoked.
    fn why_ended(&self) -> Close {
        if self.shutdown.is_cancelled() {
            Close::ShuttingDown
        } else {
            Close::KeyRevoked
        }
    }

    /// The stream's start: `hello`, then every stored event after `after_seq`.
    async fn begin(&self, outlet: &Outlet) -> Result<(), End> {
        // Read the channel again now that we are in its audience: its `last_seq` is then a
        // floor for everything the hub will offer.
        let channel = match self
            .store
            .get_channel(self.channel.account_id, self.channel.id)
            .await
        {
            Ok(Some(channel)) => channel,
            Ok(None) => return Err(End::Closed(Close::Deleted)),
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "reading a channel failed");
                return Err(End::Closed(Close::Failed));
            }
        };
        let hello = Frame::Hello {
            channel_id: channel.id,
            collaboration_id: channel.collaboration_id,
            status: channel.status,
            last_seq: channel.last_seq,
        }
        .text();
        self.send(outlet, text_frame(&hello), None).await?;
        outlet.clamp_last_seq(channel.last_seq);
        self.catch_up(outlet).await
    }

    /// A frame from the viewer. The stored message comes back through the stream like any
    /// other; only a refusal is answered here.
    async fn answer(&self, outlet: &Outlet, text: &str) -> Result<(), End> {
        match self.take_client_frame(text).await {
            Ok(()) => Ok(()),
            Err((code, message)) => {
                let frame = Frame::Error {
                    code,
                    message: &message,
                }
                .text();
                self.send(outlet, text_frame(&frame), None).await
            }
        }
    }

    /// Sends one of the session's own frames, unless the stream's key was revoked. A peer
    /// that does not take it within a ping interval has stopped reading: waiting longer
    /// would also keep this session from hearing shutdown.
    async fn send(&self, outlet: &Outlet, frame: Bytes, seq: Option<i64>) -> Result<(), End> {
        // Checked per frame, so a key revoked before or during a long catch-up sends no more.
        if self.pass.ended.is_cancelled() {
            return Err(End::Closed(self.why_ended()));
        }
        let sent = tokio::time::timeout(self.settings.ping_interval, outlet.send(frame, seq));
        match sent.await {
            Ok(Ok(())) => {
                telemetry::frames_sent(1);
                Ok(())
            }
            Ok(Err(_)) => Err(End::Peer),
            Err(_) => {
                telemetry::viewer_dropped();
                tracing::debug!(channel = %self.channel.id, "viewer stopped reading");
                Err(End::Peer)
            }
        }
    }

    /// Sends every stored event after the last one sent, page by page, until none went
    /// past meanwhile; then the outlet goes live, telling the viewer first whose turn it is.
    async fn catch_up(&self, outlet: &Outlet) -> Result<(), End> {
        loop {
            let mut last_sent = outlet.begin_catch_up();
            loop {
                // A long catch-up does not keep the session from hearing shutdown.
                if self.shutdown.is_cancelled() {
                    return Err(End::Closed(Close::ShuttingDown));
                }
                let (store, channel) = (&self.store, self.channel.id);
                let read = || store.read_events(channel, last_sent, CATCH_UP_PAGE);
                let page = match self
                    .hub
                    .pages()
                    .read(channel, last_sent, CATCH_UP_PAGE, read)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "catching a viewer up failed"
                        );
                        return Err(End::Closed(Close::Failed));
                    }
                };
                for (seq, wire) in page.events() {
                    last_sent = *seq;
                    self.send(outlet, wire.clone(), Some(*seq)).await?;
                }
                if !page.full() {
                    break;
                }
            }
            let turn = || Some(text_frame(&self.hub.current_turn(self.channel.id)?));
            if outlet.go_live(turn) {
                return Ok(());
            }
        }
    }

    /// A frame from the viewer: `{"type": "message", "content": …, "sender"?: …}` speaks
    /// as a human participant; anything else is refused.
    async fn take_client_frame(&self, text: &str) -> Result<(), (ErrorCode, String)> {
        let frame: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        if frame["type"] != "message" {
            return Err((
                ErrorCode::BadFrame,
                "expected a JSON object with a known `type`".into(),
            ));
        }
        let Some(content) = frame["content"].as_str() else {
            return Err((
                ErrorCode::BadFrame,
                "a message needs a `content` string".into(),
            ));
        };
        (self.speak)(Speech {
            channel: self.channel.clone(),
            may_write: self.may_write,
            sender: frame["sender"].as_str().map(str::to_owned),
            content: content.to_owned(),
        })
        .await
    }
}

/// Closes a stream that may not be opened, saying why: 1008 before any frame, with
/// `reason` for people (unknown channel, a bad ticket or key).
pub async fn refuse(upgraded: Upgraded, reason: &'static str, settings: StreamSettings) {
    let (outlet, mut socket) = open(upgraded, 0, &settings).await;
    outlet.close();
    send_close_frame(&mut socket, &outlet, Close::Refused.frame_code(), reason).await;
}

/// The connection split in two: the outlet writes, and the WebSocket reads (and writes
/// through the outlet what it sends of its own).
async fn open(
    upgraded: Upgraded,
    after_seq: i64,
    settings: &StreamSettings,
) -> (Arc<Outlet>, Socket) {
    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    let limit = Limit {
        frames: settings.queued_frames,
        bytes: settings.queued_bytes,
    };
    let outlet = Arc::new(Outlet::new(write, after_seq, limit));
    let config = WebSocketConfig::default()
        // Small: most viewers only listen, and every open stream holds this buffer. A
        // larger message from the viewer still arrives whole (the buffer grows for it),
        // read this much at a time.
        .read_buffer_size(READ_BUFFER)
        // Every frame goes to the outlet at once, which queues what the socket won't take.
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));
    let socket = WebSocketStream::from_raw_socket(
        ViewerIo::new(read, outlet.clone()),
        Role::Server,
        Some(config),
    )
    .await;
    (outlet, socket)
}

/// Closes the stream, saying why.
async fn close_stream(socket: &mut Socket, outlet: &Outlet, close: Close) {
    send_close_frame(socket, outlet, close.frame_code(), close.reason()).await;
    if close == Close::TooBig {
        // The rest of the oversized message is still unread: closing now would make the
        // kernel reset the connection, which can destroy the close frame on its way.
        // A moment's linger lets the peer read why it is being closed.
        tokio::time::sleep(CLOSE_LINGER).await;
    }
}

/// Sends the close frame: at once, since a closed outlet holds nothing but what it had
/// begun to write, and then waits (boundedly) until it has left.
async fn send_close_frame(
    socket: &mut Socket,
    outlet: &Outlet,
    code: CloseCode,
    reason: &'static str,
) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            outlet.drained().await;
        }
    })
    .await;
}
