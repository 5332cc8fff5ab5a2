//! Commands from the console to one agent: the fixed set, signed, with id and expiry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::VerifyError;
use crate::identity::AgentId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Random and unique; agents remember recent ids and refuse a repeat.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    pub target: String,
    /// Unix seconds.
    pub issued_at: u64,
    pub expires_at: u64,
    pub action: CommandAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandAction {
    RestartApp {
        app: String,
    },
    PushConfig {
        app: String,
        /// Dotted key paths to values.
        values: BTreeMap<String, ConfigValue>,
    },
    UpdateApp {
        app: String,
        url: String,
        version: String,
        #[serde(with = "serde_bytes")]
        sha256: [u8; 32],
    },
    RequestHeartbeat,
    RescanInventory,
    /// A shell script, run only if the agent's local admin allowed scripts and put this
    /// script's SHA-256 on the agent's allow-list.
    RunScript {
        script: String,
    },
    /// Use this heartbeat interval from now on (kept across agent restarts) until another
    /// one arrives; 0 goes back to the agent's configured interval.
    SetHeartbeatInterval {
        seconds: u32,
    },
    /// Put back the version an update-app replaced (a rollout's abort).
    RollbackApp {
        app: String,
    },
}

/// The largest script `run-script` carries (the whole command must fit one MQTT packet).
pub const MAX_SCRIPT_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Command {
    /// Refuses a command meant for another agent, past its expiry, or issued more than
    /// [`crate::connect::MAX_SKEW_SECS`] in the future. Replay of an id is checked by the
    /// agent, which remembers recent ids.
    ///
    /// The future bound is the skew the CONNECT proof already requires of the agent's
    /// clock, so it refuses nothing a connected agent could legitimately receive; what it
    /// refuses is a command signed ahead of time (by a console with a wrong clock, or one
    /// kept back to be played later), which would otherwise run whenever it arrives.
    pub fn check(&self, me: &AgentId, now_unix: u64) -> Result<(), VerifyError> {
        if self.target != me.as_str() {
            return Err(VerifyError::WrongTarget);
        }
        if now_unix >= self.expires_at {
            return Err(VerifyError::Expired);
        }
        if self.issued_at > now_unix.saturating_add(crate::connect::MAX_SKEW_SECS) {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }
}
