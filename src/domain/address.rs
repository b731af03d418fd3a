//! Agent addresses in the uAgents format: `agent1q…`, bech32 with the human-readable part
//! `agent` (or `test-agent` on test networks) over a 33-byte compressed secp256k1 public key.
//!
//! Skein generates a fresh key pair for an agent that arrives without an address. The secret
//! half is discarded: Skein never signs as the agent, the address is only its stable name.

use std::fmt;

use bech32::{Bech32, Hrp};
use k256::SecretKey;

const HRPS: [&str; 2] = ["agent", "test-agent"];
const PUBLIC_KEY_LEN: usize = 33;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentAddress(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("not a valid bech32 string: {0}")]
    Bech32(String),
    #[error("the prefix must be `agent` or `test-agent`, not `{0}`")]
    Prefix(String),
    #[error("an address carries a 33-byte compressed public key, this one carries {0} bytes")]
    Length(usize),
}

impl AgentAddress {
    /// A new address over a freshly generated secp256k1 public key.
    pub fn generate() -> Self {
        let secret = loop {
            let bytes: [u8; 32] = rand::random();
            // Fails only for zero or values above the curve order: practically never.
            if let Ok(secret) = SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let point = k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            true,
        );
        let hrp = Hrp::parse("agent").expect("`agent` is a valid human-readable part");
        let encoded = bech32::encode::<Bech32>(hrp, point.as_bytes())
            .expect("33 bytes always fit a bech32 string");
        Self(encoded)
    }

    /// Parses and checks an address given to us: bech32 checksum, prefix and key length.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let (hrp, data) = bech32::decode(input).map_err(|e| AddressError::Bech32(e.to_string()))?;
        let prefix = hrp.as_str().to_ascii_lowercase();
        if !HRPS.contains(&prefix.as_str()) {
            return Err(AddressError::Prefix(prefix));
        }
        if data.len() != PUBLIC_KEY_LEN {
            return Err(AddressError::Length(data.len()));
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// Cheap test used to tell an address from a UUID or a name before parsing it fully.
    pub fn looks_like_address(input: &str) -> bool {
        let lower = input.to_ascii_lowercase();
        HRPS.iter().any(|hrp| lower.starts_with(&format!("{hrp}1")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_address_has_the_uagents_shape_and_parses_back() {
        let address = AgentAddress::generate();
        assert!(address.as_str().starts_with("agent1q"), "{address}");
        assert_eq!(address.as_str().len(), "agent1".len() + 53 + 6);
        assert_eq!(AgentAddress::parse(address.as_str()).unwrap(), address);
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let address = AgentAddress::generate().to_string();
        let last = address.chars().last().unwrap();
        let swapped = if last == 'q' { 'p' } else { 'q' };
        let broken = format!("{}{swapped}", &address[..address.len() - 1]);
        assert!(matches!(
            AgentAddress::parse(&broken),
            Err(AddressError::Bech32(_))
        ));
    }

    #[test]
    fn a_foreign_prefix_or_length_is_refused() {
        let hrp = Hrp::parse("cosmos").unwrap();
        let other = bech32::encode::<Bech32>(hrp, &[2u8; 33]).unwrap();
        assert_eq!(
            AgentAddress::parse(&other),
            Err(AddressError::Prefix("cosmos".into()))
        );
        let short = bech32::encode::<Bech32>(Hrp::parse("agent").unwrap(), &[2u8; 20]).unwrap();
        assert_eq!(AgentAddress::parse(&short), Err(AddressError::Length(20)));
    }
}
