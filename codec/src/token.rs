//! Enrollment tokens: `ef1.<id>.<secret>.<fingerprint>`, in the spirit of `kubeadm join`.
//!
//! The token carries the SHA-256 fingerprint of the console's public key, so a new agent
//! pins the console it first hears from and refuses any other. The agent proves it knows the
//! secret with an HMAC over its public key, never by sending the secret.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::identity::{base32, PublicKey};

const PREFIX: &str = "ef1";
const PROOF_CONTEXT: &[u8] = b"edgefleet/enroll/v1";

#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// 8 characters of lowercase base32 (5 random bytes): safe to show and log.
    pub id: String,
    pub secret: [u8; 16],
    pub console_fingerprint: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("enrollment token must look like ef1.<id>.<secret>.<fingerprint>")]
    Format,
    #[error("enrollment token part `{0}` is not valid base32 of the right length")]
    Part(&'static str),
}

impl EnrollToken {
    pub fn generate(console_fingerprint: [u8; 32]) -> EnrollToken {
        use rand::RngCore;
        let mut id = [0u8; 5];
        let mut secret = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        EnrollToken {
            id: base32().encode(&id),
            secret,
            console_fingerprint,
        }
    }

    /// The proof an agent with `agent_key` sends in its enrollment request.
    pub fn proof(&self, agent_key: &PublicKey) -> [u8; 32] {
        proof(&self.secret, agent_key)
    }
}

fn proof(secret: &[u8; 16], agent_key: &PublicKey) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(PROOF_CONTEXT);
    mac.update(agent_key.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Console side: does `proof` show knowledge of `secret` for `agent_key`? Constant time.
pub fn verify_proof(secret: &[u8; 16], agent_key: &PublicKey, claimed: &[u8; 32]) -> bool {
    proof(secret, agent_key).ct_eq(claimed).into()
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b32 = base32();
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.id,
            b32.encode(&self.secret),
            b32.encode(&self.console_fingerprint)
        )
    }
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollToken({}, secret redacted)", self.id)
    }
}

impl FromStr for EnrollToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 200 {
            return Err(TokenError::Format);
        }
        let lower = s.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        let [PREFIX, id, secret, fp] = parts.as_slice() else {
            return Err(TokenError::Format);
        };
        let b32 = base32();
        let id_bytes = b32
            .decode(id.as_bytes())
            .map_err(|_| TokenError::Part("id"))?;
        if id_bytes.len() != 5 {
            return Err(TokenError::Part("id"));
        }
        let secret: [u8; 16] = b32
            .decode(secret.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(TokenError::Part("secret"))?;
        let console_fingerprint: [u8; 32] = b32
            .decode(fp.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(TokenError::Part("fingerprint"))?;
        Ok(EnrollToken {
            id: id.to_string(),
            secret,
            console_fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn token_round_trips_and_is_printable() {
        let t = EnrollToken::generate([9; 32]);
        let text = t.to_string();
        assert!(text.starts_with("ef1.") && text.is_ascii() && !text.contains(char::is_whitespace));
        assert_eq!(text.len(), 3 + 1 + 8 + 1 + 26 + 1 + 52);
        assert_eq!(text.parse::<EnrollToken>(), Ok(t.clone()));
        assert_eq!(
            format!("  {}\n", text.to_uppercase()).parse::<EnrollToken>(),
            Ok(t)
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let t = EnrollToken::generate([9; 32]);
        assert!(!format!("{t:?}").contains(&base32().encode(&t.secret)));
    }

    #[test]
    fn proof_verifies_only_for_the_same_secret_and_key() {
        let t = EnrollToken::generate([9; 32]);
        let key = Identity::generate().public_key();
        let p = t.proof(&key);
        assert!(verify_proof(&t.secret, &key, &p));
        assert!(!verify_proof(&[0; 16], &key, &p));
        assert!(!verify_proof(
            &t.secret,
            &Identity::generate().public_key(),
            &p
        ));
    }

    #[test]
    fn malformed_tokens_are_typed_errors() {
        let good = EnrollToken::generate([1; 32]).to_string();
        let parts: Vec<&str> = good.split('.').collect();
        assert_eq!("".parse::<EnrollToken>(), Err(TokenError::Format));
        assert_eq!("ef2.a.b.c".parse::<EnrollToken>(), Err(TokenError::Format));
        assert_eq!(
            format!("ef1.{}.{}", parts[1], parts[2]).parse::<EnrollToken>(),
            Err(TokenError::Format)
        );
        assert_eq!(
            format!("ef1.!!.{}.{}", parts[2], parts[3]).parse::<EnrollToken>(),
            Err(TokenError::Part("id"))
        );
        assert_eq!(
            format!("ef1.{}.abc.{}", parts[1], parts[3]).parse::<EnrollToken>(),
            Err(TokenError::Part("secret"))
        );
        assert_eq!(
            format!("ef1.{}.{}.{}", parts[1], parts[2], &parts[3][..50]).parse::<EnrollToken>(),
            Err(TokenError::Part("fingerprint"))
        );
        assert_eq!(
            "x".repeat(10_000).parse::<EnrollToken>(),
            Err(TokenError::Format)
        );
    }
}
