//! The agent's enrollment state (`enrollment.json` in the data directory): what the console
//! last decided about this agent. No file means "not enrolled": the agent presents its token
//! and sends an enrollment request. Deleting the file forces re-enrollment with the same key;
//! deleting the whole data directory makes a new key, and so a new agent.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollState {
    /// Telemetry flows.
    Approved,
    /// Enrolled, waiting for an operator; the agent asks again every 30 s.
    Pending,
    /// The console refused: revoked, a duplicate host, or a bad token.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub state: EnrollState,
    /// The console's reason, for a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds of the decision.
    pub at: u64,
}

/// The state file's location.
#[derive(Debug, Clone)]
pub struct EnrollmentFile {
    path: PathBuf,
}

impl EnrollmentFile {
    pub fn in_dir(data_dir: &Path) -> EnrollmentFile {
        EnrollmentFile {
            path: data_dir.join("enrollment.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `None` when the agent has not enrolled yet. A damaged file counts as not enrolled:
    /// the agent just asks the console again, which answers for the same key.
    pub fn load(&self) -> Option<Enrollment> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        match serde_json::from_str(&text) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring a damaged enrollment state; enrolling again");
                None
            }
        }
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn store(&self, enrollment: &Enrollment) -> Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(enrollment).expect("serializes"))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_damaged_files_mean_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let file = EnrollmentFile::in_dir(dir.path());
        assert_eq!(file.load(), None);
        let e = Enrollment {
            state: EnrollState::Rejected,
            reason: Some("revoked".into()),
            at: 5,
        };
        file.store(&e).unwrap();
        assert_eq!(file.load(), Some(e));
        std::fs::write(file.path(), "{").unwrap();
        assert_eq!(file.load(), None);
    }
}
