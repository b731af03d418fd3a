//! What an agent sees of the transcript: a bounded window of recent turns, verbatim, and a
//! bounded synopsis of the turns before it. Both bounds are fixed, so a turn's prompt stays
//! flat however long the collaboration runs.

use crate::{
    agents::{Line, TurnContext},
    config::EngineSettings,
    domain::Sender,
};

/// Longest excerpt of one older message kept in the synopsis.
const EXCERPT_CHARS: usize = 160;

pub(crate) fn build(
    objective: &str,
    roster: &[Sender],
    transcript: &[Line],
    speaker: &Sender,
    settings: &EngineSettings,
) -> TurnContext {
    let split = transcript.len().saturating_sub(settings.context_window);
    let (older, window) = transcript.split_at(split);
    TurnContext {
        objective: objective.to_owned(),
        roster: roster.to_vec(),
        synopsis: synopsis(older, settings.synopsis_chars),
        window: window.to_vec(),
        spoken_before: transcript
            .iter()
            .filter(|l| l.sender.id == speaker.id)
            .count(),
    }
}

/// The most recent older turns that fit in `budget` characters, one short line each, with a
/// note of how many earlier ones were left out. Walks backwards, so the cost is bounded by
/// the budget rather than by the transcript's length.
fn synopsis(older: &[Line], budget: usize) -> String {
    let mut kept = Vec::new();
    let mut used = 0;
    for line in older.iter().rev() {
        let entry = format!("- {}: {}", line.sender.name, excerpt(&line.content));
        if used + entry.len() > budget {
            break;
        }
        used += entry.len() + 1;
        kept.push(entry);
    }
    let omitted = older.len() - kept.len();
    kept.reverse();
    let mut text = String::new();
    if omitted > 0 {
        text.push_str(&format!("({omitted} earlier messages not shown)\n"));
    }
    text.push_str(&kept.join("\n"));
    text
}

fn excerpt(content: &str) -> String {
    let single_line = content.split_whitespace().collect::<Vec<_>>().join(" ");
    if single_line.chars().count() <= EXCERPT_CHARS {
        return single_line;
    }
    let cut: String = single_line.chars().take(EXCERPT_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::AgentKind;

    fn sender(name: &str) -> Sender {
        Sender {
            id: Uuid::new_v4(),
            address: format!("agent1q{name}"),
            name: name.into(),
            kind: AgentKind::Scripted,
        }
    }

    #[test]
    fn the_prompt_material_stays_bounded_however_long_the_transcript() {
        let settings = EngineSettings {
            context_window: 4,
            synopsis_chars: 300,
        };
        let (a, b) = (sender("a"), sender("b"));
        let transcript: Vec<Line> = (0..500)
            .map(|i| Line {
                sender: if i % 2 == 0 { a.clone() } else { b.clone() },
                content: format!("message {i:04} ").repeat(30),
            })
            .collect();
        let sizes: Vec<usize> = [10, 100, 500]
            .iter()
            .map(|&n| {
                let ctx = build(
                    "o",
                    &[a.clone(), b.clone()],
                    &transcript[..n],
                    &a,
                    &settings,
                );
                assert_eq!(ctx.window.len(), 4);
                assert!(ctx.synopsis.len() <= 300 + 40, "{}", ctx.synopsis.len());
                ctx.synopsis.len() + ctx.window.iter().map(|l| l.content.len()).sum::<usize>()
            })
            .collect();
        assert!(sizes[2] <= sizes[0] + 40, "{sizes:?}");
    }

    #[test]
    fn a_short_transcript_is_all_window_and_counts_the_speakers_turns() {
        let settings = EngineSettings {
            context_window: 12,
            synopsis_chars: 300,
        };
        let (a, b) = (sender("a"), sender("b"));
        let transcript = vec![
            Line {
                sender: a.clone(),
                content: "hi".into(),
            },
            Line {
                sender: b.clone(),
                content: "hello".into(),
            },
            Line {
                sender: a.clone(),
                content: "plan?".into(),
            },
        ];
        let ctx = build("o", &[a.clone(), b.clone()], &transcript, &a, &settings);
        assert!(ctx.synopsis.is_empty());
        assert_eq!(ctx.window.len(), 3);
        assert_eq!(ctx.spoken_before, 2);
    }
}
