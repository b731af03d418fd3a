//! A client of `GET /api/v1/events`: the response read as Server-Sent Events, one at a time.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{Response, StatusCode};
use serde_json::Value;

use super::{Api, PATIENCE};

/// One event: its name, its `id` if it has one, and its data as JSON.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<i64>,
    pub data: Value,
}

pub struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
    /// Whether the server sent a `retry:` field.
    pub retry_ms: Option<u64>,
}

impl Api {
    /// `GET /api/v1/events`, with `Last-Event-ID` when given, whatever it answers.
    pub async fn events_response(&self, last_event_id: Option<&str>) -> Response {
        let mut request = self
            .client
            .get(self.url("/api/v1/events"))
            .bearer_auth(&self.key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("GET /events")
    }

    /// The account's event stream, resumed after `last_event_id` when given.
    pub async fn events(&self, last_event_id: Option<i64>) -> EventStream {
        let id = last_event_id.map(|id| id.to_string());
        let response = self.events_response(id.as_deref()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            retry_ms: None,
        }
    }
}

impl EventStream {
    /// The next event, or `None` once the server ended the stream. Keep-alive comments are
    /// skipped. Fails the test after [`PATIENCE`] without one.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(PATIENCE, self.read())
            .await
            .expect("an event in time")
    }

    async fn read(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let (mut event, mut id, mut data) = ("message".to_owned(), None, None::<String>);
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.parse().expect("a numeric id")),
                "data" => {
                    let data = data.get_or_insert_with(String::new);
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "retry" => self.retry_ms = Some(value.parse().expect("retry in ms")),
                _ => {}
            }
        }
        let data = data?;
        Some(SseEvent {
            event,
            id,
            data: serde_json::from_str(&data).expect("JSON data"),
        })
    }

    /// Events up to and including the first named `name`.
    pub async fn until(&mut self, name: &str) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before `{name}`: {seen:?}"));
            let done = event.event == name;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Events up to and including the first `name` about the collaboration `id`.
    pub async fn until_about(&mut self, name: &str, id: &str) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.until(name).await;
            let done = event.last().unwrap().data["collaboration_id"] == id;
            seen.extend(event);
            if done {
                return seen;
            }
        }
    }
}
