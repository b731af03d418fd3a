//! `/keys` and `/accounts`: an admin key manages its account's keys; the operator account's
//! admin keys also create accounts, each with its first key.
//!
//! A new key's secret is in the create response only. Revoking a key takes effect on the
//! next request (401) and closes the WebSocket streams opened with it (1008).

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiJson, ApiPath, ApiQuery, AppState, PageJson, PageParams, auth, auth::Caller, check,
    check_len,
};
use crate::{
    domain::{Account, ApiKey, FieldError, NewKey, Page, Scope},
    error::AppError,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", get(read_key).delete(revoke_key))
        .route("/accounts", get(list_accounts).post(create_account))
}

/// A key as listed: never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct KeyView {
    pub(super) id: Uuid,
    pub(super) account_id: Uuid,
    pub(super) name: String,
    /// The first 12 characters of the key, to tell keys apart.
    pub(super) key_prefix: String,
    pub(super) scopes: Vec<Scope>,
    pub(super) created_at: DateTime<Utc>,
    /// Updated at most once a minute.
    pub(super) last_used_at: Option<DateTime<Utc>>,
    pub(super) revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            account_id: key.account_id,
            name: key.name,
            key_prefix: key.prefix,
            scopes: key.scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A key just created: the listing fields plus the secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CreatedKey {
    #[serde(flatten)]
    pub(super) view: KeyView,
    /// The full key. It is not stored and cannot be shown again.
    pub(super) key: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct CreateKey {
    pub(super) name: String,
    /// Any of `read`, `write`, `admin` (default `["read", "write"]`). The highest counts:
    /// `write` can also read, `admin` can also manage keys.
    #[serde(default)]
    pub(super) scopes: Option<Vec<String>>,
}

fn parse_scopes(errors: &mut Vec<FieldError>, scopes: Option<Vec<String>>) -> Vec<Scope> {
    let Some(scopes) = scopes else {
        return vec![Scope::Read, Scope::Write];
    };
    if scopes.is_empty() {
        errors.push(FieldError::new("scopes", "at least one scope is required"));
    }
    let mut parsed: Vec<Scope> = Vec::new();
    for (i, scope) in scopes.iter().enumerate() {
        match scope.parse() {
            Ok(scope) if !parsed.contains(&scope) => parsed.push(scope),
            Ok(_) => {}
            Err(_) => errors.push(FieldError::new(
                format!("scopes[{i}]"),
                format!("`{scope}` is not one of read, write, admin"),
            )),
        }
    }
    parsed.sort();
    parsed
}

/// The stored key, with the secret that is shown this once.
async fn shown_once(
    state: &AppState,
    new: &NewKey,
    secret: String,
) -> Result<CreatedKey, AppError> {
    let stored = state
        .store
        .find_key(&new.hash)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a key vanished after insert")))?;
    Ok(CreatedKey {
        view: stored.key.into(),
        key: secret,
    })
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKey>,
) -> Result<impl IntoResponse, AppError> {
    caller.require(Scope::Admin)?;
    let mut errors = Vec::new();
    let name = request.name.trim().to_owned();
    check_len(
        &mut errors,
        "name",
        &name,
        1,
        state.config.limits.max_name_chars,
    );
    let scopes = parse_scopes(&mut errors, request.scopes);
    check(errors)?;
    let (secret, new) = auth::new_key(caller.account_id, &name, scopes);
    state
        .store
        .insert_key(&new, state.config.rate_limits.max_keys_per_account)
        .await?;
    tracing::info!(key = %new.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(shown_once(&state, &new, secret).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageParams),
    responses((status = 200, description = "`{items, meta}`: the account's keys, newest first, revoked ones included"), (status = 403, body = crate::error::Problem)))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<KeyView>, AppError> {
    caller.require(Scope::Admin)?;
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let (keys, total) = state.store.list_keys(caller.account_id, page).await?;
    Ok(PageJson(Page::new(keys, total, page).map(KeyView::from)))
}

#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyView)))]
async fn read_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeyView>, AppError> {
    caller.require(Scope::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::NotFound("key"))?;
    let key = state.store.get_key(caller.account_id, id).await?;
    Ok(Json(key.ok_or(AppError::NotFound("key"))?.into()))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked (again, if it was already)"), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::NotFound("key"))?;
    if !state
        .store
        .revoke_key(caller.account_id, id, crate::domain::now())
        .await?
    {
        return Err(AppError::NotFound("key"));
    }
    state.keys.forget(id);
    state.streams.revoke(id);
    if let Some(others) = &state.revocations {
        others.announce(id).await;
    }
    tracing::info!(key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AccountView {
    pub(super) id: Uuid,
    pub(super) name: String,
    /// The account of the server's own admin key.
    pub(super) operator: bool,
    pub(super) created_at: DateTime<Utc>,
}

impl From<Account> for AccountView {
    fn from(account: Account) -> Self {
        Self {
            id: account.id,
            name: account.name,
            operator: account.operator,
            created_at: account.created_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct CreateAccount {
    pub(super) name: String,
    /// Name of the account's first key (default `admin`); that key has every scope.
    #[serde(default)]
    pub(super) key_name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CreatedAccount {
    #[serde(flatten)]
    pub(super) account: AccountView,
    /// The account's first key, an admin key, shown this once.
    pub(super) key: CreatedKey,
}

/// Account management is for the operator: an admin key of the operator account.
fn require_operator(caller: &Caller) -> Result<(), AppError> {
    caller.require(Scope::Admin)?;
    if caller.operator {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only the operator account's admin keys manage accounts".into(),
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = CreateAccount,
    responses((status = 201, body = CreatedAccount), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateAccount>,
) -> Result<impl IntoResponse, AppError> {
    require_operator(&caller)?;
    let max = state.config.limits.max_name_chars;
    let mut errors = Vec::new();
    let name = request.name.trim().to_owned();
    check_len(&mut errors, "name", &name, 1, max);
    let key_name = request
        .key_name
        .as_deref()
        .unwrap_or("admin")
        .trim()
        .to_owned();
    check_len(&mut errors, "key_name", &key_name, 1, max);
    check(errors)?;
    let account = Account {
        id: Uuid::now_v7(),
        name,
        operator: false,
        created_at: crate::domain::now(),
    };
    let (secret, first) = auth::new_key(
        account.id,
        &key_name,
        vec![Scope::Read, Scope::Write, Scope::Admin],
    );
    state.store.create_account(&account, &first).await?;
    tracing::info!(account = %account.id, "account created");
    let body = CreatedAccount {
        account: account.into(),
        key: shown_once(&state, &first, secret).await?,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts", params(PageParams),
    responses((status = 200, description = "`{items, meta}`: every account, oldest first"), (status = 403, body = crate::error::Problem)))]
async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<PageJson<AccountView>, AppError> {
    require_operator(&caller)?;
    let mut errors = Vec::new();
    let page = params.parse(&mut errors);
    check(errors)?;
    let (accounts, total) = state.store.list_accounts(page).await?;
    Ok(PageJson(
        Page::new(accounts, total, page).map(AccountView::from),
    ))
}
