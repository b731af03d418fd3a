//! What only concerns PostgreSQL: where `PgStore::connect` puts Skein's tables, and that
//! its migrations keep in step with SQLite's.

use std::path::Path;

use skein::store::PgStore;
use sqlx::{Connection, PgConnection};

use crate::support::{Schema, database_url};

/// The migration files of one backend, by name.
fn migrations(backend: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = migrations("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(migrations("postgres"), sqlite);
}

#[tokio::test]
async fn the_search_path_in_the_url_decides_where_the_tables_go() {
    let Some(base_url) = database_url() else {
        println!("SKEIN_TEST_DATABASE_URL is not set: nothing to check");
        return;
    };
    let schema = Schema::create(&base_url, "skein_t").await;
    // Spelled as people write it by hand, where the harness lets `url` encode it.
    let separator = if base_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base_url}{separator}options=-c%20search_path%3D{}",
        schema.name
    );
    PgStore::connect(&url, crate::support::vault())
        .await
        .unwrap();
    // Connecting again finds the migrations applied.
    PgStore::connect(&url, crate::support::vault())
        .await
        .unwrap();

    let mut connection = PgConnection::connect(&base_url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
    )
    .bind(&schema.name)
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "account_feed",
            "accounts",
            "agents",
            "api_keys",
            "channels",
            "collaboration_participants",
            "collaborations",
            "events",
            "idempotency_keys",
            "teams",
            "uagent_asks",
            "uagent_heard",
            "uagent_identities",
            "uagent_registrations",
            "uagent_replies",
            "webhook_deliveries",
            "webhook_settings",
            "websocket_tickets",
        ]
    );
    let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {}._sqlx_migrations WHERE success ORDER BY version",
        schema.name
    )))
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let expected: Vec<i64> = migrations("postgres")
        .iter()
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(versions, expected);
    connection.close().await.unwrap();
    schema.drop().await;
}
