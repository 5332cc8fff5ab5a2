//! The agent's persistent state in its sled database: the connection counter (`bd_seq`),
//! the event id counter, recently seen command ids with the results sent for them, and the
//! store-and-forward queue.
//! The pinned console key lives in a file next to it (see `identity`).

use std::path::Path;
use std::time::Duration;

use edgefleet_codec::{AgentMessage, CommandResult};

use crate::queue::{Queue, QueueError};

const BD_SEQ: &[u8] = b"bd_seq";
const EVENT_ID: &[u8] = b"event_id";
const RECENT_SEQ: &[u8] = b"recent_seq";
const INVENTORY: &[u8] = b"inventory";
const INTERVAL: &[u8] = b"heartbeat_interval";
/// How many command ids are remembered for duplicate detection.
const RECENT_COMMANDS: usize = 256;

/// sled's page cache for one agent: small, because the agent should stay within a few MB.
pub const AGENT_CACHE_BYTES: u64 = 2 * 1024 * 1024;

/// Counters, recent ids and the queue of one agent.
#[derive(Debug, Clone)]
pub struct Storage {
    state: sled::Tree,
    recent: sled::Tree,
    /// Command id → the stored result the agent sent for it, for the ids in `recent`.
    results: sled::Tree,
    pub queue: Queue,
}

impl Storage {
    /// The agent's own database, `data_dir/agent.sled`.
    ///
    /// sled allows one open handle per database; an agent that was just aborted in this
    /// process may still be releasing it, so a held lock is retried for up to 5 s.
    pub async fn open_dir(data_dir: &Path, queue_cap_bytes: u64) -> Result<Storage, QueueError> {
        let path = data_dir.join("agent.sled");
        let mut waited = Duration::ZERO;
        loop {
            let path = path.clone();
            let opened = tokio::task::spawn_blocking(move || {
                sled::Config::new()
                    .path(path)
                    .cache_capacity(AGENT_CACHE_BYTES)
                    .flush_every_ms(Some(500))
                    .open()
            })
            .await
            .map_err(|e| sled::Error::ReportableBug(format!("opening sled panicked: {e}")))?;
            match opened {
                Ok(db) => return Storage::in_db(&db, "", queue_cap_bytes),
                // sled reports a held lock as an `Other` error wrapping EWOULDBLOCK.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && waited < Duration::from_secs(5) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    waited += Duration::from_millis(50);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Trees suffixed with `name` in a shared database: the simulator keeps one database
    /// for all its virtual agents, because sled runs a flusher thread per database.
    pub fn in_db(db: &sled::Db, name: &str, queue_cap_bytes: u64) -> Result<Storage, QueueError> {
        let state = db.open_tree(format!("state{name}"))?;
        let recent = db.open_tree(format!("recent{name}"))?;
        let results = db.open_tree(format!("results{name}"))?;
        let queue = Queue::open(
            db.clone(),
            db.open_tree(format!("queue{name}"))?,
            queue_cap_bytes,
        );
        Ok(Storage {
            state,
            recent,
            results,
            queue,
        })
    }

    fn increment(&self, key: &[u8]) -> Result<u64, QueueError> {
        let next = self.state.update_and_fetch(key, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })?;
        // A counter that went backwards after a crash would reuse ids: flush before use.
        self.state.flush()?;
        Ok(next
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1))
    }

    /// Increments and persists the connection counter; called before every connect.
    pub fn next_bd_seq(&self) -> Result<u64, QueueError> {
        self.increment(BD_SEQ)
    }

    /// The current connection counter (0 before the first connect).
    pub fn bd_seq(&self) -> u64 {
        self.state
            .get(BD_SEQ)
            .ok()
            .flatten()
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    }

    /// The inventory sync state (default when none was stored, or it cannot be read: the
    /// next scan then sends a full snapshot, which is always safe).
    pub fn inventory(&self) -> crate::inventory::SyncState {
        self.state
            .get(INVENTORY)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn set_inventory(&self, sync: &crate::inventory::SyncState) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(sync).expect("the sync state serializes");
        self.state.insert(INVENTORY, bytes)?;
        Ok(())
    }

    /// The heartbeat interval the console pushed (`set-heartbeat-interval`), if any.
    pub fn interval_override(&self) -> Option<u32> {
        self.state
            .get(INTERVAL)
            .ok()
            .flatten()
            .and_then(|b| <[u8; 4]>::try_from(b.as_ref()).ok())
            .map(u32::from_be_bytes)
            .filter(|s| *s > 0)
    }

    /// Stores (or with 0, clears) the pushed heartbeat interval.
    pub fn set_interval_override(&self, seconds: u32) -> Result<(), QueueError> {
        if seconds == 0 {
            self.state.remove(INTERVAL)?;
        } else {
            self.state.insert(INTERVAL, &seconds.to_be_bytes())?;
        }
        Ok(())
    }

    /// A new, never reused event id (the console's dedup key for events).
    pub fn next_event_id(&self) -> Result<u64, QueueError> {
        self.increment(EVENT_ID)
    }

    /// Records a command id; `false` if it was seen recently (a redelivered command).
    /// Only the newest [`RECENT_COMMANDS`] ids are kept.
    pub fn remember_command(&self, command_id: &[u8; 16]) -> Result<bool, QueueError> {
        if self.recent.contains_key(command_id)? {
            return Ok(false);
        }
        let order = self.increment(RECENT_SEQ)?;
        self.recent.insert(command_id, &order.to_be_bytes())?;
        while self.recent.len() > RECENT_COMMANDS {
            let oldest = self
                .recent
                .iter()
                .filter_map(Result::ok)
                .min_by_key(|(_, v)| <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).ok())
                .map(|(k, _)| k);
            match oldest {
                Some(k) => {
                    self.recent.remove(&k)?;
                    self.results.remove(&k)?;
                }
                None => break,
            }
        }
        self.recent.flush()?;
        Ok(true)
    }

    /// Keeps the result sent for a recent command. When the console redelivers that
    /// command (it never recorded the result: it crashed between the broker's PUBACK and
    /// its own write), the agent sends the same result again instead of running it twice.
    pub fn remember_result(&self, result: &CommandResult) -> Result<(), QueueError> {
        if self.recent.contains_key(result.command_id)? {
            let stored = AgentMessage::CommandResult(result.clone()).to_stored();
            self.results.insert(result.command_id, stored)?;
        }
        Ok(())
    }

    /// The result sent for a recent command, if any (see [`Storage::remember_result`]).
    pub fn result_of(&self, command_id: &[u8; 16]) -> Result<Option<CommandResult>, QueueError> {
        Ok(self
            .results
            .get(command_id)?
            .and_then(|v| match AgentMessage::from_stored(&v) {
                Ok(AgentMessage::CommandResult(r)) => Some(r),
                _ => None,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_persist_and_only_go_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
            assert_eq!(s.bd_seq(), 0);
            assert_eq!(s.next_bd_seq().unwrap(), 1);
            assert_eq!(s.next_bd_seq().unwrap(), 2);
            assert_eq!(s.next_event_id().unwrap(), 1);
        }
        let s = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
        assert_eq!(s.bd_seq(), 2);
        assert_eq!(s.next_bd_seq().unwrap(), 3);
        assert_eq!(s.next_event_id().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_database_held_elsewhere_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(first);
        });
        let second = Storage::open_dir(dir.path(), 1 << 20).await;
        assert!(second.is_ok(), "{:?}", second.err());
        release.await.unwrap();
    }

    #[tokio::test]
    async fn recent_command_ids_detect_duplicates_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
        assert!(s.remember_command(&[1; 16]).unwrap());
        assert!(!s.remember_command(&[1; 16]).unwrap());
        for i in 0..300u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[15] = 9;
            s.remember_command(&id).unwrap();
        }
        assert_eq!(s.recent.len(), RECENT_COMMANDS);
    }

    #[tokio::test]
    async fn results_of_recent_commands_are_kept_across_a_reopen_and_leave_with_their_id() {
        let result = |id: [u8; 16]| CommandResult {
            bd_seq: 0,
            seq: 0,
            command_id: id,
            outcome: edgefleet_codec::CommandOutcome::Succeeded,
            message: "heartbeat sent".into(),
            at_ms: 1_700_000_000_000,
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
            // Never seen: nothing to keep (a result for a command from before an upgrade).
            s.remember_result(&result([7; 16])).unwrap();
            assert_eq!(s.result_of(&[7; 16]).unwrap(), None);
            assert!(s.remember_command(&[1; 16]).unwrap());
            s.remember_result(&result([1; 16])).unwrap();
        }
        let s = Storage::open_dir(dir.path(), 1 << 20).await.unwrap();
        assert_eq!(s.result_of(&[1; 16]).unwrap(), Some(result([1; 16])));
        // Evicted from the recent ids, the result goes too.
        for i in 0..RECENT_COMMANDS as u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[15] = 9;
            s.remember_command(&id).unwrap();
        }
        assert_eq!(s.result_of(&[1; 16]).unwrap(), None);
        assert!(s.results.is_empty());
    }
}
