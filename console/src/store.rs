//! The sled store: the console's source of truth.
//!
//! Trees:
//! - `hosts`: agent id → [`HostRecord`] (JSON).
//! - `transitions`: agent id ++ at_ms (BE) ++ counter → [`StatusChange`] (JSON).
//! - `raw`, `r1m`, `r15m`: agent id ++ bucket start ms (BE) → [`Sample`] (fixed 26 bytes).
//! - `events`: agent id ++ event id (BE) → [`EventRecord`] (JSON); the key makes redelivery
//!   idempotent.
//! - `results`: agent id ++ at_ms (BE) ++ command id → [`ResultRecord`] (JSON); idempotent
//!   on redelivery too.
//! - `api_keys`: SHA-256 of an API key → `auth::KeyRecord` (JSON).
//! - `tokens`: token id → `enrollment::TokenRecord` (JSON).
//! - `audit`: sequence number (BE) → `api::AuditEntry` (JSON), hash-chained (`audit`).
//!
//! **Flush policy.** sled writes to its log immediately and fsyncs every
//! [`FLUSH_EVERY_MS`]; a power loss can lose the writes of that last window (host updates,
//! samples, transitions), never corrupt older data. Agents re-send birth and status on the
//! next connect, so presence heals itself; lost samples are lost.
//!
//! **No batches.** Rounds and retention write key by key, never with `sled::Batch`. In sled
//! 0.34 every `apply_batch` rolls the log's IO buffer twice (`PageCache::pin_log`), even for
//! an empty batch, and the memory and log space that costs is never given back: an
//! ingest round of five small batches (most of them empty) grew the console's RSS and its
//! sled files without bound, about 1 KB per batch (BENCHMARKS.md, "Soak"; reproduce with
//! `cargo run --release -p edgefleet-console --example sled_batches`). No write here needs
//! several keys to land together: each key is a record of its own, a round's events are
//! receipted only after the flush that follows them, and a crash in between leaves keys
//! that an agent's resend writes again. The rare multi-key writers elsewhere (alert changes,
//! an inventory scan, webhook outbox entries) keep their batches.
//!
//! **Disk space.** Every store carries a [`crate::space::Guard`]: while the data dir's
//! filesystem is below its reserve, [`Store::write_round`] refuses with
//! [`StoreError::LowSpace`] before sled is touched, and the other writers check
//! [`Store::refusal`] first (fleet ingest, the API, the alert and rollout ticks).

use std::path::Path;

use edgefleet_codec::api::StatusChange;
use serde::{Deserialize, Serialize};

use crate::presence::HostRecord;

pub const FLUSH_EVERY_MS: u64 = 500;
/// sled's page cache. sled's default (1 GiB) is far too much for an edge-side console.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// An agent event as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: u64,
    pub at: u64,
    pub level: String,
    pub kind: String,
    pub message: String,
}

/// A command result as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Hex of the 16-byte command id.
    pub command_id: String,
    pub outcome: String,
    pub message: String,
    pub at: u64,
}

/// What one ingest round writes.
#[derive(Debug, Default)]
pub struct Round<'a> {
    /// Host records written whole (JSON).
    pub hosts: Vec<&'a HostRecord>,
    /// Host records of which only the fields a heartbeat or other routine telemetry
    /// changes moved ([`Hot`]): written as a few packed bytes, not the whole record.
    pub hot: Vec<&'a HostRecord>,
    pub transitions: Vec<(String, StatusChange)>,
    pub samples: Vec<(String, u64, Sample)>,
    pub events: Vec<(String, EventRecord)>,
    pub results: Vec<(String, ResultRecord)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled")]
    Sled(#[from] sled::Error),
    /// The free-space guard refuses writes; nothing was written.
    #[error("{0}")]
    LowSpace(crate::space::Refusal),
    #[error("corrupt record in {tree}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Metric tiers and their bucket widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Raw,
    OneMinute,
    FifteenMinutes,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::OneMinute, Tier::FifteenMinutes];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::OneMinute => "1m",
            Tier::FifteenMinutes => "15m",
        }
    }

    /// Bucket width in ms (raw samples keep their own time).
    pub fn bucket_ms(self) -> u64 {
        match self {
            Tier::Raw => 1,
            Tier::OneMinute => 60_000,
            Tier::FifteenMinutes => 900_000,
        }
    }
}

/// A metric sample or rollup: sums and a count, so rollups merge exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sample {
    pub count: u32,
    pub cpu_sum: u32,
    pub mem_sum: u32,
    pub disk_sum: u32,
    pub load_sum: u32,
    pub rx_sum: u64,
    pub tx_sum: u64,
}

impl Sample {
    pub fn one(v: &edgefleet_codec::Vitals) -> Sample {
        Sample {
            count: 1,
            cpu_sum: v.cpu_pct.into(),
            mem_sum: v.mem_pct.into(),
            disk_sum: v.disk_pct.into(),
            load_sum: v.load_centi.into(),
            rx_sum: v.rx_bps.into(),
            tx_sum: v.tx_bps.into(),
        }
    }

    fn merge(&mut self, other: &Sample) {
        self.count += other.count;
        self.cpu_sum += other.cpu_sum;
        self.mem_sum += other.mem_sum;
        self.disk_sum += other.disk_sum;
        self.load_sum += other.load_sum;
        self.rx_sum += other.rx_sum;
        self.tx_sum += other.tx_sum;
    }

    /// 32 bytes: count and four u32 sums, then rx and tx sums as 48-bit integers (a day of
    /// 1-minute samples at 4 Gbit/s still fits).
    fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&self.count.to_be_bytes());
        b[4..8].copy_from_slice(&self.cpu_sum.to_be_bytes());
        b[8..12].copy_from_slice(&self.mem_sum.to_be_bytes());
        b[12..16].copy_from_slice(&self.disk_sum.to_be_bytes());
        b[16..20].copy_from_slice(&self.load_sum.to_be_bytes());
        b[20..26].copy_from_slice(&self.rx_sum.to_be_bytes()[2..]);
        b[26..32].copy_from_slice(&self.tx_sum.to_be_bytes()[2..]);
        b
    }

    /// Reads the 32-byte form, and the older 26-byte one (no tx: read as 0).
    fn from_bytes(b: &[u8]) -> Option<Sample> {
        if b.len() != 26 && b.len() != 32 {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u48_at = |i: usize| {
            let mut v = [0u8; 8];
            v[2..].copy_from_slice(&b[i..i + 6]);
            u64::from_be_bytes(v)
        };
        Some(Sample {
            count: u32_at(0),
            cpu_sum: u32_at(4),
            mem_sum: u32_at(8),
            disk_sum: u32_at(12),
            load_sum: u32_at(16),
            rx_sum: u48_at(20),
            tx_sum: if b.len() == 32 { u48_at(26) } else { 0 },
        })
    }

    /// The mean of a 48-bit rate sum.
    pub fn avg_rate(sum: u64, count: u32) -> f32 {
        if count == 0 {
            0.0
        } else {
            (sum as f64 / f64::from(count)) as f32
        }
    }

    pub fn avg(sum: u32, count: u32) -> f32 {
        if count == 0 {
            0.0
        } else {
            sum as f32 / count as f32
        }
    }
}

/// A handle to the open database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    hosts: sled::Tree,
    /// [`Hot`] per host id, newer than the JSON record in `hosts` when its `last_seq` is.
    hot: sled::Tree,
    transitions: sled::Tree,
    events: sled::Tree,
    results: sled::Tree,
    tiers: [sled::Tree; 3],
    health: std::sync::Arc<std::sync::Mutex<Option<WriteFailure>>>,
    guard: std::sync::Arc<crate::space::Guard>,
}

/// The fields of a host record that routine telemetry (heartbeats, events, results)
/// changes, stored apart in a few packed bytes. Writing the whole JSON record for every
/// heartbeat was half of the ingest cost (BENCHMARKS.md, "Console ingest ceiling").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hot {
    pub last_seen: Option<u64>,
    pub last_seq: (u64, u64),
    pub vitals: Option<edgefleet_codec::Vitals>,
    /// The replay window at `last_seq` ([`HostRecord::seen`]).
    #[serde(default = "crate::presence::all_seen")]
    pub seen: u64,
}

impl Hot {
    pub fn of(host: &HostRecord) -> Hot {
        Hot {
            last_seen: host.last_seen,
            last_seq: host.last_seq,
            vitals: host.vitals,
            seen: host.seen,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_cbor::ser::to_vec_packed(self).expect("hot host state always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Hot> {
        serde_cbor::from_slice(bytes).ok()
    }

    /// Applies this state if it is at least as new as the record's own: a whole record
    /// written after it (a birth, a status change) already holds newer values.
    pub fn apply(self, host: &mut HostRecord) {
        if self.last_seq >= host.last_seq {
            host.last_seen = self.last_seen.max(host.last_seen);
            // Same newest seq: either may hold older ones the other has not (a late birth
            // accepted into the window is written with the whole record).
            host.seen = if self.last_seq == host.last_seq {
                host.seen | self.seen
            } else {
                self.seen
            };
            host.last_seq = self.last_seq;
            host.vitals = self.vitals.or(host.vitals);
        }
    }
}

/// Store writes are failing: since when (unix ms) and the latest error, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub since: u64,
    pub error: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// sled merge operator of the rollup tiers: folds one sample into a bucket. A bucket
/// that cannot be read starts again from the new sample rather than failing the write.
fn merge_samples(_key: &[u8], old: Option<&[u8]>, new: &[u8]) -> Option<Vec<u8>> {
    let mut merged = old.and_then(Sample::from_bytes).unwrap_or_default();
    if let Some(sample) = Sample::from_bytes(new) {
        merged.merge(&sample);
    }
    Some(merged.to_bytes().to_vec())
}

fn key(id: &str, at_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 8);
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

impl Store {
    /// Opens the database with the free-space guard off.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, crate::space::Guard::new(path, 0))
    }

    /// Opens the database; `guard` decides when writes are refused for lack of space.
    pub fn open_with(path: &Path, guard: crate::space::Guard) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()?;
        let tiers = [
            db.open_tree("raw")?,
            db.open_tree("r1m")?,
            db.open_tree("r15m")?,
        ];
        for rollup in &tiers[1..] {
            rollup.set_merge_operator(merge_samples);
        }
        Ok(Store {
            hosts: db.open_tree("hosts")?,
            hot: db.open_tree("hosts_hot")?,
            transitions: db.open_tree("transitions")?,
            events: db.open_tree("events")?,
            results: db.open_tree("results")?,
            tiers,
            db,
            health: std::sync::Arc::default(),
            guard: std::sync::Arc::new(guard),
        })
    }

    /// The free-space guard (sampled by the console's run loop).
    pub fn guard(&self) -> &crate::space::Guard {
        &self.guard
    }

    /// `Some` while the free-space guard refuses writes. One atomic load.
    pub fn refusal(&self) -> Option<crate::space::Refusal> {
        self.guard.refusal()
    }

    /// Whether the free-space guard refuses writes. One atomic load.
    pub fn is_refusing(&self) -> bool {
        self.guard.is_refusing()
    }

    /// `Some` while ingest writes fail (a full disk, an I/O error): set by a failed
    /// [`Store::write_round`] and cleared by the next one that succeeds.
    pub fn write_failure(&self) -> Option<WriteFailure> {
        self.health.lock().expect("not poisoned").clone()
    }

    /// Every host record, with its newest routine telemetry ([`Hot`]) applied.
    pub fn load_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.hosts.iter() {
            let (k, v) = item?;
            let mut host: HostRecord =
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    tree: "hosts",
                    source,
                })?;
            if let Some(hot) = self.hot.get(&k)? {
                // A record too damaged to read loses only its routine fields, which the
                // host's next heartbeat sets again.
                match Hot::from_bytes(&hot) {
                    Some(hot) => hot.apply(&mut host),
                    None => tracing::warn!(host.id = %host.id, "unreadable hot host state ignored"),
                }
            }
            out.push(host);
        }
        Ok(out)
    }

    /// Writes what one ingest round changed (key by key, see the module docs) and keeps
    /// [`Store::write_failure`] current.
    /// Refused with [`StoreError::LowSpace`] while the free-space guard says so (a refusal
    /// is not a failure of the store: it leaves `write_failure` alone).
    pub fn write_round(&self, round: &Round<'_>) -> Result<(), StoreError> {
        if let Some(refusal) = self.refusal() {
            return Err(StoreError::LowSpace(refusal));
        }
        self.write_admitted(round)
    }

    /// [`Store::write_round`] for a caller that asked the guard itself when its round began
    /// (ingest, the sweep): the guard may have flipped since, and the reserve is there to
    /// absorb that round rather than lose messages the broker has already acknowledged.
    pub fn write_admitted(&self, round: &Round<'_>) -> Result<(), StoreError> {
        let result = self.write_round_keys(round);
        let mut health = self.health.lock().expect("not poisoned");
        match &result {
            Ok(()) => *health = None,
            Err(e) => {
                let error = match e {
                    StoreError::Sled(inner) => format!("{e}: {inner}"),
                    other => other.to_string(),
                };
                let since = health.as_ref().map_or_else(now_ms, |f| f.since);
                *health = Some(WriteFailure { since, error });
            }
        }
        result
    }

    /// Key by key, never `sled::Batch`: see the module docs ("No batches").
    fn write_round_keys(&self, round: &Round<'_>) -> Result<(), StoreError> {
        let Round {
            hosts,
            hot,
            transitions,
            samples,
            events,
            results,
        } = round;
        for (id, event) in events {
            self.events.insert(
                key(id, event.event_id),
                serde_json::to_vec(event).expect("events serialize"),
            )?;
        }
        for (id, result) in results {
            // The agent's own time and the command id: a result delivered twice (resent
            // until PUBACK, or again for a redelivered command) lands on the same key.
            let mut k = key(id, result.at);
            k.extend_from_slice(result.command_id.as_bytes());
            self.results
                .insert(k, serde_json::to_vec(result).expect("results serialize"))?;
        }
        for host in hosts {
            let json = serde_json::to_vec(host).expect("host records always serialize");
            self.hosts.insert(host.id.as_bytes(), json)?;
        }
        for host in hot {
            self.hot
                .insert(host.id.as_bytes(), Hot::of(host).to_bytes())?;
        }
        for (id, change) in transitions {
            // A per-database counter keeps two transitions in the same ms apart.
            let mut k = key(id, change.at);
            k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            self.transitions.insert(
                k,
                serde_json::to_vec(change).expect("transitions always serialize"),
            )?;
        }
        if !transitions.is_empty() || !events.is_empty() {
            // A status change is what operators and alerts act on: it must survive a
            // crash right after it (a clean stop lost to kill -9 came back as a timeout
            // and fired an alert). Events are receipted to their agents once written,
            // and an agent forgets a receipted event, so it must be on disk first. Both
            // are rare next to heartbeats, so the flush is cheap; heartbeats and samples
            // keep the periodic flush.
            self.db.flush()?;
        }
        for (id, at, sample) in samples {
            self.tiers[0].insert(key(id, *at), &sample.to_bytes())?;
            for tier in [Tier::OneMinute, Tier::FifteenMinutes] {
                let bucket = at - at % tier.bucket_ms();
                let tree = &self.tiers[tier as usize];
                // A blind merge (see `merge_samples`): no read before the write.
                tree.merge(key(id, bucket), sample.to_bytes())?;
            }
        }
        Ok(())
    }

    /// Newest first, at most `limit`.
    pub fn transitions(&self, id: &str, limit: usize) -> Result<Vec<StatusChange>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .transitions
            .scan_prefix(id.as_bytes())
            .rev()
            .take(limit)
        {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    tree: "transitions",
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Events of one agent, oldest first, after `after_id`.
    pub fn events(
        &self,
        id: &str,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .events
            .range(key(id, after_id.saturating_add(1))..key(id, u64::MAX))
            .take(limit)
        {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    tree: "events",
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Command results of one agent in the order they happened.
    pub fn results(&self, id: &str, limit: usize) -> Result<Vec<ResultRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.results.scan_prefix(id.as_bytes()).take(limit) {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    tree: "results",
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Samples of one tier in `[from, to)`, oldest first.
    pub fn samples(
        &self,
        id: &str,
        tier: Tier,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Sample)>, StoreError> {
        let tree = &self.tiers[tier as usize];
        let mut out = Vec::new();
        for item in tree.range(key(id, from)..key(id, to)) {
            let (k, v) = item?;
            let at = k
                .get(id.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            if let (Some(at), Some(s)) = (at, Sample::from_bytes(&v)) {
                out.push((at, s));
            }
        }
        Ok(out)
    }

    /// Deletes samples older than `cutoff_ms` in `tier` for `id`. Returns how many.
    pub fn expire(&self, id: &str, tier: Tier, cutoff_ms: u64) -> Result<usize, StoreError> {
        let tree = &self.tiers[tier as usize];
        let mut n = 0;
        for item in tree.range(key(id, 0)..key(id, cutoff_ms)) {
            let (k, _) = item?;
            tree.remove(k)?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes one agent's events, command results and status changes from before
    /// `cutoff_ms` (`retention.history`). Returns how many. Results and status changes are
    /// keyed by time. Events are keyed by their id, which the agent counts up as time goes
    /// on, so the pass stops at the first event from `cutoff_ms` or later: events behind
    /// one from a clock that ran ahead wait until that one expires.
    pub fn expire_history(&self, id: &str, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for tree in [&self.results, &self.transitions] {
            for item in tree.range(key(id, 0)..key(id, cutoff_ms)) {
                tree.remove(item?.0)?;
                n += 1;
            }
        }
        #[derive(Deserialize)]
        struct At {
            at: u64,
        }
        for item in self.events.range(key(id, 0)..=key(id, u64::MAX)) {
            let (k, v) = item?;
            let event: At = serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                tree: "events",
                source,
            })?;
            if event.at >= cutoff_ms {
                break;
            }
            self.events.remove(k)?;
            n += 1;
        }
        Ok(n)
    }

    /// The tree of API key hashes (see `auth`).
    pub fn api_keys_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("api_keys")?)
    }

    /// A tree owned by another module (`tokens`, `audit`).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals(cpu: u8) -> edgefleet_codec::Vitals {
        edgefleet_codec::Vitals {
            cpu_pct: cpu,
            mem_pct: 50,
            disk_pct: 10,
            ..Default::default()
        }
    }

    /// Reopening right after a drop can find sled's flusher thread still holding the file
    /// lock (the agent's queue test failed on it once in CI), so a held lock is retried.
    fn reopen(path: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(path) {
                Ok(store) => return store,
                Err(StoreError::Sled(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
    }

    #[test]
    fn routine_fields_written_apart_come_back_on_reopen_and_never_undo_a_newer_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut host = HostRecord::new("abcdefghijklmnop", &[7; 32], 1_000);
        host.hostname = Some("pump-7".into());
        host.last_seq = (1, 0);
        {
            let store = Store::open(&path).unwrap();
            let write = |hosts: Vec<&HostRecord>, hot: Vec<&HostRecord>| {
                store
                    .write_round(&Round {
                        hosts,
                        hot,
                        ..Round::default()
                    })
                    .unwrap()
            };
            write(vec![&host], vec![]);
            // Heartbeats: only the hot state is written.
            host.last_seq = (1, 9);
            host.seen = 0b1011;
            host.last_seen = Some(5_000);
            host.vitals = Some(vitals(42));
            write(vec![], vec![&host]);
            store.flush().unwrap();
        }
        let store = reopen(&path);
        let loaded = store.load_hosts().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].last_seq, (1, 9));
        assert_eq!(loaded[0].seen, 0b1011, "the replay window");
        assert_eq!(loaded[0].last_seen, Some(5_000));
        assert_eq!(loaded[0].vitals, Some(vitals(42)));
        assert_eq!(loaded[0].hostname.as_deref(), Some("pump-7"));

        // A birth writes the whole record with a newer sequence: the older hot state,
        // still in its tree, must not roll it back.
        host.last_seq = (2, 0);
        host.last_seen = Some(4_000);
        host.vitals = Some(vitals(7));
        store
            .write_round(&Round {
                hosts: vec![&host],
                ..Round::default()
            })
            .unwrap();
        let loaded = store.load_hosts().unwrap();
        assert_eq!(loaded[0].last_seq, (2, 0));
        assert_eq!(loaded[0].vitals, Some(vitals(7)));
        assert_eq!(loaded[0].last_seen, Some(4_000));

        // Unreadable hot bytes cost only the routine fields, never the record.
        store
            .hot
            .insert(host.id.as_bytes(), &b"\xff\x00"[..])
            .unwrap();
        assert_eq!(store.load_hosts().unwrap()[0].last_seq, (2, 0));
    }

    #[test]
    fn samples_roll_up_exactly_and_expire_by_tier() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = "abcdefghijklmnop";
        let t = 1_795_000_123_456u64;
        let base = t - t % 900_000;
        let samples: Vec<(String, u64, Sample)> = (0..30)
            .map(|i| {
                (
                    id.to_string(),
                    base + i * 30_000,
                    Sample::one(&vitals(i as u8)),
                )
            })
            .collect();
        store
            .write_round(&Round {
                samples,
                ..Round::default()
            })
            .unwrap();
        assert_eq!(store.samples(id, Tier::Raw, 0, u64::MAX).unwrap().len(), 30);
        let minutes = store.samples(id, Tier::OneMinute, 0, u64::MAX).unwrap();
        assert_eq!(minutes.len(), 15);
        assert_eq!(minutes[0].1.count, 2);
        assert_eq!(minutes[0].1.cpu_sum, 1, "cpu 0 + cpu 1");
        let quarter = store
            .samples(id, Tier::FifteenMinutes, 0, u64::MAX)
            .unwrap();
        assert_eq!(quarter.len(), 1);
        assert_eq!(quarter[0].1.count, 30);
        assert_eq!(quarter[0].1.cpu_sum, (0..30).sum::<u32>());

        let cutoff = base + 10 * 30_000;
        assert_eq!(store.expire(id, Tier::Raw, cutoff).unwrap(), 10);
        let left = store.samples(id, Tier::Raw, 0, u64::MAX).unwrap();
        assert_eq!(left.len(), 20);
        assert!(left.iter().all(|(at, _)| *at >= cutoff));
        assert_eq!(
            store
                .samples(id, Tier::OneMinute, 0, u64::MAX)
                .unwrap()
                .len(),
            15,
            "other tiers untouched"
        );
        // Another agent's samples are never touched by this agent's expiry.
        assert!(store
            .samples("bbbbbbbbbbbbbbbb", Tier::Raw, 0, u64::MAX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_result_delivered_twice_is_stored_once_and_writes_clear_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = "abcdefghijklmnop";
        let result = |command: &str, at| ResultRecord {
            command_id: command.into(),
            outcome: "succeeded".into(),
            message: "heartbeat sent".into(),
            at,
        };
        let round = |r: ResultRecord| Round {
            results: vec![(id.to_string(), r)],
            ..Round::default()
        };
        store.write_round(&round(result("aa", 5))).unwrap();
        store.write_round(&round(result("aa", 5))).unwrap();
        store.write_round(&round(result("bb", 5))).unwrap();
        let stored = store.results(id, 10).unwrap();
        assert_eq!(stored, vec![result("aa", 5), result("bb", 5)]);
        assert_eq!(store.write_failure(), None);
    }

    #[test]
    fn history_retention_removes_old_events_results_and_changes_of_one_agent_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (a, b) = ("abcdefghijklmnop", "bbcdefghijklmnop");
        let event = |event_id, at| EventRecord {
            event_id,
            at,
            level: "info".into(),
            kind: "service".into(),
            message: format!("event {event_id}"),
        };
        let result = |at| ResultRecord {
            command_id: format!("{at:032x}"),
            outcome: "succeeded".into(),
            message: String::new(),
            at,
        };
        let change = |at| StatusChange {
            status: edgefleet_codec::api::AgentStatus::Online,
            cause: edgefleet_codec::api::Cause::Birth,
            at,
        };
        for id in [a, b] {
            // Event 3's clock ran ahead: the pass stops there, so event 4 waits.
            let round = Round {
                events: [(1, 1_000), (2, 2_000), (3, 9_000), (4, 1_500), (5, 4_000)]
                    .map(|(n, at)| (id.to_string(), event(n, at)))
                    .to_vec(),
                results: [1_000, 2_000, 4_000]
                    .map(|at| (id.to_string(), result(at)))
                    .to_vec(),
                transitions: [1_000, 2_999, 3_000]
                    .map(|at| (id.to_string(), change(at)))
                    .to_vec(),
                ..Round::default()
            };
            store.write_round(&round).unwrap();
        }
        assert_eq!(store.expire_history(a, 3_000).unwrap(), 2 + 2 + 2);
        let events: Vec<u64> = store
            .events(a, 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(events, [3, 4, 5]);
        assert_eq!(store.results(a, 10).unwrap(), vec![result(4_000)]);
        assert_eq!(store.transitions(a, 10).unwrap(), vec![change(3_000)]);
        // The other agent keeps everything.
        assert_eq!(store.events(b, 0, 10).unwrap().len(), 5);
        assert_eq!(store.results(b, 10).unwrap().len(), 3);
        assert_eq!(store.transitions(b, 10).unwrap().len(), 3);
        assert_eq!(store.expire_history(a, 3_000).unwrap(), 0);
    }

    #[test]
    fn sample_bytes_round_trip() {
        let s = Sample {
            count: 7,
            cpu_sum: 700,
            mem_sum: 1,
            disk_sum: 2,
            load_sum: 3,
            rx_sum: 1 << 40,
            tx_sum: 12345,
        };
        assert_eq!(Sample::from_bytes(&s.to_bytes()), Some(s));
        assert_eq!(Sample::from_bytes(&[1, 2, 3]), None);
        // Records written before tx was stored still read, with tx 0.
        let old = Sample::from_bytes(&s.to_bytes()[..26]).unwrap();
        assert_eq!((old.rx_sum, old.tx_sum), (1 << 40, 0));
    }
}
