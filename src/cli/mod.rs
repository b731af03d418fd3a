//! `skein` as a client of a running server: agents, collaborations (followed live in the
//! terminal), keys and accounts, over the REST API and the WebSocket stream.
//!
//! The server is `--url` (`SKEIN_URL`, default `http://127.0.0.1:8344`); the key is `--key`
//! (`SKEIN_API_KEY`), else `<data-dir>/admin.key` of a server on this machine. `--json` makes
//! every command print exactly the API's JSON, and an error `{"error", "code", "status"}`;
//! without it, people get tables and sentences, and errors as a red line on stderr. Either
//! way a failure exits with 1.

mod client;
mod events;
mod output;
mod watch;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

pub use client::CliError;
use client::Client;

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "SKEIN_URL",
        default_value = "http://127.0.0.1:8344"
    )]
    pub url: String,
    /// An API key; else the admin key in the data directory.
    #[arg(long, global = true, env = "SKEIN_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Where a local server keeps admin.key.
    #[arg(long, global = true, env = "SKEIN_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Print the API's JSON, for programs.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, read, change and delete agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Start, list, read, stop, delete and watch collaborations.
    #[command(subcommand)]
    Collab(CollabCommand),
    /// Save teams (a roster with defaults) and run them on an objective.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage this account's API keys (admin keys only).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create and list accounts (the operator's admin keys only).
    #[command(subcommand)]
    Accounts(AccountsCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    Create(AgentFields),
    List(PageArgs),
    /// One agent, by UUID or address.
    Get {
        agent: String,
    },
    /// Change the fields given; the others stay.
    Update {
        agent: String,
        #[command(flatten)]
        fields: AgentFields,
    },
    Delete {
        agent: String,
    },
    /// The tools an llm agent can call now, from its MCP servers.
    Tools {
        agent: String,
    },
}

/// An agent's fields; only those given are sent.
#[derive(Debug, Args)]
pub struct AgentFields {
    #[arg(long)]
    name: Option<String>,
    /// `llm`, `scripted`, `http`, `a2a`, `human` or `uagent`.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// An existing `agent1q…` address (a uagent's own, required for that kind).
    #[arg(long)]
    address: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    system_prompt: Option<String>,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    max_tokens: Option<u32>,
    /// A scripted agent's reply; repeat for several, spoken in order.
    #[arg(long = "reply")]
    replies: Vec<String>,
    #[arg(long)]
    delay_ms: Option<u64>,
    /// An http agent's URL, or a uagent's `/submit` URL.
    #[arg(long)]
    endpoint: Option<String>,
    /// An a2a agent's card (or base) URL.
    #[arg(long)]
    card_url: Option<String>,
    /// An llm agent's MCP server: its URL, or a JSON object
    /// (`{"url": …, "bearer": …, "headers": {…}, "allow": […], "name": …}`). Repeat for
    /// several; given on an update, the list replaces the agent's.
    #[arg(long = "tool")]
    tools: Vec<String>,
}

impl AgentFields {
    fn to_json(&self) -> Value {
        let mut body = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        };
        put("name", self.name.clone().map(Value::from));
        put("kind", self.kind.clone().map(Value::from));
        put("description", self.description.clone().map(Value::from));
        put("address", self.address.clone().map(Value::from));
        put("provider", self.provider.clone().map(Value::from));
        put("model", self.model.clone().map(Value::from));
        put("system_prompt", self.system_prompt.clone().map(Value::from));
        put("temperature", self.temperature.map(Value::from));
        put("max_tokens", self.max_tokens.map(Value::from));
        put(
            "replies",
            (!self.replies.is_empty()).then(|| json!(self.replies)),
        );
        put("delay_ms", self.delay_ms.map(Value::from));
        put("endpoint", self.endpoint.clone().map(Value::from));
        put("card_url", self.card_url.clone().map(Value::from));
        put(
            "tools",
            (!self.tools.is_empty()).then(|| {
                self.tools
                    .iter()
                    .map(|tool| {
                        serde_json::from_str::<Map<String, Value>>(tool)
                            .map_or_else(|_| json!({"url": tool}), Value::Object)
                    })
                    .collect()
            }),
        );
        Value::Object(body)
    }
}

#[derive(Debug, Args)]
pub struct PageArgs {
    #[arg(long)]
    page: Option<u32>,
    #[arg(long)]
    size: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum CollabCommand {
    /// Start a collaboration; `--watch` follows it to its summary.
    Create(CreateCollab),
    List {
        #[arg(long)]
        status: Option<String>,
        /// Only those this agent (UUID or address) takes part in.
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Get {
        id: String,
    },
    /// End it now; everything said so far is kept.
    Stop {
        id: String,
    },
    /// A new collaboration that starts with this one's conversation up to `--at-seq`,
    /// then goes on live; the options change what they name, the rest is kept.
    Fork {
        id: String,
        #[arg(long)]
        at_seq: i64,
        #[arg(long)]
        objective: Option<String>,
        /// Messages the fork may add to what it copied.
        #[arg(long)]
        message_cap: Option<u32>,
        /// Replaces the participants; repeat for several.
        #[arg(long = "participant")]
        participants: Vec<String>,
        /// Follow it live to its summary.
        #[arg(long)]
        watch: bool,
    },
    Delete {
        id: String,
    },
    /// Follow it live: messages as they are said, then the summary.
    Watch {
        id: String,
    },
    /// Follow every collaboration of the account changing (created, message counts,
    /// ended, summarized, deleted), live, until interrupted.
    Events {
        /// Start after this event id (as printed, `#n`): the changes since are printed
        /// first.
        #[arg(long)]
        after: Option<i64>,
    },
    /// Each member's turns, tokens and time per turn.
    Figures {
        id: String,
    },
    /// The whole record: objective, roster, every event, the summary. Markdown by default,
    /// for people; `--format json` for programs.
    Transcript {
        id: String,
        #[arg(long, default_value = "markdown", value_parser = ["markdown", "json"])]
        format: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateCollab {
    /// The principal, by UUID or address.
    #[arg(long)]
    principal: String,
    /// A participant, by UUID or address; repeat for several.
    #[arg(long = "participant", required = true)]
    participants: Vec<String>,
    #[arg(long)]
    message_cap: u32,
    /// Seconds of silence that end it.
    #[arg(long)]
    timeout_window: u32,
    #[arg(long)]
    objective: Option<String>,
    /// `manager` or `round_robin`.
    #[arg(long)]
    strategy: Option<String>,
    /// Do not end early when a judge finds the objective met.
    #[arg(long)]
    no_evaluate: bool,
    #[arg(long)]
    token_budget: Option<u64>,
    /// End it once its model calls have cost this many US dollars (by the server's prices).
    #[arg(long)]
    cost_budget_usd: Option<f64>,
    #[arg(long)]
    webhook_url: Option<String>,
    /// People may speak only in their turn.
    #[arg(long)]
    no_interjections: bool,
    /// Follow it live to its summary.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    Create(TeamFields),
    List(PageArgs),
    /// One team, by UUID or address, with its A2A card URL and MCP endpoint.
    Get {
        team: String,
    },
    /// Change the fields given; the others stay.
    Update {
        team: String,
        #[command(flatten)]
        fields: TeamFields,
    },
    Delete {
        team: String,
    },
    /// Start a collaboration of the team on an objective; `--watch` follows it.
    Run {
        team: String,
        objective: String,
        /// This run's cap instead of the team's.
        #[arg(long)]
        message_cap: Option<u32>,
        #[arg(long)]
        watch: bool,
    },
    /// The collaborations the team has run, newest first.
    Runs {
        team: String,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// A team's fields; only those given are sent.
#[derive(Debug, Args)]
pub struct TeamFields {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The principal, by UUID or address.
    #[arg(long)]
    principal: Option<String>,
    /// A participant, by UUID or address; repeat for several (they replace the team's).
    #[arg(long = "participant")]
    participants: Vec<String>,
    #[arg(long)]
    message_cap: Option<u32>,
    /// Seconds of silence that end a run.
    #[arg(long)]
    timeout_window: Option<u32>,
    /// `manager` or `round_robin`.
    #[arg(long)]
    strategy: Option<String>,
    /// Runs do not end early when a judge finds the objective met.
    #[arg(long)]
    no_evaluate: bool,
    #[arg(long)]
    token_budget: Option<u64>,
    #[arg(long)]
    cost_budget_usd: Option<f64>,
}

impl TeamFields {
    fn to_json(&self) -> Value {
        let mut body = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        };
        put("name", self.name.clone().map(Value::from));
        put("description", self.description.clone().map(Value::from));
        put("principal", self.principal.clone().map(Value::from));
        put(
            "participants",
            (!self.participants.is_empty()).then(|| json!(self.participants)),
        );
        put("message_cap", self.message_cap.map(Value::from));
        put("timeout_window", self.timeout_window.map(Value::from));
        put("strategy", self.strategy.clone().map(Value::from));
        put(
            "evaluate_objective_completion",
            self.no_evaluate.then_some(Value::Bool(false)),
        );
        put("token_budget", self.token_budget.map(Value::from));
        put("cost_budget_usd", self.cost_budget_usd.map(Value::from));
        Value::Object(body)
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// A new key; its secret is shown this once.
    Create {
        #[arg(long)]
        name: String,
        /// `read`, `write` or `admin`; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    List(PageArgs),
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// A new account and its first (admin) key, shown this once.
    Create {
        #[arg(long)]
        name: String,
    },
    List(PageArgs),
}

/// Runs a client command; the exit code says how it went.
pub async fn run(global: Global, command: Command) -> std::process::ExitCode {
    let json = global.json;
    let result = match Client::new(&global) {
        Ok(client) => dispatch(&client, command, json).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::error(&error, json);
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(client: &Client, command: Command, json: bool) -> Result<(), CliError> {
    let show = |value: Value, view: fn(&Value)| {
        if json {
            output::json(&value);
        } else {
            view(&value);
        }
    };
    match command {
        Command::Agents(command) => match command {
            AgentsCommand::Create(fields) => show(
                client.post("/agents", fields.to_json()).await?,
                output::agent,
            ),
            AgentsCommand::List(page) => show(
                client.get(&paged("/agents", &page, &[])).await?,
                output::agents,
            ),
            AgentsCommand::Get { agent } => show(
                client.get(&format!("/agents/{agent}")).await?,
                output::agent,
            ),
            AgentsCommand::Update { agent, fields } => show(
                client
                    .patch(&format!("/agents/{agent}"), fields.to_json())
                    .await?,
                output::agent,
            ),
            AgentsCommand::Delete { agent } => {
                client.delete(&format!("/agents/{agent}")).await?;
                output::done(json, &format!("Deleted agent {agent}."));
            }
            AgentsCommand::Tools { agent } => show(
                client.get(&format!("/agents/{agent}/tools")).await?,
                output::tools,
            ),
        },
        Command::Collab(command) => match command {
            CollabCommand::Create(create) => {
                let created = client.post("/collaborations", collab_body(&create)).await?;
                started(client, created, json, create.watch).await?;
            }
            CollabCommand::List {
                status,
                agent,
                page,
            } => {
                let filters = [("status", status), ("agent", agent)];
                show(
                    client
                        .get(&paged("/collaborations", &page, &filters))
                        .await?,
                    output::collaborations,
                )
            }
            CollabCommand::Get { id } => show(
                client.get(&format!("/collaborations/{id}")).await?,
                output::collaboration,
            ),
            CollabCommand::Fork {
                id,
                at_seq,
                objective,
                message_cap,
                participants,
                watch: watching,
            } => {
                let mut body = json!({"at_seq": at_seq});
                if let Some(objective) = objective {
                    body["objective"] = objective.into();
                }
                if let Some(cap) = message_cap {
                    body["message_cap"] = cap.into();
                }
                if !participants.is_empty() {
                    body["participants"] = json!(participants);
                }
                let created = client
                    .post(&format!("/collaborations/{id}/fork"), body)
                    .await?;
                started(client, created, json, watching).await?;
            }
            CollabCommand::Stop { id } => show(
                client
                    .post(&format!("/collaborations/{id}/stop"), json!({}))
                    .await?,
                output::collaboration,
            ),
            CollabCommand::Delete { id } => {
                client.delete(&format!("/collaborations/{id}")).await?;
                output::done(json, &format!("Deleted collaboration {id}."));
            }
            CollabCommand::Watch { id } => watch::follow(client, &id, json).await?,
            CollabCommand::Events { after } => events::follow(client, after, json).await?,
            CollabCommand::Figures { id } => show(
                client.get(&format!("/collaborations/{id}/figures")).await?,
                output::figures,
            ),
            CollabCommand::Transcript { id, format } => {
                client
                    .copy_to_stdout(&format!("/collaborations/{id}/transcript?format={format}"))
                    .await?
            }
        },
        Command::Teams(command) => match command {
            TeamsCommand::Create(fields) => {
                show(client.post("/teams", fields.to_json()).await?, output::team)
            }
            TeamsCommand::List(page) => show(
                client.get(&paged("/teams", &page, &[])).await?,
                output::teams,
            ),
            TeamsCommand::Get { team } => {
                show(client.get(&format!("/teams/{team}")).await?, output::team)
            }
            TeamsCommand::Update { team, fields } => show(
                client
                    .patch(&format!("/teams/{team}"), fields.to_json())
                    .await?,
                output::team,
            ),
            TeamsCommand::Delete { team } => {
                client.delete(&format!("/teams/{team}")).await?;
                output::done(json, &format!("Deleted team {team}."));
            }
            TeamsCommand::Run {
                team,
                objective,
                message_cap,
                watch: watching,
            } => {
                let mut body = json!({"objective": objective});
                if let Some(cap) = message_cap {
                    body["message_cap"] = cap.into();
                }
                let created = client
                    .post(&format!("/teams/{team}/collaborations"), body)
                    .await?;
                started(client, created, json, watching).await?;
            }
            TeamsCommand::Runs { team, page } => show(
                client
                    .get(&paged(&format!("/teams/{team}/collaborations"), &page, &[]))
                    .await?,
                output::collaborations,
            ),
        },
        Command::Keys(command) => match command {
            KeysCommand::Create { name, scopes } => {
                let mut body = json!({"name": name});
                if !scopes.is_empty() {
                    body["scopes"] = json!(scopes);
                }
                show(client.post("/keys", body).await?, output::key)
            }
            KeysCommand::List(page) => {
                show(client.get(&paged("/keys", &page, &[])).await?, output::keys)
            }
            KeysCommand::Revoke { id } => {
                client.delete(&format!("/keys/{id}")).await?;
                output::done(json, &format!("Revoked key {id}."));
            }
        },
        Command::Accounts(command) => match command {
            AccountsCommand::Create { name } => show(
                client.post("/accounts", json!({"name": name})).await?,
                output::account,
            ),
            AccountsCommand::List(page) => show(
                client.get(&paged("/accounts", &page, &[])).await?,
                output::accounts,
            ),
        },
    }
    Ok(())
}

/// A collaboration just started: shown, or with `watching` followed to its summary.
async fn started(
    client: &Client,
    created: Value,
    json: bool,
    watching: bool,
) -> Result<(), CliError> {
    if !watching {
        if json {
            output::json(&created);
        } else {
            output::collaboration(&created);
        }
        return Ok(());
    }
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    if json {
        output::json(&created);
    } else {
        eprintln!("Started collaboration {id}; waiting for the first message…");
    }
    watch::follow(client, &id, json).await
}

fn collab_body(create: &CreateCollab) -> Value {
    let mut body = json!({
        "principal": create.principal,
        "participants": create.participants,
        "message_cap": create.message_cap,
        "timeout_window": create.timeout_window,
        "evaluate_objective_completion": !create.no_evaluate,
        "allow_interjections": !create.no_interjections,
    });
    let optional = [
        ("objective", create.objective.clone().map(Value::from)),
        ("strategy", create.strategy.clone().map(Value::from)),
        ("token_budget", create.token_budget.map(Value::from)),
        ("cost_budget_usd", create.cost_budget_usd.map(Value::from)),
        ("webhook_url", create.webhook_url.clone().map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
}

/// `path?page=…&size=…&name=value…`, leaving out what was not given.
fn paged(path: &str, page: &PageArgs, filters: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(p) = page.page {
        query.append_pair("page", &p.to_string());
    }
    if let Some(s) = page.size {
        query.append_pair("size", &s.to_string());
    }
    for (name, value) in filters {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
