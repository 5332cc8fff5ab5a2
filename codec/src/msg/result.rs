//! Command results and progress reports from the agent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub bd_seq: u64,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub command_id: [u8; 16],
    pub outcome: CommandOutcome,
    pub message: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Succeeded,
    Failed,
    RolledBack,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandProgress {
    pub bd_seq: u64,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub command_id: [u8; 16],
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct: Option<u8>,
    pub at_ms: u64,
}
