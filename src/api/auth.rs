//! API keys: who is calling, for which account.
//!
//! A key is `sk_` followed by 32 random bytes in hex, shown once; the store keeps only its
//! SHA-256. Keys arrive as `Authorization: Bearer <key>` or, as flockx sends them, as the
//! bare `Authorization: <key>`.

use std::path::Path;

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use crate::{
    error::AppError,
    store::{NewKey, Store},
};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: Uuid,
    pub key_id: Uuid,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let key = bearer(parts).ok_or(AppError::Unauthorized)?;
        authenticate(state.store.as_ref(), &key)
            .await?
            .ok_or(AppError::Unauthorized)
    }
}

/// The key in the `Authorization` header, with or without the `Bearer` scheme.
pub fn bearer(parts: &Parts) -> Option<String> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!key.is_empty()).then(|| key.to_owned())
}

pub async fn authenticate(store: &dyn Store, key: &str) -> Result<Option<Caller>, AppError> {
    Ok(store
        .find_key(&hash_secret(key))
        .await?
        .map(|record| Caller {
            account_id: record.account_id,
            key_id: record.id,
        }))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret with the given prefix (`sk_`, `wst_`).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Makes sure an admin key exists. Uses `SKEIN_ADMIN_KEY` when set, else the key saved in
/// `<data-dir>/admin.key`, else creates one and saves it there (mode 0600). Returns the key
/// when it was created now, so that it can be shown once.
pub async fn bootstrap_admin(
    store: &dyn Store,
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    let file = data_dir.join("admin.key");
    let (key, created) = match configured {
        Some(key) => (key.to_owned(), false),
        None if file.exists() => (std::fs::read_to_string(&file)?.trim().to_owned(), false),
        None => (new_secret("sk_"), true),
    };
    let hash = hash_secret(&key);
    if store.find_key(&hash).await?.is_none() {
        let account_id = match store.first_account().await? {
            Some(id) => id,
            None => {
                let id = Uuid::now_v7();
                store.insert_account(id, "default").await?;
                id
            }
        };
        store
            .insert_key(&NewKey {
                id: Uuid::now_v7(),
                account_id,
                name: "admin".into(),
                prefix: key.chars().take(12).collect(),
                hash,
                scopes: vec!["read".into(), "write".into(), "admin".into()],
            })
            .await?;
    }
    if created {
        write_private(&file, &key)?;
    }
    Ok(created.then_some(key))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
