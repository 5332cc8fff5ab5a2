//! The console's receipt for agent events: stored and flushed, the agent may forget them.

use serde::{Deserialize, Serialize};

/// Signed by the console and scoped to the agent (`ef/a/{id}/cmd`). Sent only after the
/// events are flushed to the console's sled, so an event the broker acknowledged (PUBACK)
/// but the console never stored, because it crashed in between, is still in the agent's
/// queue and goes out again (docs/wire.md, "Event receipts").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReceipt {
    /// Unix seconds when the console sent it.
    pub at: u64,
    /// The `event_id`s now stored. Receipting an id twice, or one the agent no longer
    /// holds, is harmless.
    pub event_ids: Vec<u64>,
}

/// The most event ids one receipt carries (9 bytes each at most: well inside a packet).
pub const MAX_RECEIPT_IDS: usize = 512;
