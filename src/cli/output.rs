//! What the CLI prints: the API's JSON as it came (`--json`), or tables and sentences.

use std::io::IsTerminal;

use serde_json::{Value, json};

use super::CliError;

/// The value exactly as the API sent it, on one line.
pub(super) fn json(value: &Value) {
    println!("{value}");
}

pub(super) fn error(error: &CliError, as_json: bool) {
    if as_json {
        json(&json!({"error": error.message(), "code": error.code(), "status": error.status()}));
    } else if std::io::stderr().is_terminal() {
        eprintln!("\x1b[31merror:\x1b[0m {}", error.message());
    } else {
        eprintln!("error: {}", error.message());
    }
}

/// A command that answers nothing (a delete): a sentence for people, nothing for programs.
pub(super) fn done(as_json: bool, sentence: &str) {
    if !as_json {
        println!("{sentence}");
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// `label: value` lines, for the fields that have a value.
fn fields(value: &Value, names: &[&str]) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in names {
        let field = &value[*name];
        if !field.is_null() {
            println!("{name:width$}  {}", text(field));
        }
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn page_line(page: &Value) {
    let meta = &page["meta"];
    println!(
        "Page {} of {} · {} in all",
        meta["page"],
        (meta["total"].as_u64().unwrap_or(0))
            .div_ceil(meta["size"].as_u64().unwrap_or(1).max(1))
            .max(1),
        meta["total"]
    );
}

fn items(page: &Value) -> Vec<Value> {
    page["items"].as_array().cloned().unwrap_or_default()
}

pub(super) fn agent(agent: &Value) {
    fields(
        agent,
        &[
            "id",
            "name",
            "kind",
            "address",
            "description",
            "provider",
            "model",
            "endpoint",
            "card_url",
            "created_at",
        ],
    );
    if let Some(replies) = agent["replies"].as_array() {
        println!("replies  {}", replies.len());
    }
    for server in agent["tools"].as_array().into_iter().flatten() {
        let allow = server["allow"]
            .as_array()
            .map_or("every tool".to_owned(), |names| {
                names.iter().map(text).collect::<Vec<_>>().join(", ")
            });
        println!(
            "tools    {} ({}): {allow}",
            text(&server["name"]),
            text(&server["url"])
        );
    }
    if let Some(secret) = agent["secret"].as_str() {
        println!("secret   {secret}");
        println!(
            "Keep the secret: the agent checks Skein's signatures with it. It is not shown again."
        );
    }
}

/// The tools an agent can call, a row each.
pub(super) fn tools(listed: &Value) {
    let rows = items(listed)
        .iter()
        .map(|t| {
            vec![
                text(&t["function"]),
                text(&t["tool"]["server"]),
                text(&t["tool"]["name"]),
                text(&t["description"]),
            ]
        })
        .collect();
    table(&["FUNCTION", "SERVER", "TOOL", "DESCRIPTION"], rows);
}

pub(super) fn agents(page: &Value) {
    let rows = items(page)
        .iter()
        .map(|a| {
            vec![
                text(&a["id"]),
                text(&a["name"]),
                text(&a["kind"]),
                text(&a["address"]),
            ]
        })
        .collect();
    table(&["ID", "NAME", "KIND", "ADDRESS"], rows);
    page_line(page);
}

pub(super) fn team(team: &Value) {
    fields(
        team,
        &[
            "id",
            "name",
            "description",
            "address",
            "strategy",
            "message_cap",
            "timeout_window",
            "a2a_card_url",
            "mcp_url",
        ],
    );
    let member = |m: &Value| {
        if m["deleted"] == true {
            format!("{} (deleted)", text(&m["name"]))
        } else {
            text(&m["name"])
        }
    };
    let participants: Vec<String> = team["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(member)
        .collect();
    println!("principal      {}", member(&team["principal"]));
    println!("participants   {}", participants.join(", "));
}

pub(super) fn teams(page: &Value) {
    let rows = items(page)
        .iter()
        .map(|t| {
            let size = 1 + t["participants"].as_array().map_or(0, Vec::len);
            vec![
                text(&t["id"]),
                text(&t["name"]),
                size.to_string(),
                text(&t["address"]),
            ]
        })
        .collect();
    table(&["ID", "NAME", "MEMBERS", "ADDRESS"], rows);
    page_line(page);
}

pub(super) fn collaboration(c: &Value) {
    fields(
        c,
        &[
            "id",
            "status",
            "end_reason",
            "objective",
            "channel_id",
            "started_at",
            "ended_at",
            "tokens_used",
            "headline",
            "summary",
            "advisory_message",
            "error_message",
        ],
    );
    println!("messages    {} of {}", c["message_count"], c["message_cap"]);
    let participants: Vec<String> = c["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| text(&p["name"]))
        .collect();
    println!("principal   {}", text(&c["principal"]["name"]));
    println!("participants {}", participants.join(", "));
}

pub(super) fn collaborations(page: &Value) {
    let rows = items(page)
        .iter()
        .map(|c| {
            vec![
                text(&c["id"]),
                text(&c["status"]),
                format!("{}/{}", c["message_count"], c["message_cap"]),
                cut(&text(&c["objective"]), 40),
                cut(&text(&c["headline"]), 40),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "MESSAGES", "OBJECTIVE", "HEADLINE"], rows);
    page_line(page);
}

/// Each member's figures, a row each.
pub(super) fn figures(figures: &Value) {
    let seconds = |ms: &Value| {
        ms.as_u64().map_or("–".to_owned(), |ms| {
            format!("{:.1} s", ms as f64 / 1000.0)
        })
    };
    let rows = figures["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                text(&m["agent"]["name"]),
                m["turns"].to_string(),
                m["tokens"].to_string(),
                format!("${:.4}", m["cost_usd"].as_f64().unwrap_or(0.0)),
                seconds(&m["latency_ms"]["p50"]),
                seconds(&m["latency_ms"]["p95"]),
                format!("{} ({} failed)", m["retries"], m["failures"]),
                format!("{} ({} failed)", m["tool_calls"], m["tool_failures"]),
            ]
        })
        .collect();
    table(
        &[
            "MEMBER",
            "TURNS",
            "TOKENS",
            "COST",
            "MEDIAN TURN",
            "95TH PERCENTILE",
            "RETRIES (TURNS)",
            "TOOL CALLS",
        ],
        rows,
    );
}

pub(super) fn key(key: &Value) {
    fields(key, &["id", "name", "key_prefix", "scopes", "created_at"]);
    if let Some(secret) = key["key"].as_str() {
        println!("key         {secret}");
        println!("Keep the key: it is not shown again.");
    }
}

pub(super) fn keys(page: &Value) {
    let rows = items(page)
        .iter()
        .map(|k| {
            vec![
                text(&k["id"]),
                text(&k["name"]),
                text(&k["key_prefix"]),
                k["scopes"]
                    .as_array()
                    .map(|s| s.iter().map(text).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
                text(&k["last_used_at"]),
            ]
        })
        .collect();
    table(&["ID", "NAME", "PREFIX", "SCOPES", "LAST USED"], rows);
    page_line(page);
}

pub(super) fn account(account: &Value) {
    fields(account, &["id", "name", "created_at"]);
    if let Some(secret) = account["key"]["key"].as_str() {
        println!("key         {secret}");
        println!("Keep the key: it is the account's first admin key and is not shown again.");
    }
}

pub(super) fn accounts(page: &Value) {
    let rows = items(page)
        .iter()
        .map(|a| vec![text(&a["id"]), text(&a["name"]), text(&a["created_at"])])
        .collect();
    table(&["ID", "NAME", "CREATED"], rows);
    page_line(page);
}
