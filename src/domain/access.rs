//! Accounts and their API keys.
//!
//! Scopes are ordered: `admin` can do what `write` can, and `write` what `read` can. A key
//! lists the scopes it was given; what it may do is the highest of them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read everything of the account: lists, details, history, live streams.
    Read,
    /// Also create, change, stop and delete.
    Write,
    /// Also manage the account's keys; on the operator account, create accounts.
    Admin,
}

text_enum!(Scope);

/// A tenant.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    /// The account of the server's own admin key; its admin keys manage accounts.
    pub operator: bool,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: never the secret, only its hash and first characters.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    /// The first 12 characters of the secret, so people can tell their keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    /// Set by `SKEIN_ADMIN_KEY` or `admin.key`: rotated there, not revoked over the API.
    pub from_config: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// What the key may do: the highest of its scopes.
    pub fn grant(&self) -> Option<Scope> {
        self.scopes.iter().copied().max()
    }
}

/// Characters of a secret kept visible as its prefix.
pub const KEY_PREFIX_CHARS: usize = 12;

/// A key about to be stored: its hash, never the secret.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<Scope>,
    pub from_config: bool,
}
