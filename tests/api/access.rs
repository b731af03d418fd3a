//! Accounts, keys and scopes, tenant isolation, and how WebSocket streams are admitted.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

use crate::support::{
    ADMIN_KEY, Api, Said, TestApp, id, on_postgres, problem, process::Process, spawn_app,
    spawn_app_with,
};

/// A new account, created by the operator; returns its admin key.
async fn new_account(app: &Api, name: &str) -> String {
    let response = app.post("/api/v1/accounts", &json!({"name": name})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    created["key"]["key"].as_str().unwrap().to_owned()
}

/// A new key of the caller's account with `scopes`; returns (id, secret).
async fn new_key(api: &Api, scopes: &[&str]) -> (String, String) {
    let response = api
        .post("/api/v1/keys", &json!({"name": "k", "scopes": scopes}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    (id(&created), created["key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_account_comes_with_a_key_shown_once_and_listed_only_by_its_prefix() {
    let app = spawn_app().await;
    let response = app
        .post("/api/v1/accounts", &json!({"name": "Team Blue"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let account: Value = response.json().await.unwrap();
    assert_eq!(account["name"], "Team Blue");
    assert_eq!(account["operator"], false);
    let secret = account["key"]["key"].as_str().unwrap();
    assert!(secret.starts_with("sk_"), "{secret}");
    assert!(secret.len() >= 3 + 64, "at least 32 random bytes in hex");
    assert_eq!(account["key"]["key_prefix"], secret[..12]);
    assert_eq!(account["key"]["scopes"], json!(["read", "write", "admin"]));
    assert!(account["key"]["last_used_at"].is_null());

    let team = app.with_key(secret);
    let keys = team.get_json("/api/v1/keys").await;
    assert_eq!(keys["meta"]["total"], 1);
    let listed = &keys["items"][0];
    assert_eq!(listed["key_prefix"], secret[..12]);
    assert!(listed.get("key").is_none(), "the secret is never listed");
    assert!(!keys.to_string().contains(secret));
    assert!(
        !listed["last_used_at"].is_null(),
        "using the key records it"
    );

    let accounts = app.get_json("/api/v1/accounts").await;
    assert_eq!(
        accounts["meta"]["total"], 2,
        "the operator's and the new one"
    );
}

#[tokio::test]
async fn a_read_key_reads_but_gets_403_when_it_writes_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, read_only) = new_key(&app, &["read"]).await;
    let reader = app.with_key(&read_only);
    assert_eq!(reader.get("/api/v1/agents").await.status(), StatusCode::OK);
    // Watching is reading: a read key may ask for a stream ticket and use it.
    let collaboration = app.scripted_duo(2, 0).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    let ticket = reader.ticket(channel).await;
    let mut viewer = reader
        .viewer_at(&format!(
            "/api/v1/channels/{channel}/stream?ticket={}",
            ticket["value"].as_str().unwrap()
        ))
        .await;
    assert_eq!(viewer.frame().await["type"], "hello");
    let refused = reader
        .post(
            "/api/v1/agents",
            &json!({"name": "A", "kind": "scripted", "replies": ["a"]}),
        )
        .await;
    let refused = problem(refused, StatusCode::FORBIDDEN).await;
    assert!(refused["detail"].as_str().unwrap().contains("write"));
    assert_eq!(
        app.get_json("/api/v1/agents").await["meta"]["total"],
        2,
        "the duo only"
    );

    // A write key does everything but manage keys and accounts.
    let (_, write) = new_key(&app, &["write"]).await;
    let writer = app.with_key(&write);
    writer.scripted("A", &["a"], 0).await;
    for response in [
        writer.get("/api/v1/keys").await,
        writer.post("/api/v1/keys", &json!({"name": "x"})).await,
        writer.post("/api/v1/accounts", &json!({"name": "x"})).await,
    ] {
        problem(response, StatusCode::FORBIDDEN).await;
    }
    // An account's own admin manages its keys, but not other accounts.
    let team = app.with_key(&new_account(&app, "team").await);
    assert_eq!(team.get("/api/v1/keys").await.status(), StatusCode::OK);
    problem(
        team.post("/api/v1/accounts", &json!({"name": "x"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(team.get("/api/v1/accounts").await, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_its_streams_close_with_4403() {
    let app = spawn_app().await;
    let (key_id, secret) = new_key(&app, &["read", "write"]).await;
    let user = app.with_key(&secret);
    let collaboration = user.scripted_duo(400, 100).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    let mut by_header = user.viewer(channel, 0).await;
    assert_eq!(by_header.frame().await["type"], "hello");
    let ticket = user.ticket(channel).await;
    let mut by_ticket = user
        .viewer_at(&format!(
            "/api/v1/channels/{channel}/stream?ticket={}",
            ticket["value"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_ticket.frame().await["type"], "hello");
    let unused_ticket = user.ticket(channel).await;

    let revoked = app.delete(&format!("/api/v1/keys/{key_id}")).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);

    problem(user.get("/api/v1/agents").await, StatusCode::UNAUTHORIZED).await;
    for viewer in [&mut by_header, &mut by_ticket] {
        let closed = loop {
            match viewer.next().await {
                Said::Frame(_) => continue,
                Said::Closed(code, reason) => break (code, reason),
            }
        };
        assert_eq!(closed.0, Some(CloseCode::from(4403)), "{}", closed.1);
        assert!(closed.1.contains("revoked"), "{}", closed.1);
    }
    // A ticket the key asked for before is dead with it: refused before any frame.
    let mut late = user
        .viewer_at(&format!(
            "/api/v1/channels/{channel}/stream?ticket={}",
            unused_ticket["value"].as_str().unwrap()
        ))
        .await;
    assert!(matches!(
        late.next().await,
        Said::Closed(Some(CloseCode::Policy), _)
    ));
    let keys = app.get_json("/api/v1/keys").await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap();
    assert!(!listed["revoked_at"].is_null());
    let read = app.get_json(&format!("/api/v1/keys/{key_id}")).await;
    assert_eq!(&read, listed);
    // The server's own key is rotated in its configuration, not revoked here.
    let own = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_prefix"] == ADMIN_KEY[..12])
        .unwrap();
    problem(
        app.delete(&format!("/api/v1/keys/{}", id(own))).await,
        StatusCode::CONFLICT,
    )
    .await;
}

/// Everything account A has, for B to try.
struct Holdings {
    agent: Value,
    collaboration: Value,
    channel: String,
    key_id: String,
}

async fn holdings(a: &Api) -> Holdings {
    let collaboration = a.scripted_duo(400, 200).await;
    let agent = a
        .get_json(&format!(
            "/api/v1/agents/{}",
            collaboration["principal_agent_id"].as_str().unwrap()
        ))
        .await;
    let (key_id, _) = new_key(a, &["read"]).await;
    Holdings {
        channel: collaboration["channel_id"].as_str().unwrap().to_owned(),
        agent,
        collaboration,
        key_id,
    }
}

/// The status and the JSON body, if any.
async fn outcome(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn another_accounts_resources_are_404_everywhere_like_ids_that_do_not_exist() {
    let app = spawn_app().await;
    let a = app.with_key(&new_account(&app, "A").await);
    let b = app.with_key(&new_account(&app, "B").await);
    let theirs = holdings(&a).await;
    let nobody = uuid::Uuid::new_v4().to_string();
    let collaboration = id(&theirs.collaboration);
    let agent = id(&theirs.agent);
    let address = theirs.agent["address"].as_str().unwrap().to_owned();

    // Each request once with A's id and once with an id nobody has: the answers must match.
    use reqwest::Method;
    let post = json!({"sender": uuid::Uuid::new_v4().to_string(), "content": "hi"});
    let cases = [
        (Method::GET, "/api/v1/agents/ID", None, &agent),
        (
            Method::PATCH,
            "/api/v1/agents/ID",
            Some(json!({"name": "mine"})),
            &agent,
        ),
        (Method::DELETE, "/api/v1/agents/ID", None, &agent),
        (
            Method::GET,
            "/api/v1/collaborations/ID",
            None,
            &collaboration,
        ),
        (
            Method::POST,
            "/api/v1/collaborations/ID/stop",
            None,
            &collaboration,
        ),
        (
            Method::DELETE,
            "/api/v1/collaborations/ID",
            None,
            &collaboration,
        ),
        (Method::GET, "/api/v1/channels/ID", None, &theirs.channel),
        (
            Method::GET,
            "/api/v1/channels/ID/messages",
            None,
            &theirs.channel,
        ),
        (
            Method::POST,
            "/api/v1/channels/ID/messages",
            Some(post),
            &theirs.channel,
        ),
        (
            Method::POST,
            "/api/v1/channels/ID/websocket_tickets",
            None,
            &theirs.channel,
        ),
        (Method::GET, "/api/v1/keys/ID", None, &theirs.key_id),
        (Method::DELETE, "/api/v1/keys/ID", None, &theirs.key_id),
    ];
    for (method, template, body, target) in cases {
        let mut answers = Vec::new();
        for x in [target.as_str(), nobody.as_str()] {
            let path = template.replace("ID", x);
            let mut builder = b
                .client
                .request(method.clone(), b.url(&path))
                .bearer_auth(&b.key);
            if let Some(body) = &body {
                builder = builder.json(body);
            }
            let (status, mut problem) = outcome(builder.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
            problem["detail"] = problem["detail"].as_str().unwrap().replace(x, "ID").into();
            answers.push(problem);
        }
        assert_eq!(
            answers[0], answers[1],
            "distinguishable: {method} {template}"
        );
    }
    // By address too.
    let (status, _) = outcome(b.get(&format!("/api/v1/agents/{address}")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Lists and filters show nothing of A's.
    for path in [
        "/api/v1/agents".to_owned(),
        "/api/v1/collaborations".to_owned(),
        format!("/api/v1/collaborations?agent={agent}"),
        format!("/api/v1/collaborations?agent={address}"),
        format!("/api/v1/collaborations?channel_id={}", theirs.channel),
        "/api/v1/keys".to_owned(),
    ] {
        let page = b.get_json(&path).await;
        assert!(
            !page.to_string().contains(&agent) && !page.to_string().contains(&collaboration),
            "{path}: {page}"
        );
    }
    assert_eq!(
        b.get_json("/api/v1/collaborations").await["meta"]["total"],
        0
    );
    assert_eq!(
        b.get_json("/api/v1/keys").await["meta"]["total"],
        1,
        "its own key only"
    );

    // A's agents cannot join B's collaborations: the same 422 as for an unknown agent.
    let mine = b.scripted("Mine", &["m"], 0).await;
    for (principal, participant, field) in [
        (agent.clone(), id(&mine), "principal"),
        (id(&mine), agent.clone(), "participants[0]"),
    ] {
        let refused = b
            .post(
                "/api/v1/collaborations",
                &json!({"principal": principal, "participants": [participant],
                        "message_cap": 2, "timeout_window": 5}),
            )
            .await;
        let refused = problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refused["errors"][0]["field"], field);
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("no agent")
        );
    }

    // A stream of A's channel with B's key is closed like one of no channel at all.
    for channel in [theirs.channel.as_str(), nobody.as_str()] {
        let mut viewer = b.viewer(channel, 0).await;
        match viewer.next().await {
            Said::Closed(code, reason) => {
                assert_eq!(code, Some(CloseCode::Policy));
                assert_eq!(reason, "unknown channel");
            }
            Said::Frame(frame) => panic!("B saw a frame of A's channel: {frame}"),
        }
    }
    // And nothing of A's changed.
    let after = a.collaboration(&collaboration).await;
    assert_eq!(after["status"], "running");
    assert_eq!(
        a.get_json(&format!("/api/v1/agents/{agent}")).await["name"],
        theirs.agent["name"]
    );
}

#[tokio::test]
async fn tickets_are_single_use_bound_to_one_channel_and_live_a_minute() {
    let app = spawn_app().await;
    let first = app.scripted_duo(400, 200).await;
    let second = app.scripted_duo(400, 200).await;
    let channel = first["channel_id"].as_str().unwrap();
    let ticket = app.ticket(channel).await;
    let expires_at: chrono::DateTime<chrono::Utc> =
        ticket["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = expires_at - chrono::Utc::now();
    assert!((55..=60).contains(&lifetime.num_seconds()), "{lifetime}");
    let value = ticket["value"].as_str().unwrap();

    let other = second["channel_id"].as_str().unwrap();
    let mut elsewhere = app
        .viewer_at(&format!("/api/v1/channels/{other}/stream?ticket={value}"))
        .await;
    assert!(matches!(
        elsewhere.next().await,
        Said::Closed(Some(CloseCode::Policy), _)
    ));
    let path = format!("/api/v1/channels/{channel}/stream?ticket={value}");
    let mut viewer = app.viewer_at(&path).await;
    assert_eq!(viewer.frame().await["type"], "hello");
    let mut again = app.viewer_at(&path).await;
    match again.next().await {
        Said::Closed(code, reason) => {
            assert_eq!(code, Some(CloseCode::Policy));
            assert!(reason.contains("ticket"), "{reason}");
        }
        Said::Frame(frame) => panic!("a used ticket opened a stream: {frame}"),
    }
}

/// The HTTP status of a WebSocket upgrade refused before it happened.
async fn refused_upgrade(app: &TestApp, channel: &str, origin: &str) -> Option<StatusCode> {
    let url = format!("ws://{}/api/v1/channels/{channel}/stream", app.address);
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    headers.insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status()),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn pages_from_origins_neither_ours_nor_allowed_cannot_open_streams() {
    let app = spawn_app_with(|config| {
        config.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let collaboration = app.scripted_duo(400, 200).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    let ours = format!("http://{}", app.address);
    assert_eq!(refused_upgrade(&app, channel, &ours).await, None);
    assert_eq!(
        refused_upgrade(&app, channel, "https://app.example.com").await,
        None
    );
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        assert_eq!(
            refused_upgrade(&app, channel, origin).await,
            Some(StatusCode::FORBIDDEN),
            "{origin}"
        );
    }
    // The same list opens the REST API to those pages, and only to them.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/collaborations"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        let granted = preflight.headers().get("access-control-allow-origin");
        assert_eq!(granted.is_some_and(|o| o == origin), allowed, "{origin}");
    }
}

#[tokio::test]
async fn the_database_holds_no_key_ticket_or_secret_in_plain_text() {
    if on_postgres() {
        eprintln!("this test reads the SQLite file: skipped on PostgreSQL");
        return;
    }
    let app = spawn_app().await;
    let team_key = new_account(&app, "team").await;
    let team = app.with_key(&team_key);
    // Created with an idempotency key, so its response (which holds the secret) is kept.
    let kept = team
        .client
        .post(team.url("/api/v1/keys"))
        .bearer_auth(&team_key)
        .header("Idempotency-Key", "make-a-key")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::CREATED);
    let kept_secret = kept.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let collaboration = team.scripted_duo(2, 0).await;
    let ticket = team
        .ticket(collaboration["channel_id"].as_str().unwrap())
        .await;
    // Secrets Skein must use again, sealed under the server key.
    let courier = team
        .create_agent(json!({"name": "Courier", "kind": "http", "endpoint": "http://127.0.0.1:9/"}))
        .await;
    let hooks = team
        .client
        .put(team.url("/api/v1/webhooks"))
        .bearer_auth(&team_key)
        .json(&json!({"default_url": "http://127.0.0.1:9/hooks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hooks.status(), StatusCode::CREATED);
    let hooks: Value = hooks.json().await.unwrap();
    let secrets = [
        ADMIN_KEY.to_owned(),
        team_key.clone(),
        kept_secret,
        ticket["value"].as_str().unwrap().to_owned(),
        courier["secret"].as_str().unwrap().to_owned(),
        hooks["secret"].as_str().unwrap().to_owned(),
    ];
    let data_dir = app.shut_down_keeping_data().await;
    let dump = crate::support::database_dump(data_dir.path());
    assert!(dump.len() > 4096, "the database was read");
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "{} found in the database",
            &secret[..12]
        );
        // The prefix is stored on purpose; the rest of the secret is not.
        assert!(
            !dump.contains(&secret[12..]),
            "the tail of {} was found",
            &secret[..12]
        );
    }
}

#[tokio::test]
async fn no_key_or_ticket_appears_in_the_logs_even_at_trace_level() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Process::start_with(
        data_dir.path(),
        &[("RUST_LOG", "trace"), ("SKEIN_ALLOW_PRIVATE_URLS", "true")],
    )
    .await;
    let api = &server.api;
    let (_, secret) = new_key(api, &["read", "write"]).await;
    let user = api.with_key(&secret);
    let collaboration = user.scripted_duo(2, 0).await;
    let channel = collaboration["channel_id"].as_str().unwrap();
    let ticket = user.ticket(channel).await;
    let value = ticket["value"].as_str().unwrap().to_owned();
    let mut viewer = user
        .viewer_at(&format!("/api/v1/channels/{channel}/stream?ticket={value}"))
        .await;
    viewer.until("summary").await;
    let mut by_key = user.viewer(channel, 0).await;
    by_key.until("summary").await;
    // Wrong keys and a reused ticket are logged as failures, without the secret.
    let wrong = "sk_not_a_key_but_should_not_be_logged_either";
    assert_eq!(
        api.with_key(wrong).get("/api/v1/agents").await.status(),
        401
    );
    let mut reused = user
        .viewer_at(&format!("/api/v1/channels/{channel}/stream?ticket={value}"))
        .await;
    assert!(matches!(reused.next().await, Said::Closed(..)));
    drop((viewer, by_key, reused));
    let logs = server.stop().await;
    assert!(logs.lines().count() > 20, "trace logging was on:\n{logs}");
    for secret in [ADMIN_KEY, secret.as_str(), value.as_str(), wrong] {
        assert!(!logs.contains(secret), "{} is in the logs", &secret[..12]);
    }
}

#[tokio::test]
async fn a_rotated_admin_key_replaces_the_old_one() {
    let app = spawn_app().await;
    let data_dir = app.shut_down_keeping_data().await;
    let rotated = "sk_rotated_admin_key_fedcba9876543210";
    let app = crate::support::spawn_app_in_with(data_dir, |config| {
        config.admin_key = Some(rotated.into());
    })
    .await;
    problem(app.get("/api/v1/agents").await, StatusCode::UNAUTHORIZED).await;
    let fresh = app.with_key(rotated);
    assert_eq!(fresh.get("/api/v1/agents").await.status(), StatusCode::OK);
}
