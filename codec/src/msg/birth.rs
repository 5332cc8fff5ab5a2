//! Agent birth: who the device is, sent on every connect.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birth {
    pub bd_seq: u64,
    pub seq: u64,
    pub hostname: String,
    /// OS pretty name, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub ips: Vec<String>,
    pub agent_version: String,
    /// Unix seconds.
    pub boot_time: u64,
    pub apps: Vec<AppState>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub inventory_digest: Option<[u8; 8]>,
    pub heartbeat_interval_s: u32,
    /// Seconds between inventory scans; the console flags a host whose last scan is older
    /// than twice this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_interval_s: Option<u64>,
    /// The agent's own labels (its config), e.g. `site=ferry-7`. Operators can override
    /// them in the console.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A managed app and what the agent last saw of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppState {
    pub id: String,
    pub status: AppStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppStatus {
    Unknown,
    Active,
    Inactive,
    Failed,
    Activating,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Unknown => "unknown",
            AppStatus::Active => "active",
            AppStatus::Inactive => "inactive",
            AppStatus::Failed => "failed",
            AppStatus::Activating => "activating",
        }
    }
}
