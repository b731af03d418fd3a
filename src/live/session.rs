//! One viewer's WebSocket: `hello`, then every stored event after `after_seq`, then live
//! frames, with no gap and no duplicate at the seam.
//!
//! The session subscribes to the hub *before* reading the store, so an event committed while
//! the backlog is being sent is either in the backlog or in the subscription. Every event
//! frame is checked against the last `seq` sent: older ones are dropped, a jump is filled from
//! the store, and a lagged subscription is caught up from the store.
//!
//! A viewer may also speak as a human participant with a `{"type": "message"}` frame; the
//! session hands it to the [`Speak`] it was given and answers only a refusal.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{Frame, Hub, StreamPass};
use crate::{
    store::{ChannelInfo, Store},
    telemetry,
};

const CATCH_UP_PAGE: u32 = 500;
/// How long a stream closed for an oversized message stays open for its close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// How a viewer speaks as a human participant: given the frame's `sender` (if any) and
/// `content`, the API layer checks and posts; an error is a code and a message for an
/// `error` frame. Handed in so that this module stays about streaming.
pub type Speak = Arc<
    dyn Fn(Option<String>, String) -> BoxFuture<'static, Result<(), (String, String)>>
        + Send
        + Sync,
>;

pub struct Session {
    pub speak: Speak,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub channel: ChannelInfo,
    pub after_seq: i64,
    pub ping_interval: Duration,
    pub shutdown: CancellationToken,
    /// The stream's slot under its key's cap; its token fires when the key is revoked.
    pub pass: StreamPass,
}

/// Why a session ended, for the close frame.
enum End {
    Peer,
    Deleted,
    ShuttingDown,
    Revoked,
    /// The peer sent a message over the size limit.
    TooBig,
    Failed,
}

impl Session {
    /// Serves the viewer until either side ends the stream. An open stream is mostly this
    /// future waiting, so it is kept small: the session and the socket are held once (an
    /// `async fn` would hold its arguments twice), and what runs rarely (catching up, a
    /// viewer's message) is boxed while it runs rather than reserved for the stream's life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice, and this future lives as long as the stream"
    )]
    pub fn run(self: Box<Self>, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
        // The socket is used where it was captured: moving it into a local would store it
        // twice, as an `async fn` does.
        async move { self.serve_until_closed(&mut socket).await }
    }

    async fn serve_until_closed(&self, socket: &mut WebSocket) {
        let mut live = self.hub.subscribe(self.channel.id);
        let connected = telemetry::ViewerConnected::new();
        let end = self.serve(socket, &mut live).await;
        drop(connected);
        drop(live);
        self.hub.release(self.channel.id);
        let too_big = matches!(end, End::TooBig);
        let close = match end {
            End::Peer => None,
            End::Deleted => Some((close_code::NORMAL, "the collaboration was deleted")),
            End::ShuttingDown => Some((close_code::AWAY, "the server is shutting down")),
            End::Revoked => Some((close_code::POLICY, "the API key was revoked")),
            End::TooBig => Some((close_code::SIZE, "the message is larger than the limit")),
            End::Failed => Some((close_code::ERROR, "internal error")),
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        if too_big {
            // The rest of the oversized message is still unread: closing now would make the
            // kernel reset the connection, which can destroy the close frame on its way.
            // A moment's linger lets the peer read why it is being closed.
            tokio::time::sleep(CLOSE_LINGER).await;
        }
    }

    async fn serve(
        &self,
        socket: &mut WebSocket,
        live: &mut tokio::sync::broadcast::Receiver<Frame>,
    ) -> End {
        // Read the channel again now that we are subscribed: its `last_seq` is then a floor
        // for everything the subscription will carry.
        let channel = match self
            .store
            .get_channel(self.channel.account_id, self.channel.id)
            .await
        {
            Ok(Some(channel)) => channel,
            Ok(None) => return End::Deleted,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "reading a channel failed");
                return End::Failed;
            }
        };
        // Made into text at once: a `Value` kept in scope would stay allocated for as long
        // as the stream is open.
        let hello = json!({
            "type": "hello",
            "channel_id": channel.id,
            "collaboration_id": channel.collaboration_id,
            "status": channel.status,
            "last_seq": channel.last_seq,
        })
        .to_string();
        if let Err(end) = self.send(socket, Message::Text(hello.into())).await {
            return end;
        }
        // A viewer claiming to be ahead of the channel would otherwise drop live events.
        let mut last_sent = self.after_seq.min(channel.last_seq);
        if let Err(end) = Box::pin(self.catch_up(socket, &mut last_sent)).await {
            return end;
        }
        if let Err(end) = self.tell_turn(socket).await {
            return end;
        }
        let mut ping = tokio::time::interval(self.ping_interval);
        // After a long catch-up, one late tick, not a burst that outruns the pong.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut peer_alive = true;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return End::ShuttingDown,
                _ = self.pass.revoked.cancelled() => return End::Revoked,
                frame = live.recv() => {
                    let result = match frame {
                        Ok(Frame::Event { seq, .. }) if seq <= last_sent => Ok(()),
                        Ok(Frame::Event { seq, text }) if seq == last_sent + 1 => {
                            last_sent = seq;
                            self.send(socket, Message::Text(text)).await
                        }
                        // A gap (we missed a frame) or a lagged subscription: the store has it
                        // all, and the turn frame it may have missed is in the hub.
                        Ok(Frame::Event { .. }) | Err(RecvError::Lagged(_)) => {
                            telemetry::viewer_caught_up();
                            match Box::pin(self.catch_up(socket, &mut last_sent)).await {
                                Ok(()) => self.tell_turn(socket).await,
                                failed => failed,
                            }
                        }
                        // The turn's message is already out: its text would be a stale echo.
                        Ok(Frame::Delta { after_seq, .. }) if after_seq < last_sent => Ok(()),
                        Ok(Frame::Delta { text, .. }) => self.send(socket, Message::Text(text)).await,
                        Ok(Frame::Closed) | Err(RecvError::Closed) => return End::Deleted,
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Err(error)) if is_too_big(&error) => return End::TooBig,
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::Peer,
                    Some(Ok(Message::Text(text))) => {
                        peer_alive = true;
                        // The stored message comes back through the stream like any other;
                        // only a refusal is answered here.
                        if let Err((code, message)) = Box::pin(self.take_client_frame(&text)).await {
                            let frame = json!({"type": "error", "code": code, "message": message});
                            let reply = Message::Text(frame.to_string().into());
                            if let Err(end) = self.send(socket, reply).await {
                                return end;
                            }
                        }
                    }
                    Some(Ok(_)) => peer_alive = true,
                },
                _ = ping.tick() => {
                    if !peer_alive {
                        telemetry::viewer_dropped();
                        tracing::debug!(channel = %self.channel.id, "viewer stopped answering pings");
                        return End::Peer;
                    }
                    peer_alive = false;
                    if let Err(end) = self.send(socket, Message::Ping(Default::default())).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Sends one frame, unless the stream's key was revoked. A peer that does not take it
    /// within a ping interval has stopped reading: waiting longer would also keep this
    /// session from hearing shutdown.
    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), End> {
        // Checked per frame, so a key revoked before or during a long catch-up sends no more.
        if self.pass.revoked.is_cancelled() {
            return Err(End::Revoked);
        }
        match tokio::time::timeout(self.ping_interval, socket.send(message)).await {
            Ok(Ok(())) => {
                telemetry::frame_sent();
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

    /// Tells the viewer who has the turn now, if someone does. It may also come live: a
    /// harmless repeat, which viewers recognise by its `turn_id`.
    async fn tell_turn(&self, socket: &mut WebSocket) -> Result<(), End> {
        match self.hub.current_turn(self.channel.id) {
            Some(turn) => self.send(socket, Message::Text(turn)).await,
            None => Ok(()),
        }
    }

    /// A frame from the viewer: `{"type": "message", "content": …, "sender"?: …}` speaks
    /// as a human participant; anything else is refused.
    async fn take_client_frame(&self, text: &str) -> Result<(), (String, String)> {
        let frame: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        if frame["type"] != "message" {
            return Err((
                "bad_frame".into(),
                "expected a JSON object with a known `type`".into(),
            ));
        }
        let Some(content) = frame["content"].as_str() else {
            return Err((
                "bad_frame".into(),
                "a message needs a `content` string".into(),
            ));
        };
        let sender = frame["sender"].as_str().map(str::to_owned);
        (self.speak)(sender, content.to_owned()).await
    }

    /// Sends every stored event after `last_sent`, page by page, advancing `last_sent`.
    async fn catch_up(&self, socket: &mut WebSocket, last_sent: &mut i64) -> Result<(), End> {
        loop {
            let events = match self
                .store
                .read_events(self.channel.id, *last_sent, CATCH_UP_PAGE)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "catching a viewer up failed");
                    return Err(End::Failed);
                }
            };
            let full_page = events.len() == CATCH_UP_PAGE as usize;
            for event in events {
                *last_sent = event.seq;
                self.send(socket, Message::Text(event.frame.into())).await?;
            }
            if !full_page {
                return Ok(());
            }
        }
    }
}

/// Whether a read failed because the peer's message or frame was over the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
