//! Typed errors for decoding and verifying untrusted bytes.

use crate::msg::Kind;

/// Why bytes could not be decoded into a message. Nothing here is a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected} message, got {got:?}")]
    WrongKind { expected: &'static str, got: Kind },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Why a message was refused. The console counts these by [`VerifyError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot decode the message")]
    Decode(#[from] DecodeError),
    #[error("MAC tag does not verify")]
    BadTag,
    #[error("signature does not verify")]
    BadSignature,
    #[error("message is signed by another key")]
    WrongKeyId,
    #[error("the agent id does not match the key")]
    AgentIdMismatch,
    #[error("the key is not usable (weak or non-contributory)")]
    WeakKey,
    #[error("the message has expired")]
    Expired,
    #[error("the message is issued in the future (beyond the allowed clock skew)")]
    NotYetValid,
    #[error("the message is addressed to another agent")]
    WrongTarget,
}

impl VerifyError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Decode(DecodeError::TooLarge { .. }) => "too_large",
            VerifyError::Decode(DecodeError::UnsupportedVersion(_)) => "unsupported_version",
            VerifyError::Decode(DecodeError::UnknownKind(_)) => "unknown_kind",
            VerifyError::Decode(DecodeError::WrongKind { .. }) => "wrong_kind",
            VerifyError::Decode(_) => "malformed",
            VerifyError::BadTag => "bad_tag",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::WrongKeyId => "wrong_key_id",
            VerifyError::AgentIdMismatch => "agent_id_mismatch",
            VerifyError::WeakKey => "weak_key",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::WrongTarget => "wrong_target",
        }
    }
}
