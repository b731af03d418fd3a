//! A PostgreSQL schema of a test's own, in the database at `SKEIN_TEST_DATABASE_URL`, so
//! that test runs (and tests within a run) never see each other's rows. Shared by the test
//! binaries through `#[path]`.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

/// The PostgreSQL tests' database, if they are to run.
pub fn database_url() -> Option<String> {
    std::env::var("SKEIN_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A schema made for one test, and the URL that puts a connection in it.
pub struct Schema {
    pub name: String,
    base_url: String,
    /// `base_url` with the schema as its `search_path`.
    pub url: String,
}

impl Schema {
    /// Creates `<prefix>_<random>` in the database at `base_url`.
    pub async fn create(base_url: &str, prefix: &str) -> Self {
        let schema = Self::named(base_url, &format!("{prefix}_{}", Uuid::new_v4().simple()));
        // The name is ours (a prefix and hex digits), never input.
        schema.run(&format!("CREATE SCHEMA {}", schema.name)).await;
        schema
    }

    /// A schema created earlier (by [`Schema::create`]).
    pub fn named(base_url: &str, name: &str) -> Self {
        let mut url = url::Url::parse(base_url).expect("SKEIN_TEST_DATABASE_URL is a URL");
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={name}"));
        Self {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            url: url.into(),
        }
    }

    pub async fn drop(self) {
        self.run(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
    }

    async fn run(&self, statement: &str) {
        let mut connection = PgConnection::connect(&self.base_url)
            .await
            .expect("the test database accepts connections");
        sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        connection.close().await.ok();
    }
}
