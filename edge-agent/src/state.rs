//! The agent's persistent state in its sled: connection counter, pinned console key, event
//! ids, and the store-and-forward queue.

use std::path::Path;

use edgefleet_codec::PublicKey;

use crate::queue::{Queue, QueueError};

const BD_SEQ: &[u8] = b"bd_seq";
const CONSOLE_KEY: &[u8] = b"console_key";
const EVENT_ID: &[u8] = b"event_id";

/// sled's page cache for the agent: small, because the agent must stay within a few MB.
pub const AGENT_CACHE_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Storage {
    state: sled::Tree,
    pub queue: Queue,
}

impl Storage {
    /// The agent's own database in `data_dir/agent.sled`.
    pub fn open_dir(data_dir: &Path, queue_cap_bytes: u64) -> Result<Storage, QueueError> {
        let db = sled::Config::new()
            .path(data_dir.join("agent.sled"))
            .cache_capacity(AGENT_CACHE_BYTES)
            .flush_every_ms(Some(200))
            .open()?;
        Storage::in_db(&db, "", queue_cap_bytes)
    }

    /// Trees named after `name` in a shared database (the simulator keeps one database for
    /// all its virtual agents instead of thousands).
    pub fn in_db(db: &sled::Db, name: &str, queue_cap_bytes: u64) -> Result<Storage, QueueError> {
        let state = db.open_tree(format!("state{name}"))?;
        let queue = Queue::new(
            db.clone(),
            db.open_tree(format!("queue{name}"))?,
            queue_cap_bytes,
        );
        Ok(Storage { state, queue })
    }

    fn counter(&self, key: &[u8]) -> Result<u64, QueueError> {
        let next = self.state.update_and_fetch(key, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        self.state.flush()?;
        Ok(next
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1))
    }

    /// Increments and persists the connection counter before a connect.
    pub fn next_bd_seq(&self) -> Result<u64, QueueError> {
        self.counter(BD_SEQ)
    }

    pub fn next_event_id(&self) -> Result<u64, QueueError> {
        self.counter(EVENT_ID)
    }

    pub fn console_key(&self) -> Option<PublicKey> {
        let bytes = self.state.get(CONSOLE_KEY).ok()??;
        let key: [u8; 32] = bytes.as_ref().try_into().ok()?;
        Some(PublicKey::from_bytes(key))
    }

    pub fn pin_console_key(&self, key: &PublicKey) -> Result<(), QueueError> {
        self.state.insert(CONSOLE_KEY, key.as_bytes().as_slice())?;
        self.state.flush()?;
        Ok(())
    }
}
