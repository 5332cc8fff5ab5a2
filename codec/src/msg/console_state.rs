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
}
