//! `skein collab watch`: a collaboration followed live in the terminal, to its summary.
//!
//! It reads the channel's stream with the key in `Authorization` (programs need no ticket)
//! and resumes with `after_seq` = the last event it printed when the connection drops or
//! the server restarts, so every message is printed once. People see who says what, a
//! model's text as it streams, and the summary; `--json` prints every frame as it came, one
//! per line, and exits after the summary like the other.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use super::{CliError, client::Client, output};
use crate::live::Close;

/// How many times in a row a lost connection is retried before giving up.
const RECONNECTS: u32 = 12;

pub(super) async fn follow(client: &Client, id: &str, as_json: bool) -> Result<(), CliError> {
    let collaboration = client.get(&format!("/collaborations/{id}")).await?;
    let channel = collaboration["channel_id"]
        .as_str()
        .ok_or_else(|| CliError::Usage("the collaboration has no channel".into()))?
        .to_owned();
    let mut view = View {
        as_json,
        last_seq: 0,
        streaming: None,
        progress: std::io::stderr().is_terminal() && !as_json,
    };
    let mut failures = 0;
    loop {
        let before = view.last_seq;
        match view.session(client, &channel).await {
            Ok(Done::Summary) => return Ok(()),
            Ok(Done::Closed(reason)) => return Err(CliError::Usage(reason)),
            Err(Lost::ForGood(reason)) => return Err(CliError::Usage(reason)),
            Err(Lost::ForNow(lost)) => {
                reconnect(&mut failures, view.last_seq > before, &lost, as_json).await?;
            }
        }
    }
}

/// After a lost stream: waits before the next try, longer after each in a row (a
/// connection that got somewhere starts the count again), or gives up after
/// [`RECONNECTS`]. Shared by `watch` and `events`.
pub(super) async fn reconnect(
    failures: &mut u32,
    progressed: bool,
    lost: &str,
    as_json: bool,
) -> Result<(), CliError> {
    if progressed {
        *failures = 0;
    }
    *failures += 1;
    if *failures > RECONNECTS {
        return Err(CliError::Unreachable(format!(
            "the stream was lost and did not come back: {lost}"
        )));
    }
    if !as_json {
        eprintln!("(connection lost: {lost}; reconnecting…)");
    }
    tokio::time::sleep(Duration::from_millis(250 * 2u64.pow((*failures).min(5)))).await;
    Ok(())
}

/// How a connection was lost.
enum Lost {
    /// Worth trying again.
    ForNow(String),
    /// The server refused the stream itself (no such channel, no access): it will again.
    ForGood(String),
}

impl From<String> for Lost {
    fn from(reason: String) -> Self {
        Self::ForNow(reason)
    }
}

enum Done {
    Summary,
    /// The server closed the stream for good (deleted, key revoked, unknown channel).
    Closed(String),
}

struct View {
    as_json: bool,
    /// The last stored event printed: the stream resumes after it.
    last_seq: i64,
    /// The turn whose text is being printed as it streams.
    streaming: Option<String>,
    progress: bool,
}

impl View {
    /// One connection: frames until the summary, a close for good, or a loss (`Err`).
    async fn session(&mut self, client: &Client, channel: &str) -> Result<Done, Lost> {
        // A turn left half-printed by the last connection is told again whole.
        self.end_line();
        let url = client.ws_url(&format!(
            "/channels/{channel}/stream?after_seq={}",
            self.last_seq
        ));
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", client.key()))
            .map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", bearer);
        let (mut stream, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if matches!(response.status().as_u16(), 401 | 403 | 404) =>
            {
                return Err(Lost::ForGood(format!(
                    "the server refused the stream ({})",
                    response.status()
                )));
            }
            Err(error) => return Err(error.to_string().into()),
        };
        while let Some(message) = stream.next().await {
            match message.map_err(|e| Lost::from(e.to_string()))? {
                Message::Text(text) => {
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if self.show(&frame) {
                        return Ok(Done::Summary);
                    }
                }
                // Decided by the code (see `live::Close`); the reason is only shown.
                Message::Close(Some(frame)) => {
                    let close = Close::from_code(u16::from(frame.code));
                    if close.is_some_and(Close::is_final) {
                        self.end_line();
                        return Ok(Done::Closed(format!(
                            "the stream was closed: {}",
                            frame.reason
                        )));
                    }
                    return Err(Lost::from(format!(
                        "the server closed the stream: {}",
                        frame.reason
                    )));
                }
                Message::Close(None) => {
                    return Err(Lost::from("the server closed the stream".to_owned()));
                }
                _ => {}
            }
        }
        Err(Lost::from("the connection dropped".to_owned()))
    }

    /// Prints a frame; true once the summary is out.
    fn show(&mut self, frame: &Value) -> bool {
        if let Some(seq) = frame["seq"].as_i64() {
            // Already printed before a reconnect.
            if seq <= self.last_seq {
                return false;
            }
            self.last_seq = seq;
        }
        let kind = frame["type"].as_str().unwrap_or_default();
        if self.as_json {
            // Deltas, turns and the hello are the stream's too, but only stored events repeat
            // after a reconnect, and those were filtered above.
            output::json(frame);
            return kind == "summary";
        }
        let who = |frame: &Value| {
            format!(
                "{} ({})",
                frame["sender"]["name"].as_str().unwrap_or("?"),
                frame["sender"]["kind"].as_str().unwrap_or("?")
            )
        };
        match kind {
            "turn" if self.progress => {
                eprintln!("… {} has the turn", who(frame));
            }
            "delta" => {
                let turn = frame["turn_id"].as_str().unwrap_or_default().to_owned();
                if self.streaming.as_deref() != Some(&turn) {
                    self.end_line();
                    print!("{}: ", who(frame));
                    self.streaming = Some(turn);
                }
                if frame["restart"] == true {
                    print!(" [starting over] ");
                }
                print!("{}", frame["text"].as_str().unwrap_or_default());
                let _ = std::io::stdout().flush();
            }
            "message" => {
                let turn = frame["turn_id"].as_str().unwrap_or_default();
                if self.streaming.as_deref() == Some(turn) {
                    // Its text is on screen already.
                    println!();
                    self.streaming = None;
                } else {
                    self.end_line();
                    println!(
                        "{}: {}",
                        who(frame),
                        frame["content"].as_str().unwrap_or_default()
                    );
                }
            }
            "status" => {
                self.end_line();
                println!(
                    "— {}{}",
                    frame["status"].as_str().unwrap_or_default(),
                    frame["end_reason"]
                        .as_str()
                        .map(|r| format!(": {}", r.replace('_', " ")))
                        .unwrap_or_default()
                );
                for note in ["advisory_message", "error_message"] {
                    if let Some(text) = frame[note].as_str() {
                        println!("  {text}");
                    }
                }
            }
            "tool_call" => {
                self.end_line();
                println!(
                    "  ⚙ {} calls {} {}",
                    who(frame),
                    tool_name(&frame["tool"]),
                    excerpt(&frame["arguments"].to_string(), 200)
                );
            }
            "tool_result" => {
                self.end_line();
                let how = if frame["interrupted"] == true {
                    "interrupted"
                } else if frame["ok"] == true {
                    "ok"
                } else {
                    "error"
                };
                println!(
                    "  ⚙ {} {how} ({} ms): {}",
                    tool_name(&frame["tool"]),
                    frame["ms"],
                    excerpt(frame["content"].as_str().unwrap_or_default(), 200)
                );
            }
            "nudge" => {
                self.end_line();
                println!(
                    "— Skein nudged {}: the conversation is going in circles ({})",
                    frame["to"]["name"].as_str().unwrap_or_default(),
                    frame["reason"].as_str().unwrap_or_default()
                );
            }
            "verdict" => {
                self.end_line();
                println!(
                    "— the judge: {} ({})",
                    if frame["met"] == true {
                        "objective met"
                    } else {
                        "not met yet"
                    },
                    frame["reason"].as_str().unwrap_or_default()
                );
            }
            "summary" => {
                self.end_line();
                println!();
                println!("{}", frame["headline"].as_str().unwrap_or_default());
                println!("{}", frame["summary"].as_str().unwrap_or_default());
                print_outcome(&frame["outcome"]);
                return true;
            }
            "error" => eprintln!(
                "(the server says: {})",
                frame["message"].as_str().unwrap_or_default()
            ),
            _ => {}
        }
        false
    }

    /// Ends a line of streamed text that was left open.
    fn end_line(&mut self) {
        if self.streaming.take().is_some() {
            println!();
        }
    }
}

/// `server/tool`, or the tool alone when it named no server.
fn tool_name(tool: &Value) -> String {
    match (tool["server"].as_str(), tool["name"].as_str()) {
        (Some(server), Some(name)) if !server.is_empty() => format!("{server}/{name}"),
        (_, name) => name.unwrap_or_default().to_owned(),
    }
}

/// At most `max` characters of `text`, on one line.
fn excerpt(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    format!("{}…", line.chars().take(max).collect::<String>())
}

/// A summary's outcome: its lists that are not empty, an item a line.
fn print_outcome(outcome: &Value) {
    for (title, key) in [
        ("Decisions", "decisions"),
        ("Action items", "action_items"),
        ("Open questions", "open_questions"),
    ] {
        let items = outcome[key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if items.is_empty() {
            continue;
        }
        println!("{title}:");
        for item in items {
            match item.as_str() {
                Some(text) => println!("  - {text}"),
                None => println!(
                    "  - {}: {}",
                    item["owner"].as_str().unwrap_or_default(),
                    item["task"].as_str().unwrap_or_default()
                ),
            }
        }
    }
}
