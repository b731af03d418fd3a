//! Teams: saved rosters run with one call, and reachable as one agent over A2A (driven here
//! by the A2A reference SDK's client).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, id, peers, problem, spawn_app};

/// A team of two scripted agents that talk `cap` messages, `delay_ms` apart.
async fn team(app: &TestApp, name: &str, cap: u32, delay_ms: u64) -> (Value, Value, Value) {
    let host = app
        .scripted(&format!("{name} host"), &["Shall we?", "Agreed."], delay_ms)
        .await;
    let guest = app
        .scripted(
            &format!("{name} guest"),
            &["Yes, let us.", "Done."],
            delay_ms,
        )
        .await;
    let response = app
        .post(
            "/api/v1/teams",
            &json!({"name": name, "description": "Plans things",
                    "principal": id(&host), "participants": [guest["address"]],
                    "message_cap": cap, "strategy": "round_robin",
                    "evaluate_objective_completion": false}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("location"));
    (response.json().await.unwrap(), host, guest)
}

#[tokio::test]
async fn a_team_is_saved_read_edited_and_deleted() {
    let app = spawn_app().await;
    let (created, host, guest) = team(&app, "Planners", 4, 0).await;
    assert!(created["address"].as_str().unwrap().starts_with("agent1q"));
    assert_eq!(created["principal"]["id"], host["id"]);
    assert_eq!(created["participants"][0]["id"], guest["id"]);
    assert_eq!(created["participants"][0]["deleted"], false);
    assert_eq!(created["message_cap"], 4);
    assert_eq!(created["timeout_window"], 120, "the default");
    let team_id = id(&created);
    assert_eq!(
        created["a2a_card_url"],
        app.url(&format!("/a2a/teams/{team_id}/.well-known/agent-card.json"))
    );
    assert_eq!(created["mcp_url"], app.url("/mcp"));

    // By id and by address, and in the list.
    let by_address = app
        .get_json(&format!(
            "/api/v1/teams/{}",
            created["address"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_address["id"], created["id"]);
    let listed = app.get_json("/api/v1/teams").await;
    assert_eq!(listed["meta"]["total"], 1);
    assert_eq!(listed["items"][0]["id"], created["id"]);

    // A patch is merged and checked whole.
    let response = app
        .patch(
            &format!("/api/v1/teams/{team_id}"),
            &json!({"name": "Planners II", "message_cap": 6}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let edited: Value = response.json().await.unwrap();
    assert_eq!(edited["name"], "Planners II");
    assert_eq!(edited["message_cap"], 6);
    assert_eq!(edited["principal"]["id"], host["id"], "the rest is kept");
    for (patch, field) in [
        (json!({"participants": []}), "participants"),
        (json!({"participants": [id(&host)]}), "participants[0]"),
        (json!({"message_cap": 0}), "message_cap"),
        (json!({"address": "agent1qnotthis"}), "address"),
    ] {
        let response = app.patch(&format!("/api/v1/teams/{team_id}"), &patch).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], field, "{patch}");
    }
    assert_eq!(
        app.get_json(&format!("/api/v1/teams/{team_id}")).await["name"],
        "Planners II",
        "a refused patch changes nothing"
    );

    let response = app.delete(&format!("/api/v1/teams/{team_id}")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.get(&format!("/api/v1/teams/{team_id}")).await;
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_bad_team_is_refused_naming_what_is_wrong() {
    let app = spawn_app().await;
    let host = app.scripted("Host", &["Hi"], 0).await;
    let cases = [
        (
            json!({"name": "T", "principal": id(&host), "participants": []}),
            "participants",
        ),
        (
            json!({"name": " ", "principal": id(&host), "participants": [id(&host)]}),
            "name",
        ),
        (
            json!({"name": "T", "principal": id(&host),
                   "participants": ["0190e4a0-0000-7000-8000-000000000000"]}),
            "participants[0]",
        ),
        (
            json!({"name": "T", "principal": id(&host), "participants": ["x"],
                   "strategy": "chaos"}),
            "participants[0]",
        ),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/teams", &body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body}: {problem}");
    }
    assert_eq!(app.get_json("/api/v1/teams").await["meta"]["total"], 0);
}

#[tokio::test]
async fn a_team_runs_on_an_objective_and_its_runs_are_listed_by_team() {
    let app = spawn_app().await;
    let (team, host, _) = team(&app, "Planners", 4, 0).await;
    let team_id = id(&team);
    let response = app
        .post(
            &format!("/api/v1/teams/{team_id}/collaborations"),
            &json!({"objective": "Plan the offsite", "message_cap": 2}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["team_id"], team["id"]);
    assert_eq!(run["objective"], "Plan the offsite");
    assert_eq!(run["message_cap"], 2, "the run's own cap");
    assert_eq!(run["strategy"], "round_robin", "the team's default");
    assert_eq!(run["principal"]["id"], host["id"]);
    let done = app.wait_until_summarized(&id(&run)).await;
    assert_eq!(done["end_reason"], "message_cap");

    // One collaboration not of the team.
    app.scripted_duo(1, 0).await;
    let by_team = app
        .get_json(&format!("/api/v1/collaborations?team={team_id}"))
        .await;
    assert_eq!(by_team["meta"]["total"], 1);
    assert_eq!(by_team["items"][0]["id"], run["id"]);
    let runs = app
        .get_json(&format!("/api/v1/teams/{team_id}/collaborations"))
        .await;
    assert_eq!(runs["meta"]["total"], 1);
    assert_eq!(
        app.get_json("/api/v1/collaborations").await["meta"]["total"],
        2
    );
    // No such team: nothing, as for an unknown agent.
    let none = app
        .get_json("/api/v1/collaborations?team=0190e4a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(none["meta"]["total"], 0);

    // A run needs an objective.
    let response = app
        .post(
            &format!("/api/v1/teams/{team_id}/collaborations"),
            &json!({"objective": "  "}),
        )
        .await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_team_that_lost_a_member_refuses_to_run_naming_it() {
    let app = spawn_app().await;
    let (team, _, guest) = team(&app, "Planners", 4, 0).await;
    let response = app.delete(&format!("/api/v1/agents/{}", id(&guest))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let shown = app.get_json(&format!("/api/v1/teams/{}", id(&team))).await;
    assert_eq!(shown["participants"][0]["deleted"], true);
    assert_eq!(shown["participants"][0]["name"], "Planners guest");
    let response = app
        .post(
            &format!("/api/v1/teams/{}/collaborations", id(&team)),
            &json!({"objective": "Plan"}),
        )
        .await;
    let problem = problem(response, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("Planners guest"), "{detail}");
    assert!(detail.contains(&id(&guest)), "{detail}");
    assert_eq!(
        app.get_json("/api/v1/collaborations").await["meta"]["total"],
        0,
        "nothing started"
    );
}

#[tokio::test]
async fn another_account_sees_none_of_a_team() {
    let app = spawn_app().await;
    let (team, _, _) = team(&app, "Planners", 4, 0).await;
    let response = app
        .post("/api/v1/accounts", &json!({"name": "Other"}))
        .await;
    let created: Value = response.json().await.unwrap();
    let other = app.with_key(created["key"]["key"].as_str().unwrap());
    let team_id = id(&team);
    for path in [
        format!("/api/v1/teams/{team_id}"),
        format!("/a2a/teams/{team_id}/.well-known/agent-card.json"),
    ] {
        problem(other.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    let response = other
        .post(
            &format!("/api/v1/teams/{team_id}/collaborations"),
            &json!({"objective": "Plan"}),
        )
        .await;
    problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(other.get_json("/api/v1/teams").await["meta"]["total"], 0);
}

/// A JSON-RPC call to a team's A2A endpoint.
async fn rpc(app: &TestApp, team_id: &str, method: &str, params: Value) -> Value {
    let response = app
        .post(
            &format!("/a2a/teams/{team_id}"),
            &json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_a2a_endpoint_answers_in_a2a_terms() {
    let app = spawn_app().await;
    let (team, _, _) = team(&app, "Planners", 2, 0).await;
    let team_id = id(&team);
    let unknown = rpc(&app, &team_id, "tasks/send", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601);
    assert_eq!(unknown["id"], 7);
    let missing = rpc(
        &app,
        &team_id,
        "GetTask",
        json!({"id": "0190e4a0-0000-7000-8000-000000000000"}),
    )
    .await;
    assert_eq!(missing["error"]["code"], -32001);
    let empty = rpc(
        &app,
        &team_id,
        "SendMessage",
        json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": []}}),
    )
    .await;
    assert_eq!(empty["error"]["code"], -32602);

    // A blocking send of a quick run answers the finished task, summary and outcome.
    let sent = rpc(
        &app,
        &team_id,
        "SendMessage",
        json!({"message": {"messageId": "m2", "role": "ROLE_USER",
                           "parts": [{"text": "Plan the offsite"}]}}),
    )
    .await;
    let task = &sent["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{sent}");
    let names: Vec<&str> = task["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["summary", "outcome"]);
    let collaboration = app.collaboration(task["id"].as_str().unwrap()).await;
    assert_eq!(collaboration["team_id"], team["id"]);
    assert_eq!(collaboration["context_id"], task["contextId"]);

    // The same contextId continues the conversation: the next run knows the last answer.
    let followed = rpc(
        &app,
        &team_id,
        "SendMessage",
        json!({"message": {"messageId": "m3", "role": "ROLE_USER", "contextId": task["contextId"],
                           "parts": [{"text": "And the budget?"}]},
               "configuration": {"returnImmediately": true}}),
    )
    .await;
    let next = &followed["result"]["task"];
    assert_eq!(next["contextId"], task["contextId"]);
    assert_eq!(next["status"]["state"], "TASK_STATE_WORKING");
    let objective = app.collaboration(next["id"].as_str().unwrap()).await["objective"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(objective.starts_with("And the budget?"), "{objective}");
    assert!(
        objective.contains(collaboration["summary"].as_str().unwrap()),
        "{objective}"
    );
    let listed = rpc(
        &app,
        &team_id,
        "ListTasks",
        json!({"contextId": task["contextId"], "pageSize": 1}),
    )
    .await;
    assert_eq!(listed["result"]["totalSize"], 2);
    assert_eq!(listed["result"]["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(listed["result"]["nextPageToken"], "2");

    // Without a key: refused as the REST API refuses.
    let response = reqwest::Client::new()
        .post(app.url(&format!("/a2a/teams/{team_id}")))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn the_a2a_reference_client_delegates_to_a_team() {
    let app = spawn_app().await;
    let (quick, _, _) = team(&app, "Quick", 3, 50).await;
    let (slow, _, _) = team(&app, "Slow", 50, 60_000).await;
    let key = crate::support::ADMIN_KEY;
    let base = app.url("");
    let Some(seen) = peers::a2a_client(&[&base, key, &id(&quick), &id(&slow)]).await else {
        return;
    };
    let card = &seen["card"];
    assert_eq!(card["name"], "Quick");
    assert_eq!(
        card["interfaces"],
        json!([{"binding": "JSONRPC", "version": "1.0",
                "url": app.url(&format!("/a2a/teams/{}", id(&quick)))}])
    );
    assert_eq!(card["streaming"], true);
    assert_eq!(card["schemes"], json!(["skein_api_key"]));

    let stream = &seen["stream"];
    let kinds: Vec<&str> = stream["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"task"), "{stream}");
    assert_eq!(kinds.last(), Some(&"status_update"), "{stream}");
    assert_eq!(stream["final"], "TASK_STATE_COMPLETED");
    assert_eq!(
        stream["said"],
        json!([
            "Quick host: Shall we?",
            "Quick guest: Yes, let us.",
            "Quick host: Agreed."
        ]),
        "every message, in order"
    );
    let artifacts = stream["artifacts"].as_array().unwrap();
    assert_eq!(artifacts[0]["name"], "summary");
    assert_eq!(artifacts[1]["name"], "outcome");
    assert!(artifacts[1]["parts"][0]["data"]["decisions"].is_array());

    let task_id = stream["task_id"].as_str().unwrap();
    let collaboration = app.collaboration(task_id).await;
    assert_eq!(collaboration["team_id"], quick["id"]);
    assert_eq!(seen["task"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(seen["task"]["context_id"], stream["context_id"]);
    let summary = collaboration["summary"].as_str().unwrap();
    assert!(
        seen["task"]["artifacts"][0]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains(summary)
    );
    assert_eq!(seen["listed"]["ids"], json!([task_id]));
    assert_eq!(seen["listed"]["total"], 1);

    let cancel = &seen["cancel"];
    assert_eq!(cancel["started"], "TASK_STATE_WORKING");
    assert_eq!(cancel["cancelled"], "TASK_STATE_CANCELED");
    assert_eq!(cancel["again"], "TaskNotCancelableError");
    assert_eq!(
        cancel["other_teams_task"], "TaskNotFoundError",
        "a task is found through its own team only"
    );
    let runs = app
        .get_json(&format!("/api/v1/teams/{}/collaborations", id(&slow)))
        .await;
    assert_eq!(runs["items"][0]["status"], "cancelled");
    assert_eq!(runs["items"][0]["end_reason"], "cancelled");
    assert_ne!(seen["anonymous"], "resolved");
}

#[tokio::test]
async fn the_mcp_reference_client_runs_a_team_and_reads_its_answer() {
    let app = spawn_app().await;
    let (quick, _, _) = team(&app, "Quick", 3, 300).await;
    let key = crate::support::ADMIN_KEY;
    let Some(seen) = peers::mcp_client(&[&app.url("/mcp"), key, &id(&quick)]).await else {
        return;
    };
    assert_eq!(
        seen["tools"],
        json!([
            "get_collaboration",
            "list_agents",
            "list_teams",
            "post_message",
            "start_collaboration",
            "stop_collaboration"
        ])
    );
    assert!(
        seen["protocol"].is_string(),
        "a protocol version was agreed: {seen}"
    );
    assert_eq!(seen["teams"], json!(["Quick"]));
    assert_eq!(
        seen["started"],
        json!({"status": "running", "team_id": quick["id"]}),
        "answered at once, while the team works"
    );
    let finished = &seen["finished"];
    assert_eq!(finished["status"], "completed", "{seen}");
    assert_eq!(finished["end_reason"], "message_cap");
    let stored = app.collaboration(finished["id"].as_str().unwrap()).await;
    assert_eq!(finished["summary"], stored["summary"]);
    assert_eq!(finished["outcome"], stored["outcome"]);
    assert_eq!(
        finished["transcript"],
        json!([
            "Quick host: Shall we?",
            "Quick guest: Yes, let us.",
            "Quick host: Agreed."
        ])
    );
    let progress = seen["progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "waiting reports progress: {seen}");
    assert!(
        progress.iter().all(|p| p["total"].as_f64() == Some(3.0)),
        "{seen}"
    );
    assert_eq!(seen["missing"]["is_error"], true);
    assert_eq!(seen["missing"]["content"]["error"], "no such team");
    assert_ne!(seen["anonymous"], "connected");
}

#[tokio::test]
async fn a_uagent_sends_a_team_a_chat_message_and_gets_its_summary() {
    let app = spawn_app().await;
    let (team, _, _) = team(&app, "Planners", 3, 50).await;
    let address = team["address"].as_str().unwrap().to_owned();
    // Closed to uAgents until asked: the Almanac does not even know it.
    let lookup = format!("/v1/almanac/agents/{address}");
    assert_eq!(app.get(&lookup).await.status(), StatusCode::NOT_FOUND);
    let response = app
        .patch(
            &format!("/api/v1/teams/{}", id(&team)),
            &json!({"answers_uagents": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.get(&lookup).await.status(), StatusCode::OK);

    let base = app.url("");
    let Some(peer) = peers::UagentPeer::start(
        "silent",
        "asker-seed-1",
        &["--agentverse", &base, "--ask", &address, "Plan the offsite"],
    )
    .await
    else {
        return;
    };
    // Acknowledged, then answered with the summary, in the session it wrote in.
    let answer = crate::support::wait_for(|| async {
        peer.heard()
            .into_iter()
            .find(|h| h["from"] == address.as_str() && h["text"].is_string())
    })
    .await;
    let heard = peer.heard();
    assert!(
        heard
            .iter()
            .any(|h| h["from"] == address.as_str() && h["acknowledged"].is_string()),
        "{heard:?}"
    );
    let runs = app
        .get_json(&format!("/api/v1/teams/{}/collaborations", id(&team)))
        .await;
    assert_eq!(runs["meta"]["total"], 1);
    let run = &runs["items"][0];
    assert_eq!(run["objective"], "Plan the offsite");
    assert_eq!(run["status"], "completed");
    assert_eq!(
        run["context_id"], answer["session"],
        "the session is the conversation"
    );
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains(run["summary"].as_str().unwrap()), "{text}");
    peer.stop().await;
}

/// A team ("Kitchen") added as an a2a agent ("Kitchen team": its card, and a key of its
/// server as bearer), and a collaboration of Host with it, three messages long, started.
/// Returns (the team, the a2a agent, the collaboration).
pub(crate) async fn delegating(app: &TestApp) -> (Value, Value, Value) {
    let (inner, _, _) = team(app, "Kitchen", 2, 0).await;
    let delegate = app
        .create_agent(json!({"name": "Kitchen team", "kind": "a2a",
                             "card_url": inner["a2a_url"],
                             "bearer": crate::support::ADMIN_KEY}))
        .await;
    let host = app
        .scripted("Host", &["What is for dinner?", "Thanks."], 0)
        .await;
    let parent = app
        .collaborate(
            &host,
            &delegate,
            json!({"message_cap": 3, "strategy": "round_robin",
                   "evaluate_objective_completion": false}),
        )
        .await;
    (inner, delegate, parent)
}

#[tokio::test]
async fn a_team_takes_part_in_another_collaboration_over_a2a() {
    let app = spawn_app().await;
    let (inner, delegate, parent) = delegating(&app).await;
    assert_eq!(delegate["credential_headers"], json!(["Authorization"]));
    assert!(delegate.get("bearer").is_none() && delegate.get("headers").is_none());
    let done = app.wait_until_summarized(&id(&parent)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["end_reason"], "message_cap");

    // The team's run is a collaboration of its own, completed, and linked to the parent.
    let nested = app
        .get_json(&format!(
            "/api/v1/collaborations?context_id={}",
            id(&parent)
        ))
        .await;
    assert_eq!(nested["meta"]["total"], 1, "{nested}");
    let run = &nested["items"][0];
    assert_eq!(run["team_id"], inner["id"]);
    assert_eq!(run["status"], "completed");
    assert!(
        run["objective"]
            .as_str()
            .unwrap()
            .contains("What is for dinner?"),
        "{run}"
    );
    // What the team concluded is what it said in the parent's channel.
    let history = app.history(done["channel_id"].as_str().unwrap()).await;
    let said: Vec<&Value> = history
        .iter()
        .filter(|e| e["type"] == "message" && e["sender"]["name"] == "Kitchen team")
        .collect();
    assert_eq!(said.len(), 1);
    let content = said[0]["content"].as_str().unwrap();
    assert!(
        content.contains(run["summary"].as_str().unwrap()),
        "{content}"
    );
}

#[tokio::test]
async fn subscribing_to_a_task_streams_it_to_its_end_and_a_finished_one_is_refused() {
    let app = spawn_app().await;
    let (team, _, _) = team(&app, "Planners", 3, 300).await;
    let team_id = id(&team);
    let sent = rpc(
        &app,
        &team_id,
        "SendMessage",
        json!({"message": {"messageId": "m1", "role": "ROLE_USER",
                           "parts": [{"text": "Plan the offsite"}]},
               "configuration": {"returnImmediately": true}}),
    )
    .await;
    let task_id = sent["result"]["task"]["id"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .post(app.url(&format!("/a2a/teams/{team_id}")))
        .bearer_auth(crate::support::ADMIN_KEY)
        .json(
            &json!({"jsonrpc": "2.0", "id": "s", "method": "SubscribeToTask",
                      "params": {"id": task_id}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The whole stream, to its end: every event a JSON-RPC response to the request.
    let body = tokio::time::timeout(crate::support::PATIENCE, response.text())
        .await
        .expect("the stream ends with the task")
        .unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["id"] == "s" && e["jsonrpc"] == "2.0")
    );
    assert_eq!(events[0]["result"]["task"]["id"], task_id.as_str());
    let last = &events.last().unwrap()["result"]["statusUpdate"];
    assert_eq!(last["status"]["state"], "TASK_STATE_COMPLETED", "{body}");
    let said = events
        .iter()
        .filter(|e| e["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING")
        .count();
    assert_eq!(said, 3, "one update per message: {body}");

    let again = rpc(&app, &team_id, "SubscribeToTask", json!({"id": task_id})).await;
    assert_eq!(again["error"]["code"], -32004);
}
