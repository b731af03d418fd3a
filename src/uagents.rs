//! The Fetch.ai uAgents wire format, as far as Skein speaks it: identities (secp256k1 keys
//! and their `agent1q…` addresses), the signed envelope every message travels in, and the
//! payloads of the standard chat protocol (AgentChatProtocol 0.3.0).
//!
//! The byte-level rules come from the `uagents`/`uagents-core` sources and were checked
//! against a live agent; `vectors.json` beside this file holds the test vectors. What goes
//! over HTTP (sending a turn, the inbound `/submit`) lives in [`crate::agents::uagent`] and
//! [`crate::api::uagents`].

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bech32::{Bech32, Hrp};
use chrono::{DateTime, Utc};
use k256::ecdsa::{
    Signature, SigningKey, VerifyingKey,
    signature::hazmat::{PrehashSigner, PrehashVerifier},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{domain::AgentAddress, secrets::hmac_sha256};

/// `schema_digest` of a `ChatMessage`.
pub const CHAT_MESSAGE: &str =
    "model:2601825997203ee07dbb9ff6e7c71ae7bdaf6a7c8b817361f2f88f4b29c68d0c";
/// `schema_digest` of a `ChatAcknowledgement`.
pub const CHAT_ACKNOWLEDGEMENT: &str =
    "model:741eb75692abbeb43c131e364ad939af23f14e8288ba0ec3df130843ef79bd7f";
/// `schema_digest` of the `ErrorMessage` every agent may answer with.
pub const ERROR_MESSAGE: &str =
    "model:94cb082f79871c5e80a20637f935d233f0ce11a135d5a3a3c6071e81102a84d5";
/// `protocol_digest` of AgentChatProtocol 0.3.0.
pub const CHAT_PROTOCOL: &str =
    "proto:30a801ed3a83f9a0ff0a9f1e6fe958cb91da1fc2218b153df7b6cbf87bd33d62";

/// How long an envelope Skein sends stays valid, as uAgents itself sets it.
pub const ENVELOPE_TTL_SECS: u64 = 30;

/// The longest an envelope Skein takes may stay valid: uAgents send theirs for 30 s, and a
/// replay is possible for as long as an envelope is valid.
pub const MAX_ENVELOPE_LIFE_SECS: u64 = 3600;

/// A key Skein signs as, and its address.
pub struct Identity {
    key: SigningKey,
    address: AgentAddress,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity of a 32-byte secret key, `None` if it is not a valid scalar.
    pub fn from_secret(bytes: &[u8; 32]) -> Option<Self> {
        let key = SigningKey::from_slice(bytes).ok()?;
        let address = address_of(key.verifying_key());
        Some(Self { key, address })
    }

    pub fn address(&self) -> &AgentAddress {
        &self.address
    }

    /// A bech32 `sig1…` signature of `digest`, signed as a prehash (no second hash), low-S.
    fn sign(&self, digest: &[u8; 32]) -> String {
        let signature: Signature = self
            .key
            .sign_prehash(digest)
            .expect("a 32-byte digest can always be signed");
        let hrp = Hrp::parse("sig").expect("`sig` is a valid human-readable part");
        bech32::encode::<Bech32>(hrp, &signature.to_bytes())
            .expect("64 bytes always fit a bech32 string")
    }
}

/// The `agent1q…` address of a public key: bech32 over its compressed SEC1 form.
fn address_of(key: &VerifyingKey) -> AgentAddress {
    let point = key.to_encoded_point(true);
    let hrp = Hrp::parse("agent").expect("`agent` is a valid human-readable part");
    let encoded = bech32::encode::<Bech32>(hrp, point.as_bytes())
        .expect("33 bytes always fit a bech32 string");
    AgentAddress::parse(&encoded).expect("an encoded public key is a valid address")
}

/// The identities Skein speaks to uAgents as: one per collaboration, so that an agent's
/// reply names the collaboration it belongs to. Each key is derived from the server's secret
/// key and the collaboration's id, so it is never stored and every server of a cluster (all
/// given the same `SKEIN_SECRET_KEY`) holds the same one. While the secret key is rotated,
/// the identities of the keys it replaces are still recognised in replies.
#[derive(Clone)]
pub struct Identities {
    root: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identities(..)")
    }
}

impl Identities {
    /// Identities derived from `root`, a secret of the server's own (see
    /// [`crate::secrets::Vault::derive`]).
    pub fn new(root: [u8; 32]) -> Self {
        Self {
            root,
            previous: Vec::new(),
        }
    }

    /// The same, still recognising the identities derived from `previous` roots.
    pub fn recognising(mut self, previous: Vec<[u8; 32]>) -> Self {
        self.previous = previous;
        self
    }

    /// The identity Skein speaks as in `collaboration_id`.
    pub fn for_collaboration(&self, collaboration_id: Uuid) -> Identity {
        identity_under(&self.root, b"collaboration", collaboration_id)
    }

    /// The identity a team answers uAgents as: its address is the team's.
    pub fn for_team(&self, team_id: Uuid) -> Identity {
        identity_under(&self.root, b"team", team_id)
    }

    /// The session of the conversation between a collaboration and one of its uAgents: a
    /// version-4 UUID (as uAgents requires), the same on every turn and every server.
    pub fn session(&self, collaboration_id: Uuid, agent: &AgentAddress) -> Uuid {
        session_under(&self.root, collaboration_id, agent)
    }

    /// The session in which `agent` answers Skein at `address` in `collaboration_id`, if
    /// `address` is Skein's there: under the current key, or under one being rotated out (a
    /// reply already on its way when the key changed).
    pub fn session_at(
        &self,
        collaboration_id: Uuid,
        address: &str,
        agent: &AgentAddress,
    ) -> Option<Uuid> {
        std::iter::once(&self.root)
            .chain(&self.previous)
            .find(|root| {
                identity_under(root, b"collaboration", collaboration_id)
                    .address()
                    .as_str()
                    == address
            })
            .map(|root| session_under(root, collaboration_id, agent))
    }

    /// The identity that speaks for `team_id` at `address` (its address was derived when
    /// the team was made): under the current key, or under one being rotated out, so that
    /// a team answers from the address it was written to.
    pub fn team_at(&self, team_id: Uuid, address: &AgentAddress) -> Option<Identity> {
        std::iter::once(&self.root)
            .chain(&self.previous)
            .map(|root| identity_under(root, b"team", team_id))
            .find(|identity| identity.address() == address)
    }
}

fn identity_under(root: &[u8; 32], purpose: &[u8], id: Uuid) -> Identity {
    // A derived value is an invalid scalar with a chance of about 2^-128; the counter makes
    // even that case yield a key.
    (0u8..)
        .find_map(|counter| {
            let secret = hmac_sha256(root, &[purpose, id.as_bytes(), &[counter]]);
            Identity::from_secret(&secret)
        })
        .expect("some counter yields a valid key")
}

fn session_under(root: &[u8; 32], collaboration_id: Uuid, agent: &AgentAddress) -> Uuid {
    let digest = hmac_sha256(
        root,
        &[
            b"session",
            collaboration_id.as_bytes(),
            agent.as_str().as_bytes(),
        ],
    );
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Every message between agents: who to whom, in which session, a payload of a known
/// schema, signed by the sender. All ten keys are always written, `null` where unset, as
/// uAgents writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u64,
    pub sender: String,
    pub target: String,
    pub session: Uuid,
    pub schema_digest: String,
    #[serde(default)]
    pub protocol_digest: Option<String>,
    /// Base64 (standard, padded) of the message's JSON.
    #[serde(default)]
    pub payload: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires: Option<u64>,
    #[serde(default)]
    pub nonce: Option<u64>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// Why an envelope is refused. The message is what the sender is told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("unsupported envelope version {0}")]
    Version(u64),
    #[error("the sender is not a valid agent address: {0}")]
    Sender(String),
    #[error("Envelope signature is missing")]
    Unsigned,
    #[error("Signature verification failed")]
    BadSignature,
    #[error("the envelope has expired")]
    Expired,
    #[error("the envelope would stay valid for over {MAX_ENVELOPE_LIFE_SECS} s")]
    TooLong,
    #[error("the payload is not base64 JSON")]
    Payload,
}

impl Envelope {
    /// A signed envelope from `identity` to `target` carrying `message` (of `schema_digest`
    /// in the chat protocol), valid for [`ENVELOPE_TTL_SECS`] from `now`.
    pub fn signed(
        identity: &Identity,
        target: &AgentAddress,
        session: Uuid,
        schema_digest: &str,
        message: &impl Serialize,
        now: DateTime<Utc>,
    ) -> Self {
        let payload = serde_json::to_vec(message).expect("chat messages serialize");
        let mut envelope = Self {
            version: 1,
            sender: identity.address.to_string(),
            target: target.to_string(),
            session,
            schema_digest: schema_digest.to_owned(),
            protocol_digest: Some(CHAT_PROTOCOL.to_owned()),
            payload: Some(STANDARD.encode(payload)),
            expires: Some(now.timestamp().max(0) as u64 + ENVELOPE_TTL_SECS),
            nonce: None,
            signature: None,
        };
        envelope.signature = Some(identity.sign(&envelope.digest()));
        envelope
    }

    /// What the signature covers: the SHA-256 of sender, target, session, schema digest,
    /// then the payload's base64 text, `expires` and `nonce` (big-endian u64) when present,
    /// with nothing between them. `version` and `protocol_digest` are not covered.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.sender.as_bytes());
        hasher.update(self.target.as_bytes());
        hasher.update(self.session.hyphenated().to_string().as_bytes());
        hasher.update(self.schema_digest.as_bytes());
        if let Some(payload) = &self.payload {
            hasher.update(payload.as_bytes());
        }
        if let Some(expires) = self.expires {
            hasher.update(expires.to_be_bytes());
        }
        if let Some(nonce) = self.nonce {
            hasher.update(nonce.to_be_bytes());
        }
        hasher.finalize().into()
    }

    /// Checks the version, that the sender is an agent address, that the signature is
    /// the sender's over [`Envelope::digest`], and that the envelope has not expired at
    /// `now`, nor lives longer than [`MAX_ENVELOPE_LIFE_SECS`] (one without `expires`, or
    /// with one far off, could be replayed for as long). Returns the sender's address.
    pub fn verify(&self, now: DateTime<Utc>) -> Result<AgentAddress, EnvelopeError> {
        if self.version != 1 {
            return Err(EnvelopeError::Version(self.version));
        }
        verify_signed(&self.sender, &self.digest(), self.signature.as_deref())?;
        let now = now.timestamp().max(0) as u64;
        match self.expires {
            Some(expires) if expires > now + MAX_ENVELOPE_LIFE_SECS => {
                return Err(EnvelopeError::TooLong);
            }
            Some(expires) if expires > now => {}
            _ => return Err(EnvelopeError::Expired),
        }
        AgentAddress::parse(&self.sender).map_err(|e| EnvelopeError::Sender(e.to_string()))
    }

    /// The payload, parsed as `T`.
    pub fn message<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        let payload = self.payload.as_deref().ok_or(EnvelopeError::Payload)?;
        let bytes = STANDARD
            .decode(payload)
            .map_err(|_| EnvelopeError::Payload)?;
        serde_json::from_slice(&bytes).map_err(|_| EnvelopeError::Payload)
    }
}

/// Checks that `signature` (bech32 `sig1…`) is `signer`'s over `digest`, taken as a
/// prehash.
fn verify_signed(
    signer: &str,
    digest: &[u8; 32],
    signature: Option<&str>,
) -> Result<(), EnvelopeError> {
    let bad = |why: &str| EnvelopeError::Sender(why.to_owned());
    let (hrp, bytes) = bech32::decode(signer).map_err(|e| bad(&e.to_string()))?;
    if hrp.as_str() != "agent" {
        return Err(bad("the prefix must be `agent`"));
    }
    let key =
        VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| bad("not a secp256k1 public key"))?;
    let signature = signature.ok_or(EnvelopeError::Unsigned)?;
    let (hrp, bytes) = bech32::decode(signature).map_err(|_| EnvelopeError::BadSignature)?;
    if hrp.as_str() != "sig" {
        return Err(EnvelopeError::BadSignature);
    }
    let signature = Signature::from_slice(&bytes).map_err(|_| EnvelopeError::BadSignature)?;
    // Python's ecdsa signs with a high S half of the time; k256 accepts only low S.
    let signature = signature.normalize_s().unwrap_or(signature);
    key.verify_prehash(digest, &signature)
        .map_err(|_| EnvelopeError::BadSignature)
}

/// Checks an agent's Almanac registration: `signature` is `address`'s over the SHA-256 of
/// the rest of the registration as Python's `json.dumps(…, sort_keys=True,
/// separators=(",", ":"))` writes it (keys sorted at every level, non-ASCII escaped).
pub fn verify_attestation(
    address: &str,
    unsigned: &serde_json::Map<String, serde_json::Value>,
    signature: &str,
) -> Result<(), EnvelopeError> {
    verify_signed(address, &attestation_digest(unsigned), Some(signature))
}

/// A registration of `identity` at `endpoint` (its `/submit`) for an Almanac API, speaking
/// the chat protocol, signed as uAgents sign theirs.
pub fn attestation(identity: &Identity, endpoint: &str, now: DateTime<Utc>) -> serde_json::Value {
    let serde_json::Value::Object(mut body) = serde_json::json!({
        "agent_identifier": format!("agent://{}", identity.address()),
        "timestamp": now.timestamp(),
        "protocols": [CHAT_PROTOCOL],
        "endpoints": [{"url": endpoint, "weight": 1}],
        "metadata": null,
    }) else {
        unreachable!("a JSON object literal is an object")
    };
    let signature = identity.sign(&attestation_digest(&body));
    body.insert("signature".into(), signature.into());
    serde_json::Value::Object(body)
}

/// What an attestation's signature covers: the SHA-256 of everything else in it.
fn attestation_digest(unsigned: &serde_json::Map<String, serde_json::Value>) -> [u8; 32] {
    let mut text = String::new();
    python_json(&serde_json::Value::Object(unsigned.clone()), &mut text);
    Sha256::digest(text.as_bytes()).into()
}

/// `value` as Python's `json.dumps` writes it with sorted keys and compact separators.
fn python_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_string(key, out);
                out.push(':');
                python_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_json(item, out);
            }
            out.push(']');
        }
        Value::String(text) => python_string(text, out),
        other => out.push_str(&other.to_string()),
    }
}

/// A string as Python's `json.dumps` writes it: everything outside ASCII as `\uXXXX`.
fn python_string(text: &str, out: &mut String) {
    let json = serde_json::to_string(text).expect("a string serializes");
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
}

/// A chat message: exactly the model's fields, since an agent given one more key stops
/// handling messages altogether.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    #[serde(serialize_with = "micros")]
    pub timestamp: DateTime<Utc>,
    pub msg_id: Uuid,
    pub content: Vec<serde_json::Value>,
}

impl ChatMessage {
    /// A message of one text item.
    pub fn text(text: &str, now: DateTime<Utc>) -> Self {
        Self {
            timestamp: now,
            msg_id: Uuid::new_v4(),
            content: vec![serde_json::json!({"type": "text", "text": text})],
        }
    }

    /// The message with a metadata item added (`{"type": "metadata", "metadata": {…}}`): the
    /// chat protocol's own place for data beside the words, where the trace context goes.
    /// Nothing is added when `metadata` is empty.
    pub fn with_metadata(mut self, metadata: Vec<(String, String)>) -> Self {
        if !metadata.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = metadata
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            self.content
                .push(serde_json::json!({"type": "metadata", "metadata": map}));
        }
        self
    }

    /// Its text items, joined by blank lines; other items (session markers, resources,
    /// metadata) carry no words for the channel.
    pub fn words(&self) -> String {
        self.content
            .iter()
            .filter(|item| item["type"] == "text")
            .filter_map(|item| item["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// The answer to every chat message received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatAcknowledgement {
    #[serde(serialize_with = "micros")]
    pub timestamp: DateTime<Utc>,
    pub acknowledged_msg_id: Uuid,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// A timestamp as Python writes one: RFC 3339 with microseconds (pydantic refuses more
/// digits than that).
fn micros<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// What an agent says when it cannot handle a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("uagents/vectors.json")).unwrap()
    }

    fn hex32(value: &Value) -> [u8; 32] {
        hex::decode(value.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    #[test]
    fn a_key_gives_the_address_uagents_gives_it() {
        let vectors = vectors();
        for key in [&vectors["key"], &vectors["seed_derivation"]] {
            let identity = Identity::from_secret(&hex32(&key["privkey_hex"])).unwrap();
            assert_eq!(identity.address().as_str(), key["address"]);
        }
    }

    #[test]
    fn the_signing_input_digest_and_signature_match_the_vector() {
        let vectors = vectors();
        let vector = &vectors["envelope_vector"];
        let envelope: Envelope = serde_json::from_value(vector["envelope"].clone()).unwrap();
        assert_eq!(hex::encode(envelope.digest()), vector["digest_hex"]);
        let identity = Identity::from_secret(&hex32(&vectors["key"]["privkey_hex"])).unwrap();
        // RFC 6979 makes the signature deterministic: byte for byte the vector's.
        assert_eq!(
            identity.sign(&envelope.digest()),
            envelope.signature.clone().unwrap()
        );
        assert_eq!(
            envelope.verify(at(1_735_689_600)).unwrap().as_str(),
            vectors["key"]["address"]
        );
        let mut with_nonce = envelope.clone();
        with_nonce.nonce = Some(42);
        assert_eq!(
            hex::encode(with_nonce.digest()),
            vectors["envelope_vector_with_nonce_42_digest_hex"]
        );
        let message: ChatMessage = envelope.message().unwrap();
        assert_eq!(message.words(), "hello");
    }

    #[test]
    fn a_high_s_signature_from_python_verifies() {
        let vectors = vectors();
        let vector = &vectors["high_s_vector"];
        let envelope: Envelope = serde_json::from_value(vector["envelope"].clone()).unwrap();
        assert_eq!(hex::encode(envelope.digest()), vector["digest_hex"]);
        assert_eq!(
            envelope.verify(at(1_735_689_600)).unwrap().as_str(),
            vectors["seed_derivation"]["address"]
        );
    }

    #[test]
    fn a_changed_field_an_expired_long_lived_or_unsigned_envelope_is_refused() {
        let vectors = vectors();
        let envelope: Envelope =
            serde_json::from_value(vectors["envelope_vector"]["envelope"].clone()).unwrap();
        let now = at(1_735_689_600);
        let mut tampered = envelope.clone();
        tampered.target = tampered.sender.clone();
        assert_eq!(tampered.verify(now), Err(EnvelopeError::BadSignature));
        assert_eq!(
            envelope.verify(at(1_735_689_630)),
            Err(EnvelopeError::Expired)
        );
        assert_eq!(
            envelope.verify(at(1_735_689_630 - 3601)),
            Err(EnvelopeError::TooLong)
        );
        let mut unsigned = envelope.clone();
        unsigned.signature = None;
        assert_eq!(unsigned.verify(now), Err(EnvelopeError::Unsigned));
    }

    #[test]
    fn a_team_answers_from_the_address_it_was_made_with_while_its_key_is_rotated() {
        let (old, new) = (Identities::new([1; 32]), Identities::new([2; 32]));
        let team = Uuid::now_v7();
        let made = old.for_team(team).address().clone();
        assert_ne!(
            made,
            old.for_collaboration(team).address().clone(),
            "a team's identity is not a collaboration's"
        );
        let rotating = new.clone().recognising(vec![[1; 32]]);
        assert_eq!(rotating.team_at(team, &made).unwrap().address(), &made);
        assert!(
            new.team_at(team, &made).is_none(),
            "a dropped key speaks for nobody"
        );
    }

    #[test]
    fn after_a_key_rotation_the_old_identity_is_recognised_and_a_dropped_one_is_not() {
        let (old, new) = (Identities::new([1; 32]), Identities::new([2; 32]));
        let collaboration = Uuid::now_v7();
        let agent = Identity::from_secret(&[9; 32]).unwrap();
        let agent = agent.address();
        let was = old.for_collaboration(collaboration);
        let rotating = new.clone().recognising(vec![[1; 32]]);
        assert_ne!(
            rotating.for_collaboration(collaboration).address(),
            was.address(),
            "it speaks as the new key's identity"
        );
        assert_eq!(
            rotating.session_at(collaboration, was.address().as_str(), agent),
            Some(old.session(collaboration, agent)),
            "a reply to the old identity still counts, in the old session"
        );
        let now = rotating.for_collaboration(collaboration);
        assert_eq!(
            rotating.session_at(collaboration, now.address().as_str(), agent),
            Some(rotating.session(collaboration, agent))
        );
        assert_eq!(
            new.session_at(collaboration, was.address().as_str(), agent),
            None
        );
    }

    #[test]
    fn what_skein_signs_verifies_and_each_collaboration_speaks_as_its_own_address() {
        let identities = Identities::new([7; 32]);
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        let speaker = identities.for_collaboration(one);
        assert_eq!(
            speaker.address(),
            identities.for_collaboration(one).address()
        );
        assert_ne!(
            speaker.address(),
            identities.for_collaboration(two).address()
        );
        let agent = Identity::from_secret(&[9; 32]).unwrap();
        let session = identities.session(one, agent.address());
        assert_eq!(session.get_version_num(), 4);
        let now = Utc::now();
        let envelope = Envelope::signed(
            &speaker,
            agent.address(),
            session,
            CHAT_MESSAGE,
            &ChatMessage::text("hi", now),
            now,
        );
        assert_eq!(&envelope.verify(now).unwrap(), speaker.address());
        // Exactly the model's keys: one more would stop the agent's message loop.
        let payload: Value = envelope.message().unwrap();
        let mut keys: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["content", "msg_id", "timestamp"]);
    }
}
