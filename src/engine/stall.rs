//! Stalls: a conversation that goes nowhere. After each agent's message the runner asks
//! [`Watch::after`] whether it moved things on. A message that repeats one of the last few
//! (word for word, or nearly: most of its words the same), or a run of turns that only two
//! members of a larger roster take, counts as a stale turn. After `nudge_after` stale turns
//! in a row the manager is nudged (a stored notice naming what repeats, and the next turn);
//! after `end_after` the collaboration ends as `stalled`. A turn that says something new
//! starts the count again.

use std::collections::HashSet;

use crate::{agents::Line, config::StallSettings, domain::AgentKind};

/// What the runner is to do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// Tell the manager, once per stall, what repeats.
    Nudge(String),
    /// End the collaboration: it has stalled, for this reason.
    End(String),
}

/// The count of stale turns in a row, and whether this stall was nudged.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    stale: u32,
    nudged: bool,
}

impl Watch {
    /// Judges the transcript's last message (an agent's; people's words never count).
    /// `roster_size` and `manager` tell whether two speakers only is a sign.
    pub(crate) fn after(
        &mut self,
        transcript: &[Line],
        roster_size: usize,
        manager: bool,
        settings: &StallSettings,
    ) -> Verdict {
        if settings.end_after == 0 {
            return Verdict::Fine;
        }
        let Some(reason) = stale(transcript, roster_size, manager, settings) else {
            self.stale = 0;
            self.nudged = false;
            return Verdict::Fine;
        };
        self.stale += 1;
        if self.stale >= settings.end_after {
            return Verdict::End(reason);
        }
        if self.stale >= settings.nudge_after && !self.nudged {
            self.nudged = true;
            return Verdict::Nudge(reason);
        }
        Verdict::Fine
    }

    /// The watch as it stands after `transcript`: how a resumed runner picks the count up.
    pub(crate) fn replayed(
        transcript: &[Line],
        roster_size: usize,
        manager: bool,
        settings: &StallSettings,
    ) -> Self {
        let mut watch = Self::default();
        let start = transcript
            .len()
            .saturating_sub(settings.end_after as usize + settings.window);
        for end in start + 1..=transcript.len() {
            if transcript[end - 1].sender.kind != AgentKind::Human {
                watch.after(&transcript[..end], roster_size, manager, settings);
            }
        }
        watch
    }
}

/// Why the last message is a stale turn, if it is.
fn stale(
    transcript: &[Line],
    roster_size: usize,
    manager: bool,
    settings: &StallSettings,
) -> Option<String> {
    let (last, before) = transcript.split_last()?;
    if last.sender.kind == AgentKind::Human {
        return None;
    }
    let words = words(&last.content);
    let recent: Vec<&Line> = before
        .iter()
        .rev()
        .filter(|line| line.sender.kind != AgentKind::Human)
        .take(settings.window)
        .collect();
    if let Some(earlier) = recent
        .iter()
        .find(|line| alike(&words, &self::words(&line.content)))
    {
        let who = if earlier.sender.id == last.sender.id {
            format!("{} said again what they had said", last.sender.name)
        } else {
            format!(
                "{} repeated what {} had said",
                last.sender.name, earlier.sender.name
            )
        };
        return Some(format!("{who}: \"{}\"", excerpt(&last.content)));
    }
    // Two members keep the word between them while others wait.
    let turns = settings.window.max(4);
    if manager && roster_size >= 3 && transcript.len() >= turns {
        let speakers: HashSet<_> = transcript[transcript.len() - turns..]
            .iter()
            .map(|line| &line.sender.name)
            .collect();
        if speakers.len() <= 2 {
            let mut names: Vec<_> = speakers.into_iter().cloned().collect();
            names.sort();
            return Some(format!(
                "only {} have spoken in the last {turns} turns",
                names.join(" and ")
            ));
        }
    }
    None
}

/// Lower-case words of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The same words, or (for longer messages) nine in ten of their distinct words shared.
fn alike(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return a.is_empty() && b.is_empty();
    }
    if a.len() <= 3 || b.len() <= 3 {
        return a == b;
    }
    let a: HashSet<&String> = a.iter().collect();
    let b: HashSet<&String> = b.iter().collect();
    let shared = a.intersection(&b).count();
    let all = a.union(&b).count();
    shared * 10 >= all * 9
}

fn excerpt(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= 80 {
        return line;
    }
    format!("{}…", line.chars().take(80).collect::<String>())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use uuid::Uuid;

    use super::*;
    use crate::domain::Sender;

    fn member(name: &str, kind: AgentKind) -> Sender {
        Sender {
            id: Uuid::new_v4(),
            address: format!("agent1q{name}"),
            name: name.into(),
            kind,
        }
    }

    fn settings() -> StallSettings {
        StallSettings {
            window: 6,
            nudge_after: 3,
            end_after: 6,
        }
    }

    fn said(transcript: &mut Vec<Line>, who: &Sender, words: &str) {
        transcript.push(Line {
            seq: transcript.len() as i64 + 1,
            sender: who.clone(),
            content: words.into(),
        });
    }

    #[test]
    fn near_duplicates_are_nudged_then_ended_and_something_new_starts_again() {
        let (a, b) = (member("A", AgentKind::Llm), member("B", AgentKind::Llm));
        let mut transcript = Vec::new();
        let mut watch = Watch::default();
        let mut verdicts = Vec::new();
        said(
            &mut transcript,
            &a,
            "Shall we book the tapas place for seven tonight?",
        );
        said(
            &mut transcript,
            &b,
            "Yes, let us book the tapas place at seven.",
        );
        for i in 0..8 {
            let (who, words) = if i % 2 == 0 {
                (&a, "Shall we book the tapas place for seven tonight, then?")
            } else {
                (&b, "Yes, let us book the tapas place at seven.")
            };
            said(&mut transcript, who, words);
            verdicts.push(watch.after(&transcript, 2, false, &settings()));
        }
        assert_eq!(verdicts[..2], [Verdict::Fine, Verdict::Fine]);
        assert!(matches!(&verdicts[2], Verdict::Nudge(why) if why.contains("A said again")));
        assert_eq!(verdicts[3..5], [Verdict::Fine, Verdict::Fine]);
        assert!(matches!(&verdicts[5], Verdict::End(_)));
        // Something new: the count starts again.
        let mut watch = Watch::default();
        said(
            &mut transcript,
            &a,
            "Actually, the jazz bar has a table at nine.",
        );
        assert_eq!(
            watch.after(&transcript, 2, false, &settings()),
            Verdict::Fine
        );
    }

    #[test]
    fn two_speakers_of_a_larger_roster_are_a_sign_under_a_manager_only() {
        let (a, b) = (member("A", AgentKind::Llm), member("B", AgentKind::Llm));
        let mut transcript = Vec::new();
        for i in 0..6 {
            let who = if i % 2 == 0 { &a } else { &b };
            said(
                &mut transcript,
                who,
                &format!("new thought number {i} about venues"),
            );
        }
        let mut watch = Watch::default();
        assert_eq!(
            watch.after(&transcript, 3, false, &settings()),
            Verdict::Fine
        );
        let why = stale(&transcript, 3, true, &settings()).unwrap();
        assert_eq!(why, "only A and B have spoken in the last 6 turns");
    }

    #[test]
    fn people_never_count_and_end_after_zero_turns_it_off() {
        let (a, person) = (member("A", AgentKind::Llm), member("P", AgentKind::Human));
        let mut transcript = Vec::new();
        for _ in 0..10 {
            said(&mut transcript, &person, "hello?");
        }
        assert_eq!(stale(&transcript, 2, false, &settings()), None);
        for _ in 0..10 {
            said(&mut transcript, &a, "hello");
        }
        let off = StallSettings {
            end_after: 0,
            ..settings()
        };
        assert_eq!(
            Watch::default().after(&transcript, 2, false, &off),
            Verdict::Fine
        );
    }

    /// Thousands of conversations among members who choose at random what to say, from a
    /// few lines or new ones, and (under a manager) a speaker at random, often the same pair:
    /// each ends by its cap or as stalled, never later, and a conversation that keeps
    /// repeating itself always ends as stalled before the cap.
    #[test]
    fn random_conversations_all_end_within_their_bound() {
        let mut rng = StdRng::seed_from_u64(20261203);
        let settings = settings();
        for run in 0..5000 {
            let roster: Vec<Sender> = (0..rng.random_range(2..5))
                .map(|i| member(&format!("M{i}"), AgentKind::Llm))
                .collect();
            let manager = rng.random_bool(0.5);
            let cap = rng.random_range(5..60);
            let repetitive = rng.random_bool(0.3);
            let mut transcript: Vec<Line> = Vec::new();
            let mut watch = Watch::default();
            let mut nudges = 0;
            let mut ended = None;
            for turn in 0..cap {
                // The "selector": an invalid or a degenerate choice falls back to the next
                // in turn, as the engine's does; a repeating one picks the same pair.
                let speaker = match rng.random_range(0..4) {
                    0 => turn % roster.len(),
                    1 => rng.random_range(0..roster.len()),
                    _ => turn % 2,
                };
                let words = if repetitive || rng.random_bool(0.2) {
                    format!("line {}", rng.random_range(0..2))
                } else {
                    format!(
                        "run {run} turn {turn}: something new {}",
                        rng.random::<u32>()
                    )
                };
                said(&mut transcript, &roster[speaker], &words);
                match watch.after(&transcript, roster.len(), manager, &settings) {
                    Verdict::Fine => {}
                    Verdict::Nudge(_) => nudges += 1,
                    Verdict::End(_) => {
                        ended = Some(turn);
                        break;
                    }
                }
            }
            assert!(transcript.len() <= cap, "run {run} went past its cap");
            if repetitive && cap > 16 {
                let at = ended.unwrap_or_else(|| panic!("run {run} repeated itself to its cap"));
                assert!(at < cap, "run {run}");
                assert!(nudges >= 1, "run {run} ended without a nudge first");
            }
        }
    }
}
