//! Several processes, one database. NATS carries what has to cross processes:
//!
//! - **Live frames.** Everything a process's hub publishes goes out on
//!   `skein.channel.<channel id>`. A process subscribes to a channel's subject only while it
//!   has viewers of that channel, from before they read the store (subscribed and flushed),
//!   and replays what the others publish there into its own hub, which hands it to those
//!   viewers: what a process receives grows with what is watched there, not with all that
//!   runs. Viewers dedupe by `seq` and fill gaps from the store, so a frame lost on the way
//!   costs a catch-up, never an event.
//! - **Turns in progress.** A process that begins watching a channel asks on
//!   `skein.turns.<channel id>`; the process running its collaboration publishes the turn in
//!   progress on the channel's subject again, after what it published before, so that a
//!   viewer joining mid-turn is told whose turn it is.
//! - **Requests** for a collaboration another process runs (stop, delete, a person's
//!   message) go to `skein.process.<owner id>` and are answered by that process's engine.
//! - **Accounts' feeds.** Nudges to those following an account's collaborations changing
//!   (`GET /events`) go out on `skein.account.<account id>` and are applied to the feed of
//!   every other process; the changes themselves are read from the store.
//! - **Revoked keys.** A process that revokes a key says so on `skein.keys.revoked`; every
//!   process then drops the key from its key cache and closes its streams, as the revoking
//!   process did.
//!
//! The frame text travels as the payload, untouched; what it is travels in headers, so
//! nothing is parsed or serialized again on the way.

use std::{sync::Arc, time::Duration};

use async_nats::{Client, HeaderMap, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use secrecy::ExposeSecret;

use crate::{
    config::NatsAuth,
    engine::{Engine, Relay, Reply, Request},
    live::{Hub, Nudge, Publication, Watch},
    tasks::Tasks,
    telemetry,
};

const CHANNEL_SUBJECTS: &str = "skein.channel";
const PROCESS_SUBJECTS: &str = "skein.process";
const REVOKED_KEYS: &str = "skein.keys.revoked";
const ACCOUNT_SUBJECTS: &str = "skein.account";
const TURN_ASKS: &str = "skein.turns";
/// How long a relayed request may take: the other process answers once its runner has acted
/// (stored the person's message, or the end).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long revoking a key waits for NATS to take the announcement.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

const ORIGIN: &str = "Skein-Origin";
const KIND: &str = "Skein-Kind";
const SEQ: &str = "Skein-Seq";
const TURN: &str = "Skein-Turn";

pub struct Cluster {
    client: Client,
    owner: Uuid,
    /// The links' workers, and the requests being answered.
    tasks: Tasks,
    /// Fired last on shutdown: the exporter then sends what is queued and flushes, and the
    /// other workers stop listening.
    done: CancellationToken,
}

impl Cluster {
    /// Connects to NATS as the process `owner` (the engine's lease owner id), with `auth`
    /// besides what the URL says. Its workers run on a group of `tasks`.
    pub async fn connect(
        url: &str,
        auth: &NatsAuth,
        owner: Uuid,
        tasks: &Tasks,
    ) -> anyhow::Result<Self> {
        let shown = without_password(url);
        let mut options = async_nats::ConnectOptions::new().name(format!("skein {owner}"));
        // Credentials in the URL (`nats://user:pass@host`) are given as credentials: the
        // client does not read them from the URL itself.
        let mut url = url.to_owned();
        if let Ok(mut parsed) = url::Url::parse(&url)
            && !parsed.username().is_empty()
        {
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(parsed.username());
            let password = decode(parsed.password().unwrap_or_default());
            options = options.user_and_password(user, password);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            url = parsed.to_string();
        }
        if let Some(token) = &auth.token {
            options = options.token(token.expose_secret().to_owned());
        }
        if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        if let Some(path) = &auth.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        }
        if let Some(path) = &auth.ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &auth.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .require_tls(auth.require_tls)
            .connect(url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("connecting to NATS at {shown}: {e}"))?;
        Ok(Self {
            client,
            owner,
            tasks: tasks.group(),
            done: CancellationToken::new(),
        })
    }

    /// A relay for the engine: requests reach other processes through this connection.
    pub fn relay(&self) -> Arc<dyn Relay> {
        Arc::new(NatsRelay {
            client: self.client.clone(),
        })
    }

    /// Tells the other processes of keys revoked here, through this connection.
    pub fn revocations(&self) -> Revocations {
        Revocations {
            client: self.client.clone(),
        }
    }

    /// Starts carrying the hub's frames out and other processes' frames in, answering
    /// requests with `engine`, and calling `revoked` with each key another process revoked.
    /// Subscriptions are in place when this returns.
    pub async fn start(
        &mut self,
        hub: Arc<Hub>,
        engine: Engine,
        revoked: impl Fn(Uuid) + Send + 'static,
    ) -> anyhow::Result<()> {
        let asks = self
            .client
            .subscribe(format!("{TURN_ASKS}.*"))
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to asks for turns: {e}"))?;
        let requests = self
            .client
            .subscribe(format!("{PROCESS_SUBJECTS}.{}", self.owner))
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to requests: {e}"))?;
        let revocations = self
            .client
            .subscribe(REVOKED_KEYS)
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to revoked keys: {e}"))?;
        let nudges = self
            .client
            .subscribe(format!("{ACCOUNT_SUBJECTS}.*"))
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to accounts' feeds: {e}"))?;
        let exports = hub.export_to(crate::live::EXPORT_QUEUE);
        let nudges_out = hub.feed().export_to(crate::live::FEED_EXPORT_QUEUE);
        let (tasks, done) = (&self.tasks, &self.done);
        tasks.spawn_essential(
            "cluster export",
            export(
                self.client.clone(),
                self.owner,
                exports,
                hub.clone(),
                done.clone(),
            ),
        );
        tasks.spawn_essential(
            "cluster feed export",
            export_nudges(self.client.clone(), self.owner, nudges_out, done.clone()),
        );
        tasks.spawn_essential(
            "cluster feed import",
            import_nudges(until(done, nudges), self.owner, hub.clone()),
        );
        tasks.spawn_essential(
            "cluster watches",
            watch_channels(
                self.client.clone(),
                self.owner,
                hub.watched_by(),
                hub.clone(),
                (tasks.clone(), done.clone()),
            ),
        );
        tasks.spawn_essential("cluster turn asks", hear_asks(until(done, asks), hub));
        let answering = answer(
            self.client.clone(),
            until(done, requests),
            engine,
            tasks.clone(),
        );
        tasks.spawn_essential("cluster requests", answering);
        tasks.spawn_essential(
            "cluster revocations",
            hear_revocations(until(done, revocations), revoked),
        );
        Ok(())
    }

    /// After the engine has stopped: sends the frames still queued, stops listening, and
    /// waits for the requests being answered.
    pub async fn close(self) {
        self.done.cancel();
        self.tasks.wait().await;
    }
}

/// Announces revoked keys to the other processes.
#[derive(Clone)]
pub struct Revocations {
    client: Client,
}

impl Revocations {
    /// Sends the word and waits until it has left. Best effort: a process that misses it
    /// still refuses the key once its cached entry is a second old.
    pub async fn announce(&self, key: Uuid) {
        let payload = Bytes::from(key.to_string());
        let send = async {
            self.client.publish(REVOKED_KEYS, payload).await?;
            self.client.flush().await?;
            Ok::<_, anyhow::Error>(())
        };
        // With NATS unreachable, the flush would wait for it: the revocation itself is
        // stored already, so the request does not wait long.
        let sent = tokio::time::timeout(ANNOUNCE_TIMEOUT, send)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("NATS did not take it in time")));
        if let Err(error) = sent {
            tracing::warn!(%key, error = format!("{error:#}"), "announcing a revoked key failed");
        }
    }
}

/// The URL as it may be shown: without a password it carries.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("…"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A subscription's messages until `done` fires.
fn until(
    done: &CancellationToken,
    subscription: async_nats::Subscriber,
) -> impl Stream<Item = Message> + Unpin + Send + 'static {
    Box::pin(subscription.take_until(done.clone().cancelled_owned()))
}

async fn hear_revocations(
    mut announced: impl Stream<Item = Message> + Unpin,
    revoked: impl Fn(Uuid),
) {
    while let Some(message) = announced.next().await {
        match std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| Uuid::parse_str(text).ok())
        {
            Some(key) => revoked(key),
            None => tracing::warn!("ignoring a malformed key revocation from NATS"),
        }
    }
}

struct NatsRelay {
    client: Client,
}

#[async_trait]
impl Relay for NatsRelay {
    async fn forward(&self, owner: Uuid, request: &Request) -> Option<Reply> {
        let payload = Bytes::from(serde_json::to_vec(request).ok()?);
        let subject = format!("{PROCESS_SUBJECTS}.{owner}");
        let asked = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(subject, payload));
        match asked.await {
            Ok(Ok(message)) => serde_json::from_slice(&message.payload).ok(),
            // No responders: the owner is gone, and its lease will lapse.
            Ok(Err(error)) => {
                tracing::debug!(%owner, %error, "a relayed request got no answer");
                None
            }
            Err(_) => {
                tracing::warn!(%owner, "a relayed request timed out");
                None
            }
        }
    }
}

/// Carries what the hub publishes to NATS, in order, and then tells of the channels whose
/// publications were dropped while the queue was full.
async fn export(
    client: Client,
    owner: Uuid,
    mut exports: mpsc::Receiver<(Uuid, Publication)>,
    hub: Arc<Hub>,
    done: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            next = exports.recv() => next,
            _ = done.cancelled() => None,
        };
        // Biased: whatever is queued goes out before `done` ends the loop.
        let Some((channel_id, publication)) = next else {
            break;
        };
        let lost = if exports.is_empty() {
            hub.take_lost()
        } else {
            Vec::new()
        };
        let marks = lost.into_iter().map(|channel| (channel, Publication::Lost));
        for (channel_id, publication) in std::iter::once((channel_id, publication)).chain(marks) {
            let (headers, payload) = encode(owner, &publication);
            let subject = format!("{CHANNEL_SUBJECTS}.{channel_id}");
            if let Err(error) = client.publish_with_headers(subject, headers, payload).await {
                tracing::warn!(%error, "publishing a frame to NATS failed");
            }
        }
    }
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "flushing NATS failed");
    }
}

/// Carries each channel that gains an audience here (see [`Watch`]) for as long as it has
/// one, each on a task of its own.
async fn watch_channels(
    client: Client,
    owner: Uuid,
    mut watches: mpsc::UnboundedReceiver<Watch>,
    hub: Arc<Hub>,
    (tasks, done): (Tasks, CancellationToken),
) {
    loop {
        let watch = tokio::select! {
            watch = watches.recv() => watch,
            _ = done.cancelled() => None,
        };
        let Some(watch) = watch else { break };
        let carrying = carry(client.clone(), owner, watch, hub.clone(), done.clone());
        tasks.spawn("channel carrier", carrying);
    }
}

/// Subscribes to one channel's frames, says so once NATS has the subscription, asks whoever
/// runs it for the turn in progress, and applies what other processes publish there to the
/// audience until it is gone.
async fn carry(client: Client, owner: Uuid, watch: Watch, hub: Arc<Hub>, done: CancellationToken) {
    let channel_id = watch.channel_id;
    let subscribing = async {
        let frames = client
            .subscribe(format!("{CHANNEL_SUBJECTS}.{channel_id}"))
            .await?;
        // Once NATS answers the flush, it has the subscription: nothing published after
        // this is missed, and the viewers may read the store.
        client.flush().await?;
        anyhow::Ok(frames)
    };
    let mut frames = tokio::select! {
        subscribed = subscribing => match subscribed {
            Ok(frames) => frames,
            Err(error) => {
                tracing::warn!(%channel_id, error = format!("{error:#}"), "subscribing to a channel's frames failed");
                return;
            }
        },
        _ = watch.gone.cancelled() => return,
        _ = done.cancelled() => return,
    };
    // A turn told of while this process last watched the channel is stale by now.
    hub.forget_carried_turn(channel_id, false);
    watch.carried();
    let ask = client.publish(format!("{TURN_ASKS}.{channel_id}"), Bytes::new());
    if let Err(error) = ask.await {
        tracing::debug!(%channel_id, %error, "asking for the turn in progress failed");
    }
    loop {
        let message = tokio::select! {
            message = frames.next() => message,
            _ = watch.gone.cancelled() => None,
            _ = done.cancelled() => None,
        };
        let Some(message) = message else { break };
        telemetry::cluster_frame_received();
        match decode(&message) {
            // Our own frames reached our viewers when they were published.
            Some((origin, ..)) if origin == owner => {}
            Some((_, channel_id, publication)) => {
                hub.apply_carried(channel_id, watch.audience(), publication)
            }
            None => {
                tracing::warn!(subject = %message.subject, "ignoring a malformed frame from NATS")
            }
        }
    }
    if let Err(error) = frames.unsubscribe().await {
        tracing::debug!(%channel_id, %error, "unsubscribing from a channel's frames failed");
    }
    if watch.gone.is_cancelled() {
        hub.forget_carried_turn(channel_id, true);
    }
}

/// Answers other processes that began watching a channel: the turn in progress goes out
/// again if this process published it.
async fn hear_asks(mut asks: impl Stream<Item = Message> + Unpin, hub: Arc<Hub>) {
    while let Some(ask) = asks.next().await {
        let channel = ask
            .subject
            .strip_prefix(TURN_ASKS)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|id| id.parse::<Uuid>().ok());
        match channel {
            Some(channel_id) => hub.resend_turn(channel_id),
            None => tracing::warn!(subject = %ask.subject, "ignoring a malformed ask for a turn"),
        }
    }
}

async fn answer(
    client: Client,
    mut requests: impl Stream<Item = Message> + Unpin,
    engine: Engine,
    tasks: Tasks,
) {
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let (client, engine) = (client.clone(), engine.clone());
        // Each on its own: a post waits for the runner, which must not hold up a stop.
        tasks.spawn("relayed request", async move {
            let reply = match serde_json::from_slice::<Request>(&message.payload) {
                Ok(request) => engine.answer(request).await,
                Err(error) => {
                    tracing::warn!(%error, "ignoring a malformed relayed request");
                    Reply::NotHere
                }
            };
            let Ok(payload) = serde_json::to_vec(&reply) else {
                return;
            };
            if let Err(error) = client.publish(reply_to, payload.into()).await {
                tracing::warn!(%error, "answering a relayed request failed");
            }
        });
    }
}

/// Carries the feed's nudges to NATS, in order.
async fn export_nudges(
    client: Client,
    owner: Uuid,
    mut nudges: mpsc::Receiver<(Uuid, Nudge)>,
    done: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            next = nudges.recv() => next,
            _ = done.cancelled() => None,
        };
        let Some((account, nudge)) = next else { break };
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, owner.to_string());
        let payload = Bytes::from(serde_json::to_vec(&nudge).expect("a nudge serializes"));
        let subject = format!("{ACCOUNT_SUBJECTS}.{account}");
        if let Err(error) = client.publish_with_headers(subject, headers, payload).await {
            tracing::warn!(%error, "publishing a feed nudge to NATS failed");
        }
    }
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "flushing NATS failed");
    }
}

async fn import_nudges(
    mut nudges: impl Stream<Item = Message> + Unpin,
    owner: Uuid,
    hub: Arc<Hub>,
) {
    while let Some(message) = nudges.next().await {
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ORIGIN))
            .and_then(|value| value.as_str().parse::<Uuid>().ok());
        let account = message
            .subject
            .strip_prefix(ACCOUNT_SUBJECTS)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|id| id.parse::<Uuid>().ok());
        let nudge = serde_json::from_slice::<Nudge>(&message.payload).ok();
        match (origin, account, nudge) {
            // Our own reached our followers when given.
            (Some(origin), ..) if origin == owner => {}
            (Some(_), Some(account), Some(nudge)) => hub.feed().apply(account, nudge),
            _ => {
                tracing::warn!(subject = %message.subject, "ignoring a malformed feed nudge from NATS")
            }
        }
    }
}

fn encode(owner: Uuid, publication: &Publication) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, owner.to_string());
    let (kind, text) = match publication {
        Publication::Event { seq, text } => {
            headers.insert(SEQ, seq.to_string());
            ("event", Some(text))
        }
        Publication::Delta { after_seq, text } => {
            headers.insert(SEQ, after_seq.to_string());
            ("delta", Some(text))
        }
        Publication::Turn {
            after_seq,
            turn_id,
            text,
        } => {
            headers.insert(SEQ, after_seq.to_string());
            headers.insert(TURN, turn_id.to_string());
            ("turn", Some(text))
        }
        Publication::EndTurn { turn_id } => {
            headers.insert(TURN, turn_id.to_string());
            ("end_turn", None)
        }
        Publication::EndTurns => ("end_turns", None),
        Publication::Lost => ("lost", None),
        Publication::Closed => ("closed", None),
    };
    headers.insert(KIND, kind);
    let payload = text
        .map(|text| Bytes::copy_from_slice(text.as_str().as_bytes()))
        .unwrap_or_default();
    (headers, payload)
}

/// The origin, the channel and the frame of a message `encode` made.
fn decode(message: &Message) -> Option<(Uuid, Uuid, Publication)> {
    let channel_id = message
        .subject
        .strip_prefix(CHANNEL_SUBJECTS)?
        .strip_prefix('.')?
        .parse()
        .ok()?;
    let headers = message.headers.as_ref()?;
    let header = |name: &str| headers.get(name).map(|value| value.as_str());
    let origin = header(ORIGIN)?.parse().ok()?;
    let seq = || header(SEQ)?.parse::<i64>().ok();
    let turn_id = || header(TURN)?.parse::<Uuid>().ok();
    let text = || {
        String::from_utf8(message.payload.to_vec())
            .ok()
            .map(Into::into)
    };
    let publication = match header(KIND)? {
        "event" => Publication::Event {
            seq: seq()?,
            text: text()?,
        },
        "delta" => Publication::Delta {
            after_seq: seq()?,
            text: text()?,
        },
        "turn" => Publication::Turn {
            after_seq: seq()?,
            turn_id: turn_id()?,
            text: text()?,
        },
        "end_turn" => Publication::EndTurn {
            turn_id: turn_id()?,
        },
        "end_turns" => Publication::EndTurns,
        "lost" => Publication::Lost,
        "closed" => Publication::Closed,
        _ => return None,
    };
    Some((origin, channel_id, publication))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel_id: Uuid, (headers, payload): (HeaderMap, Bytes)) -> Message {
        Message {
            subject: format!("{CHANNEL_SUBJECTS}.{channel_id}").into(),
            reply: None,
            length: payload.len(),
            payload,
            headers: Some(headers),
            status: None,
            description: None,
        }
    }

    #[test]
    fn every_frame_survives_the_trip() {
        let (owner, channel_id, turn_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let publications = [
            Publication::Event {
                seq: 7,
                text: r#"{"type":"message","seq":7}"#.into(),
            },
            Publication::Delta {
                after_seq: 6,
                text: r#"{"type":"delta","text":"hé"}"#.into(),
            },
            Publication::Turn {
                after_seq: 6,
                turn_id,
                text: r#"{"type":"turn"}"#.into(),
            },
            Publication::EndTurn { turn_id },
            Publication::EndTurns,
            Publication::Lost,
            Publication::Closed,
        ];
        for publication in publications {
            let decoded = decode(&message(channel_id, encode(owner, &publication)));
            assert_eq!(decoded, Some((owner, channel_id, publication)));
        }
    }

    #[test]
    fn a_message_missing_what_its_kind_needs_is_refused() {
        let (owner, channel_id) = (Uuid::new_v4(), Uuid::new_v4());
        let (mut headers, payload) = encode(
            owner,
            &Publication::Event {
                seq: 1,
                text: "{}".into(),
            },
        );
        headers.insert(SEQ, "not a number");
        assert_eq!(decode(&message(channel_id, (headers, payload))), None);
        let mut stray = message(channel_id, encode(owner, &Publication::EndTurns));
        stray.subject = "skein.channel.nope".into();
        assert_eq!(decode(&stray), None);
    }
}
