//! Software inventory: full snapshots in chunks, and deltas against an acknowledged digest.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChunk {
    pub bd_seq: u64,
    pub seq: u64,
    pub scan_id: u32,
    pub index: u16,
    pub is_last: bool,
    pub source: String,
    /// The digest of the whole snapshot, on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub digest: Option<[u8; 8]>,
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDelta {
    pub bd_seq: u64,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub base_digest: [u8; 8],
    #[serde(with = "serde_bytes")]
    pub new_digest: [u8; 8],
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Package>,
}
