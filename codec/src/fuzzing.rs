//! Bodies of the `cargo fuzz` targets in `codec/fuzz/`. They live here so stable tests can
//! run them over a malformed corpus and random inputs too. Each must never panic.

use crate::identity::{AgentId, Identity};
use crate::{cose, topic, MacKey};

struct Keys {
    agent: AgentId,
    mac: MacKey,
    console: Identity,
}

fn keys() -> Keys {
    let agent = Identity::from_seed(&[1; 32]);
    let console = Identity::from_seed(&[2; 32]);
    let mac = MacKey::derive_agent(&agent, &console.public_key())
        .expect("fixed test keys are contributory");
    Keys {
        agent: agent.agent_id(),
        mac,
        console,
    }
}

pub fn open_agent(data: &[u8]) {
    let k = keys();
    let _ = cose::open_agent(data, &k.agent, &k.mac);
}

pub fn open_console(data: &[u8]) {
    let k = keys();
    let _ = cose::open_console(data, Some(&k.agent), &k.console.public_key());
    let _ = cose::open_console(data, None, &k.console.public_key());
}

pub fn open_enroll_request(data: &[u8]) {
    let _ = cose::open_enroll_request(data, &keys().agent);
}

pub fn open_console_state_pinning(data: &[u8]) {
    let k = keys();
    let _ = cose::open_console_state_pinning(data, &k.console.public_key().fingerprint());
    let _ = cose::open_console_state_self_signed(data);
}

pub fn peek_kind(data: &[u8]) {
    let _ = cose::peek_kind(data);
}

pub fn stored_agent_message(data: &[u8]) {
    let _ = crate::AgentMessage::from_stored(data);
}

pub fn token(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<crate::EnrollToken>();
    }
}

pub fn topic(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = topic::Topics::default().parse(s);
    }
}

pub fn connect_password(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::connect::verify_password("abcdefghijklmnop", s, 0);
    }
}

/// A snapshot chunk's compressed package list (zlib, then CBOR), and a delta applied to a
/// small set: neither may panic or inflate without bound.
pub fn inventory_chunk(data: &[u8]) {
    let chunk = crate::InventoryChunk {
        bd_seq: 0,
        seq: 0,
        scan_id: 0,
        index: 0,
        is_last: true,
        source: String::new(),
        digest: None,
        packages_z: data.to_vec(),
    };
    if let Ok(packages) = chunk.packages() {
        let _ = crate::inventory_digest(&packages);
    }
    if let Ok(crate::AgentMessage::InventoryDelta(d)) = crate::AgentMessage::from_stored(data) {
        let _ = d.apply(&d.added);
    }
}

/// Every target, by name, for the stable test that runs them all.
/// A fuzz target body.
pub type Target = fn(&[u8]);

pub const TARGETS: &[(&str, Target)] = &[
    ("open_agent", open_agent),
    ("open_console", open_console),
    ("open_enroll_request", open_enroll_request),
    ("open_console_state_pinning", open_console_state_pinning),
    ("peek_kind", peek_kind),
    ("stored_agent_message", stored_agent_message),
    ("token", token),
    ("topic", topic),
    ("connect_password", connect_password),
    ("inventory_chunk", inventory_chunk),
];
