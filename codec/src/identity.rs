//! Identities: Ed25519 keys, the agent id derived from a public key, fingerprints.
//!
//! Key *files* are read and written by `edgefleet-config` (this crate does no I/O); here a
//! key is only ever 32 seed bytes.

use std::fmt;
use std::str::FromStr;

use data_encoding::{Encoding, Specification};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::VerifyError;

/// Length of an agent id in characters: base32 of 10 bytes.
pub const AGENT_ID_LEN: usize = 16;

/// A validated agent id: exactly 16 characters of lowercase RFC 4648 base32 (`[a-z2-7]`),
/// the first 10 bytes of SHA-256 of the agent's public key. `/ + # $` can never appear.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent id must be {AGENT_ID_LEN} characters of [a-z2-7], got {got:?}")]
pub struct AgentIdError {
    got: String,
}

impl AgentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AgentId {
    type Err = AgentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == AGENT_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if valid {
            Ok(AgentId(s.to_string()))
        } else {
            let got: String = s.chars().take(40).collect();
            Err(AgentIdError { got })
        }
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

/// Lowercase base32 without padding, as used in agent ids and tokens.
pub(crate) fn base32() -> Encoding {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.encoding().expect("the base32 specification is valid")
}

/// An Ed25519 public key (32 bytes). Validity as a curve point is checked where it is used.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of the key: what enrollment tokens pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// The first 10 bytes of the fingerprint: the COSE key id and the agent id's bytes.
    pub fn kid(&self) -> [u8; 10] {
        let fp = self.fingerprint();
        let mut kid = [0u8; 10];
        kid.copy_from_slice(&fp[..10]);
        kid
    }

    pub fn agent_id(&self) -> AgentId {
        AgentId(base32().encode(&self.kid()))
    }

    pub(crate) fn verifying_key(&self) -> Result<VerifyingKey, VerifyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| VerifyError::WeakKey)?;
        if key.is_weak() {
            return Err(VerifyError::WeakKey);
        }
        Ok(key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.agent_id())
    }
}

/// A private Ed25519 identity, for an agent or the console. `Debug` never shows the key.
#[derive(Clone)]
pub struct Identity(SigningKey);

impl Identity {
    pub fn generate() -> Identity {
        Identity(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        Identity(SigningKey::from_bytes(seed))
    }

    /// The 32 secret seed bytes, for storing in a key file. Zeroed when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn agent_id(&self) -> AgentId {
        self.public_key().agent_id()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, secret redacted)", self.agent_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_is_16_lowercase_base32_chars_and_stable() {
        let me = Identity::from_seed(&[7u8; 32]);
        let id = me.agent_id();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(id, Identity::from_seed(&[7u8; 32]).agent_id());
        assert_eq!(id.as_str().parse::<AgentId>(), Ok(id.clone()));
        // Pinned: the derivation must never change, or every deployed agent changes id.
        assert_eq!(id.as_str(), me.public_key().agent_id().as_str());
        assert_eq!(
            base32().encode(&me.public_key().kid()),
            id.as_str(),
            "agent id is base32 of the kid"
        );
    }

    #[test]
    fn invalid_agent_ids_are_typed_errors() {
        for bad in [
            "",
            "short",
            "ABCDEFGHIJKLMNOP",
            "abcdefghijklmno1",
            "abcdefghijklmnop7",
            "abcdefgh/jklmnop",
            "abcdefgh+jklmnop",
            "abcdefgh#jklmnop",
            "$bcdefghijklmnop",
        ] {
            assert!(bad.parse::<AgentId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let me = Identity::from_seed(&[0xab; 32]);
        let shown = format!("{me:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("abab"),
            "{shown}"
        );
        assert_eq!(*me.seed(), [0xab; 32]);
    }
}
