//! Podcasts: a collaboration that asks for one is read aloud after it ends, one voice per
//! member, and served as one WAV file with range requests; a failure says why instead.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    TestApp, default_provider,
    fake_model::{FakeModel, Fault, Purpose, SPEECH_SAMPLES},
    id, problem, spawn_app_with, wait_for,
};

async fn with_fake(fake: &FakeModel) -> TestApp {
    let base = fake.base_url();
    spawn_app_with(move |c| c.providers = vec![default_provider(&base)]).await
}

/// The collaboration once its podcast is recorded one way or the other.
async fn settled(app: &TestApp, created: &Value) -> Value {
    wait_for(|| async {
        let c = app.collaboration(&id(created)).await;
        let done = !c["audio_url"].is_null()
            || c["advisory_message"]
                .as_str()
                .is_some_and(|a| a.contains("podcast"));
        done.then_some(c)
    })
    .await
}

#[tokio::test]
async fn a_podcast_is_read_in_one_voice_per_member_and_served_with_ranges() {
    let fake = FakeModel::start().await;
    let app = with_fake(&fake).await;
    let host = app.scripted("Host", &["Welcome.", "Goodbye."], 0).await;
    let guest = app.scripted("Guest", &["Thanks for having me."], 0).await;
    let created = app
        .collaborate(&host, &guest, json!({"message_cap": 3, "podcast": true}))
        .await;
    let done = settled(&app, &created).await;
    let url = done["audio_url"].as_str().expect("a podcast");
    assert_eq!(
        url,
        format!("/api/v1/collaborations/{}/audio", id(&created))
    );

    let spoken = fake.requests(Purpose::Speech);
    let said: Vec<(&str, &str)> = spoken
        .iter()
        .map(|r| {
            (
                r.body["voice"].as_str().unwrap(),
                r.body["input"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("alloy", "Welcome."),
            ("echo", "Thanks for having me."),
            ("alloy", "Goodbye.")
        ],
        "one voice per member, principal first"
    );
    assert!(spoken.iter().all(|r| r.body["response_format"] == "wav"));

    let whole = app.get(url).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let wav = whole.bytes().await.unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");
    let gaps = 2 * 8000 * 300 / 1000;
    assert_eq!(
        wav.len(),
        44 + 2 * (3 * SPEECH_SAMPLES + gaps),
        "three parts, two silences"
    );

    let part = app
        .client
        .get(app.url(url))
        .bearer_auth(&app.key)
        .header("range", "bytes=0-43")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-43/{}", wav.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), wav[..44]);

    // Another account's key sees no such thing.
    let other = app
        .post("/api/v1/accounts", &json!({"name": "Other"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let stranger = app.with_key(other["key"]["key"].as_str().unwrap());
    problem(stranger.get(url).await, StatusCode::NOT_FOUND).await;

    // Deleting the collaboration deletes its audio too.
    let file = app
        .data_dir
        .path()
        .join(format!("audio/{}.wav", id(&created)));
    assert!(file.exists());
    app.delete(&format!("/api/v1/collaborations/{}", id(&created)))
        .await;
    assert!(!file.exists(), "the podcast went with its collaboration");
}

#[tokio::test]
async fn a_podcast_that_cannot_be_made_leaves_no_url_and_says_why() {
    let fake = FakeModel::start().await;
    fake.fail_always(Purpose::Speech, Fault::ServerError);
    let app = with_fake(&fake).await;
    let host = app.scripted("Host", &["Welcome."], 0).await;
    let guest = app.scripted("Guest", &["Hi."], 0).await;
    let created = app
        .collaborate(&host, &guest, json!({"message_cap": 2, "podcast": true}))
        .await;
    let done = settled(&app, &created).await;
    assert!(done["audio_url"].is_null());
    assert_eq!(done["status"], "completed", "the outcome stands");
    let advisory = done["advisory_message"].as_str().unwrap();
    assert!(
        advisory.starts_with("The message cap was reached")
            && advisory.contains("No podcast was made: the speech model failed"),
        "{advisory}"
    );
    problem(
        app.get(&format!("/api/v1/collaborations/{}/audio", id(&created)))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
