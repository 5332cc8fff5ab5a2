//! Agent status: the retained online/offline record, also used as the MQTT last-will.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub bd_seq: u64,
    pub seq: u64,
    pub online: bool,
    /// For an offline status: `true` when the agent stopped gracefully, `false` for the
    /// last-will the broker publishes when the connection dies.
    #[serde(default)]
    pub clean: bool,
}
