//! MQTT CONNECT credentials: the agent proves it holds the key behind its client id.
//!
//! The password is base64url (no padding) of
//! `public_key(32) ++ unix_seconds(8, big-endian) ++ signature(64)`, where the Ed25519
//! signature covers `"edgefleet/connect/v1" ++ agent_id ++ unix_seconds`. The broker policy
//! checks it with [`verify_password`]: the client id must be the id derived from the key, so
//! nobody can connect under someone else's id, and the timestamp must be within
//! [`MAX_SKEW_SECS`] of the console's clock.
//!
//! The username is the agent id, or, for an agent that is not enrolled yet,
//! `{agent_id}.{token_id}.{proof}`: the token claim, where `proof` is base64url of the
//! token proof ([`crate::EnrollToken::proof`]) over the agent key. The console accepts an
//! unknown key only with a claim for a live token ([`parse_username`]).

use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::identity::{AgentId, Identity, PublicKey};

/// How far the agent's clock may be from the console's.
pub const MAX_SKEW_SECS: u64 = 300;

const CONTEXT: &[u8] = b"edgefleet/connect/v1";
const RAW_LEN: usize = 32 + 8 + 64;

/// Why a CONNECT password was refused. The broker policy counts these by reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("client id is not a valid agent id")]
    BadClientId,
    #[error("password is not a connect proof")]
    Malformed,
    #[error("client id does not belong to the presented key")]
    WrongId,
    #[error("connect proof timestamp is {by}s away from the console clock (max {MAX_SKEW_SECS}s)")]
    Skew { by: u64 },
    #[error("connect proof signature does not verify")]
    BadSignature,
}

impl ConnectError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::BadClientId => "bad_client_id",
            ConnectError::Malformed => "malformed",
            ConnectError::WrongId => "wrong_id",
            ConnectError::Skew { .. } => "clock_skew",
            ConnectError::BadSignature => "bad_signature",
        }
    }
}

/// A token claim carried in the CONNECT username by an agent that is not enrolled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaim {
    pub token_id: String,
    pub proof: [u8; 32],
}

/// The username an agent presents: its id, plus a token claim when it has a token and is
/// not enrolled yet.
pub fn username(identity: &Identity, token: Option<&crate::EnrollToken>) -> String {
    let id = identity.agent_id();
    match token {
        Some(token) => format!(
            "{id}.{}.{}",
            token.id,
            BASE64URL_NOPAD.encode(&token.proof(&identity.public_key()))
        ),
        None => id.to_string(),
    }
}

/// Splits a CONNECT username into the agent id part and an optional token claim.
pub fn parse_username(username: &str) -> Result<(&str, Option<TokenClaim>), ConnectError> {
    if username.len() > 128 {
        return Err(ConnectError::Malformed);
    }
    let mut parts = username.split('.');
    let id = parts.next().unwrap_or_default();
    match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => Ok((id, None)),
        (Some(token_id), Some(proof), None) => {
            let proof: [u8; 32] = BASE64URL_NOPAD
                .decode(proof.as_bytes())
                .ok()
                .and_then(|p| p.try_into().ok())
                .ok_or(ConnectError::Malformed)?;
            if token_id.is_empty() || token_id.len() > 16 {
                return Err(ConnectError::Malformed);
            }
            Ok((
                id,
                Some(TokenClaim {
                    token_id: token_id.to_string(),
                    proof,
                }),
            ))
        }
        _ => Err(ConnectError::Malformed),
    }
}

/// The password an agent presents in its MQTT CONNECT at `now_unix`.
pub fn password(identity: &Identity, now_unix: u64) -> String {
    let public = identity.public_key();
    let id = public.agent_id();
    let signature = identity.signing_key().sign(&signed_bytes(&id, now_unix));
    let mut raw = Vec::with_capacity(RAW_LEN);
    raw.extend_from_slice(public.as_bytes());
    raw.extend_from_slice(&now_unix.to_be_bytes());
    raw.extend_from_slice(&signature.to_bytes());
    BASE64URL_NOPAD.encode(&raw)
}

/// Checks a CONNECT password for `client_id` and returns the agent's public key.
pub fn verify_password(
    client_id: &str,
    password: &str,
    now_unix: u64,
) -> Result<PublicKey, ConnectError> {
    let id: AgentId = client_id.parse().map_err(|_| ConnectError::BadClientId)?;
    // Reject oversized input before decoding so a hostile client cannot make us allocate.
    if password.len() > BASE64URL_NOPAD.encode_len(RAW_LEN) {
        return Err(ConnectError::Malformed);
    }
    let raw = BASE64URL_NOPAD
        .decode(password.as_bytes())
        .map_err(|_| ConnectError::Malformed)?;
    let (key, rest) = raw
        .split_first_chunk::<32>()
        .ok_or(ConnectError::Malformed)?;
    let (ts, sig) = rest
        .split_first_chunk::<8>()
        .ok_or(ConnectError::Malformed)?;
    let sig: &[u8; 64] = sig.try_into().map_err(|_| ConnectError::Malformed)?;
    let public = PublicKey::from_bytes(*key);
    if public.agent_id() != id {
        return Err(ConnectError::WrongId);
    }
    let ts = u64::from_be_bytes(*ts);
    let by = ts.abs_diff(now_unix);
    if by > MAX_SKEW_SECS {
        return Err(ConnectError::Skew { by });
    }
    let verifying = VerifyingKey::from_bytes(key).map_err(|_| ConnectError::Malformed)?;
    verifying
        .verify_strict(&signed_bytes(&id, ts), &Signature::from_bytes(sig))
        .map_err(|_| ConnectError::BadSignature)?;
    Ok(public)
}

fn signed_bytes(id: &AgentId, ts: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 16 + 8);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(id.as_str().as_bytes());
    msg.extend_from_slice(&ts.to_be_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    #[test]
    fn a_fresh_password_verifies_and_yields_the_key() {
        let me = Identity::generate();
        let pw = password(&me, NOW);
        let id = me.public_key().agent_id();
        assert_eq!(
            verify_password(id.as_str(), &pw, NOW + 10),
            Ok(me.public_key())
        );
        assert_eq!(
            verify_password(id.as_str(), &pw, NOW - MAX_SKEW_SECS),
            Ok(me.public_key())
        );
    }

    #[test]
    fn someone_elses_client_id_is_refused() {
        let me = Identity::generate();
        let other = Identity::generate().public_key().agent_id();
        let pw = password(&me, NOW);
        assert_eq!(
            verify_password(other.as_str(), &pw, NOW),
            Err(ConnectError::WrongId)
        );
    }

    #[test]
    fn stale_or_future_timestamps_are_refused() {
        let me = Identity::generate();
        let id = me.public_key().agent_id();
        let pw = password(&me, NOW);
        assert_eq!(
            verify_password(id.as_str(), &pw, NOW + MAX_SKEW_SECS + 1),
            Err(ConnectError::Skew {
                by: MAX_SKEW_SECS + 1
            })
        );
        assert_eq!(
            verify_password(id.as_str(), &pw, NOW - 400),
            Err(ConnectError::Skew { by: 400 })
        );
    }

    #[test]
    fn tampered_timestamp_or_signature_fails_verification() {
        let me = Identity::generate();
        let id = me.public_key().agent_id();
        let mut raw = BASE64URL_NOPAD
            .decode(password(&me, NOW).as_bytes())
            .expect("our own encoding");
        raw[32 + 7] ^= 1; // timestamp off by one second: still within skew, signature breaks
        let pw = BASE64URL_NOPAD.encode(&raw);
        assert_eq!(
            verify_password(id.as_str(), &pw, NOW),
            Err(ConnectError::BadSignature)
        );
    }

    #[test]
    fn usernames_carry_an_optional_token_claim() {
        let me = Identity::generate();
        let id = me.agent_id();
        assert_eq!(
            parse_username(&username(&me, None)),
            Ok((id.as_str(), None))
        );
        let token = crate::EnrollToken::generate([3; 32]);
        let name = username(&me, Some(&token));
        let (got_id, claim) = parse_username(&name).unwrap();
        assert_eq!(got_id, id.as_str());
        let claim = claim.unwrap();
        assert_eq!(claim.token_id, token.id);
        assert!(crate::token::verify_proof(
            &token.secret,
            &me.public_key(),
            &claim.proof
        ));
        for bad in ["a.b", "a.b.c.d", "a..x", &"x".repeat(200), "a.b.!!!"] {
            assert_eq!(parse_username(bad), Err(ConnectError::Malformed), "{bad}");
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let id = Identity::generate().public_key().agent_id();
        for pw in [
            "",
            "!!!",
            "aGVsbG8",
            &"A".repeat(10_000),
            &BASE64URL_NOPAD.encode(&[0u8; 103]),
        ] {
            assert_eq!(
                verify_password(id.as_str(), pw, NOW),
                Err(ConnectError::Malformed),
                "{pw:.20}"
            );
        }
        assert_eq!(
            verify_password("a/b", "x", NOW),
            Err(ConnectError::BadClientId)
        );
    }
}
