//! API keys: who is calling, for which account, with which scope.
//!
//! A key is `sk_` followed by 32 random bytes in hex, shown once; the store keeps only its
//! SHA-256 and its first 12 characters. Keys arrive as `Authorization: Bearer <key>` or, as
//! flockx sends them, as the bare `Authorization: <key>`.
//!
//! [`gate`] runs before every `/api/v1` handler: it looks the key up once, applies the key's
//! rate limit (a 429 before the handler runs, so nothing happens), notes when the key was
//! last used, and leaves a [`Caller`] in the request for the handlers. The [`Caller`]
//! extractor then answers 401 without a valid key and 403 when the key's scope is too small
//! for the method: `read` for GET, `write` for everything else.

use std::{path::Path, time::Instant};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use crate::{
    domain::{Account, ApiKey, NewKey, Scope, access::KEY_PREFIX_CHARS},
    error::AppError,
    store::{Credential, Store, StoreResult},
};

/// `last_used_at` is written at most this often per key, not on every request.
const TOUCH_EVERY_SECS: i64 = 60;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: Uuid,
    pub key: ApiKey,
    /// The key belongs to the operator account (the server's own admin key's).
    pub operator: bool,
}

impl From<Credential> for Caller {
    fn from(credential: Credential) -> Self {
        Self {
            account_id: credential.key.account_id,
            key: credential.key,
            operator: credential.operator,
        }
    }
}

impl Caller {
    /// 403 unless the key's scope reaches `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        match self.key.grant() {
            Some(granted) if granted >= scope => Ok(()),
            _ => Err(lacks(scope)),
        }
    }
}

/// The refusal of a key without `scope`.
pub fn lacks(scope: Scope) -> AppError {
    AppError::Forbidden(format!("this API key lacks the `{}` scope", scope.name()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, AppError> {
        authorized(parts, scope_for(&parts.method))
    }
}

/// A caller for a request that only reads although it is a POST (asking for a stream
/// ticket): the `read` scope is enough.
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, AppError> {
        authorized(parts, Scope::Read).map(Self)
    }
}

/// The caller [`gate`] found, if its key reaches `scope`: else 401 or 403.
fn authorized(parts: &Parts, scope: Scope) -> Result<Caller, AppError> {
    let caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or(AppError::Unauthorized)?;
    caller.require(scope)?;
    Ok(caller)
}

/// The scope a method needs at least.
fn scope_for(method: &Method) -> Scope {
    if method.is_safe() {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// Middleware: authenticate once, rate-limit by account, remember the caller.
///
/// A request without a valid key passes through without a [`Caller`]: handlers that need
/// one answer 401, and the WebSocket route closes with 1008 after the upgrade instead.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(secret) = bearer(request.headers()) else {
        return next.run(request).await;
    };
    let hash = hash_secret(&secret);
    let address = crate::server::client_address(&request).map(|address| address.ip());
    let credential = match state.keys.cached(&hash) {
        Some(credential) => credential,
        None => {
            if let Some(address) = address
                && let Err(refused) = state.auth_failures.check(address)
            {
                return *refused;
            }
            match state.keys.find(state.store.as_ref(), &hash).await {
                Ok(Some(credential)) => credential,
                Ok(None) => {
                    if let Some(address) = address {
                        state.auth_failures.failed(address);
                    }
                    return next.run(request).await;
                }
                Err(error) => return AppError::from(error).into_response(),
            }
        }
    };
    let allowance = match state.rate_limits.check(credential.key.account_id) {
        Ok(allowance) => allowance,
        Err(limited) => return limited.into_response(),
    };
    let now = crate::domain::now();
    let stale = credential
        .key
        .last_used_at
        .is_none_or(|at| now - at > Duration::seconds(TOUCH_EVERY_SECS));
    if stale {
        match state.store.touch_key(credential.key.id, now).await {
            Ok(()) => state.keys.touched(&hash, now),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "recording a key's last use failed"
            ),
        }
    }
    request.extensions_mut().insert(Caller::from(credential));
    let mut response = next.run(request).await;
    allowance.write_headers(response.headers_mut());
    response
}

/// Keys recently found in the store, by hash, so that a client making many requests does
/// not cost a lookup each.
///
/// An entry is used for [`KEY_CACHE_TTL`] after it was read. A key revoked through this
/// process is dropped at once ([`KeyCache::forget`]), and so is one revoked through another
/// process of a cluster when that process's word arrives over NATS; should the word be lost,
/// the key stops working here within the TTL, when the entry is read again. Only keys that
/// exist are kept, so unknown keys cannot fill it.
#[derive(Default)]
pub struct KeyCache {
    entries: DashMap<String, Found>,
}

struct Found {
    credential: Credential,
    at: Instant,
}

/// How long a key found in the store is trusted without reading it again.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Above this many entries, an insert first sweeps out the expired ones.
const KEY_CACHE_SWEEP_ABOVE: usize = 1024;

impl KeyCache {
    /// The live key with this hash, if the cache holds it fresh.
    pub fn cached(&self, hash: &str) -> Option<Credential> {
        let found = self.entries.get(hash)?;
        (found.at.elapsed() < KEY_CACHE_TTL).then(|| found.credential.clone())
    }

    /// The live key with this hash, from the cache while fresh, else from the store.
    pub async fn find(&self, store: &dyn Store, hash: &str) -> StoreResult<Option<Credential>> {
        if let Some(credential) = self.cached(hash) {
            return Ok(Some(credential));
        }
        let credential = store.find_key(hash).await?;
        match &credential {
            Some(credential) => {
                if self.entries.len() > KEY_CACHE_SWEEP_ABOVE {
                    self.entries
                        .retain(|_, found| found.at.elapsed() < KEY_CACHE_TTL);
                }
                let found = Found {
                    credential: credential.clone(),
                    at: Instant::now(),
                };
                self.entries.insert(hash.to_owned(), found);
            }
            None => {
                self.entries.remove(hash);
            }
        }
        Ok(credential)
    }

    /// Notes a use of the key just written to the store, so the next request does not
    /// write it again.
    fn touched(&self, hash: &str, at: DateTime<Utc>) {
        if let Some(mut found) = self.entries.get_mut(hash) {
            found.credential.key.last_used_at = Some(at);
        }
    }

    /// Drops the key with this id: it was revoked.
    pub fn forget(&self, key_id: Uuid) {
        self.entries
            .retain(|_, found| found.credential.key.id != key_id);
    }
}

/// The key in the `Authorization` header, with or without the `Bearer` scheme.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let key = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!key.is_empty()).then(|| key.to_owned())
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret with the given prefix (`sk_`, `wst_`).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A new key for `account_id`: the secret to show once, and what to store.
pub fn new_key(account_id: Uuid, name: &str, scopes: Vec<Scope>) -> (String, NewKey) {
    let secret = new_secret("sk_");
    let key = stored_key(account_id, name, &secret, scopes, false);
    (secret, key)
}

fn stored_key(
    account_id: Uuid,
    name: &str,
    secret: &str,
    scopes: Vec<Scope>,
    from_config: bool,
) -> NewKey {
    NewKey {
        id: Uuid::now_v7(),
        account_id,
        name: name.to_owned(),
        prefix: secret.chars().take(KEY_PREFIX_CHARS).collect(),
        hash: hash_secret(secret),
        scopes,
        from_config,
    }
}

/// What starting up did about the server's admin key.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// The key, when this start created it: shown once, then only in `admin.key`.
    pub created: Option<String>,
    /// Earlier configured admin keys revoked because the configured key changed.
    pub rotated_out: Vec<Uuid>,
}

/// Makes sure the server's admin key exists. Uses `SKEIN_ADMIN_KEY` when set, else the key
/// saved in `<data-dir>/admin.key`, else creates one and saves it there (mode 0600). The
/// key belongs to the operator account, created with it on first start. A configured key
/// that differs from the one stored before replaces it: the old one is revoked.
pub async fn bootstrap_admin(
    store: &dyn Store,
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Bootstrap> {
    let file = data_dir.join("admin.key");
    let (secret, created) = match configured {
        Some(key) => (key.to_owned(), false),
        None if file.exists() => (std::fs::read_to_string(&file)?.trim().to_owned(), false),
        None => (new_secret("sk_"), true),
    };
    let hash = hash_secret(&secret);
    let all = vec![Scope::Read, Scope::Write, Scope::Admin];
    if !store.key_exists(&hash).await? {
        let stored = match store.operator_account().await? {
            Some(account_id) => {
                let key = stored_key(account_id, "admin", &secret, all, true);
                // The server's own admin key is never refused for the cap.
                store.insert_key(&key, u32::MAX).await
            }
            None => {
                let account = Account {
                    id: Uuid::now_v7(),
                    name: "operator".into(),
                    operator: true,
                    created_at: crate::domain::now(),
                };
                let key = stored_key(account.id, "admin", &secret, all, true);
                store.create_account(&account, &key).await
            }
        };
        match stored {
            Ok(()) => {}
            // Another server on the same database stored the same key a moment ago.
            Err(_) if store.key_exists(&hash).await? => {}
            Err(error) => return Err(error.into()),
        }
    } else if store.find_key(&hash).await?.is_none() {
        anyhow::bail!(
            "the configured admin key was revoked; set SKEIN_ADMIN_KEY (or admin.key) to a new key"
        );
    }
    let rotated_out = store.revoke_config_keys_except(&hash).await?;
    if created {
        write_private(&file, &secret)?;
    }
    Ok(Bootstrap {
        created: created.then_some(secret),
        rotated_out,
    })
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
