//! The agent's persistent state in its sled database: the connection counter (`bd_seq`),
//! the event id counter, recently seen command ids with the results sent for them, and the
//! store-and-forward queue.
//! The pinned console key lives in a file next to it (see `identity`). The simulator's
//! virtual agents share one database and its trees, each under its own key prefix
//! ([`Keyspace`], [`Storage::shared`]).

use std::path::Path;
use std::time::Duration;

use edgefleet_codec::{AgentMessage, CommandResult};

use crate::keyspace::Keyspace;
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

/// The trees, in an agent's own database or shared by the simulator's agents.
const TREES: [&str; 4] = ["state", "recent", "results", "queue"];

/// Counters, recent ids and the queue of one agent.
#[derive(Debug, Clone)]
pub struct Storage {
    state: Keyspace,
    recent: Keyspace,
    /// Command id → the stored result the agent sent for it, for the ids in `recent`.
    results: Keyspace,
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
                Ok(db) => return Storage::in_db(&db, queue_cap_bytes),
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

    /// The agent's own database: every tree is its alone.
    fn in_db(db: &sled::Db, queue_cap_bytes: u64) -> Result<Storage, QueueError> {
        let [state, recent, results, queue] = TREES.map(|t| db.open_tree(t).map(Keyspace::whole));
        Ok(Storage {
            state: state?,
            recent: recent?,
            results: results?,
            queue: Queue::open(db.clone(), queue?, queue_cap_bytes),
        })
    }

    /// Virtual agent `owner`'s share of the simulator's database: the same trees as an
    /// agent's own, shared, with its keys under its prefix. `old_trees`: the database
    /// still has this agent's trees from before keyspaces (`state{owner}` and so on); their
    /// entries move into the shared trees and the old trees are dropped.
    pub fn shared(
        db: &sled::Db,
        owner: &str,
        queue_cap_bytes: u64,
        old_trees: bool,
    ) -> Result<Storage, QueueError> {
        let [state, recent, results, queue] =
            TREES.map(|t| db.open_tree(t).map(|tree| Keyspace::shared(tree, owner)));
        let spaces = [state?, recent?, results?, queue?];
        if old_trees {
            // `state{owner}` marks the old layout: dropped last, so a crash midway moves
            // the rest on the next start.
            for (name, space) in TREES.iter().zip(&spaces).rev() {
                let old_name = format!("{name}{owner}");
                let old = db.open_tree(&old_name)?;
                for item in old.iter() {
                    let (k, v) = item?;
                    space.insert(&k, v)?;
                }
                db.drop_tree(old_name)?;
            }
            db.flush()?;
        }
        let [state, recent, results, queue] = spaces;
        Ok(Storage {
            state,
            recent,
            results,
            queue: Queue::open(db.clone(), queue, queue_cap_bytes),
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
        if self.recent.contains_key(&result.command_id)? {
            let stored = AgentMessage::CommandResult(result.clone()).to_stored();
            self.results.insert(&result.command_id, stored)?;
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

    #[test]
    fn simulated_agents_share_four_trees_and_keep_apart() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let agents: Vec<Storage> = (0..20)
            .map(|i| Storage::shared(&db, &format!("-{i}"), 1 << 20, false).unwrap())
            .collect();
        for (i, s) in agents.iter().enumerate() {
            for _ in 0..=i {
                s.next_bd_seq().unwrap();
            }
            s.queue.push(&heartbeat(i as u64)).unwrap();
        }
        // sled's default tree plus the four shared ones, however many agents.
        assert_eq!(db.tree_names().len(), 5);
        let s1 = Storage::shared(&db, "-1", 1 << 20, false).unwrap();
        assert_eq!(s1.bd_seq(), 2);
        assert_eq!(agents[12].bd_seq(), 13);
        assert_eq!(s1.queue.len(), 1);
        let items = s1.queue.peek_after(None, 10).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].1, heartbeat(1));
    }

    #[test]
    fn a_simulator_database_with_a_tree_per_agent_moves_into_the_shared_trees() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        // The old layout: trees named after the agent.
        let old_state = db.open_tree("state-7").unwrap();
        old_state.insert(BD_SEQ, &41u64.to_be_bytes()).unwrap();
        let old_queue = db.open_tree("queue-7").unwrap();
        let item = heartbeat(7);
        old_queue
            .insert(9u64.to_be_bytes(), item.to_stored())
            .unwrap();
        for t in ["recent-7", "results-7"] {
            db.open_tree(t).unwrap();
        }

        let s = Storage::shared(&db, "-7", 1 << 20, true).unwrap();
        assert_eq!(s.bd_seq(), 41);
        assert_eq!(s.next_bd_seq().unwrap(), 42);
        assert_eq!(s.queue.peek_after(None, 10).unwrap(), vec![(9, item)]);
        assert!(s.queue.bytes() > 0, "the queue counted what moved in");
        let names: Vec<_> = db.tree_names().into_iter().collect();
        assert!(
            !names.iter().any(|n| n.ends_with(b"-7")),
            "old trees left: {names:?}"
        );
    }

    fn heartbeat(n: u64) -> AgentMessage {
        AgentMessage::Heartbeat(edgefleet_codec::Heartbeat {
            at: Some(n),
            ..Default::default()
        })
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
