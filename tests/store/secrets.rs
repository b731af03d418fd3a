//! Secrets at rest: sealed under the server key, opened on read, sealed again when the key
//! is rotated. SQLite only: these tests open the same file under different keys.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use skein::{
    domain::{AgentRef, webhook::WebhookSettings},
    secrets::{Secret, Vault},
    store::{SqliteStore, Store, StoreError},
};

use crate::support::{agent_value, now, tasks, tenant};

fn key(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

async fn open(dir: &tempfile::TempDir, current: u8, previous: &[u8]) -> Arc<dyn Store> {
    let previous: Vec<String> = previous.iter().map(|byte| key(*byte)).collect();
    let vault = Vault::load(dir.path(), Some(&key(current)), &previous).unwrap();
    Arc::new(
        SqliteStore::open(dir.path(), &tasks(), Arc::new(vault))
            .await
            .unwrap(),
    )
}

/// Every byte of the database and its WAL, as text.
fn raw(dir: &tempfile::TempDir) -> String {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("skein.db")
        {
            bytes.extend(std::fs::read(path).unwrap());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn secrets_are_stored_sealed_and_sealed_again_when_the_key_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1, &[]).await;
    let tenant = tenant(&store, "sealed").await;
    let mut agent = agent_value(tenant.id(), "courier");
    let signing = Secret::new("whsec_c2lnbmluZyBzZWNyZXQgb2YgdGhlIGFnZW50");
    agent.secret = Some(signing.clone());
    store.insert_agent(&agent).await.unwrap();
    let hooks = Secret::new("whsec_d2ViaG9vayBzZWNyZXQgb2YgdGhlIGFjY291bnQ");
    let settings = WebhookSettings {
        account_id: tenant.id(),
        default_url: None,
        secret: hooks.clone(),
        created_at: now(),
        updated_at: now(),
    };
    assert!(store.create_webhook_settings(&settings).await.unwrap());
    // Read back whole; shown by `Debug` as nothing but a secret.
    let read = store
        .get_agent(tenant.id(), &AgentRef::Id(agent.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.secret.as_ref(), Some(&signing));
    assert!(!format!("{read:?}").contains("c2lnbmluZyBzZWNyZXQ"));
    drop(store);
    let dump = raw(&dir);
    for secret in [&signing, &hooks] {
        assert!(
            !dump.contains(&secret.expose()[6..]),
            "a secret is stored in the clear"
        );
    }

    // Rotated: the new key with the old one beside it; everything is sealed again.
    let store = open(&dir, 2, &[1]).await;
    assert_eq!(store.reseal_secrets().await.unwrap(), 2);
    assert_eq!(store.reseal_secrets().await.unwrap(), 0);
    drop(store);
    // The old key can go now.
    let store = open(&dir, 2, &[]).await;
    let read = store
        .get_agent(tenant.id(), &AgentRef::Id(agent.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.secret, Some(signing));
    let settings = store.webhook_settings(tenant.id()).await.unwrap().unwrap();
    assert_eq!(settings.secret, hooks);
    drop(store);

    // A server without the key says which key it needs, rather than use garbage.
    let store = open(&dir, 3, &[]).await;
    match store.get_agent(tenant.id(), &AgentRef::Id(agent.id)).await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("SKEIN_SECRET_KEY"), "{message}")
        }
        other => panic!("opened without its key: {other:?}"),
    }
}

#[tokio::test]
async fn secrets_stored_before_sealing_are_read_and_then_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1, &[]).await;
    let tenant = tenant(&store, "older").await;
    let agent = agent_value(tenant.id(), "courier");
    store.insert_agent(&agent).await.unwrap();
    drop(store);
    // As an earlier version stored it: in the clear.
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("skein.db").display());
        let mut raw_db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE agents SET secret = 'whsec_cGxhaW4gb2xkIHNlY3JldA' WHERE id = $1")
            .bind(agent.id.hyphenated())
            .execute(&mut raw_db)
            .await
            .unwrap();
        raw_db.close().await.unwrap();
    }
    let store = open(&dir, 1, &[]).await;
    let read = store
        .get_agent(tenant.id(), &AgentRef::Id(agent.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.secret.unwrap().expose(),
        "whsec_cGxhaW4gb2xkIHNlY3JldA"
    );
    assert_eq!(store.reseal_secrets().await.unwrap(), 1);
    assert_eq!(store.reseal_secrets().await.unwrap(), 0);
    let read = store
        .get_agent(tenant.id(), &AgentRef::Id(agent.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.secret.unwrap().expose(),
        "whsec_cGxhaW4gb2xkIHNlY3JldA"
    );
}
