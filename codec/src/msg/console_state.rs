//! Console state: retained on `ef/c/state`, signed by the console.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    pub online: bool,
    /// Changes on every console start; agents re-publish birth and status when it does.
    pub epoch: u64,
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    /// Unix seconds.
    pub at: u64,
    /// This console answers stored events with an [`crate::EventReceipt`], so agents keep
    /// each event until its receipt arrives, not only until the broker's PUBACK. Absent
    /// (false) from consoles older than receipts: agents then forget events on PUBACK.
    #[serde(default, skip_serializing_if = "is_false")]
    pub receipts: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{decode, encode};

    /// `ConsoleState` as agents from before receipts know it.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Before {
        online: bool,
        epoch: u64,
        #[serde(with = "serde_bytes")]
        public_key: [u8; 32],
        at: u64,
    }

    #[test]
    fn older_agents_read_a_state_with_receipts_and_newer_ones_default_to_none() {
        let state = ConsoleState {
            online: true,
            epoch: 7,
            public_key: [3; 32],
            at: 9,
            receipts: true,
        };
        let old: Before = decode(&encode(&state)).unwrap();
        assert_eq!(
            old,
            Before {
                online: true,
                epoch: 7,
                public_key: [3; 32],
                at: 9
            }
        );
        let without = ConsoleState {
            receipts: false,
            ..state
        };
        let bytes = encode(&without);
        assert!(bytes.len() < encode(&state).len(), "false is left out");
        assert_eq!(decode::<ConsoleState>(&bytes).unwrap(), without);
    }
}
