//! COSE envelopes: Mac0 for agent telemetry, Sign1 for console messages and enrollment.
//!
//! Every envelope is `[header byte] ++ untagged COSE structure`, and the COSE
//! `external_aad` is `[header byte] ++ scope` (the agent id, or empty for console state),
//! so a valid message cannot be moved to another kind or another agent's topic.

use std::fmt;

use coset::{
    iana, CborSerializable, CoseMac0, CoseMac0Builder, CoseSign1, CoseSign1Builder, HeaderBuilder,
};
use ed25519_dalek::{Signature, Signer};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{DecodeError, VerifyError};
use crate::identity::{AgentId, Identity, PublicKey};
use crate::msg::{AgentMessage, ConsoleMessage, ConsoleState, EnrollRequest, Kind, MAX_PAYLOAD};

/// Bytes of the truncated HMAC-SHA256 tag (COSE alg HMAC 256/64).
pub const TAG_LEN: usize = 8;

const HKDF_SALT: &[u8] = b"edgefleet";
const HKDF_INFO_PREFIX: &[u8] = b"edgefleet/mac0/v1/";

/// The per-agent MAC key, derived on both sides and never transmitted.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(redacted)")
    }
}

impl MacKey {
    /// The agent's side: its own identity and the pinned console key.
    pub fn derive_agent(agent: &Identity, console: &PublicKey) -> Result<MacKey, VerifyError> {
        derive(agent, console, &agent.agent_id())
    }

    /// The console's side: its identity and the agent's public key.
    pub fn derive_console(console: &Identity, agent: &PublicKey) -> Result<MacKey, VerifyError> {
        derive(console, agent, &agent.agent_id())
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

/// Static-static X25519 between Ed25519 keys converted as libsodium does, then HKDF.
fn derive(mine: &Identity, theirs: &PublicKey, agent: &AgentId) -> Result<MacKey, VerifyError> {
    let secret = x25519_dalek::StaticSecret::from(mine.signing_key().to_scalar_bytes());
    let their_montgomery = theirs.verifying_key()?.to_montgomery();
    let public = x25519_dalek::PublicKey::from(their_montgomery.to_bytes());
    let shared = secret.diffie_hellman(&public);
    if !shared.was_contributory() {
        return Err(VerifyError::WeakKey);
    }
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), shared.as_bytes());
    let mut info = HKDF_INFO_PREFIX.to_vec();
    info.extend_from_slice(agent.as_str().as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(MacKey(okm))
}

/// Reads the header byte of a payload without verifying anything.
pub fn peek_kind(payload: &[u8]) -> Result<Kind, DecodeError> {
    check_size(payload)?;
    Kind::from_header(payload[0])
}

fn check_size(payload: &[u8]) -> Result<(), DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(())
}

fn aad(kind: Kind, scope: Option<&AgentId>) -> Vec<u8> {
    let mut aad = vec![kind.header()];
    if let Some(id) = scope {
        aad.extend_from_slice(id.as_str().as_bytes());
    }
    aad
}

fn framed(kind: Kind, cose: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(cose.len() + 1);
    out.push(kind.header());
    out.extend_from_slice(&cose);
    out
}

fn malformed(e: impl fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// Seals agent telemetry for `agent` with its MAC key.
pub fn seal_agent(msg: &AgentMessage, agent: &AgentId, key: &MacKey) -> Vec<u8> {
    let kind = msg.kind();
    let mac0 = CoseMac0Builder::new()
        .payload(msg.encode_body())
        .create_tag(&aad(kind, Some(agent)), |data| key.tag(data).to_vec())
        .build();
    framed(
        kind,
        mac0.to_vec().expect("a Mac0 we built always serializes"),
    )
}

/// Verifies and decodes agent telemetry received on `agent`'s topic.
pub fn open_agent(
    payload: &[u8],
    agent: &AgentId,
    key: &MacKey,
) -> Result<AgentMessage, VerifyError> {
    let kind = peek_kind(payload)?;
    if matches!(
        kind,
        Kind::EnrollRequest
            | Kind::Command
            | Kind::EnrollResponse
            | Kind::ConsoleState
            | Kind::InventoryAck
            | Kind::EventReceipt
    ) {
        return Err(DecodeError::WrongKind {
            expected: "agent telemetry",
            got: kind,
        }
        .into());
    }
    let mac0 = CoseMac0::from_slice(&payload[1..]).map_err(malformed)?;
    if !mac0.protected.header.is_empty() || !mac0.unprotected.is_empty() {
        return Err(malformed("unexpected Mac0 headers").into());
    }
    mac0.verify_tag(&aad(kind, Some(agent)), |tag, data| {
        if tag.len() == TAG_LEN && bool::from(tag.ct_eq(&key.tag(data))) {
            Ok(())
        } else {
            Err(VerifyError::BadTag)
        }
    })?;
    let body = mac0
        .payload
        .as_deref()
        .ok_or_else(|| malformed("Mac0 without payload"))?;
    Ok(AgentMessage::decode_body(kind, body)?)
}

/// Decodes agent telemetry **without checking its tag**: only for the benchmark that
/// measures what verification costs (`console/benches/verify.rs`). Never on an ingest path.
#[doc(hidden)]
pub fn decode_agent_unverified_for_bench(payload: &[u8]) -> Result<AgentMessage, VerifyError> {
    let kind = peek_kind(payload)?;
    let mac0 = CoseMac0::from_slice(&payload[1..]).map_err(malformed)?;
    let body = mac0
        .payload
        .as_deref()
        .ok_or_else(|| malformed("Mac0 without payload"))?;
    Ok(AgentMessage::decode_body(kind, body)?)
}

fn sign1(kind: Kind, body: Vec<u8>, scope: Option<&AgentId>, signer: &Identity) -> Vec<u8> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(signer.public_key().kid().to_vec())
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(body)
        .create_signature(&aad(kind, scope), |data| {
            signer.signing_key().sign(data).to_bytes().to_vec()
        })
        .build();
    framed(
        kind,
        sign1.to_vec().expect("a Sign1 we built always serializes"),
    )
}

/// Parses a Sign1 payload and checks it was signed by `key`; returns kind and body.
fn open_sign1(
    payload: &[u8],
    scope: Option<&AgentId>,
    key: &PublicKey,
) -> Result<(Kind, Vec<u8>), VerifyError> {
    let kind = peek_kind(payload)?;
    let sign1 = CoseSign1::from_slice(&payload[1..]).map_err(malformed)?;
    let alg_ok = sign1.protected.header.alg
        == Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::EdDSA,
        ));
    if !alg_ok {
        return Err(malformed("Sign1 algorithm is not EdDSA").into());
    }
    if sign1.protected.header.key_id != key.kid() {
        return Err(VerifyError::WrongKeyId);
    }
    let verifying = key.verifying_key()?;
    sign1.verify_signature(&aad(kind, scope), |sig, data| {
        let sig: &[u8; 64] = sig.try_into().map_err(|_| VerifyError::BadSignature)?;
        verifying
            .verify_strict(data, &Signature::from_bytes(sig))
            .map_err(|_| VerifyError::BadSignature)
    })?;
    let body = sign1
        .payload
        .ok_or_else(|| malformed("Sign1 without payload"))?;
    Ok((kind, body))
}

/// Signs a console message. `scope` is the addressed agent (commands, enrollment
/// responses), or `None` for console state.
pub fn sign_console(msg: &ConsoleMessage, scope: Option<&AgentId>, console: &Identity) -> Vec<u8> {
    sign1(msg.kind(), msg.encode_body(), scope, console)
}

/// Verifies a console message with the pinned console key.
pub fn open_console(
    payload: &[u8],
    scope: Option<&AgentId>,
    console_key: &PublicKey,
) -> Result<ConsoleMessage, VerifyError> {
    let (kind, body) = open_sign1(payload, scope, console_key)?;
    Ok(ConsoleMessage::decode_body(kind, &body)?)
}

/// First contact: verifies a console state with the key it carries, and accepts it only if
/// that key's SHA-256 is `expected_fingerprint` (from the enrollment token).
pub fn open_console_state_pinning(
    payload: &[u8],
    expected_fingerprint: &[u8; 32],
) -> Result<ConsoleState, VerifyError> {
    let state = peek_console_state(payload)?;
    let key = PublicKey::from_bytes(state.public_key);
    if !bool::from(key.fingerprint().ct_eq(expected_fingerprint)) {
        return Err(VerifyError::WrongKeyId);
    }
    match open_console(payload, None, &key)? {
        ConsoleMessage::ConsoleState(state) => Ok(state),
        other => Err(DecodeError::WrongKind {
            expected: "console state",
            got: other.kind(),
        }
        .into()),
    }
}

/// Trust on first use: verifies a console state with the key it carries. The caller pins
/// the key and must log that it did so without a token.
pub fn open_console_state_self_signed(payload: &[u8]) -> Result<ConsoleState, VerifyError> {
    let state = peek_console_state(payload)?;
    open_console_state_pinning(
        payload,
        &PublicKey::from_bytes(state.public_key).fingerprint(),
    )
}

fn peek_console_state(payload: &[u8]) -> Result<ConsoleState, VerifyError> {
    let body = unverified_sign1_body(payload, Kind::ConsoleState, "console state")?;
    Ok(crate::msg::decode(&body)?)
}

/// The payload of a Sign1 of `kind`, *before* its signature is checked: only for reading the
/// signer's key out of a self-describing message, which the caller then verifies.
fn unverified_sign1_body(
    payload: &[u8],
    kind: Kind,
    expected: &'static str,
) -> Result<Vec<u8>, VerifyError> {
    let got = peek_kind(payload)?;
    if got != kind {
        return Err(DecodeError::WrongKind { expected, got }.into());
    }
    let sign1 = CoseSign1::from_slice(&payload[1..]).map_err(malformed)?;
    Ok(sign1
        .payload
        .ok_or_else(|| malformed("Sign1 without payload"))?)
}

/// Signs an enrollment request with the new agent's key.
pub fn sign_enroll_request(req: &EnrollRequest, agent: &Identity) -> Vec<u8> {
    let id = agent.agent_id();
    sign1(
        Kind::EnrollRequest,
        crate::msg::encode(req),
        Some(&id),
        agent,
    )
}

/// Verifies an enrollment request received on `agent`'s enrollment topic: the key inside
/// must derive `agent`, and must have signed the request.
pub fn open_enroll_request(payload: &[u8], agent: &AgentId) -> Result<EnrollRequest, VerifyError> {
    let body = unverified_sign1_body(payload, Kind::EnrollRequest, "enroll request")?;
    let req: EnrollRequest = crate::msg::decode(&body)?;
    let key = PublicKey::from_bytes(req.public_key);
    if key.agent_id() != *agent || req.agent_id != agent.as_str() {
        return Err(VerifyError::AgentIdMismatch);
    }
    let (_, body) = open_sign1(payload, Some(agent), &key)?;
    Ok(crate::msg::decode(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{CommandOutcome, CommandResult, Heartbeat, Status};

    /// [`seal_agent`] over a raw body: a correctly tagged envelope around any CBOR.
    fn seal_raw(kind: Kind, body: Vec<u8>, agent: &AgentId, key: &MacKey) -> Vec<u8> {
        let mac0 = CoseMac0Builder::new()
            .payload(body)
            .create_tag(&aad(kind, Some(agent)), |data| key.tag(data).to_vec())
            .build();
        framed(kind, mac0.to_vec().unwrap())
    }

    /// Every field of real messages replaced by a value of another CBOR type, inside a
    /// valid MAC: always `Malformed`, never a panic or a silently defaulted field.
    #[test]
    fn wrong_types_inside_well_formed_cbor_are_malformed() {
        let agent = Identity::from_seed(&[1; 32]);
        let console = Identity::from_seed(&[2; 32]);
        let key = MacKey::derive_agent(&agent, &console.public_key()).unwrap();
        let id = agent.agent_id();
        let messages = [
            AgentMessage::Heartbeat(Heartbeat {
                bd_seq: 1,
                seq: 2,
                cpu_pct: Some(50),
                mem_pct: Some(40),
                at: Some(1_800_000_000),
                ..Default::default()
            }),
            AgentMessage::Status(Status {
                bd_seq: 1,
                seq: 1,
                online: true,
                clean: false,
            }),
            AgentMessage::CommandResult(CommandResult {
                bd_seq: 1,
                seq: 3,
                command_id: [7; 16],
                outcome: CommandOutcome::Succeeded,
                message: "ok".into(),
                at_ms: 1,
            }),
        ];
        let mut checked = 0;
        for msg in messages {
            let kind = msg.kind();
            let sealed = seal_agent(&msg, &id, &key);
            assert_eq!(open_agent(&sealed, &id, &key), Ok(msg.clone()));
            let serde_cbor::Value::Map(fields) =
                serde_cbor::from_slice(&msg.encode_body()).unwrap()
            else {
                panic!("messages are CBOR maps");
            };
            for field in fields.keys() {
                let original = &fields[field];
                for wrong in [
                    serde_cbor::Value::Text("not this type".into()),
                    serde_cbor::Value::Integer(-1),
                    serde_cbor::Value::Array(vec![serde_cbor::Value::Null]),
                    serde_cbor::Value::Float(0.5),
                ] {
                    if std::mem::discriminant(&wrong) == std::mem::discriminant(original) {
                        continue;
                    }
                    let mut mutated = fields.clone();
                    mutated.insert(field.clone(), wrong.clone());
                    let body = serde_cbor::to_vec(&serde_cbor::Value::Map(mutated)).unwrap();
                    let got = open_agent(&seal_raw(kind, body, &id, &key), &id, &key);
                    assert!(
                        matches!(got, Err(VerifyError::Decode(DecodeError::Malformed(_)))),
                        "{kind:?}.{field:?} = {wrong:?}: {got:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 40, "{checked} mutations");
    }
}
