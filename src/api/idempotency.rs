//! `Idempotency-Key` (or `X-Idempotency-Key`) on POST: a retried request does its work once.
//!
//! The first request with a key claims it in the database, runs, and its response is kept
//! for 24 hours. A repeat with the same body gets that response again (with
//! `Idempotent-Replayed: true`) and changes nothing; a repeat with a different body is a 422;
//! a repeat while the first is still running is a 409. Keys are per account and survive
//! restarts. The first request runs to the end even if its client goes away. A response
//! saying it did not run (401, 403, 429) or a 5xx releases the claim, so the retry runs.
//!
//! Kept responses are encrypted (XChaCha20-Poly1305) with a key derived from the caller's
//! API key and the idempotency key. Neither is stored, so a kept response that holds a new
//! secret, such as a created API key, is not readable from a copy of the database.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce, aead::Aead};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AppState, BodyLimit, auth};
use crate::{error::AppError, store::IdempotencyClaim};

/// How long a response is kept for replay.
pub const RETENTION_HOURS: i64 = 24;

/// How long a claim may stay in flight before it is taken for abandoned (its process died
/// with the request unfinished) and the key can be used again.
const ABANDONED_AFTER_MINUTES: i64 = 10;
const MAX_KEY_CHARS: usize = 255;
/// Larger responses are not kept (the claim is released instead); none of ours come close.
const MAX_KEPT_RESPONSE: usize = 4 * 1024 * 1024;
const NONCE_BYTES: usize = 24;

/// What is kept of a response, encrypted.
#[derive(Serialize, Deserialize)]
struct Kept {
    content_type: Option<String>,
    location: Option<String>,
    body: String,
}

/// Middleware for the `/api/v1` routes, inside [`auth::gate`].
pub(super) async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = idempotency_key(request.headers()) else {
        return next.run(request).await;
    };
    let key = match key {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    // Without a valid key there is nothing to scope the claim to; the handler answers 401.
    let (Some(caller), Some(secret)) = (
        request.extensions().get::<auth::Caller>().cloned(),
        auth::bearer(request.headers()),
    ) else {
        return next.run(request).await;
    };
    let limit = request.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return AppError::PayloadTooLarge(limit).into_response(),
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let cipher = cipher(&secret, &key);
    let now = Utc::now();
    let expired_before = now - Duration::hours(RETENTION_HOURS);
    // A request runs to its end within the request timeout, however its client fares: a
    // claim still in flight long after that was left by a process that died.
    let abandoned_before = now - Duration::minutes(ABANDONED_AFTER_MINUTES);
    let account = caller.account_id;
    let claim = state
        .store
        .claim_idempotency(
            account,
            &key,
            &fingerprint,
            expired_before,
            abandoned_before,
        )
        .await;
    match claim {
        Err(error) => AppError::from(error).into_response(),
        Ok(IdempotencyClaim::Mismatch) => {
            AppError::Validation(vec![crate::domain::FieldError::new(
                "Idempotency-Key",
                "this key was already used with a different request; use a new key",
            )])
            .into_response()
        }
        Ok(IdempotencyClaim::InFlight) => AppError::Conflict(
            "a request with this Idempotency-Key is still in progress; retry when it has finished"
                .into(),
        )
        .into_response(),
        Ok(IdempotencyClaim::Completed { status, response }) => replay(&cipher, status, &response),
        Ok(IdempotencyClaim::Claimed) => {
            let release = Release {
                state: Some(state.clone()),
                account,
                key: key.clone(),
            };
            // The request runs to the end in a task of its own: a client that gives up
            // waiting must not leave work done but unrecorded, or its retry would do it again.
            let request = Request::from_parts(parts, Body::from(body));
            let tasks = state.tasks.clone();
            let finished = tasks.spawn("idempotent request", async move {
                let response = next.run(request).await;
                keep(&state, release, &cipher, response).await
            });
            match finished.await {
                Ok(response) => response,
                // A panic: its `Release` was dropped while unwinding, so the claim is gone.
                Err(_) => AppError::Internal(anyhow::anyhow!("the request failed")).into_response(),
            }
        }
    }
}

/// The header's value: absent, or a 1–255 character printable key.
fn idempotency_key(headers: &HeaderMap) -> Option<Result<String, AppError>> {
    let value = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-idempotency-key"))?;
    let valid = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_KEY_CHARS);
    Some(valid.map(str::to_owned).ok_or_else(|| {
        AppError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_CHARS} printable ASCII characters"),
        )
    }))
}

/// The request as far as "the same request" goes: method, path and the JSON body with its
/// keys sorted, so whitespace and key order do not make a retry look different.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let body = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => canonical(value).to_string().into_bytes(),
        Err(_) => body.to_vec(),
    };
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update([0]);
    hash.update(path);
    hash.update([0]);
    hash.update(&body);
    hex::encode(hash.finalize())
}

fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

fn cipher(api_key: &str, idempotency_key: &str) -> XChaCha20Poly1305 {
    let mut hash = Sha256::new();
    hash.update(b"skein idempotent response v1");
    hash.update([0]);
    hash.update(api_key);
    hash.update([0]);
    hash.update(idempotency_key);
    let key: [u8; 32] = hash.finalize().into();
    XChaCha20Poly1305::new(&key.into())
}

/// Keeps a finished response and hands it on. A response that says the request did not
/// run (401, 403, 429) or failed on our side (5xx) is not kept: the claim is released, so a
/// retry runs for real.
async fn keep(
    state: &AppState,
    mut release: Release,
    cipher: &XChaCha20Poly1305,
    response: Response,
) -> Response {
    let status = response.status();
    let did_not_run = matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    );
    if did_not_run || status.is_server_error() {
        // Before answering, so that the client's retry finds the key free.
        release.now().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_KEPT_RESPONSE).await else {
        tracing::error!("a response too large to keep for an idempotent replay");
        return AppError::Internal(anyhow::anyhow!("response too large to keep")).into_response();
    };
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let kept = Kept {
        content_type: header(header::CONTENT_TYPE),
        location: header(header::LOCATION),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let plaintext = serde_json::to_vec(&kept).expect("kept responses serialize");
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), plaintext.as_slice())
        .map(|ciphertext| [nonce.as_slice(), &ciphertext].concat());
    match sealed {
        Ok(sealed) => {
            let done = state
                .store
                .complete_idempotency(release.account, &release.key, status.as_u16(), &sealed)
                .await;
            match done {
                Ok(()) => release.state = None,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "keeping a response failed")
                }
            }
        }
        Err(_) => tracing::error!("encrypting a kept response failed"),
    }
    Response::from_parts(parts, Body::from(body))
}

fn replay(cipher: &XChaCha20Poly1305, status: u16, sealed: &[u8]) -> Response {
    let opened = (sealed.len() > NONCE_BYTES)
        .then(|| {
            let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
            let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
            cipher.decrypt(&XNonce::from(nonce), ciphertext).ok()
        })
        .flatten()
        .and_then(|plaintext| serde_json::from_slice::<Kept>(&plaintext).ok());
    let Some(kept) = opened else {
        return AppError::Conflict(
            "this Idempotency-Key was used by another API key of the account; use a new key".into(),
        )
        .into_response();
    };
    let mut response = Response::new(Body::from(kept.body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kept.content_type),
        (header::LOCATION, kept.location),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Releases a claim whose response is not kept: the request did not run, failed with a
/// 5xx, or panicked.
struct Release {
    state: Option<AppState>,
    account: uuid::Uuid,
    key: String,
}

impl Release {
    /// Releases the claim and waits until it is gone.
    async fn now(mut self) {
        if let Some(state) = self.state.take() {
            release(state, self.account, std::mem::take(&mut self.key)).await;
        }
    }
}

/// A panic or an early return: released in the background, as soon as can be.
impl Drop for Release {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let (account, key) = (self.account, std::mem::take(&mut self.key));
            let tasks = state.tasks.clone();
            tasks.spawn("idempotency release", release(state, account, key));
        }
    }
}

async fn release(state: AppState, account: uuid::Uuid, key: String) {
    if let Err(error) = state.store.release_idempotency(account, &key).await {
        tracing::error!(error = format!("{error:#}"), "releasing a claim failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_json_in_another_order_is_the_same_request() {
        let a = fingerprint(
            &Method::POST,
            "/x",
            br#"{"a": 1, "b": {"d": 2, "c": [1, 2]}}"#,
        );
        let b = fingerprint(&Method::POST, "/x", br#"{"b":{"c":[1,2],"d":2},"a":1}"#);
        let c = fingerprint(&Method::POST, "/x", br#"{"b":{"c":[2,1],"d":2},"a":1}"#);
        let d = fingerprint(
            &Method::POST,
            "/y",
            br#"{"a": 1, "b": {"d": 2, "c": [1, 2]}}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn a_kept_response_opens_only_with_the_same_api_key() {
        let sealed = {
            let cipher = cipher("sk_one", "idem-1");
            let kept = serde_json::to_vec(&Kept {
                content_type: Some("application/json".into()),
                location: None,
                body: "{\"key\":\"sk_secret\"}".into(),
            })
            .unwrap();
            let nonce = [7u8; NONCE_BYTES];
            let ciphertext = cipher
                .encrypt(&XNonce::from(nonce), kept.as_slice())
                .unwrap();
            [nonce.as_slice(), &ciphertext].concat()
        };
        assert!(!String::from_utf8_lossy(&sealed).contains("sk_secret"));
        assert_eq!(
            replay(&cipher("sk_one", "idem-1"), 201, &sealed).status(),
            201
        );
        assert_eq!(
            replay(&cipher("sk_two", "idem-1"), 201, &sealed).status(),
            StatusCode::CONFLICT
        );
    }
}
