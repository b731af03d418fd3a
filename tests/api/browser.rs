//! The web UI in a real headless Chromium, against the real server and the fake model:
//! signing in, the create form, a channel watched live through reloads and restarts, the
//! summary, validation errors beside their fields, and agent management. Screenshots land
//! in `target/tmp/screenshots/`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Api, TestApp,
    browser::{Browser, Page},
    default_provider,
    fake_model::{self, FakeModel},
    id, spawn_app, spawn_app_in_with, spawn_app_with, wait_for,
};

/// A tab signed in through the link `skein serve` prints: the key in the fragment.
async fn signed_in<'b>(browser: &'b Browser, app: &Api) -> Page<'b> {
    let page = browser.page().await;
    page.goto(&format!("{}#key={}", app.url("/"), app.key))
        .await;
    page.wait_until(
        "!document.getElementById('nav').hidden",
        "the navigation shows",
    )
    .await;
    page
}

/// Opens a route of the UI in the current document.
async fn open(page: &Page<'_>, route: &str) {
    page.eval(&format!("location.hash = {}", json!(route)))
        .await;
}

/// A signed-in tab on the agents page with the form for a new agent of `kind` open and
/// its name filled in.
async fn new_agent_form<'b>(browser: &'b Browser, app: &Api, kind: &str, name: &str) -> Page<'b> {
    let page = signed_in(browser, app).await;
    open(&page, "#/agents").await;
    page.click("button.primary").await;
    page.choose("#field-kind", kind).await;
    page.fill("#field-name", name).await;
    page
}

/// The `seq`s the transcript shows, in the order it shows them.
async fn shown_seqs(page: &Page<'_>) -> Vec<i64> {
    let seqs = page
        .eval("[...document.querySelectorAll('.transcript [data-seq]')].map(e => Number(e.dataset.seq))")
        .await;
    serde_json::from_value(seqs).unwrap()
}

async fn last_seq(app: &Api, collaboration: &Value) -> i64 {
    let channel = collaboration["channel_id"].as_str().unwrap();
    app.get_json(&format!("/api/v1/channels/{channel}")).await["last_seq"]
        .as_i64()
        .unwrap()
}

/// Waits until the channel view shows the summary, then checks that the transcript shows
/// every stored event exactly once, in order.
async fn every_seq_once(page: &Page<'_>, app: &Api, collaboration: &Value) {
    page.wait_until(
        "!document.querySelector('.summary').hidden",
        "the summary shows",
    )
    .await;
    let last = last_seq(app, collaboration).await;
    assert_eq!(shown_seqs(page).await, (1..=last).collect::<Vec<_>>());
}

/// Nothing on the page is wider than the window (a phone's, after `resize`).
async fn fits_the_width(page: &Page<'_>, what: &str) {
    assert_eq!(
        page.eval("document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        true,
        "{what} is wider than the screen"
    );
}

fn assert_no_page_errors(browser: &Browser) {
    assert_eq!(browser.errors(), Vec::<String>::new(), "the pages threw");
}

/// Records, from now on, whether a streaming bubble appeared and which connection states
/// the channel view went through.
async fn record_what_the_channel_shows(page: &Page<'_>) {
    page.eval(
        "window.__seen = {typing: false, connection: []};
         new MutationObserver(() => {
           if (document.querySelector('.typing .content')?.textContent) window.__seen.typing = true;
           const state = document.querySelector('.state-line')?.dataset.connection;
           if (state && window.__seen.connection.at(-1) !== state) window.__seen.connection.push(state);
         }).observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});",
    )
    .await;
}

#[tokio::test]
async fn a_collaboration_created_in_the_form_streams_live_and_ends_with_its_summary() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeModel::start_expecting(
        "authorization",
        &format!("Bearer {}", fake_model::KEY),
        Duration::from_millis(200),
    )
    .await;
    fake.reply_with(&[
        "Let's plan Friday night for the four of us. @Scout, where should we eat, and what after?",
        "Tapas at seven, then the jazz bar at nine. I've booked both for four.",
    ]);
    let headline = "Friday is planned: tapas at seven, jazz at nine";
    fake.summarize_with(
        headline,
        "Planner framed the evening and asked Scout for ideas. Scout suggested tapas on Main \
         Street followed by the jazz bar next door, and Planner booked both for four people.",
    );
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    app.create_agent(
        json!({"name": "Planner", "kind": "llm", "system_prompt": "You organise outings."}),
    )
    .await;
    let scout = app
        .scripted(
            "Scout",
            &[
                "Tapas on Main Street is lively and takes groups. The jazz bar next door starts at nine.",
                "Perfect. I'll send everyone the addresses.",
            ],
            300,
        )
        .await;
    app.scripted("Critic", &["Too loud."], 0).await;

    let page = signed_in(&browser, &app).await;
    assert_eq!(
        page.eval("location.hash").await,
        "#/",
        "the key left the address bar"
    );
    assert_eq!(
        page.eval("localStorage.getItem('skein.key')").await,
        app.key
    );

    page.click("nav a[href='#/new']").await;
    page.wait_until(
        "document.querySelectorAll('.picker tbody tr').length === 3",
        "the picker lists the agents",
    )
    .await;
    // Searching by address narrows the picker to that agent.
    let scout_address = scout["address"].as_str().unwrap();
    page.fill("input[type=search]", &scout_address[..20]).await;
    assert_eq!(
        page.eval("[...document.querySelectorAll('.picker tbody tr:not([hidden]) .name')].map(e => e.textContent)").await,
        json!(["Scout"])
    );
    page.fill("input[type=search]", "").await;
    page.click("[aria-label='Planner as principal']").await;
    page.click("[aria-label='Scout as participant']").await;
    page.fill("#field-objective", "Plan a night out on Friday")
        .await;
    page.fill("#field-message_cap", "4").await;
    page.fill("#field-timeout_window", "30").await;
    record_what_the_channel_shows(&page).await;
    page.click("button[type=submit]").await;

    page.wait_until("location.hash.startsWith('#/c/')", "the channel view opens")
        .await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message[data-seq]').length >= 1",
        "the first message shows",
    )
    .await;
    page.screenshot("channel-live").await;
    page.wait_until(
        "!document.querySelector('.summary').hidden",
        "the summary shows",
    )
    .await;

    let list = app.get_json("/api/v1/collaborations").await;
    let created = &list["items"][0];
    assert_eq!(created["objective"], "Plan a night out on Friday");
    assert_eq!(created["message_cap"], 4);
    let history = app.history(created["channel_id"].as_str().unwrap()).await;
    let stored: Vec<(String, String)> = history
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["sender"]["name"].as_str().unwrap().to_owned(),
                e["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let shown: Vec<(String, String)> = serde_json::from_value(
        page.eval("[...document.querySelectorAll('.transcript .message')].map(m => [m.querySelector('.name').textContent, m.querySelector('.content').textContent])")
            .await,
    )
    .unwrap();
    assert_eq!(shown, stored);
    assert_eq!(stored.len(), 4);
    // The roster counts each member's turns as the messages come.
    let so_far: Vec<String> = serde_json::from_value(
        page.eval("[...document.querySelectorAll('.roster .so-far')].map(s => s.textContent)")
            .await,
    )
    .unwrap();
    for (member, line) in ["Planner", "Scout"].iter().zip(&so_far) {
        let turns = stored.iter().filter(|(name, _)| name == member).count();
        let said = match turns {
            0 => "no turns yet".to_owned(),
            1 => "1 turn ·".to_owned(),
            n => format!("{n} turns ·"),
        };
        assert!(line.contains(&said), "{member}: {line:?}, {turns} stored");
    }
    assert_eq!(
        page.eval("window.__seen.typing").await,
        true,
        "the model's text streamed in before its message was stored"
    );
    assert_eq!(page.text(".summary .headline").await, headline);
    assert!(
        page.text(".state-line")
            .await
            .as_str()
            .unwrap()
            .starts_with("Ended because the message cap was reached")
    );
    let facts = page.text(".summary .facts").await;
    assert!(facts.as_str().unwrap().contains("4 of 4"), "{facts}");
    // What it came to, as the summarizer returned it.
    let outcome = page.text(".summary .outcome").await;
    let outcome = outcome.as_str().unwrap();
    for part in [
        "Decisions",
        "Tapas at seven",
        "Action items",
        "Scout: Book the table",
        "Open questions",
        "Who drives?",
    ] {
        assert!(outcome.contains(part), "{part:?} in {outcome:?}");
    }
    // Who did what, a row per member.
    let rows = page
        .wait_until(
            "(() => { const rows = [...document.querySelectorAll('.summary .figures tbody tr')];
                      return rows.length ? rows.map(r => [...r.children].map(c => c.textContent)) : null; })()",
            "the figures show",
        )
        .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("Planner", "2"));
    assert_eq!(
        (
            rows[1][0].as_str(),
            rows[1][1].as_str(),
            rows[1][2].as_str()
        ),
        ("Scout", "2", "0")
    );
    every_seq_once(&page, &app, created).await;
    // Each time the judge ruled, the channel says so, with its reason.
    let verdicts = history.iter().filter(|e| e["type"] == "verdict").count();
    assert!(verdicts >= 1, "{history:?}");
    let shown = page
        .eval("[...document.querySelectorAll('.transcript .verdict')].map(v => v.textContent)")
        .await;
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), verdicts);
    assert!(
        shown[0]
            .as_str()
            .unwrap()
            .starts_with("The judge finds the objective not met yet: "),
        "{shown:?}"
    );
    page.screenshot("channel-summary").await;

    open(&page, "#/").await;
    page.wait_until(
        &format!("document.querySelector('.collab[data-status=completed] .headline')?.textContent === {}", json!(headline)),
        "the list shows the completed collaboration",
    )
    .await;
    page.screenshot("list").await;

    // A phone: nothing wider than the screen.
    page.resize(390, 844, true).await;
    open(&page, &format!("#/c/{}", id(created))).await;
    page.wait_until(
        "!document.querySelector('.summary')?.hidden",
        "the summary shows on a phone",
    )
    .await;
    fits_the_width(&page, "the channel view").await;
    page.screenshot("channel-phone").await;
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn the_list_updates_a_status_live_and_filters_by_status_and_agent() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let other = app.scripted("Loner", &["hi"], 0).await;
    let helper = app.scripted("Helper", &["hello"], 0).await;
    app.collaborate(&other, &helper, json!({"message_cap": 1}))
        .await;
    let page = signed_in(&browser, &app).await;
    page.wait_until(
        "document.querySelectorAll('.collab').length === 1",
        "the list shows the first collaboration",
    )
    .await;
    // Started after the page opened: it appears, counts its messages and ends on screen,
    // with nobody reloading and the page not asking the list again every few seconds.
    let running = app.scripted_duo(6, 700).await;
    let row = format!(".collab[data-id='{}']", id(&running));
    page.wait_until(
        &format!("document.querySelector(\"{row}\")?.dataset.status === 'running'"),
        "the new collaboration appears, running",
    )
    .await;
    page.wait_until(
        &format!(
            "document.querySelector(\"{row}\")?.dataset.status === 'running' && \
             document.querySelector(\"{row} .count\")?.textContent === '3 of 6 messages'"
        ),
        "its message count moves on live",
    )
    .await;
    page.wait_until(
        &format!("document.querySelector(\"{row}\")?.dataset.status === 'completed'"),
        "the list shows it completed",
    )
    .await;
    let asked = page
        .eval(
            "performance.getEntriesByType('resource')\
             .filter((e) => new URL(e.name).pathname === '/api/v1/collaborations').length",
        )
        .await;
    // The first load, the one when the stream is ready, one after the create: no polling
    // (the run took over 4 s; the old list asked every 3 s).
    assert!(
        asked.as_u64().unwrap() <= 3,
        "the list was asked for {asked} times"
    );

    page.choose("select[name=agent]", &id(&other)).await;
    page.wait_until(
        "document.querySelectorAll('.collab').length === 1 && location.hash.includes('agent=')",
        "the list is filtered by agent",
    )
    .await;
    assert_eq!(
        page.text(".collab .meta strong").await,
        "Loner",
        "only the collaboration Loner leads"
    );
    page.choose("select[name=status]", "failed").await;
    page.wait_until(
        "document.querySelector('.collabs .empty')?.textContent.includes('No collaboration matches')",
        "an empty filtered list says so",
    )
    .await;
    // The filters live in the URL, so a reload keeps them.
    page.reload().await;
    assert_eq!(
        page.eval("document.querySelector('select[name=status]').value")
            .await,
        "failed"
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_reload_mid_collaboration_shows_every_seq_exactly_once() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let collaboration = app.scripted_duo(40, 250).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.wait_until(
        "document.querySelectorAll('.transcript [data-seq]').length >= 3",
        "a few messages show",
    )
    .await;
    page.reload().await;
    page.wait_until(
        "document.querySelectorAll('.transcript [data-seq]').length >= 1",
        "the reloaded page shows the transcript",
    )
    .await;
    assert_eq!(
        app.collaboration(&id(&collaboration)).await["status"],
        "running",
        "the reload happened mid-collaboration"
    );
    every_seq_once(&page, &app, &collaboration).await;
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn the_channel_view_recovers_from_a_server_restart_with_nothing_missing() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let address = app.address;
    let collaboration = app.scripted_duo(40, 250).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.wait_until(
        "document.querySelectorAll('.transcript [data-seq]').length >= 3",
        "a few messages show",
    )
    .await;
    record_what_the_channel_shows(&page).await;

    // The server goes away (its WebSockets close with 1001) and comes back on the same
    // address and data; the page is never touched.
    let data = app.shut_down_keeping_data().await;
    let app = spawn_app_in_with(data, move |c| c.bind = address).await;
    every_seq_once(&page, &app, &collaboration).await;
    let states = page.eval("window.__seen.connection").await;
    assert!(
        states.as_array().unwrap().contains(&json!("retrying")),
        "the view said it was reconnecting: {states}"
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_validation_error_is_shown_next_to_its_field_and_nothing_is_created() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    app.scripted("Planner", &["p"], 0).await;
    app.scripted("Scout", &["s"], 0).await;
    let page = signed_in(&browser, &app).await;
    open(&page, "#/new").await;

    // Nobody picked: the server's complaint shows beside the picker.
    page.click("button[type=submit]").await;
    let principal = page
        .wait_until(
            "document.querySelector('[data-error-for=principal]:not([hidden])')?.textContent",
            "the principal's error shows",
        )
        .await;
    assert!(
        principal
            .as_str()
            .unwrap()
            .contains("neither an agent UUID nor an agent address"),
        "{principal}"
    );

    page.click("[aria-label='Planner as principal']").await;
    page.click("[aria-label='Scout as participant']").await;
    page.fill("#field-message_cap", "0").await;
    page.click("button[type=submit]").await;
    let cap = page
        .wait_until(
            "document.querySelector('[data-error-for=message_cap]:not([hidden])')?.textContent",
            "the message cap's error shows",
        )
        .await;
    assert!(cap.as_str().unwrap().contains("between 1 and"), "{cap}");
    assert_eq!(
        page.eval("document.querySelector('[data-error-for=principal]').hidden")
            .await,
        true,
        "a fixed field's old error is gone"
    );
    assert_eq!(
        page.eval("document.getElementById('field-message_cap').getAttribute('aria-invalid')")
            .await,
        "true"
    );
    assert_eq!(page.eval("location.hash").await, "#/new");
    page.screenshot("create-validation").await;
    assert_eq!(
        app.get_json("/api/v1/collaborations").await["meta"]["total"],
        0
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn agents_are_created_edited_and_deleted_in_the_browser() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let page = new_agent_form(&browser, &app, "scripted", "Greeter").await;
    page.click("#field-replies").await;
    page.type_text("Hello there\nGoodbye").await;
    page.fill("#field-delay_ms", "250").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "[...document.querySelectorAll('.agent .name')].some(e => e.textContent === 'Greeter')",
        "the new agent is listed",
    )
    .await;
    let agents = app.get_json("/api/v1/agents").await;
    let greeter = &agents["items"][0];
    assert_eq!(greeter["replies"], json!(["Hello there", "Goodbye"]));
    assert_eq!(greeter["delay_ms"], 250);
    page.screenshot("agents").await;

    // Editing: an empty name is refused beside the field, then a real one is saved.
    let card = format!(".agent[data-id='{}']", id(greeter));
    page.click(&format!("{card} .actions button:first-child"))
        .await;
    page.fill("#field-name", "  ").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.querySelector('[data-error-for=name]:not([hidden])')?.textContent.includes('must not be empty')",
        "the name's error shows",
    )
    .await;
    page.fill("#field-name", "Greeter Two").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "[...document.querySelectorAll('.agent .name')].some(e => e.textContent === 'Greeter Two')",
        "the renamed agent is listed",
    )
    .await;
    assert_eq!(
        app.get_json(&format!("/api/v1/agents/{}", id(greeter)))
            .await["name"],
        "Greeter Two"
    );

    // Deleting asks first.
    page.click(&format!("{card} button.danger")).await;
    page.wait_until(
        "document.getElementById('confirm').open",
        "the confirmation opens",
    )
    .await;
    page.click("#confirm button[value=yes]").await;
    page.wait_until(
        "document.querySelector('.agents .empty')",
        "the list is empty",
    )
    .await;
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 0);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_a_pasted_key_signs_in() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let page = browser.page().await;
    page.goto(&app.url("/")).await;
    page.fill("#key", "sk_not_a_real_key").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.getElementById('key-error')?.textContent === 'That key was not accepted.'",
        "the refusal shows",
    )
    .await;
    page.fill("#key", &app.key).await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.querySelector('h1')?.textContent === 'Collaborations'",
        "the list opens",
    )
    .await;
    // Signing out forgets the key.
    page.click("#sign-out").await;
    page.wait_until("document.getElementById('key')", "the sign-in form is back")
        .await;
    assert_eq!(
        page.eval("localStorage.getItem('skein.key')").await,
        Value::Null
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn stopping_from_the_channel_view_asks_first_and_ends_the_collaboration() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app: TestApp = spawn_app().await;
    let collaboration = app.scripted_duo(1000, 300).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.click(".page-head .actions button:not(.danger):not(.save-transcript)")
        .await;
    page.wait_until(
        "document.getElementById('confirm').open",
        "the confirmation opens",
    )
    .await;
    // Cancelling leaves it running.
    page.click("#confirm button[value=no]").await;
    assert_eq!(
        app.collaboration(&id(&collaboration)).await["status"],
        "running"
    );
    page.click(".page-head .actions button:not(.danger):not(.save-transcript)")
        .await;
    page.click("#confirm button[value=yes]").await;
    page.wait_until(
        "document.querySelector('.state-line')?.textContent.startsWith('Ended because it was stopped')",
        "the view says it was stopped",
    )
    .await;
    assert_eq!(
        app.collaboration(&id(&collaboration)).await["status"],
        "cancelled"
    );
    every_seq_once(&page, &app, &collaboration).await;
    // The transcript is saved as a Markdown file: what the page hands the browser to save.
    page.eval(
        "window.__saved = []; const made = URL.createObjectURL; \
         URL.createObjectURL = (blob) => { window.__saved.push(blob); return made(blob); }",
    )
    .await;
    page.click(".page-head .actions button.save-transcript")
        .await;
    let saved = page
        .wait_until(
            "window.__saved.length ? window.__saved[0].text() : null",
            "the transcript is fetched to be saved",
        )
        .await;
    let saved = saved.as_str().unwrap();
    assert!(saved.starts_with("# Plan a night out"), "{saved}");
    assert!(saved.contains("**Ended** (cancelled"), "{saved}");
    assert_no_page_errors(&browser);
}

/// How far the reader is from the bottom of the page, in pixels.
const GAP_TO_BOTTOM: &str =
    "document.documentElement.scrollHeight - window.innerHeight - window.scrollY";

#[tokio::test]
async fn the_view_follows_new_messages_until_the_reader_scrolls_up() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    // The same long reply over and over: a stall, were stall detection on.
    let app = spawn_app_with(|c| c.engine.stalls.end_after = 0).await;
    let long = "A long reply that takes room on the screen. ".repeat(12);
    let a = app.scripted("A", &[&long], 300).await;
    let b = app.scripted("B", &[&long], 300).await;
    let collaboration = app.collaborate(&a, &b, json!({"message_cap": 200})).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message').length >= 8",
        "enough messages to fill the screen",
    )
    .await;
    page.wait_until(
        &format!("{GAP_TO_BOTTOM} < 5"),
        "the view keeps to the newest message",
    )
    .await;

    page.wheel(-100_000.0).await;
    page.wait_until("window.scrollY === 0", "the reader is at the top")
        .await;
    let shown = page
        .eval("document.querySelectorAll('.transcript .message').length")
        .await;
    page.wait_until(
        &format!("document.querySelectorAll('.transcript .message').length > {shown} + 1"),
        "more messages arrive",
    )
    .await;
    assert_eq!(
        page.eval("window.scrollY").await,
        0,
        "the reader was left where they were"
    );
    assert_eq!(
        page.eval("document.querySelector('.jump').hidden").await,
        false
    );

    page.click(".jump").await;
    page.wait_until(
        &format!("{GAP_TO_BOTTOM} < 5"),
        "the jump goes to the newest message",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('.jump').hidden").await,
        true
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn deleting_from_the_channel_view_asks_first_and_removes_everything() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let collaboration = app.scripted_duo(1000, 300).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.click(".page-head .actions button.danger").await;
    page.wait_until(
        "document.getElementById('confirm').open",
        "the confirmation opens",
    )
    .await;
    page.click("#confirm button[value=yes]").await;
    page.wait_until(
        "location.hash === '#/' && document.querySelector('.collabs .empty')",
        "the list opens without it",
    )
    .await;
    let gone = app
        .get(&format!("/api/v1/collaborations/{}", id(&collaboration)))
        .await;
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn an_llm_agent_is_created_with_a_configured_provider_and_its_address_copied() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.providers = vec![default_provider(&base)];
    })
    .await;
    let page = new_agent_form(&browser, &app, "llm", "Host").await;
    // The model field offers the provider's models; any other name may still be typed.
    page.wait_until(
        "[...document.querySelectorAll('#model-options option')].map(o => o.value).join() === 'fake-model,fake-model-large'",
        "the provider's models are offered",
    )
    .await;
    page.wait_until(
        "document.querySelector('#field-provider option[value=default]')",
        "the configured provider is offered",
    )
    .await;
    page.choose("#field-provider", "default").await;
    page.fill("#field-model", "fake-model-large").await;
    page.click("#field-system_prompt").await;
    page.type_text("You organise outings.").await;
    page.fill("#field-temperature", "0.4").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.querySelector('.agent .name')?.textContent === 'Host'",
        "the new agent is listed",
    )
    .await;
    let host = &app.get_json("/api/v1/agents").await["items"][0];
    assert_eq!(host["kind"], "llm");
    assert_eq!(host["provider"], "default");
    assert_eq!(host["model"], "fake-model-large");
    assert_eq!(host["system_prompt"], "You organise outings.");
    assert!((host["temperature"].as_f64().unwrap() - 0.4).abs() < 1e-6);

    page.grant_clipboard(&app.url("")).await;
    page.click(".agent .copy").await;
    let copied = page
        .wait_until(
            "navigator.clipboard.readText()",
            "the clipboard holds the address",
        )
        .await;
    assert_eq!(copied, host["address"]);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_person_types_into_the_channel_when_it_is_their_turn() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let planner = app
        .scripted("Planner", &["Alice, tapas or pizza?", "Tapas it is."], 200)
        .await;
    let alice = app
        .create_agent(json!({"name": "Alice", "kind": "human"}))
        .await;
    let collaboration = app
        .collaborate(&planner, &alice, json!({"message_cap": 3}))
        .await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.wait_until(
        "document.querySelector('.typing .live-label')?.textContent.includes('waiting for them')",
        "the view shows the engine waiting for Alice",
    )
    .await;
    assert_eq!(
        page.text("#composer-hint").await,
        "It is Alice's turn.",
        "the composer says whose turn it is"
    );
    page.screenshot("channel-human-turn").await;
    page.click("#composer-content").await;
    page.type_text("Tapas, please!").await;
    page.press_enter().await;
    page.wait_until(
        "[...document.querySelectorAll('.transcript .message.role-human[data-seq]')].some(m => m.querySelector('.content').textContent === 'Tapas, please!')",
        "her message is in the transcript",
    )
    .await;
    // Cleared once the server has answered the post, which may be after the stream told.
    page.wait_until(
        "document.getElementById('composer-content').value === ''",
        "the composer is cleared for the next message",
    )
    .await;
    every_seq_once(&page, &app, &collaboration).await;
    assert_eq!(
        page.eval("document.querySelector('.composer').hidden")
            .await,
        true,
        "nobody types into an ended collaboration"
    );
    let history = app
        .history(collaboration["channel_id"].as_str().unwrap())
        .await;
    assert_eq!(history[1]["content"], "Tapas, please!");
    assert_eq!(history[1]["sender"]["name"], "Alice");
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_uagent_made_in_the_form_is_probed_and_a_wrong_endpoint_is_said_beside_it() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let submit = app.url("/submit");
    let Some(peer) =
        crate::support::peers::UagentPeer::start("echo", "form-seed", &["--skein", &submit]).await
    else {
        return;
    };
    let page = new_agent_form(&browser, &app, "uagent", "Chef").await;
    page.fill("#field-address", &peer.address).await;
    page.fill("#field-endpoint", "http://127.0.0.1:9/submit")
        .await;
    page.click("form button[type=submit]").await;
    let said = page
        .wait_until(
            "(() => { const e = document.querySelector('[data-error-for=endpoint]');
                      return e && !e.hidden ? e.textContent : null; })()",
            "the endpoint's error is shown",
        )
        .await;
    assert!(
        said.as_str().unwrap().contains("could not be reached"),
        "{said}"
    );
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 0);
    page.fill("#field-endpoint", &peer.endpoint).await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.querySelector('.agent .name')?.textContent === 'Chef'",
        "the agent is listed",
    )
    .await;
    let chef = &app.get_json("/api/v1/agents").await["items"][0];
    assert_eq!(chef["kind"], "uagent");
    assert_eq!(chef["address"], peer.address.as_str());
    assert_eq!(chef["endpoint"], peer.endpoint.as_str());
    // Its Check button asks it whether it is up.
    page.click(".agent .check").await;
    page.wait_until(
        "document.getElementById('toast').textContent.startsWith('Chef is up at ')",
        "the check says the agent is up",
    )
    .await;
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn an_http_agent_made_in_the_form_shows_its_secret_once() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let page = new_agent_form(&browser, &app, "http", "Courier").await;
    page.fill("#field-endpoint", "http://127.0.0.1:9/turn")
        .await;
    page.click("form button[type=submit]").await;
    let secret = page
        .wait_until(
            "document.querySelector('.secret:not([hidden]) .secret-value')?.textContent",
            "the secret is shown",
        )
        .await;
    assert!(secret.as_str().unwrap().starts_with("whsec_"), "{secret}");
    let courier = &app.get_json("/api/v1/agents").await["items"][0];
    assert_eq!(courier["kind"], "http");
    assert_eq!(courier["endpoint"], "http://127.0.0.1:9/turn");
    assert!(courier.get("secret").is_none());
    page.screenshot("agents-secret").await;
    page.click(".secret .dismiss").await;
    page.wait_until(
        "document.querySelector('.secret').hidden",
        "the secret is put away",
    )
    .await;
    page.reload().await;
    page.wait_until("document.querySelector('.agent .name')", "the list is back")
        .await;
    assert_eq!(
        page.eval("document.body.innerText.includes('whsec_')")
            .await,
        false,
        "never shown again"
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn the_summary_offers_the_podcast_and_it_plays_in_the_page() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let host = app.scripted("Host", &["Welcome to the show."], 0).await;
    let guest = app.scripted("Guest", &["Glad to be here."], 0).await;
    let collaboration = app
        .collaborate(&host, &guest, json!({"message_cap": 2, "podcast": true}))
        .await;
    wait_for(|| async {
        let c = app.collaboration(&id(&collaboration)).await;
        (!c["audio_url"].is_null()).then_some(())
    })
    .await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&collaboration))).await;
    page.click(".podcast button").await;
    // The page fetched the WAV with its key and the browser decoded it: 2 × 50 ms + 300 ms.
    let seconds = page
        .wait_until(
            "(() => { const a = document.querySelector('.podcast audio');
                      return a && a.src.startsWith('blob:') && a.duration > 0 ? a.duration : null; })()",
            "the podcast loads in the player",
        )
        .await;
    assert!((seconds.as_f64().unwrap() - 0.4).abs() < 0.05, "{seconds}");
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_sign_in_link_with_another_key_asks_before_it_switches() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let other = app
        .create("/api/v1/keys", json!({"name": "someone else's"}))
        .await;
    let other = other["key"].as_str().unwrap().to_owned();
    let page = signed_in(&browser, &app).await;
    let stored = "localStorage.getItem('skein.key')";
    let link = format!("location.hash = {}", json!(format!("#key={other}")));

    page.eval(&link).await;
    page.wait_until(
        "document.getElementById('confirm').open",
        "the question opens",
    )
    .await;
    assert!(
        page.text("#confirm p")
            .await
            .as_str()
            .unwrap()
            .contains(&other[..12]),
        "it names the key"
    );
    assert_eq!(
        page.eval("location.hash").await,
        "#/",
        "the key left the address bar"
    );
    page.click("#confirm button[value=no]").await;
    page.wait_until("!document.getElementById('confirm').open", "it closes")
        .await;
    assert_eq!(page.eval(stored).await, app.key.as_str(), "kept");

    page.eval(&link).await;
    page.wait_until(
        "document.getElementById('confirm').open",
        "the question opens again",
    )
    .await;
    page.click("#confirm button[value=yes]").await;
    page.wait_until(
        &format!("{stored} === {}", json!(other)),
        "the link's key is used",
    )
    .await;
    assert!(browser.errors().is_empty(), "{:?}", browser.errors());
}

#[tokio::test]
async fn a_newcomer_starts_the_demo_from_the_empty_list_and_watches_agents_at_work() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let page = signed_in(&browser, &app).await;
    page.wait_until(
        "document.querySelector('.collabs .empty button.demo')",
        "the empty list offers the demo",
    )
    .await;
    page.click(".collabs .empty button.demo").await;
    page.wait_until(
        "location.hash.startsWith('#/c/')",
        "the demo's channel opens",
    )
    .await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message[data-seq]').length >= 2",
        "agents are at work",
    )
    .await;
    page.screenshot("demo").await;
    let list = app.get_json("/api/v1/collaborations").await;
    assert_eq!(list["meta"]["total"], 1);
    let demo = &list["items"][0];
    assert_eq!(demo["principal"]["name"], "Demo Planner");
    assert_eq!(demo["participants"].as_array().unwrap().len(), 2);
    assert_eq!(app.get_json("/api/v1/agents").await["meta"]["total"], 3);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn an_llm_agent_gets_an_mcp_server_in_the_form_and_its_tools_are_picked_from_a_list() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let Some(mcp) = crate::support::peers::McpPeer::start(Some("form-token-5")).await else {
        return;
    };
    let app = spawn_app_with(|c| {
        c.providers = vec![default_provider("http://127.0.0.1:9/v1")];
    })
    .await;
    let page = new_agent_form(&browser, &app, "llm", "Analyst").await;
    page.click(".add-tool-server").await;
    page.fill("[name='tools[0].url']", &mcp.url).await;
    page.fill("[name='tools[0].name']", "calc").await;
    page.fill("[name='tools[0].bearer']", "form-token-5").await;
    page.fill("[name='tools[0].allow']", "add").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "document.querySelector('.agent .name')?.textContent === 'Analyst'",
        "the new agent is listed",
    )
    .await;
    let analyst = app.get_json("/api/v1/agents").await["items"][0].clone();
    assert_eq!(analyst["tools"][0]["url"], mcp.url.as_str());
    assert_eq!(analyst["tools"][0]["allow"], json!(["add"]));
    assert_eq!(
        analyst["tools"][0]["credential_headers"],
        json!(["Authorization"])
    );

    // Edit: the server's tools are listed, the allowed one ticked; ticking another allows it.
    page.click(".agent button").await;
    page.click(".show-tools").await;
    page.wait_until(
        "document.querySelectorAll('.offered-tools input').length === 6",
        "every tool of the server is listed",
    )
    .await;
    let ticked = page
        .eval("[...document.querySelectorAll('.offered-tools input:checked')].map(b => b.closest('li').querySelector('code').textContent)")
        .await;
    assert_eq!(ticked, json!(["add"]));
    page.click(".offered-tools li:nth-child(6) input").await;
    assert_eq!(
        page.eval("document.querySelector(\"[name='tools[0].allow']\").value")
            .await,
        "add, shout"
    );
    page.screenshot("agent-form-tools").await;
    page.click("form button[type=submit]").await;
    wait_for(|| async {
        let agent = app
            .get_json(&format!("/api/v1/agents/{}", id(&analyst)))
            .await;
        (agent["tools"][0]["allow"] == json!(["add", "shout"])).then_some(())
    })
    .await;
    // The token was kept, not sent back: the server still answers the agent.
    let listed = app
        .get(&format!("/api/v1/agents/{}/tools", id(&analyst)))
        .await;
    assert_eq!(listed.status(), reqwest::StatusCode::OK);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn the_channel_shows_each_tool_call_as_a_block_that_opens_to_its_arguments_and_result() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let Some(mcp) = crate::support::peers::McpPeer::start(None).await else {
        return;
    };
    let fake = FakeModel::start().await;
    fake.call_tools(&[("add", json!({"a": 2, "b": 3})), ("explode", json!({}))]);
    fake.reply_with(&["The sum is 5; the other tool broke."]);
    // What a model would make of it (the README shows this page).
    fake.summarize_with(
        "Analyst worked the sum out with a tool: 5",
        "Host asked Analyst to add 2 and 3. Analyst called the calculator's add tool, which \
         answered 5, and its explode tool, which failed; Analyst reported both.",
    );
    fake.outcome_with(json!({
        "decisions": ["The total is 5"],
        "action_items": [{"owner": "Analyst", "task": "Find out why explode fails"}],
        "open_questions": ["Is explode needed at all?"],
    }));
    let base = fake.base_url();
    let app = spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await;
    let host = app.scripted("Host", &["@Analyst add 2 and 3"], 0).await;
    let analyst = app
        .create_agent(json!({"name": "Analyst", "kind": "llm",
                             "tools": [{"url": mcp.url, "name": "calc"}]}))
        .await;
    let created = app
        .collaborate(
            &host,
            &analyst,
            json!({"message_cap": 2, "evaluate_objective_completion": false,
                   "objective": "Add 2 and 3 with the tools at hand"}),
        )
        .await;
    app.wait_until_summarized(&id(&created)).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&created))).await;
    let last = last_seq(&app, &created).await;
    page.wait_until(
        &format!("document.querySelector('.transcript [data-seq=\"{last}\"]')"),
        "the history is replayed",
    )
    .await;
    // Every event once; each result shows inside its call's block, so out of seq order.
    let mut shown = shown_seqs(&page).await;
    assert_eq!(shown, [1, 2, 4, 3, 5, 6, 7, 8]);
    shown.sort_unstable();
    assert_eq!(shown, (1..=last).collect::<Vec<_>>());
    let summaries = page
        .eval("[...document.querySelectorAll('.event.tool summary')].map(s => s.innerText)")
        .await;
    let summaries: Vec<String> = serde_json::from_value(summaries).unwrap();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries[0].contains("Analyst called calc · add ✓"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].contains("calc · explode ✗ failed"),
        "{summaries:?}"
    );
    page.click(".event.tool summary").await;
    page.wait_until(
        "document.querySelector('.event.tool details').open",
        "the block opens",
    )
    .await;
    assert_eq!(page.text(".event.tool .tool-result").await, "5");
    assert!(
        page.text(".event.tool .tool-arguments")
            .await
            .as_str()
            .unwrap()
            .contains("\"a\": 2")
    );
    page.screenshot("channel-tool-call").await;
    assert_eq!(
        page.eval("document.querySelectorAll('.figures tbody tr')[1].lastChild.textContent")
            .await,
        "2 (1)",
        "the figures count the calls and the failure"
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_message_s_fork_button_asks_what_to_change_and_opens_the_fork() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let a = app.scripted("A", &["a1", "a2", "a3"], 0).await;
    let b = app.scripted("B", &["b1", "b2", "b3"], 0).await;
    let c = app.scripted("C", &["c1"], 0).await;
    let original = app
        .collaborate(
            &a,
            &b,
            json!({"message_cap": 4, "strategy": "round_robin", "evaluate_objective_completion": false}),
        )
        .await;
    app.wait_until_summarized(&id(&original)).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&original))).await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message .fork').length === 4",
        "each message offers a fork",
    )
    .await;
    page.click(".transcript .message:nth-child(2) .fork").await;
    page.wait_until(
        "document.querySelector('.fork-dialog')?.open",
        "the fork dialog opens",
    )
    .await;
    page.fill(".fork-dialog [name=message_cap]", "2").await;
    // C joins in B's place.
    page.wait_until(
        &format!(
            "document.querySelector('#fork-{}')?.checked === true && !!document.querySelector('#fork-{}')",
            id(&b),
            id(&c)
        ),
        "the account's agents are offered, the current participant ticked",
    )
    .await;
    page.click(&format!("#fork-{}", id(&b))).await;
    page.click(&format!("#fork-{}", id(&c))).await;
    page.screenshot("fork-dialog").await;
    page.click(".fork-dialog button[type=submit]").await;
    page.wait_until(
        &format!(
            "location.hash.startsWith('#/c/') && location.hash !== '#/c/{}'",
            id(&original)
        ),
        "the fork opens",
    )
    .await;
    page.wait_until(
        "document.querySelector('.forked-from')?.textContent.includes('at #2')",
        "the fork says where it came from",
    )
    .await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message.copied').length === 2",
        "the copied messages are marked",
    )
    .await;
    let fork = app.get_json("/api/v1/collaborations").await["items"][0].clone();
    assert_eq!(fork["forked_from"]["collaboration_id"], original["id"]);
    assert_eq!(fork["message_cap"], 2);
    let joined: Vec<&str> = fork["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        joined,
        ["C"],
        "the fork goes on with the participants chosen"
    );
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_team_is_made_run_and_shown_with_its_a2a_mcp_and_uagents_reach() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let host = app.scripted("Host", &["Shall we?", "Done."], 100).await;
    let guest = app.scripted("Guest", &["Yes."], 100).await;
    let page = signed_in(&browser, &app).await;
    open(&page, "#/teams").await;
    page.wait_until(
        "document.querySelector('.teams .empty')",
        "the empty list says what to do",
    )
    .await;
    page.click(".page-head button.primary").await;
    page.wait_until("document.querySelector('#field-name')", "the form opens")
        .await;
    page.fill("#field-name", "Planners").await;
    page.click(&format!("input[name=principal][value='{}']", id(&host)))
        .await;
    page.click(&format!("input[name=participants][value='{}']", id(&guest)))
        .await;
    page.fill("#field-message_cap", "3").await;
    page.choose("#field-strategy", "round_robin").await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "[...document.querySelectorAll('.team .name')].some(e => e.textContent === 'Planners')",
        "the team is listed",
    )
    .await;
    let teams = app.get_json("/api/v1/teams").await;
    let team = &teams["items"][0];
    assert_eq!(team["principal"]["id"], host["id"]);
    assert_eq!(team["message_cap"], 3);
    assert_eq!(team["answers_uagents"], false);
    // Where other systems reach it, each with a copy button.
    let reach = page.text(".team .reach").await;
    let reach = reach.as_str().unwrap();
    assert!(
        reach.contains(team["a2a_card_url"].as_str().unwrap()),
        "{reach}"
    );
    assert!(reach.contains(team["mcp_url"].as_str().unwrap()), "{reach}");
    let copies = page
        .eval("document.querySelectorAll('.team .reach button.copy').length")
        .await;
    assert_eq!(copies, 3);
    page.screenshot("teams").await;

    // Run it: the channel opens, and says it is a run of the team.
    page.fill(".run-team input", "Plan the offsite").await;
    page.click(".run-team button").await;
    page.wait_until(
        "location.hash.startsWith('#/c/') && document.querySelector('.lineage a')",
        "the run's channel opens, linked to its team",
    )
    .await;
    page.wait_until(
        "document.querySelector('.summary:not([hidden])')",
        "the run ends with its summary",
    )
    .await;
    let runs = app
        .get_json(&format!("/api/v1/teams/{}/collaborations", id(team)))
        .await;
    assert_eq!(runs["items"][0]["objective"], "Plan the offsite");

    // Edit: take uAgents' messages.
    open(&page, "#/teams").await;
    page.wait_until("document.querySelector('.team')", "the team is listed")
        .await;
    page.click(".team .actions button:not(.danger)").await;
    page.wait_until(
        "document.querySelector('#team-uagents')",
        "the editor opens",
    )
    .await;
    page.click("#team-uagents").await;
    page.click("form button[type=submit]").await;
    wait_for(|| async {
        let team = app.get_json(&format!("/api/v1/teams/{}", id(team))).await;
        (team["answers_uagents"] == true).then_some(())
    })
    .await;

    // A phone: the long URLs wrap, nothing is wider than the screen.
    page.resize(390, 844, true).await;
    open(&page, "#/").await;
    open(&page, "#/teams").await;
    page.wait_until(
        "document.querySelector('.team .reach')",
        "the team on a phone",
    )
    .await;
    fits_the_width(&page, "the teams page").await;
    page.screenshot("teams-phone").await;
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_collaboration_that_delegated_to_a_team_links_to_its_run_and_back() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let (_, _, parent) = crate::teams::delegating(&app).await;
    app.wait_until_summarized(&id(&parent)).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&parent))).await;
    page.wait_until(
        "document.querySelector('.lineage .delegated a')",
        "the parent lists the team's run",
    )
    .await;
    let child = page
        .eval("document.querySelector('.lineage .delegated a').getAttribute('href')")
        .await;
    let runs = app
        .get_json(&format!(
            "/api/v1/collaborations?context_id={}",
            id(&parent)
        ))
        .await;
    assert_eq!(child, json!(format!("#/c/{}", id(&runs["items"][0]))));
    open(&page, child.as_str().unwrap()).await;
    page.wait_until(
        "document.querySelector('.lineage') && [...document.querySelectorAll('.lineage a')].some(a => a.textContent.startsWith('Plan a night out'))",
        "the team's run links back to the parent",
    )
    .await;
    let back = page
        .eval("[...document.querySelectorAll('.lineage a')].map(a => a.getAttribute('href'))")
        .await;
    assert!(
        back.as_array()
            .unwrap()
            .iter()
            .any(|href| href == &json!(format!("#/c/{}", id(&parent)))),
        "{back}"
    );
    assert_no_page_errors(&browser);
}

/// axe-core, a checker nobody here wrote, finds nothing serious or critical on any view:
/// signing in, the list (empty and full), the create form, a running and an ended channel
/// (with its summary, outcome and figures), teams (with the editor open) and agents (with
/// the editor open).
#[tokio::test]
async fn axe_finds_no_serious_accessibility_problem_on_any_view() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    if crate::support::browser::axe_source().is_none() {
        return;
    }
    let app = spawn_app().await;
    let page = browser.page().await;
    page.goto(&app.url("/")).await;
    page.wait_until("document.querySelector('#key')", "the sign-in form shows")
        .await;
    let mut found = Vec::new();
    let mut check = async |view: &str| {
        for violation in page.accessibility_violations().await {
            found.push(format!("{view}: {violation}"));
        }
    };
    check("sign in").await;
    let page = signed_in(&browser, &app).await;
    let mut check = async |view: &str| {
        for violation in page.accessibility_violations().await {
            found.push(format!("{view}: {violation}"));
        }
    };
    page.wait_until(
        "document.querySelector('.collabs .empty')",
        "the empty list",
    )
    .await;
    check("list, empty").await;

    let ended = app.scripted_duo(3, 0).await;
    app.wait_until_summarized(&id(&ended)).await;
    let host = app.scripted("Host", &["Shall we?", "Yes."], 60_000).await;
    let guest = app.scripted("Guest", &["Sure."], 0).await;
    let running = app
        .collaborate(&host, &guest, json!({"message_cap": 5}))
        .await;
    open(&page, "#/").await;
    page.wait_until(
        "document.querySelectorAll('.collab').length === 2",
        "the list",
    )
    .await;
    check("list").await;
    open(&page, "#/new").await;
    page.wait_until("document.querySelector('.picker')", "the create form")
        .await;
    check("new collaboration").await;
    open(&page, &format!("#/c/{}", id(&ended))).await;
    page.wait_until(
        "document.querySelector('.summary:not([hidden])')",
        "the summary",
    )
    .await;
    check("channel, ended").await;
    open(&page, &format!("#/c/{}", id(&running))).await;
    page.wait_until(
        "document.querySelector('.transcript .message')",
        "a message",
    )
    .await;
    check("channel, running").await;
    app.create(
        "/api/v1/teams",
        json!({"name": "Crew", "principal": id(&host), "participants": [id(&guest)]}),
    )
    .await;
    open(&page, "#/teams").await;
    page.wait_until("document.querySelector('.team')", "a team")
        .await;
    check("teams").await;
    page.click(".page-head button.primary").await;
    page.wait_until("document.querySelector('#field-name')", "the team editor")
        .await;
    check("team editor").await;
    open(&page, "#/agents").await;
    page.wait_until("document.querySelector('.agent')", "the agents")
        .await;
    check("agents").await;
    page.click(".page-head button.primary").await;
    page.wait_until("document.querySelector('#field-kind')", "the agent editor")
        .await;
    check("agent editor").await;
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn the_transcript_is_filtered_by_speaker_and_searched() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let host = app
        .scripted("Host", &["Tapas tonight?", "Seven works.", "Booked."], 0)
        .await;
    let guest = app
        .scripted("Guest", &["Yes, tapas.", "Seven is fine."], 0)
        .await;
    let done = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 5, "strategy": "round_robin",
                   "evaluate_objective_completion": false}),
        )
        .await;
    app.wait_until_summarized(&id(&done)).await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&done))).await;
    page.wait_until(
        "document.querySelectorAll('.transcript .message').length === 5",
        "the five messages",
    )
    .await;
    let visible = "[...document.querySelectorAll('.transcript .message')].filter(m => !m.hidden).map(m => m.querySelector('.content').textContent)";
    page.wait_until(
        "document.querySelector('#filter-speaker').options.length === 3",
        "everyone who takes part can be picked",
    )
    .await;
    page.choose("#filter-speaker", id(&guest).as_str()).await;
    assert_eq!(
        page.eval(visible).await,
        json!(["Yes, tapas.", "Seven is fine."])
    );
    page.choose("#filter-speaker", "").await;
    page.fill("#filter-text", "seven").await;
    assert_eq!(
        page.eval(visible).await,
        json!(["Seven works.", "Seven is fine."])
    );
    assert_eq!(page.text(".filter-count").await, json!("2 of 7 shown"));
    page.fill("#filter-text", "").await;
    assert_eq!(page.eval(visible).await.as_array().unwrap().len(), 5);
    // The record downloads as Markdown or as JSON.
    assert!(
        page.eval(
            "!!document.querySelector('.save-transcript') && !!document.querySelector('.save-json')"
        )
        .await
            == json!(true)
    );
    assert_no_page_errors(&browser);
}

/// Someone with only a keyboard creates a collaboration and forks it from a message.
#[tokio::test]
async fn a_collaboration_is_created_and_forked_with_the_keyboard_alone() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let host = app
        .scripted("Host", &["Tapas?", "Seven.", "Booked."], 0)
        .await;
    let guest = app.scripted("Guest", &["Yes.", "Fine."], 0).await;
    let page = signed_in(&browser, &app).await;
    page.wait_until("document.querySelector('.collabs')", "the list")
        .await;
    page.tab_to("a[data-nav=new]").await;
    page.press("Enter").await;
    page.wait_until("document.querySelector('.picker')", "the create form")
        .await;
    // The principal: into the radio group, then down it to Host.
    page.tab_to("input[name=principal]").await;
    for _ in 0..3 {
        let at = page.eval("document.activeElement.value").await;
        if at == json!(id(&host)) {
            break;
        }
        page.press("ArrowDown").await;
    }
    page.press("Space").await;
    page.tab_to(&format!("input[name=participants][value='{}']", id(&guest)))
        .await;
    page.press("Space").await;
    page.tab_to("#field-objective").await;
    page.type_text("Plan Friday").await;
    page.tab_to("#field-strategy").await;
    page.tab_to("form button[type=submit]").await;
    page.press("Enter").await;
    page.wait_until(
        "location.hash.startsWith('#/c/') && document.querySelectorAll('.transcript .message').length >= 3",
        "the channel opens and the agents speak",
    )
    .await;
    let listed = app.get_json("/api/v1/collaborations").await;
    let original = &listed["items"][0];
    assert_eq!(original["principal"]["id"], host["id"]);
    assert_eq!(original["participants"][0]["id"], guest["id"]);
    assert_eq!(original["objective"], "Plan Friday");

    // Fork from the first message: its Fork button, the dialog, its submit button.
    page.tab_to(".transcript .message .fork").await;
    page.press("Enter").await;
    page.wait_until(
        "document.querySelector('.fork-dialog')?.open && document.activeElement?.name === 'objective'",
        "the fork dialog opens with the focus in it",
    )
    .await;
    page.tab_to(".fork-dialog button[type=submit]").await;
    page.press("Enter").await;
    page.wait_until(
        &format!(
            "location.hash.startsWith('#/c/') && !location.hash.includes('{}')",
            id(original)
        ),
        "the fork opens",
    )
    .await;
    let listed = app.get_json("/api/v1/collaborations").await;
    assert_eq!(listed["meta"]["total"], 2);
    assert_eq!(
        listed["items"][0]["forked_from"]["collaboration_id"],
        original["id"]
    );
    assert_eq!(listed["items"][0]["forked_from"]["at_seq"], 1);
    assert_no_page_errors(&browser);
}

#[tokio::test]
async fn a_running_channel_shows_what_it_has_cost_so_far() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeModel::start().await;
    let base = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.providers = vec![default_provider(&base)];
        c.models.prices = [(
            "default/fake-model".to_owned(),
            skein::agents::Price {
                input: 1.0,
                output: 2.0,
            },
        )]
        .into();
    })
    .await;
    // A slow host keeps it running while the model's turns add up.
    let host = app
        .scripted("Host", &["Go on.", "And then?", "More."], 1500)
        .await;
    let guest = app
        .create_agent(json!({"name": "Guest", "kind": "llm"}))
        .await;
    let created = app
        .collaborate(
            &host,
            &guest,
            json!({"message_cap": 6, "strategy": "round_robin",
                   "evaluate_objective_completion": false}),
        )
        .await;
    let page = signed_in(&browser, &app).await;
    open(&page, &format!("#/c/{}", id(&created))).await;
    let line = page
        .wait_until(
            "(() => { const t = document.querySelector('.state-line')?.textContent ?? ''; \
               return t.startsWith('Running') && /[1-9][0-9,]* tokens, \\$0\\.0\\d*[1-9]\\d* so far/.test(t) && t; })()",
            "the cost so far shows while it runs",
        )
        .await;
    assert!(line.as_str().unwrap().contains("tokens"), "{line}");
    assert_no_page_errors(&browser);
}

/// A team is added as an a2a agent in the form, with a key of its server as bearer token,
/// and takes part in a collaboration.
#[tokio::test]
async fn a_team_is_added_as_an_a2a_agent_in_the_form_with_its_bearer_token() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    let cook = app.scripted("Cook", &["Soup."], 0).await;
    let helper = app.scripted("Helper", &["Bread."], 0).await;
    let team = app
        .create(
            "/api/v1/teams",
            json!({"name": "Kitchen", "principal": id(&cook), "participants": [id(&helper)],
                   "message_cap": 2, "evaluate_objective_completion": false}),
        )
        .await;
    let page = new_agent_form(&browser, &app, "a2a", "Kitchen team").await;
    page.fill("#field-card_url", team["a2a_url"].as_str().unwrap())
        .await;
    page.fill("#field-bearer", crate::support::ADMIN_KEY).await;
    page.click("form button[type=submit]").await;
    page.wait_until(
        "[...document.querySelectorAll('.agent .name')].some(e => e.textContent === 'Kitchen team')",
        "the agent is listed",
    )
    .await;
    let agents = app.get_json("/api/v1/agents").await;
    let delegate = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Kitchen team")
        .unwrap()
        .clone();
    assert_eq!(delegate["credential_headers"], json!(["Authorization"]));
    let host = app.scripted("Host", &["Dinner?", "Thanks."], 0).await;
    let parent = app
        .collaborate(
            &host,
            &delegate,
            json!({"message_cap": 3, "strategy": "round_robin",
                   "evaluate_objective_completion": false}),
        )
        .await;
    let done = app.wait_until_summarized(&id(&parent)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_no_page_errors(&browser);
}
