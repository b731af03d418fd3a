//! Scripted agents: fixed replies in order, cycling. They make demos and tests run offline.

use std::time::Duration;

use super::{Completion, TurnContext};

pub(super) async fn speak(replies: &[String], delay_ms: u64, context: &TurnContext) -> Completion {
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    // The index comes from the stored transcript, so a resumed collaboration continues the
    // script where it stopped instead of starting over.
    let content = if replies.is_empty() {
        String::new()
    } else {
        replies[context.spoken_before % replies.len()].clone()
    };
    Completion {
        content,
        ..Completion::default()
    }
}
