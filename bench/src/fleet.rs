//! Many WebSocket viewers at once, and the messages the benchmark sends them.
//!
//! A benchmark message carries its number and the time it was sent (`@k=… @t=…`, Unix
//! nanoseconds, the same clock as the viewers'), padded to a fixed size. Each viewer notes,
//! per message, how long it took to arrive; nothing else is parsed, so the load generator
//! stays cheap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, stream};
use tokio::{sync::watch, task::JoinSet};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::WebSocketConfig,
};

/// One arrival: which message, and how long it took (nanoseconds).
pub type Arrival = (u32, u64);

pub struct Fleet {
    viewers: JoinSet<Vec<Arrival>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Connects `count` viewers to `url` (with `Authorization: Bearer key` if given), a few
    /// hundred at a time; returns once every one is connected.
    pub async fn connect(url: &str, key: Option<&str>, count: usize) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut fleet = Self {
            viewers: JoinSet::new(),
            stop,
        };
        fleet.add(url, key, count, &stopped).await?;
        Ok(fleet)
    }

    /// Connects `count` more viewers.
    pub async fn grow(&mut self, url: &str, key: Option<&str>, count: usize) -> anyhow::Result<()> {
        let stopped = self.stop.subscribe();
        self.add(url, key, count, &stopped).await
    }

    async fn add(
        &mut self,
        url: &str,
        key: Option<&str>,
        count: usize,
        stopped: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let connections = stream::iter(0..count)
            .map(|_| async {
                let mut request = url.into_client_request()?;
                if let Some(key) = key {
                    request
                        .headers_mut()
                        .insert("Authorization", format!("Bearer {key}").parse()?);
                }
                let (socket, _) = tokio_tungstenite::connect_async_with_config(
                    request,
                    Some(viewer_config()),
                    false,
                )
                .await?;
                anyhow::Ok(socket)
            })
            .buffer_unordered(200)
            .collect::<Vec<_>>()
            .await;
        for socket in connections {
            let mut socket = socket?;
            let mut stopped = stopped.clone();
            self.viewers.spawn(async move {
                let mut arrivals = Vec::new();
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        message = socket.next() => match message {
                            Some(Ok(Message::Text(text))) => {
                                if let Some(arrival) = arrival(&text) {
                                    arrivals.push(arrival);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
                arrivals
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.viewers.len()
    }

    /// Disconnects every viewer and returns what each saw arrive.
    pub async fn finish(self) -> Vec<Vec<Arrival>> {
        let _ = self.stop.send(true);
        self.viewers.join_all().await
    }
}

/// A viewer reads small frames: a read buffer the size of tungstenite's default (128 KiB)
/// is zeroed before every read, which made the load generator, not the server, the slowest
/// part of fanout (over half of its time went to `memset`).
fn viewer_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// A benchmark message of `size` bytes: number `k`, sent now.
pub fn message(k: u32, size: usize) -> String {
    let mut text = format!("@k={k} @t={} ", now_nanos());
    while text.len() < size {
        text.push('x');
    }
    text
}

fn arrival(frame: &str) -> Option<Arrival> {
    let k = number_after(frame, "@k=")?;
    let sent = number_after(frame, "@t=")?;
    Some((k as u32, now_nanos().saturating_sub(sent)))
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_found_again_in_a_frame_that_wraps_it() {
        let text = message(42, 200);
        assert_eq!(text.len(), 200);
        let frame = serde_json::json!({"type": "message", "content": text}).to_string();
        let (k, latency) = arrival(&frame).unwrap();
        assert_eq!(k, 42);
        assert!(latency < 10_000_000_000);
        assert_eq!(arrival(r#"{"type":"hello"}"#), None);
    }
}
