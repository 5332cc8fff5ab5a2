//! The store-and-forward queue, in the agent's own sled.
//!
//! Items are unsealed [`AgentMessage`]s (they are stamped and sealed when sent). Keys are
//! sled's monotonic ids, so iteration order is arrival order and survives restarts. An item
//! is removed only after the broker acknowledged it (PUBACK). Over the byte cap the oldest
//! heartbeats go first; events and results are never dropped.

use edgefleet_codec::{AgentMessage, Kind};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("agent queue")]
    Sled(#[from] sled::Error),
}

#[derive(Debug, Clone)]
pub struct Queue {
    db: sled::Db,
    tree: sled::Tree,
    cap_bytes: u64,
}

/// What a push had to do to stay under the cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    pub dropped_heartbeats: usize,
    /// The queue is over its cap with nothing droppable left.
    pub over_cap: bool,
}

impl Queue {
    pub fn new(db: sled::Db, tree: sled::Tree, cap_bytes: u64) -> Queue {
        Queue {
            db,
            tree,
            cap_bytes,
        }
    }

    pub fn push(&self, msg: &AgentMessage) -> Result<(u64, PushOutcome), QueueError> {
        let id = self.db.generate_id()?;
        self.tree.insert(id.to_be_bytes(), msg.to_stored())?;
        let mut outcome = PushOutcome::default();
        while self.bytes() > self.cap_bytes {
            match self.oldest_heartbeat()? {
                Some(key) => {
                    self.tree.remove(key)?;
                    outcome.dropped_heartbeats += 1;
                }
                None => {
                    outcome.over_cap = true;
                    break;
                }
            }
        }
        Ok((id, outcome))
    }

    fn oldest_heartbeat(&self) -> Result<Option<sled::IVec>, QueueError> {
        for item in self.tree.iter() {
            let (k, v) = item?;
            if v.first().copied() == Some(Kind::Heartbeat.header()) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Approximate bytes held (keys + values).
    pub fn bytes(&self) -> u64 {
        self.tree
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Up to `n` items after `after` (exclusive), oldest first. Undecodable items (written by
    /// a newer agent version, or damaged) are removed and logged rather than blocking the
    /// queue forever.
    pub fn peek_after(
        &self,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, AgentMessage)>, QueueError> {
        let start = after
            .map(|a| a.saturating_add(1))
            .unwrap_or(0)
            .to_be_bytes();
        let mut out = Vec::new();
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            match AgentMessage::from_stored(&v) {
                Ok(msg) => out.push((key, msg)),
                Err(e) => {
                    tracing::error!(queue.key = key, error = %e, "dropping an undecodable queue item");
                    self.tree.remove(k)?;
                }
            }
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    pub fn remove(&self, key: u64) -> Result<(), QueueError> {
        self.tree.remove(key.to_be_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::{Event, EventLevel, Heartbeat};

    fn event(id: u64) -> AgentMessage {
        AgentMessage::Event(Event {
            bd_seq: 0,
            seq: 0,
            event_id: id,
            at_ms: id,
            level: EventLevel::Info,
            kind: "k".into(),
            message: "m".repeat(100),
        })
    }

    fn hb(at: u64) -> AgentMessage {
        AgentMessage::Heartbeat(Heartbeat {
            at: Some(at),
            cpu_pct: Some(1),
            ..Default::default()
        })
    }

    fn open(dir: &std::path::Path, cap: u64) -> Queue {
        let db = sled::open(dir.join("q")).unwrap();
        let tree = db.open_tree("queue").unwrap();
        Queue::new(db, tree, cap)
    }

    #[test]
    fn items_come_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path(), 1 << 20);
            for i in 0..5 {
                q.push(&event(i)).unwrap();
            }
        }
        let q = open(dir.path(), 1 << 20);
        let items = q.peek_after(None, 10).unwrap();
        let ids: Vec<u64> = items
            .iter()
            .map(|(_, m)| match m {
                AgentMessage::Event(e) => e.event_id,
                _ => 99,
            })
            .collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        q.remove(items[0].0).unwrap();
        assert_eq!(q.len(), 4);
        let rest = q.peek_after(Some(items[1].0), 10).unwrap();
        assert_eq!(rest.len(), 3);
    }

    #[test]
    fn over_the_cap_the_oldest_heartbeats_go_first_never_events() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 250);
        q.push(&hb(1)).unwrap();
        q.push(&event(1)).unwrap();
        q.push(&hb(2)).unwrap();
        q.push(&event(2)).unwrap();
        q.push(&event(3)).unwrap();
        let (_, outcome) = q.push(&event(4)).unwrap();
        let left: Vec<AgentMessage> = q
            .peek_after(None, 100)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert!(
            left.iter().all(|m| matches!(m, AgentMessage::Event(_))),
            "{left:?}"
        );
        assert_eq!(left.len(), 4, "no event was dropped");
        assert!(outcome.over_cap, "events alone exceed the cap and are kept");
    }

    #[test]
    fn damaged_items_are_dropped_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 1 << 20);
        q.tree
            .insert(0u64.to_be_bytes(), &[0xff, 0x00][..])
            .unwrap();
        q.push(&event(7)).unwrap();
        let items = q.peek_after(None, 10).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(q.len(), 1);
    }
}
