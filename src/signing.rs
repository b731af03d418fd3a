//! Standard Webhooks signatures: how Skein signs what it sends to URLs people give it
//! (each turn of an `http` agent, each webhook delivery), so the receiver can tell it came
//! from Skein and was not replayed much later.
//!
//! `webhook-id` names the message (the same on every retry), `webhook-timestamp` is the Unix
//! time of the attempt, and `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under the secret's key: the base64 after `whsec_`.

use crate::secrets::{Secret, hmac_sha256};
use base64::{Engine as _, engine::general_purpose::STANDARD};

/// A fresh signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> Secret {
    Secret::new(format!(
        "whsec_{}",
        STANDARD.encode(rand::random::<[u8; 32]>())
    ))
}

/// `v1,<signature>` of `id.timestamp.body` under a `whsec_…` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    // A secret we made always decodes; one that does not is used as raw bytes.
    let key = STANDARD
        .decode(key)
        .unwrap_or_else(|_| key.as_bytes().to_vec());
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

/// The three headers of a signed request, for a message `id` sent now.
pub fn headers(secret: &str, id: &str, body: &[u8]) -> [(&'static str, String); 3] {
    let timestamp = chrono::Utc::now().timestamp();
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sign(secret, id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_new_secret_is_32_random_bytes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let bytes = STANDARD
            .decode(a.expose().strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
