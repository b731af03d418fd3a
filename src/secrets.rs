//! Secrets at rest: what Skein must be able to use again (an `http` agent's signing secret,
//! an account's webhook secret, and later tool credentials and the private keys of the
//! identities it signs as) is sealed under the server key before it is stored, so that a copy
//! of the database, or of its backup, reveals none of them.
//!
//! The server key is `SKEIN_SECRET_KEY` (32 bytes, base64), or else the key in
//! `<data-dir>/secret.key`, generated (mode 0600) on first start. A sealed value is
//! `sealed:v1:<key id>:<base64 of nonce and ciphertext>` (XChaCha20-Poly1305, a random
//! 24-byte nonce each time); the key id is the start of the key's SHA-256, so a value says
//! which key opens it. To rotate the key, give the new one as `SKEIN_SECRET_KEY` and the
//! old ones as `SKEIN_PREVIOUS_SECRET_KEYS` (comma separated): on start, the store seals
//! every secret again under the new key, and the old ones can then be dropped. Values stored
//! before secrets were sealed are read as they are and sealed at that same start.

use std::{fmt, io::Write, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce, aead::Aead};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;

/// A credential Skein keeps in order to use it. Its `Debug` says only that it is there, so
/// no log line or panic message can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it (signing, showing it once).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a stored secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "a secret is sealed under key {0}, which this server does not have: set SKEIN_SECRET_KEY \
         (or SKEIN_PREVIOUS_SECRET_KEYS) to the key it was sealed with"
    )]
    UnknownKey(String),
    #[error("a sealed secret is damaged")]
    Damaged,
}

/// The server key (and the keys it replaced), sealing and opening secrets.
pub struct Vault {
    current: Key,
    previous: Vec<Key>,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    /// What keys for other purposes are derived from (see [`Vault::derive`]).
    derivation: [u8; 32],
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
            derivation: hmac_sha256(bytes, &[b"skein: derived keys"]),
        }
    }

    fn parse(text: &str, name: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("{name} must be 32 bytes in base64 (openssl rand -base64 32)")
            })?;
        Ok(Self::new(&bytes))
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("key", &self.current.id)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The server key from `key` (`SKEIN_SECRET_KEY`), else from `secret.key` in
    /// `data_dir`, made there if there is none; and the keys it replaced.
    pub fn load(data_dir: &Path, key: Option<&str>, previous: &[String]) -> anyhow::Result<Self> {
        let current = match key {
            Some(key) => Key::parse(key, "SKEIN_SECRET_KEY")?,
            None => Key::parse(&key_file(data_dir)?, "secret.key")?,
        };
        let previous = previous
            .iter()
            .map(|key| Key::parse(key, "SKEIN_PREVIOUS_SECRET_KEYS"))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { current, previous })
    }

    /// A vault with a fresh key of its own, for tests and tools.
    pub fn generate() -> Self {
        let mut bytes = [0; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self {
            current: Key::new(&bytes),
            previous: Vec::new(),
        }
    }

    /// The id of the key secrets are sealed under now.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// A key for `purpose`, derived from the current server key: the same on every server
    /// given the same `SKEIN_SECRET_KEY`, and different for every purpose.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.current.derivation, &[purpose.as_bytes()])
    }

    /// The keys for `purpose` derived from the keys being rotated out.
    pub fn derive_previous(&self, purpose: &str) -> Vec<[u8; 32]> {
        self.previous
            .iter()
            .map(|key| hmac_sha256(&key.derivation, &[purpose.as_bytes()]))
            .collect()
    }

    /// `secret`, sealed under the current key.
    pub fn seal(&self, secret: &Secret) -> String {
        let mut nonce = [0; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), secret.expose().as_bytes())
            .expect("sealing a short secret cannot fail");
        let mut payload = nonce.to_vec();
        payload.extend(sealed);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(payload))
    }

    /// The secret a stored value holds: opened with the key it names, or, for a value
    /// stored before secrets were sealed, the value itself.
    pub fn open(&self, stored: &str) -> Result<Secret, SealError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(Secret::new(stored));
        };
        let (key_id, payload) = sealed.split_once(':').ok_or(SealError::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let payload = STANDARD.decode(payload).map_err(|_| SealError::Damaged)?;
        if payload.len() < NONCE_BYTES {
            return Err(SealError::Damaged);
        }
        let (nonce, sealed) = payload.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Damaged)?;
        let plain = key
            .cipher
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SealError::Damaged)
    }

    /// Whether a stored value is sealed under the current key (else it is sealed again).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|sealed| sealed.split_once(':'))
            .is_some_and(|(key_id, _)| key_id == self.current.id)
    }
}

/// HMAC-SHA256 under `key` of the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The key kept in the data directory, made on first start: readable by this user only.
fn key_file(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("secret.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => return Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => anyhow::bail!("reading {}: {error}", path.display()),
    }
    let mut bytes = [0; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = STANDARD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    file.write_all(format!("{key}\n").as_bytes())?;
    tracing::info!(path = %path.display(), "made the key secrets are sealed with; back it up with the database");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_to_itself_and_shows_nothing_of_it() {
        let vault = Vault::generate();
        let secret = Secret::new("whsec_c2VjcmV0IHNpZ25pbmcga2V5");
        let sealed = vault.seal(&secret);
        assert!(sealed.starts_with(&format!("sealed:v1:{}:", vault.key_id())));
        assert!(!sealed.contains("c2VjcmV0"));
        assert_ne!(vault.seal(&secret), sealed, "a fresh nonce each time");
        assert_eq!(vault.open(&sealed).unwrap(), secret);
        assert!(vault.is_current(&sealed));
        assert_eq!(format!("{secret:?}"), "Secret(…)");
    }

    #[test]
    fn a_secret_sealed_under_a_previous_key_opens_only_with_that_key_given() {
        let dir = tempfile::tempdir().unwrap();
        let old = Vault::load(dir.path(), None, &[]).unwrap();
        let sealed = old.seal(&Secret::new("whsec_old"));
        let old_key = std::fs::read_to_string(dir.path().join("secret.key")).unwrap();
        let new_key = STANDARD.encode([7; 32]);

        let without = Vault::load(dir.path(), Some(&new_key), &[]).unwrap();
        assert!(matches!(
            without.open(&sealed),
            Err(SealError::UnknownKey(_))
        ));
        let rotating = Vault::load(dir.path(), Some(&new_key), &[old_key]).unwrap();
        assert_eq!(rotating.open(&sealed).unwrap().expose(), "whsec_old");
        assert!(!rotating.is_current(&sealed));
        assert!(rotating.is_current(&rotating.seal(&Secret::new("whsec_old"))));
    }

    #[test]
    fn the_key_file_is_made_once_and_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let first = Vault::load(dir.path(), None, &[]).unwrap();
        let again = Vault::load(dir.path(), None, &[]).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_or_badly_given_key_is_refused_plainly() {
        let vault = Vault::generate();
        let sealed = vault.seal(&Secret::new("whsec_x"));
        let damaged = format!("{}AAAA", &sealed[..sealed.len() - 4]);
        assert!(matches!(vault.open(&damaged), Err(SealError::Damaged)));
        let dir = tempfile::tempdir().unwrap();
        let refused = Vault::load(dir.path(), Some("too short"), &[]).unwrap_err();
        assert!(refused.to_string().contains("32 bytes"), "{refused}");
        // A value stored before sealing is read as it is.
        assert_eq!(vault.open("whsec_plain").unwrap().expose(), "whsec_plain");
    }
}
