//! Events and audit records from the agent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub bd_seq: u64,
    pub seq: u64,
    /// Agent-local, monotonic and stable across redelivery: the console's dedup key.
    pub event_id: u64,
    /// Unix milliseconds when it happened on the device.
    pub at_ms: u64,
    pub level: EventLevel,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventLevel {
    Info,
    Warn,
    Error,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "info",
            EventLevel::Warn => "warn",
            EventLevel::Error => "error",
        }
    }
}
