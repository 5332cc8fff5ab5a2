//! The store-and-forward queue, in the agent's own sled (tree `queue`; a simulated agent's
//! share of the simulator's, [`Keyspace`]), and [`Delivery`],
//! which ties rumqttc's packet ids back to queue items.
//!
//! Items are unsealed [`AgentMessage`]s: they are stamped with the current `(bd_seq, seq)`
//! and sealed only when sent (docs/wire.md). Keys are sled's monotonic ids, big-endian, so
//! iteration order is arrival order and survives restarts. An item is removed only after
//! the broker acknowledged it (PUBACK); an event, when the console sends receipts, only
//! after the console's [`edgefleet_codec::EventReceipt`] ([`Receipts`]). Over the byte cap
//! the oldest heartbeats go first; events and results are never dropped, even when they
//! alone exceed the cap.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_codec::{AgentMessage, Kind};
use tokio::time::Instant;

use crate::keyspace::Keyspace;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("agent queue storage")]
    Sled(#[from] sled::Error),
}

/// A bounded, persistent FIFO of unsealed agent messages.
#[derive(Debug, Clone)]
pub struct Queue {
    db: sled::Db,
    tree: Keyspace,
    cap_bytes: u64,
    /// Keys plus values held, counted once at open and kept current: summing the tree on
    /// every push would make a full queue quadratic.
    bytes: Arc<Mutex<u64>>,
}

/// What a push had to do to stay under the cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The queue key of the new item.
    pub key: u64,
    pub dropped_heartbeats: usize,
    /// The queue is over its cap with nothing droppable left (events and results only).
    pub over_cap: bool,
}

/// What a publish request carries, so its PUBACK can be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Nothing to do on acknowledgement (live status, birth, heartbeats).
    Plain,
    /// A queue item, removed when acknowledged.
    Queued(u64),
    /// A queued event: on PUBACK it waits for the console's receipt ([`Receipts`]).
    Event { key: u64, event_id: u64 },
    /// The clean offline status sent on shutdown.
    Goodbye,
    /// A live heartbeat sent at QoS 1 to prove the link; its PUBACK confirms it and the
    /// heartbeats before it ([`crate::heartbeat::Unconfirmed`]).
    Probe(u64),
}

/// Matches publishes to their acknowledgements. rumqttc reports `Outgoing::Publish(pkid)`
/// for every publish request, in request order (pkid 0 for QoS 0), and
/// `Incoming::PubAck(pkid)` later; the pkid is the only link between the two, and pkids are
/// reused, so each one is forgotten as soon as it is acknowledged.
#[derive(Debug, Default)]
pub struct Delivery {
    requested: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
    /// The last queue key handed to the client, so the next read continues after it.
    cursor: Option<u64>,
    queued_in_flight: usize,
}

impl Queue {
    /// Opens the queue in `tree` of `db` with a cap of `cap_bytes`.
    pub fn open(db: sled::Db, tree: Keyspace, cap_bytes: u64) -> Queue {
        let bytes = tree
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Queue {
            db,
            tree,
            cap_bytes,
            bytes: Arc::new(Mutex::new(bytes)),
        }
    }

    /// Appends `msg`, then drops the oldest heartbeats while over the cap. Events and
    /// results are flushed to disk before this returns: they must survive a power cut.
    pub fn push(&self, msg: &AgentMessage) -> Result<PushOutcome, QueueError> {
        let id = self.db.generate_id()?;
        let value = msg.to_stored();
        let mut bytes = self.bytes.lock().expect("queue byte counter poisoned");
        self.tree.insert(&id.to_be_bytes(), value.as_slice())?;
        *bytes += (8 + value.len()) as u64;
        let mut outcome = PushOutcome {
            key: id,
            ..PushOutcome::default()
        };
        while *bytes > self.cap_bytes {
            match self.oldest_heartbeat()? {
                Some((key, len)) => {
                    self.tree.remove(&key)?;
                    *bytes = bytes.saturating_sub(len);
                    outcome.dropped_heartbeats += 1;
                }
                None => {
                    outcome.over_cap = true;
                    break;
                }
            }
        }
        drop(bytes);
        if msg.kind() != Kind::Heartbeat {
            self.tree.flush()?;
        }
        Ok(outcome)
    }

    fn oldest_heartbeat(&self) -> Result<Option<(sled::IVec, u64)>, QueueError> {
        for item in self.tree.iter() {
            let (k, v) = item?;
            if v.first().copied() == Some(Kind::Heartbeat.header()) {
                let len = (k.len() + v.len()) as u64;
                return Ok(Some((k, len)));
            }
        }
        Ok(None)
    }

    /// Bytes held (keys + values).
    pub fn bytes(&self) -> u64 {
        *self.bytes.lock().expect("queue byte counter poisoned")
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Up to `n` items after `after` (exclusive), oldest first. Undecodable items (written
    /// by a newer agent version, or damaged) are removed and logged rather than blocking
    /// the queue forever.
    pub fn peek_after(
        &self,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, AgentMessage)>, QueueError> {
        let start = match after {
            Some(a) => match a.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        let mut out = Vec::new();
        for item in self.tree.range_from(&start.to_be_bytes()) {
            if out.len() >= n {
                break;
            }
            let (k, v) = item?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            match AgentMessage::from_stored(&v) {
                Ok(msg) => out.push((key, msg)),
                Err(e) => {
                    tracing::error!(queue.key = key, error = %e, "dropping an undecodable queue item");
                    self.remove(key)?;
                }
            }
        }
        Ok(out)
    }

    /// Removes an acknowledged item. Removing a key that is gone is not an error.
    pub fn remove(&self, key: u64) -> Result<(), QueueError> {
        let mut bytes = self.bytes.lock().expect("queue byte counter poisoned");
        if let Some(old) = self.tree.remove(&key.to_be_bytes())? {
            *bytes = bytes.saturating_sub((8 + old.len()) as u64);
        }
        Ok(())
    }
}

impl Delivery {
    /// A fresh tracker for a new connection: queued items are read from the start again,
    /// since whatever was in flight on the old connection may not have arrived.
    pub fn new() -> Delivery {
        Delivery::default()
    }

    /// A publish request was accepted by the client. Queued items must be requested in
    /// key order.
    pub fn requested(&mut self, tag: Tag) {
        if let Some(key) = tag.queue_key() {
            self.cursor = Some(key);
            self.queued_in_flight += 1;
        }
        self.requested.push_back(tag);
    }

    /// rumqttc wrote the oldest requested publish with packet id `pkid`.
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(tag) = self.requested.pop_front() {
            if pkid != 0 && tag != Tag::Plain {
                self.by_pkid.insert(pkid, tag);
            }
        }
    }

    /// The broker acknowledged `pkid`: what it was, if we were waiting for it.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        let tag = self.by_pkid.remove(&pkid)?;
        if tag.queue_key().is_some() {
            self.queued_in_flight = self.queued_in_flight.saturating_sub(1);
        }
        Some(tag)
    }

    /// The last queue key requested on this connection.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Reads the queue from its oldest item again: what waits for a receipt goes out once
    /// more (the console may have lost it). Items still in flight may go twice; the
    /// console stores each event once, by its id.
    pub fn rewind(&mut self) {
        self.cursor = None;
    }

    /// Queue items requested and not yet acknowledged.
    pub fn queued_in_flight(&self) -> usize {
        self.queued_in_flight
    }

    /// Publish requests not yet written by the client.
    pub fn unwritten(&self) -> usize {
        self.requested.len()
    }
}

impl Tag {
    /// The queue item behind this publish, if any.
    pub fn queue_key(self) -> Option<u64> {
        match self {
            Tag::Queued(key) | Tag::Event { key, .. } => Some(key),
            Tag::Plain | Tag::Goodbye | Tag::Probe(_) => None,
        }
    }
}

/// Receipts a connection has seen for ids it was not waiting for, kept so a receipt that
/// overtakes its PUBACK still counts. Bounded: a stale receipt costs a resend at worst.
const MAX_EARLY_RECEIPTS: usize = 1024;

/// Events the broker acknowledged that wait for the console's receipt, for one connection.
/// A new connection starts empty and reads the queue from the start, so whatever was
/// waiting goes out again.
#[derive(Debug, Default)]
pub struct Receipts {
    /// What the console state on this connection said; `None` until it arrives, and until
    /// then acknowledged events wait (a console without receipts releases them).
    console_sends: Option<bool>,
    /// Event id → (queue key, acknowledged or last resent at).
    awaiting: BTreeMap<u64, (u64, Instant)>,
    early: HashSet<u64>,
}

impl Receipts {
    /// The broker acknowledged the event `event_id` held under queue `key`: the key to
    /// remove now, or `None` while it waits for its receipt.
    pub fn acked(&mut self, key: u64, event_id: u64, now: Instant) -> Option<u64> {
        if self.console_sends == Some(false) || self.early.remove(&event_id) {
            return Some(key);
        }
        self.awaiting.insert(event_id, (key, now));
        None
    }

    /// The console stored `event_ids`: the queue keys to remove.
    pub fn receipted(&mut self, event_ids: &[u64]) -> Vec<u64> {
        let mut keys = Vec::new();
        for id in event_ids {
            match self.awaiting.remove(id) {
                Some((key, _)) => keys.push(key),
                None if self.early.len() < MAX_EARLY_RECEIPTS => {
                    self.early.insert(*id);
                }
                None => {}
            }
        }
        keys
    }

    /// The console state said whether it sends receipts: the keys to remove now (every
    /// waiting one, from a console that does not).
    pub fn console(&mut self, sends: bool) -> Vec<u64> {
        self.console_sends = Some(sends);
        if sends {
            return Vec::new();
        }
        std::mem::take(&mut self.awaiting)
            .into_values()
            .map(|(key, _)| key)
            .collect()
    }

    /// Something has waited longer than `timeout` for its receipt.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.awaiting
            .values()
            .any(|(_, since)| now.saturating_duration_since(*since) >= timeout)
    }

    /// Everything waiting is being sent again: its clocks start over.
    pub fn resent(&mut self, now: Instant) {
        for (_, since) in self.awaiting.values_mut() {
            *since = now;
        }
    }

    /// Events acknowledged by the broker and not yet receipted.
    pub fn len(&self) -> usize {
        self.awaiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.awaiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::{CommandOutcome, CommandResult, Event, EventLevel, Heartbeat};
    use rand::{Rng, SeedableRng};

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

    fn result(n: u8) -> AgentMessage {
        AgentMessage::CommandResult(CommandResult {
            bd_seq: 0,
            seq: 0,
            command_id: [n; 16],
            outcome: CommandOutcome::Succeeded,
            message: "done".repeat(25),
            at_ms: 1,
        })
    }

    fn hb(at: u64) -> AgentMessage {
        AgentMessage::Heartbeat(Heartbeat {
            at: Some(at),
            cpu_pct: Some(1),
            ..Default::default()
        })
    }

    /// Reopening right after a drop can find sled's flusher thread still holding the
    /// file lock (CI saw EWOULDBLOCK once), so a held lock is retried as `Storage::open_dir`
    /// does.
    fn open(dir: &std::path::Path, cap: u64) -> Queue {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match sled::open(dir.join("q")) {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("opening the queue database: {e}"),
            }
        };
        let tree = db.open_tree("queue").unwrap();
        Queue::open(db, Keyspace::whole(tree), cap)
    }

    fn describe(items: &[(u64, AgentMessage)]) -> Vec<String> {
        items
            .iter()
            .map(|(_, m)| match m {
                AgentMessage::Event(e) => format!("ev{}", e.event_id),
                AgentMessage::Heartbeat(h) => format!("hb{}", h.at.unwrap_or(0)),
                AgentMessage::CommandResult(r) => format!("res{}", r.command_id[0]),
                other => format!("{:?}", other.kind()),
            })
            .collect()
    }

    #[test]
    fn items_come_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bytes_before;
        {
            let q = open(dir.path(), 1 << 20);
            q.push(&event(0)).unwrap();
            q.push(&hb(1)).unwrap();
            q.push(&result(2)).unwrap();
            q.push(&event(3)).unwrap();
            q.push(&event(4)).unwrap();
            bytes_before = q.bytes();
        }
        let q = open(dir.path(), 1 << 20);
        assert_eq!(q.bytes(), bytes_before, "the byte count is rebuilt on open");
        let items = q.peek_after(None, 10).unwrap();
        assert_eq!(describe(&items), ["ev0", "hb1", "res2", "ev3", "ev4"]);
        q.remove(items[0].0).unwrap();
        assert_eq!(q.len(), 4);
        let rest = q.peek_after(Some(items[1].0), 10).unwrap();
        assert_eq!(describe(&rest), ["res2", "ev3", "ev4"]);
        assert_eq!(q.peek_after(None, 2).unwrap().len(), 2);
        assert!(q.peek_after(Some(u64::MAX), 2).unwrap().is_empty());
    }

    #[test]
    fn new_items_after_a_reopen_still_sort_after_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path(), 1 << 20);
            for i in 0..3 {
                q.push(&event(i)).unwrap();
            }
        }
        let q = open(dir.path(), 1 << 20);
        q.push(&event(3)).unwrap();
        let items = q.peek_after(None, 10).unwrap();
        assert_eq!(describe(&items), ["ev0", "ev1", "ev2", "ev3"]);
    }

    #[test]
    fn over_the_cap_the_oldest_heartbeats_go_first_never_events_or_results() {
        let dir = tempfile::tempdir().unwrap();
        let size = |m: &AgentMessage| 8 + m.to_stored().len() as u64;
        let (ev, hb_size) = (size(&event(1)), size(&hb(1)));
        assert!(
            ev > 2 * hb_size,
            "the scenario below assumes small heartbeats"
        );
        let cap = 2 * ev + 2 * hb_size;
        let q = open(dir.path(), cap);
        for m in [hb(1), event(1), hb(2), hb(3)] {
            assert_eq!(q.push(&m).unwrap().dropped_heartbeats, 0);
        }
        let outcome = q.push(&event(2)).unwrap();
        assert_eq!((outcome.dropped_heartbeats, outcome.over_cap), (1, false));
        assert_eq!(q.bytes(), cap);
        let left = q.peek_after(None, 10).unwrap();
        assert_eq!(describe(&left), ["ev1", "hb2", "hb3", "ev2"]);

        // Both remaining heartbeats go, and events alone are then over the cap: kept.
        let outcome = q.push(&event(3)).unwrap();
        assert_eq!((outcome.dropped_heartbeats, outcome.over_cap), (2, true));
        let outcome = q.push(&result(9)).unwrap();
        assert_eq!((outcome.dropped_heartbeats, outcome.over_cap), (0, true));
        let left = q.peek_after(None, 10).unwrap();
        assert_eq!(describe(&left), ["ev1", "ev2", "ev3", "res9"]);
        assert!(q.bytes() > cap);

        // A new heartbeat cannot stay while events and results alone are over the cap.
        let outcome = q.push(&hb(4)).unwrap();
        assert_eq!(outcome.dropped_heartbeats, 1);
        assert_eq!(q.len(), 4);

        // Once delivered items are removed, heartbeats fit again.
        for (key, _) in q.peek_after(None, 10).unwrap() {
            q.remove(key).unwrap();
        }
        let outcome = q.push(&hb(5)).unwrap();
        assert_eq!((outcome.dropped_heartbeats, outcome.over_cap), (0, false));
    }

    #[test]
    fn under_any_mix_events_survive_and_heartbeats_leave_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 2_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut events, mut hbs) = (Vec::new(), Vec::new());
        for i in 0..300u64 {
            if rng.gen_bool(0.2) {
                q.push(&event(i)).unwrap();
                events.push(format!("ev{i}"));
            } else {
                q.push(&hb(i)).unwrap();
                hbs.push(format!("hb{i}"));
            }
            let left = describe(&q.peek_after(None, 1000).unwrap());
            let kept_events: Vec<&String> = left.iter().filter(|d| d.starts_with("ev")).collect();
            assert_eq!(kept_events.len(), events.len(), "no event is ever dropped");
            let kept_hbs: Vec<&String> = left.iter().filter(|d| d.starts_with("hb")).collect();
            let suffix: Vec<&String> = hbs[hbs.len() - kept_hbs.len()..].iter().collect();
            assert_eq!(kept_hbs, suffix, "only the oldest heartbeats go");
            assert!(q.bytes() <= 2_000 || kept_hbs.is_empty());
        }
    }

    #[test]
    fn removal_keeps_the_byte_count_exact() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 1 << 20);
        let a = q.push(&event(1)).unwrap().key;
        let b = q.push(&hb(1)).unwrap().key;
        q.remove(a).unwrap();
        q.remove(a).unwrap();
        q.remove(b).unwrap();
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn damaged_items_are_dropped_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 1 << 20);
        q.tree
            .insert(&0u64.to_be_bytes(), &[0xff, 0x00][..])
            .unwrap();
        q.push(&event(7)).unwrap();
        let items = q.peek_after(None, 10).unwrap();
        assert_eq!(describe(&items), ["ev7"]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn delivery_removes_an_item_only_on_its_own_puback() {
        let mut d = Delivery::new();
        // A live QoS 0 heartbeat, two queued items, then the goodbye.
        d.requested(Tag::Plain);
        d.requested(Tag::Queued(10));
        d.requested(Tag::Queued(11));
        d.requested(Tag::Goodbye);
        assert_eq!(d.cursor(), Some(11));
        assert_eq!(d.queued_in_flight(), 2);
        assert_eq!(d.acked(1), None, "nothing written yet");
        d.outgoing(0);
        d.outgoing(5);
        d.outgoing(6);
        d.outgoing(7);
        assert_eq!(d.unwritten(), 0);
        // Acks may come back in any order; each maps to its own item.
        assert_eq!(d.acked(6), Some(Tag::Queued(11)));
        assert_eq!(d.acked(6), None, "a duplicate ack does nothing");
        assert_eq!(d.acked(5), Some(Tag::Queued(10)));
        assert_eq!(d.acked(7), Some(Tag::Goodbye));
        assert_eq!(d.queued_in_flight(), 0);
        // Packet ids are reused.
        d.requested(Tag::Queued(12));
        d.outgoing(5);
        assert_eq!(d.acked(5), Some(Tag::Queued(12)));
    }

    #[test]
    fn a_lost_connection_leaves_unacknowledged_items_in_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), 1 << 20);
        for i in 0..3 {
            q.push(&event(i)).unwrap();
        }
        let mut d = Delivery::new();
        for (key, _) in q.peek_after(d.cursor(), 10).unwrap() {
            d.requested(Tag::Queued(key));
        }
        d.outgoing(1);
        d.outgoing(2);
        d.outgoing(3);
        if let Some(Tag::Queued(key)) = d.acked(1) {
            q.remove(key).unwrap();
        }
        // The connection drops: a new tracker starts over from the oldest unacknowledged.
        let d = Delivery::new();
        let again = q.peek_after(d.cursor(), 10).unwrap();
        assert_eq!(describe(&again), ["ev1", "ev2"]);
    }

    #[test]
    fn an_event_waits_for_its_receipt_not_its_puback() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        // Before the console state arrives, acknowledged events wait.
        assert_eq!(r.acked(10, 1, t0), None);
        assert_eq!(r.console(true), Vec::<u64>::new());
        assert_eq!(r.acked(11, 2, t0), None);
        assert_eq!(r.acked(12, 3, t0), None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.receipted(&[3, 1]), [12, 10]);
        assert_eq!(
            r.receipted(&[3]),
            Vec::<u64>::new(),
            "a second receipt does nothing"
        );
        assert_eq!(r.len(), 1);

        // Overdue only after the timeout; a resend restarts the clock.
        let timeout = Duration::from_secs(60);
        assert!(!r.overdue(t0 + Duration::from_secs(59), timeout));
        assert!(r.overdue(t0 + timeout, timeout));
        r.resent(t0 + timeout);
        assert!(!r.overdue(t0 + timeout + Duration::from_secs(1), timeout));
        assert_eq!(r.receipted(&[2]), [11]);
        assert!(r.is_empty() && !r.overdue(t0 + 10 * timeout, timeout));
    }

    #[test]
    fn a_receipt_that_overtakes_its_puback_still_counts() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        r.console(true);
        assert_eq!(r.receipted(&[7]), Vec::<u64>::new());
        assert_eq!(r.acked(70, 7, t0), Some(70), "removed at once");
        assert_eq!(r.acked(71, 7, t0), None, "the early receipt is used up");
        // The early set is bounded.
        let many: Vec<u64> = (1000..1000 + 2 * MAX_EARLY_RECEIPTS as u64).collect();
        r.receipted(&many);
        assert!(r.early.len() <= MAX_EARLY_RECEIPTS);
    }

    #[test]
    fn a_console_without_receipts_releases_what_waits_and_what_comes() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        assert_eq!(r.acked(10, 1, t0), None);
        assert_eq!(r.acked(11, 2, t0), None);
        let mut released = r.console(false);
        released.sort_unstable();
        assert_eq!(released, [10, 11]);
        assert_eq!(r.acked(12, 3, t0), Some(12));
        assert!(r.is_empty());
    }

    #[test]
    fn events_are_queue_items_for_the_window_and_a_rewind_reads_from_the_start() {
        let mut d = Delivery::new();
        d.requested(Tag::Queued(1));
        d.requested(Tag::Event {
            key: 2,
            event_id: 9,
        });
        assert_eq!((d.cursor(), d.queued_in_flight()), (Some(2), 2));
        d.outgoing(1);
        d.outgoing(2);
        assert_eq!(
            d.acked(2),
            Some(Tag::Event {
                key: 2,
                event_id: 9
            })
        );
        assert_eq!(d.queued_in_flight(), 1);
        d.rewind();
        assert_eq!(d.cursor(), None);
    }
}
