//! Enrollment request (signed by the new agent's key) and response (signed by the console).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub agent_id: String,
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    pub hostname: String,
    pub os: String,
    pub ips: Vec<String>,
    pub token_id: String,
    /// `HMAC-SHA256(token secret, "edgefleet/enroll/v1" ++ public_key)`.
    #[serde(with = "serde_bytes")]
    pub proof: [u8; 32],
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub decision: EnrollDecision,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollDecision {
    Approved,
    Pending,
    Rejected { reason: String },
}
