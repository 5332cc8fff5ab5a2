//! What a running agent reports about itself: [`AgentStatusSnapshot`], kept current by the
//! session on a `watch` channel, and the state file (`status.json`) that the
//! `edgefleet-agent status` command reads. The sled database allows one process only, so
//! `status` never opens it; the running agent writes this file atomically instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the state file is rewritten even when nothing changed, so `written_at` shows
/// the agent is alive.
pub const STATUS_FILE_EVERY: Duration = Duration::from_secs(5);

/// The agent's view of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatusSnapshot {
    pub agent_id: String,
    /// The console URL of the current or last connection attempt.
    pub console_url: String,
    /// A CONNACK was received and the connection is up.
    pub connected: bool,
    /// The connection counter of the current or last connection.
    pub bd_seq: u64,
    /// Items in the store-and-forward queue.
    pub queue_depth: usize,
    pub queue_bytes: u64,
    /// Queued events the broker acknowledged that wait for the console's receipt (they
    /// stay in the queue until it comes).
    #[serde(default)]
    pub unreceipted: usize,
    /// Unix milliseconds of the last live heartbeat handed to the MQTT client.
    pub last_heartbeat: Option<u64>,
    /// Hex SHA-256 of the pinned console key; `None` before first contact.
    pub console_key: Option<String>,
    /// Heartbeat history samples dropped to keep the queue under its cap.
    #[serde(default)]
    pub dropped_heartbeats: u64,
    /// Live heartbeats the broker never acknowledged, queued as history when their
    /// connection ended (docs/wire.md, "Acknowledged heartbeats").
    #[serde(default)]
    pub requeued_heartbeats: u64,
    /// Pushes that left the queue over its cap with events and results only (kept).
    #[serde(default)]
    pub over_cap: u64,
    /// What the console last decided about this agent; `None` before enrollment.
    #[serde(default)]
    pub enrollment: Option<crate::enrollment::EnrollState>,
    /// Commands refused, by reason (bad signature, wrong target, expired, replay).
    #[serde(default)]
    pub commands_rejected: std::collections::BTreeMap<String, u64>,
}

impl AgentStatusSnapshot {
    /// The console key is pinned, so telemetry and the last-will can be sealed.
    pub fn pinned(&self) -> bool {
        self.console_key.is_some()
    }
}

/// The state file as written: the snapshot plus when and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    #[serde(flatten)]
    pub snapshot: AgentStatusSnapshot,
    /// Unix milliseconds.
    pub written_at: u64,
    pub pid: u32,
}

impl StatusFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("status.json")
    }

    /// Writes atomically (temp file and rename), so a reader never sees half a file.
    pub fn write(path: &Path, snapshot: &AgentStatusSnapshot) -> std::io::Result<()> {
        let doc = StatusFile {
            snapshot: snapshot.clone(),
            written_at: now_ms(),
            pid: std::process::id(),
        };
        let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> anyhow::Result<StatusFile> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {} (is the agent running with this data dir?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Keeps the state file current until `done` is cancelled (the session has ended), then
/// writes it a last time with `connected: false`. Writes at most once a second, and every
/// [`STATUS_FILE_EVERY`] regardless.
pub async fn keep_written(
    path: PathBuf,
    mut snapshots: watch::Receiver<AgentStatusSnapshot>,
    done: CancellationToken,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Err(e) = StatusFile::write(&path, &snapshot) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
        let next = tokio::time::Instant::now() + STATUS_FILE_EVERY;
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        tokio::select! {
            _ = done.cancelled() => break,
            _ = snapshots.changed() => {}
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    let mut last = snapshots.borrow().clone();
    last.connected = false;
    if let Err(e) = StatusFile::write(&path, &last) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = StatusFile::path(dir.path());
        let snapshot = AgentStatusSnapshot {
            agent_id: "abcdefghijklmnop".into(),
            connected: true,
            bd_seq: 4,
            queue_depth: 2,
            console_key: Some("00ff".into()),
            ..AgentStatusSnapshot::default()
        };
        StatusFile::write(&path, &snapshot).unwrap();
        let back = StatusFile::read(&path).unwrap();
        assert_eq!(back.snapshot, snapshot);
        assert_eq!(back.pid, std::process::id());
        assert!(!dir.path().join("status.json.tmp").exists());
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_write_says_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let path = StatusFile::path(dir.path());
        let (tx, rx) = watch::channel(AgentStatusSnapshot {
            connected: true,
            ..AgentStatusSnapshot::default()
        });
        let done = CancellationToken::new();
        let writer = tokio::spawn(keep_written(path.clone(), rx, done.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(StatusFile::read(&path).unwrap().snapshot.connected);
        done.cancel();
        drop(tx);
        writer.await.unwrap();
        assert!(!StatusFile::read(&path).unwrap().snapshot.connected);
    }
}
