//! How each member of a collaboration did, read from its stored messages: turns taken,
//! model tokens spent, and how long a turn took them (median and 95th percentile).

use serde::Serialize;

use super::{EventBody, Sender};

/// One member's figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberFigures {
    pub agent: Sender,
    /// Messages stored in its name, interjections included.
    pub turns: u32,
    /// Model tokens its turns cost.
    pub tokens: u64,
    /// How long its turns took, from being given the turn to its message; `null` before its
    /// first turn (and for interjections, which were no one's turn).
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
}

/// Figures added up event by event, in the roster's order.
#[derive(Debug)]
pub struct Tally {
    members: Vec<(Sender, u32, u64, Vec<u64>)>,
}

impl Tally {
    /// A tally of `roster`, principal first. Someone who spoke but is no longer in the
    /// roster is added when first seen.
    pub fn new(roster: Vec<Sender>) -> Self {
        Self {
            members: roster
                .into_iter()
                .map(|sender| (sender, 0, 0, Vec::new()))
                .collect(),
        }
    }

    pub fn add(&mut self, event: &EventBody) {
        let EventBody::Message {
            sender, tokens, ms, ..
        } = event
        else {
            return;
        };
        let at = match self.members.iter().position(|m| m.0.id == sender.id) {
            Some(at) => at,
            None => {
                self.members.push((sender.clone(), 0, 0, Vec::new()));
                self.members.len() - 1
            }
        };
        let member = &mut self.members[at];
        member.1 += 1;
        member.2 += tokens;
        member.3.extend(ms);
    }

    pub fn finish(self) -> Vec<MemberFigures> {
        self.members
            .into_iter()
            .map(|(agent, turns, tokens, mut times)| {
                times.sort_unstable();
                MemberFigures {
                    agent,
                    turns,
                    tokens,
                    latency_ms: (!times.is_empty()).then(|| Latency {
                        p50: nearest_rank(&times, 50),
                        p95: nearest_rank(&times, 95),
                    }),
                }
            })
            .collect()
    }
}

/// The nearest-rank percentile of sorted, non-empty `values`.
fn nearest_rank(values: &[u64], percent: usize) -> u64 {
    let rank = (percent * values.len()).div_ceil(100).max(1);
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{AgentKind, event::Role};

    fn member(name: &str) -> Sender {
        Sender {
            id: Uuid::now_v7(),
            address: format!("agent1q{name}"),
            name: name.into(),
            kind: AgentKind::Scripted,
        }
    }

    fn said(sender: &Sender, tokens: u64, ms: Option<u64>) -> EventBody {
        EventBody::Message {
            id: Uuid::now_v7(),
            turn_id: Uuid::now_v7(),
            sender: sender.clone(),
            role: Role::Agent,
            content: "…".into(),
            created_at: Utc::now(),
            tokens,
            ms,
        }
    }

    #[test]
    fn turns_tokens_and_percentiles_add_up_per_member_in_roster_order() {
        let (planner, scout, former) = (member("Planner"), member("Scout"), member("Former"));
        let mut tally = Tally::new(vec![planner.clone(), scout.clone()]);
        for ms in 1..=20 {
            tally.add(&said(&planner, 10, Some(ms * 100)));
        }
        tally.add(&said(&former, 0, None));
        let figures = tally.finish();
        assert_eq!(figures.len(), 3);
        assert_eq!(figures[0].agent, planner);
        assert_eq!((figures[0].turns, figures[0].tokens), (20, 200));
        assert_eq!(
            figures[0].latency_ms,
            Some(Latency {
                p50: 1000,
                p95: 1900
            })
        );
        assert_eq!((figures[1].turns, figures[1].latency_ms.clone()), (0, None));
        assert_eq!(
            figures[2].agent, former,
            "one who spoke and left is counted"
        );
    }

    #[test]
    fn the_nearest_rank_of_one_value_is_that_value() {
        assert_eq!(nearest_rank(&[7], 50), 7);
        assert_eq!(nearest_rank(&[7], 95), 7);
        assert_eq!(nearest_rank(&[1, 2], 50), 1);
        assert_eq!(nearest_rank(&[1, 2], 95), 2);
    }
}
