//! `skein collab events`: the account's collaborations changing, followed live in the
//! terminal (`GET /events`), one line per event, until interrupted.
//!
//! A broken connection is opened again with `Last-Event-ID` = the last id printed, so no
//! change is printed twice or skipped; `--after` starts from a given one. `--json` prints
//! each event as `{"event", "id", "data"}`, one per line, for programs.

use std::io::Write;

use futures::StreamExt;
use serde_json::{Value, json};

use super::{CliError, client::Client};

pub(super) async fn follow(
    client: &Client,
    after: Option<i64>,
    as_json: bool,
) -> Result<(), CliError> {
    let mut last_id = after;
    let mut failures = 0;
    loop {
        let before = last_id;
        let lost = match session(client, &mut last_id, as_json).await {
            Ok(()) => "the server ended the stream".to_owned(),
            Err(Lost::ForGood(error)) => return Err(error),
            Err(Lost::ForNow(lost)) => lost,
        };
        super::watch::reconnect(&mut failures, last_id != before, &lost, as_json).await?;
    }
}

enum Lost {
    /// Worth trying again: the connection broke or the server is restarting.
    ForNow(String),
    ForGood(CliError),
}

async fn session(client: &Client, last_id: &mut Option<i64>, as_json: bool) -> Result<(), Lost> {
    let response = client
        .open_events(*last_id)
        .await
        .map_err(|error| match error {
            CliError::Unreachable(reason) => Lost::ForNow(reason),
            CliError::Api { status, .. } if status >= 500 => Lost::ForNow(error.message()),
            other => Lost::ForGood(other),
        })?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Lost::ForNow(format!("the stream broke off: {e}")))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(event) = parse(&block) {
                if let Some(id) = event.id {
                    *last_id = Some(id);
                }
                print(&event, as_json);
            }
        }
    }
    Ok(())
}

struct Event {
    name: String,
    id: Option<i64>,
    data: Value,
}

/// One block of the stream; `None` for a keep-alive or a `retry` alone.
fn parse(block: &str) -> Option<Event> {
    let (mut name, mut id, mut data) = ("message".to_owned(), None, None::<String>);
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_owned(),
            "id" => id = value.parse().ok(),
            "data" => {
                let data = data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    Some(Event {
        name,
        id,
        data: serde_json::from_str(&data?).ok()?,
    })
}

fn print(event: &Event, as_json: bool) {
    let line = if as_json {
        json!({"event": event.name, "id": event.id, "data": event.data}).to_string()
    } else {
        describe(event)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The event for people: what happened to which collaboration.
fn describe(event: &Event) -> String {
    let data = &event.data;
    let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
    let collaboration = &data["collaboration"];
    let rev = format!("#{}", data["rev"]);
    match event.name.as_str() {
        "ready" => format!("(following changes after #{})", data["rev"]),
        "reset" => format!(
            "(changes before #{} are no longer kept: some were missed)",
            data["rev"]
        ),
        "messages" => format!(
            "      messages    {}  {} so far",
            text(&data["collaboration_id"]),
            data["message_count"]
        ),
        "created" | "ended" | "summarized" if !collaboration.is_null() => {
            let detail = match event.name.as_str() {
                "created" => text(&collaboration["objective"]),
                "ended" => format!(
                    "{} ({}), {} messages",
                    text(&collaboration["status"]),
                    text(&collaboration["end_reason"]),
                    collaboration["message_count"]
                ),
                _ => text(&collaboration["headline"]),
            };
            format!(
                "{rev:<6} {:<11} {}  {}",
                event.name,
                text(&data["collaboration_id"]),
                detail
            )
        }
        name => format!("{rev:<6} {name:<11} {}", text(&data["collaboration_id"])),
    }
}
