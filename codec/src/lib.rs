//! The EdgeFleet wire contract: everything that crosses MQTT, and the REST types.
//! No I/O and no tokio here; this is the only crate that knows CBOR and COSE.
//!
//! - `msg`: one module per message kind, the closed [`Message`] enum, header byte, limits.
//! - `cose`: COSE_Mac0 / COSE_Sign1 envelopes, per-agent MAC keys, seal/open functions.
//! - `identity`: Ed25519 identities, public keys, agent ids and fingerprints.
//! - `topic`: every MQTT topic; the only place that formats or parses one.
//! - `token`: enrollment tokens and the proof of their secret.
//! - `connect`: the MQTT CONNECT password that proves an agent's key.
//! - `error`: typed decode and verification errors.
//! - `api`: REST request and response types shared by the console and the web UI.
//! - `fuzzing`: the bodies of the `cargo fuzz` targets, also run by stable tests.

pub mod api;
pub mod connect;
pub mod cose;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod msg;
pub mod token;
pub mod topic;

pub use cose::{
    open_agent, open_console, open_console_state_pinning, open_console_state_self_signed,
    open_enroll_request, peek_kind, seal_agent, sign_console, sign_enroll_request, MacKey,
};
pub use error::{DecodeError, VerifyError};
pub use identity::{AgentId, Identity, PublicKey};
pub use msg::*;
pub use token::EnrollToken;
pub use topic::{Channel, Topic, Topics};

/// A stable 16-bit digest of the managed apps' states, carried in heartbeats so the console
/// knows when to expect a new birth's app list. Order of `apps` does not matter.
pub fn apps_digest(apps: &[AppState]) -> u16 {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&AppState> = apps.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for app in sorted {
        h.update(app.id.as_bytes());
        h.update([0, app.status as u8, 0]);
        h.update(app.version.as_deref().unwrap_or("").as_bytes());
        h.update([0xff]);
    }
    let d = h.finalize();
    u16::from_be_bytes([d[0], d[1]])
}
