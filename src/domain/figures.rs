//! How each member of a collaboration did, read from its stored events: turns taken, model
//! tokens spent, how long a turn took them (median and 95th percentile), and the tools they
//! called.

use std::collections::HashMap;

use serde::Serialize;

use super::{EventBody, Sender};

/// One member's figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberFigures {
    pub agent: Sender,
    /// Messages stored in its name, interjections included.
    pub turns: u32,
    /// Model tokens its turns cost, and of them those of the prompts and of the answers.
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What its turns cost, in US dollars, by the server's price table.
    pub cost_usd: f64,
    /// How long its turns took, from being given the turn to its message; `null` before its
    /// first turn (and for interjections, which were no one's turn).
    pub latency_ms: Option<Latency>,
    /// Tool calls its turns made, and how many of them did not succeed (an error, a
    /// timeout, an interruption).
    pub tool_calls: u32,
    pub tool_failures: u32,
    /// Attempts its turns made again (a model call, a remote agent's request) before they
    /// came, and its turns that failed (one ends the collaboration).
    pub retries: u32,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
}

/// Figures added up event by event, in the roster's order.
#[derive(Debug)]
pub struct Tally {
    members: Vec<Member>,
    /// Which member made each tool call, by call id, until its result is seen.
    callers: HashMap<String, usize>,
}

#[derive(Debug)]
struct Member {
    agent: Sender,
    turns: u32,
    tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    times: Vec<u64>,
    tool_calls: u32,
    tool_failures: u32,
    retries: u32,
    failures: u32,
}

impl Member {
    fn new(agent: Sender) -> Self {
        Self {
            agent,
            turns: 0,
            tokens: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
            times: Vec::new(),
            tool_calls: 0,
            tool_failures: 0,
            retries: 0,
            failures: 0,
        }
    }
}

impl Tally {
    /// A tally of `roster`, principal first. Someone who spoke but is no longer in the
    /// roster is added when first seen.
    pub fn new(roster: Vec<Sender>) -> Self {
        Self {
            members: roster.into_iter().map(Member::new).collect(),
            callers: HashMap::new(),
        }
    }

    fn member(&mut self, sender: &Sender) -> usize {
        match self.members.iter().position(|m| m.agent.id == sender.id) {
            Some(at) => at,
            None => {
                self.members.push(Member::new(sender.clone()));
                self.members.len() - 1
            }
        }
    }

    pub fn add(&mut self, event: &EventBody) {
        match event {
            EventBody::Message {
                sender,
                tokens,
                input_tokens,
                output_tokens,
                ms,
                retries,
                ..
            } => {
                let cost = event.cost_micros();
                let at = self.member(sender);
                let member = &mut self.members[at];
                member.turns += 1;
                member.retries += retries;
                member.tokens += tokens;
                member.input_tokens += input_tokens;
                member.output_tokens += output_tokens;
                member.cost_micros += cost;
                member.times.extend(ms);
            }
            EventBody::ToolCall {
                sender, call_id, ..
            } => {
                let at = self.member(sender);
                self.members[at].tool_calls += 1;
                self.callers.insert(call_id.clone(), at);
            }
            EventBody::ToolResult { call_id, ok, .. } => {
                if let Some(at) = self.callers.remove(call_id)
                    && !ok
                {
                    self.members[at].tool_failures += 1;
                }
            }
            EventBody::Status {
                failed_agent: Some(failed),
                ..
            } => {
                if let Some(member) = self.members.iter_mut().find(|m| m.agent.id == *failed) {
                    member.failures += 1;
                }
            }
            _ => {}
        }
    }

    pub fn finish(self) -> Vec<MemberFigures> {
        self.members
            .into_iter()
            .map(|mut member| {
                member.times.sort_unstable();
                let times = member.times;
                MemberFigures {
                    agent: member.agent,
                    turns: member.turns,
                    tokens: member.tokens,
                    input_tokens: member.input_tokens,
                    output_tokens: member.output_tokens,
                    cost_usd: super::event::usd(member.cost_micros),
                    latency_ms: (!times.is_empty()).then(|| Latency {
                        p50: nearest_rank(&times, 50),
                        p95: nearest_rank(&times, 95),
                    }),
                    tool_calls: member.tool_calls,
                    tool_failures: member.tool_failures,
                    retries: member.retries,
                    failures: member.failures,
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
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            ms,
            retries: 0,
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
