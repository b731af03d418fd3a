//! Faults a deployment meets, made by a TCP proxy between Skein and the service: the
//! database's connection cut mid-turn and mended, NATS cut and mended. Collaborations carry
//! on once the service is back, and a viewer misses nothing and sees nothing twice. They
//! need PostgreSQL and NATS (see `support::cluster`); without them they pass over themselves.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    Api, id,
    proxy::Proxy,
    schema::{Schema, database_url},
    spawn_app_with,
};

/// Where the test services are, or `None` (saying so) where they are not configured.
fn services() -> Option<(String, String)> {
    let urls = (database_url(), std::env::var("SKEIN_TEST_NATS_URL").ok());
    let (Some(database), Some(nats)) = urls else {
        assert!(
            std::env::var("SKEIN_CLUSTER_TESTS").as_deref() != Ok("required"),
            "SKEIN_CLUSTER_TESTS=required but SKEIN_TEST_DATABASE_URL or SKEIN_TEST_NATS_URL is not set"
        );
        eprintln!("no SKEIN_TEST_DATABASE_URL / SKEIN_TEST_NATS_URL: skipping");
        return None;
    };
    Some((database, nats))
}

/// The host and port a URL names.
fn address_of(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port_or_known_default().unwrap())
        .parse()
        .unwrap()
}

/// `url` with its host and port replaced by `through`.
fn through(url: &str, proxy: &Proxy) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_ip_host(proxy.address.ip()).unwrap();
    url.set_port(Some(proxy.address.port())).unwrap();
    url.into()
}

/// Follows a channel to its summary as a client that reconnects, resuming after the last
/// `seq` it has, whenever the stream drops or the server closes it: every stored event it
/// was given, in order. Fails on a gap or a duplicate.
async fn follow(api: &Api, channel: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the summary"
        );
        let after = events.last().map_or(0, |e| e["seq"].as_i64().unwrap());
        let Ok(Ok((mut stream, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(stream_request(api, channel, after)),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Ok(Some(Ok(message))) = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut stream),
        )
        .await
        {
            let Message::Text(text) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            let Some(seq) = frame["seq"].as_i64() else {
                continue;
            };
            let expected = events.last().map_or(0, |e| e["seq"].as_i64().unwrap()) + 1;
            assert_eq!(seq, expected, "a gap or a duplicate: {frame}");
            let last = frame["type"] == "summary";
            events.push(frame);
            if last {
                return events;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stream_request(
    api: &Api,
    channel: &str,
    after: i64,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!(
        "ws://{}/api/v1/channels/{channel}/stream?after_seq={after}",
        api.address
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", api.key).parse().unwrap(),
    );
    request
}

/// The stored record is whole: every message once, `seq` dense, the count right.
async fn assert_whole(api: &Api, collaboration: &str, channel: &str, cap: i64) {
    let history = api.history(channel).await;
    let seqs: Vec<i64> = history.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let messages: Vec<&Value> = history.iter().filter(|e| e["type"] == "message").collect();
    let ids: std::collections::HashSet<&str> =
        messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), messages.len(), "a message was stored twice");
    assert_eq!(messages.len() as i64, cap);
    let done = api.collaboration(collaboration).await;
    assert_eq!(done["message_count"].as_i64(), Some(cap), "{done}");
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test]
async fn the_database_cut_mid_turn_and_mended_loses_nothing_and_doubles_nothing() {
    let Some((database, _)) = services() else {
        return;
    };
    let schema = Schema::create(&database, "skein_fault").await;
    let proxy = Proxy::start(address_of(&database)).await;
    let url = through(&schema.url, &proxy);
    let app = spawn_app_with(move |config| {
        config.database_url = Some(url.into());
        config.engine.lease_ttl = Duration::from_secs(3);
    })
    .await;
    let collaboration = app.scripted_duo(24, 150).await;
    let channel = collaboration["channel_id"].as_str().unwrap().to_owned();
    let following = {
        let api = app.api.clone();
        let channel = channel.clone();
        tokio::spawn(async move { follow(&api, &channel).await })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = proxy.connections();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.mend();

    let seen = following.await.unwrap();
    assert!(proxy.connections() > before, "the server connected again");
    assert_whole(&app, &id(&collaboration), &channel, 24).await;
    assert_eq!(seen.len(), app.history(&channel).await.len());
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    schema.drop().await;
}

#[tokio::test]
async fn nats_cut_and_mended_leaves_viewers_on_the_other_process_missing_nothing() {
    let Some((database, nats)) = services() else {
        return;
    };
    let schema = Schema::create(&database, "skein_fault").await;
    let proxy = Proxy::start(address_of(&nats)).await;
    let (url, proxied) = (schema.url.clone(), through(&nats, &proxy));
    // The process that runs the collaboration reaches NATS through the proxy.
    let running = spawn_app_with(move |config| {
        config.database_url = Some(url.into());
        config.nats_url = Some(proxied.into());
    })
    .await;
    let (url, direct) = (schema.url.clone(), nats.clone());
    let watching = spawn_app_with(move |config| {
        config.database_url = Some(url.into());
        config.nats_url = Some(direct.into());
    })
    .await;
    let collaboration = running.scripted_duo(24, 150).await;
    let channel = collaboration["channel_id"].as_str().unwrap().to_owned();
    let following = {
        let api = watching.api.clone();
        let channel = channel.clone();
        tokio::spawn(async move { follow(&api, &channel).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = proxy.connections();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.mend();

    let seen = following.await.unwrap();
    assert!(
        proxy.connections() > before,
        "the server connected to NATS again"
    );
    assert_whole(&running, &id(&collaboration), &channel, 24).await;
    assert_eq!(seen.len(), running.history(&channel).await.len());
    drop((running, watching));
    tokio::time::sleep(Duration::from_millis(200)).await;
    schema.drop().await;
}
