//! Software inventory on the console: applying snapshots and deltas, tracking removed
//! packages, and the queries (host list, CSV, compare, fleet-wide search).
//!
//! sled trees:
//! - `inv_pkgs`: `host \0 name \0 arch \0 source \0 version` → [`PackageRecord`]. Packages are
//!   upserted by that key; `first_seen` is written once, `last_seen` on every scan that has
//!   the package, and a package missing from a completed scan gets `removed_at` (re-adding
//!   it clears that).
//! - `inv_index`: `name \0 version \0 host \0 arch \0 source` for installed packages only:
//!   the fleet-wide search reads one prefix of it.
//! - `inv_hosts`: host → [`HostInventory`] (digest, source, last scan, interval, error).
//!
//! Snapshot chunks are assembled in memory per host; a gap, a chunk of another scan, or a
//! digest that does not match throws the partial snapshot away and asks the agent for a
//! full one (throttled), so the stored inventory is never half of one scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_codec::api::{
    InventoryCompare, InventoryPage, PackageHost, PackageSearch, PackageVersion, PackageView,
    VersionDiff,
};
use edgefleet_codec::{inventory_digest, InventoryChunk, InventoryDelta, Package};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Requests for a full snapshot go to one host at most this often.
const RESYNC_GAP: Duration = Duration::from_secs(30);
/// A host's snapshot holds at most this many packages (a bound on the assembler's memory).
const MAX_PACKAGES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub first_seen: u64,
    pub last_seen: u64,
    pub removed_at: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    pub digest: Option<[u8; 8]>,
    pub source: Option<String>,
    pub last_scan: Option<u64>,
    pub interval_s: Option<u64>,
    pub error: Option<String>,
}

/// What the console answers the agent after inventory traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to say (a chunk in the middle of a snapshot, or a throttled resync).
    None,
    /// The console holds this digest now.
    Ack([u8; 8]),
    /// Send everything.
    Resync,
}

#[derive(Debug)]
struct Partial {
    scan_id: u32,
    next: u16,
    source: String,
    packages: Vec<Package>,
}

#[derive(Debug)]
pub struct Inventory {
    pkgs: sled::Tree,
    index: sled::Tree,
    hosts: sled::Tree,
    partial: Mutex<HashMap<String, Partial>>,
    resync_asked: Mutex<HashMap<String, Instant>>,
}

/// Query options for one host's package list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub q: Option<String>,
    pub include_removed: bool,
    pub page: usize,
    pub per_page: usize,
    /// `name`, `version`, `first_seen`, `last_seen`, `source`; `-` prefix for descending.
    pub sort: String,
}

impl Inventory {
    pub fn open(pkgs: sled::Tree, index: sled::Tree, hosts: sled::Tree) -> Inventory {
        Inventory {
            pkgs,
            index,
            hosts,
            partial: Mutex::new(HashMap::new()),
            resync_asked: Mutex::new(HashMap::new()),
        }
    }

    pub fn host(&self, host: &str) -> Result<HostInventory, StoreError> {
        Ok(self
            .hosts
            .get(host)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    fn put_host(&self, host: &str, h: &HostInventory) -> Result<(), StoreError> {
        self.hosts
            .insert(host, serde_json::to_vec(h).expect("serializes"))?;
        Ok(())
    }

    /// A birth: remembers the scan interval, and asks for a snapshot when the agent has an
    /// acknowledged inventory this console does not (e.g. a restored console database).
    pub fn on_birth(
        &self,
        host: &str,
        agent_digest: Option<[u8; 8]>,
        interval_s: Option<u64>,
    ) -> Result<Reply, StoreError> {
        let mut h = self.host(host)?;
        if interval_s.is_some() && h.interval_s != interval_s {
            h.interval_s = interval_s;
            self.put_host(host, &h)?;
        }
        Ok(match (agent_digest, h.digest) {
            (Some(_), None) => self.resync(host),
            _ => Reply::None,
        })
    }

    /// The agent reported that it cannot collect an inventory.
    pub fn on_error(&self, host: &str, message: &str) -> Result<(), StoreError> {
        let mut h = self.host(host)?;
        h.error = Some(message.to_string());
        self.put_host(host, &h)
    }

    pub fn on_chunk(&self, host: &str, c: &InventoryChunk, now: u64) -> Result<Reply, StoreError> {
        let packages = match c.packages() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(agent.id = %host, error = %e, "a corrupt inventory chunk; asking for a full snapshot");
                self.partial.lock().expect("partial lock").remove(host);
                return Ok(self.resync(host));
            }
        };
        let complete = {
            let mut partial = self.partial.lock().expect("partial lock");
            if c.index == 0 {
                partial.insert(
                    host.to_string(),
                    Partial {
                        scan_id: c.scan_id,
                        next: 0,
                        source: c.source.clone(),
                        packages: Vec::new(),
                    },
                );
            }
            let fits = partial.get(host).is_some_and(|p| {
                p.scan_id == c.scan_id
                    && p.next == c.index
                    && p.source == c.source
                    && p.packages.len() + packages.len() <= MAX_PACKAGES
            });
            if !fits {
                // A lost or out-of-order chunk, or the rest of a snapshot this console
                // (restarted) never saw the start of.
                partial.remove(host);
                drop(partial);
                tracing::info!(agent.id = %host, scan = c.scan_id, index = c.index, "inventory chunk out of sequence; asking for a full snapshot");
                return Ok(self.resync(host));
            }
            let p = partial.get_mut(host).expect("checked above");
            p.packages.extend(packages);
            p.next += 1;
            if !c.is_last {
                return Ok(Reply::None);
            }
            partial.remove(host).expect("checked above")
        };
        let digest = inventory_digest(&complete.packages);
        if Some(digest) != c.digest {
            tracing::warn!(agent.id = %host, "inventory snapshot digest mismatch; asking for a full snapshot");
            return Ok(self.resync(host));
        }
        self.apply(host, &complete.source, &complete.packages, digest, now)?;
        Ok(Reply::Ack(digest))
    }

    pub fn on_delta(&self, host: &str, d: &InventoryDelta, now: u64) -> Result<Reply, StoreError> {
        let h = self.host(host)?;
        if h.digest != Some(d.base_digest) {
            return Ok(self.resync(host));
        }
        let current = self.installed(host)?;
        let next = d.apply(&current);
        if inventory_digest(&next) != d.new_digest {
            tracing::warn!(agent.id = %host, "inventory delta does not give its digest; asking for a full snapshot");
            return Ok(self.resync(host));
        }
        self.apply(host, &d.source, &next, d.new_digest, now)?;
        Ok(Reply::Ack(d.new_digest))
    }

    fn resync(&self, host: &str) -> Reply {
        let mut asked = self.resync_asked.lock().expect("resync lock");
        match asked.get(host) {
            Some(t) if t.elapsed() < RESYNC_GAP => Reply::None,
            _ => {
                asked.insert(host.to_string(), Instant::now());
                Reply::Resync
            }
        }
    }

    /// The installed packages of `host`, as the agent would list them.
    pub fn installed(&self, host: &str) -> Result<Vec<Package>, StoreError> {
        let mut out = Vec::new();
        for item in self.pkgs.scan_prefix(host_prefix(host)) {
            let (k, v) = item?;
            let r: PackageRecord = decode(&v)?;
            if r.removed_at.is_none() {
                if let Some(p) = package_of(&k) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// Makes `packages` the host's installed set: upserts them, marks the rest removed.
    fn apply(
        &self,
        host: &str,
        source: &str,
        packages: &[Package],
        digest: [u8; 8],
        now: u64,
    ) -> Result<(), StoreError> {
        let wanted: BTreeMap<Vec<u8>, &Package> =
            packages.iter().map(|p| (pkg_key(host, p), p)).collect();
        let mut batch = sled::Batch::default();
        let mut index = sled::Batch::default();
        let mut seen = std::collections::HashSet::new();
        for item in self.pkgs.scan_prefix(host_prefix(host)) {
            let (k, v) = item?;
            let mut r: PackageRecord = decode(&v)?;
            let Some(p) = package_of(&k) else { continue };
            if wanted.contains_key(k.as_ref()) {
                seen.insert(k.to_vec());
                r.last_seen = now;
                r.removed_at = None;
                index.insert(index_key(host, &p), &[]);
            } else if r.removed_at.is_none() {
                r.removed_at = Some(now);
                index.remove(index_key(host, &p));
            } else {
                continue;
            }
            batch.insert(k, serde_json::to_vec(&r).expect("serializes"));
        }
        for (k, p) in &wanted {
            if seen.contains(k) {
                continue;
            }
            let r = PackageRecord {
                first_seen: now,
                last_seen: now,
                removed_at: None,
            };
            batch.insert(k.as_slice(), serde_json::to_vec(&r).expect("serializes"));
            index.insert(index_key(host, p), &[]);
        }
        // The host record first: a reader who sees the new packages sees their scan too. If
        // a batch then fails, the digest names rows that are not there, so the next delta
        // fails its digest check and the agent is asked for everything.
        let mut h = self.host(host)?;
        h.digest = Some(digest);
        h.source = Some(source.to_string());
        h.last_scan = Some(now);
        h.error = None;
        self.put_host(host, &h)?;
        self.pkgs.apply_batch(batch)?;
        self.index.apply_batch(index)?;
        Ok(())
    }

    /// Every package record of a host (installed and removed).
    fn records(&self, host: &str) -> Result<Vec<PackageView>, StoreError> {
        let mut out = Vec::new();
        for item in self.pkgs.scan_prefix(host_prefix(host)) {
            let (k, v) = item?;
            let r: PackageRecord = decode(&v)?;
            if let Some(p) = package_of(&k) {
                out.push(PackageView {
                    name: p.name,
                    version: p.version,
                    arch: p.arch,
                    source: p.source,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                    removed: r.removed_at.is_some(),
                    removed_at: r.removed_at,
                });
            }
        }
        Ok(out)
    }

    /// One page of a host's packages. `q` matches name or version, case-insensitively.
    pub fn list(&self, host: &str, q: &ListQuery, now: u64) -> Result<InventoryPage, StoreError> {
        let h = self.host(host)?;
        let all = self.records(host)?;
        // Counted from the same read as the rows, so they agree even while a scan is being
        // applied (the per-host record is written after the packages).
        let removed = all.iter().filter(|p| p.removed).count();
        let installed = all.len() - removed;
        let needle = q.q.as_deref().map(str::to_lowercase);
        let mut rows: Vec<PackageView> = all
            .into_iter()
            .filter(|p| q.include_removed || !p.removed)
            .filter(|p| {
                needle.as_deref().is_none_or(|n| {
                    p.name.to_lowercase().contains(n) || p.version.to_lowercase().contains(n)
                })
            })
            .collect();
        sort_packages(&mut rows, &q.sort);
        let total = rows.len();
        let per_page = q.per_page.max(1);
        let items = rows
            .into_iter()
            .skip((q.page.max(1) - 1) * per_page)
            .take(per_page)
            .collect();
        Ok(InventoryPage {
            items,
            total,
            page: q.page.max(1),
            per_page,
            installed,
            removed,
            stale_scan: stale(&h, now),
            source: h.source,
            last_scan: h.last_scan,
            interval_s: h.interval_s,
            error: h.error,
        })
    }

    /// Every package of a host as CSV (RFC 4180 quoting), sorted by name.
    pub fn csv(&self, host: &str, include_removed: bool) -> Result<String, StoreError> {
        let mut rows = self.records(host)?;
        rows.retain(|p| include_removed || !p.removed);
        sort_packages(&mut rows, "name");
        let mut out = String::from("name,version,arch,source,first_seen,last_seen,removed_at\r\n");
        for p in rows {
            let fields = [
                p.name,
                p.version,
                p.arch,
                p.source,
                ms_rfc3339(p.first_seen),
                ms_rfc3339(p.last_seen),
                p.removed_at.map(ms_rfc3339).unwrap_or_default(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        Ok(out)
    }

    /// Installed packages on `a` only, on `b` only, and with differing versions, by name.
    pub fn compare(&self, a: &str, b: &str) -> Result<InventoryCompare, StoreError> {
        type Side = BTreeMap<(String, String), Vec<PackageView>>;
        let side = |host: &str| -> Result<Side, StoreError> {
            let mut m: Side = BTreeMap::new();
            for p in self.records(host)?.into_iter().filter(|p| !p.removed) {
                m.entry((p.name.clone(), p.arch.clone()))
                    .or_default()
                    .push(p);
            }
            Ok(m)
        };
        let (sa, sb) = (side(a)?, side(b)?);
        let versions = |v: &[PackageView]| {
            let mut vs: Vec<&str> = v.iter().map(|p| p.version.as_str()).collect();
            vs.sort();
            vs.join(", ")
        };
        let mut out = InventoryCompare {
            a: a.to_string(),
            b: b.to_string(),
            only_a: Vec::new(),
            only_b: Vec::new(),
            differs: Vec::new(),
            same: 0,
        };
        for (k, va) in &sa {
            match sb.get(k) {
                None => out.only_a.extend(va.iter().cloned()),
                Some(vb) if versions(va) != versions(vb) => out.differs.push(VersionDiff {
                    name: k.0.clone(),
                    arch: k.1.clone(),
                    a: versions(va),
                    b: versions(vb),
                }),
                Some(_) => out.same += 1,
            }
        }
        for (k, vb) in &sb {
            if !sa.contains_key(k) {
                out.only_b.extend(vb.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Every host with package `name` installed, grouped by version, most hosts first.
    /// One prefix read of the index; host names are left for the caller to fill in.
    pub fn search(&self, name: &str) -> Result<PackageSearch, StoreError> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let mut by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in self.index.scan_prefix(&prefix) {
            let (k, _) = item?;
            let mut parts = k[prefix.len()..].split(|b| *b == 0);
            let (Some(version), Some(host)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (version, host) = (
                String::from_utf8_lossy(version).into_owned(),
                String::from_utf8_lossy(host).into_owned(),
            );
            let hosts = by_version.entry(version).or_default();
            // Two architectures of one version on one host count once.
            if hosts.last() != Some(&host) {
                hosts.push(host);
            }
        }
        let mut distinct: Vec<&String> = by_version.values().flatten().collect();
        distinct.sort();
        distinct.dedup();
        let hosts = distinct.len();
        let mut versions: Vec<PackageVersion> = by_version
            .into_iter()
            .map(|(version, ids)| PackageVersion {
                version,
                count: ids.len(),
                hosts: ids
                    .into_iter()
                    .map(|id| PackageHost { id, hostname: None })
                    .collect(),
            })
            .collect();
        versions.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(PackageSearch {
            name: name.to_string(),
            hosts,
            versions,
        })
    }

    /// Forgets a host's inventory (a deleted host).
    pub fn forget(&self, host: &str) -> Result<(), StoreError> {
        for p in self.installed(host)? {
            self.index.remove(index_key(host, &p))?;
        }
        for item in self.pkgs.scan_prefix(host_prefix(host)) {
            let (k, _) = item?;
            self.pkgs.remove(k)?;
        }
        self.hosts.remove(host)?;
        Ok(())
    }
}

/// The scan is older than twice the host's interval (6 h when the agent did not say).
pub fn stale(h: &HostInventory, now: u64) -> bool {
    let interval = h.interval_s.unwrap_or(6 * 3600) * 1000;
    h.last_scan
        .is_some_and(|t| now.saturating_sub(t) > interval.saturating_mul(2))
}

fn sort_packages(rows: &mut [PackageView], sort: &str) {
    let (desc, field) = match sort.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, sort),
    };
    rows.sort_by(|a, b| {
        let ord = match field {
            "version" => a.version.cmp(&b.version),
            "first_seen" => a.first_seen.cmp(&b.first_seen),
            "last_seen" => a.last_seen.cmp(&b.last_seen),
            "source" => a.source.cmp(&b.source),
            _ => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.name.cmp(&b.name))
        .then_with(|| a.arch.cmp(&b.arch))
        .then_with(|| a.version.cmp(&b.version));
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
}

pub const SORTS: &[&str] = &["name", "version", "first_seen", "last_seen", "source"];

fn host_prefix(host: &str) -> Vec<u8> {
    let mut k = host.as_bytes().to_vec();
    k.push(0);
    k
}

fn pkg_key(host: &str, p: &Package) -> Vec<u8> {
    [host, &p.name, &p.arch, &p.source, &p.version]
        .join("\0")
        .into_bytes()
}

fn index_key(host: &str, p: &Package) -> Vec<u8> {
    [&p.name, &p.version, host, &p.arch, &p.source]
        .join("\0")
        .into_bytes()
}

fn package_of(key: &[u8]) -> Option<Package> {
    let text = std::str::from_utf8(key).ok()?;
    let mut f = text.split('\0');
    let (_host, name, arch, source, version) =
        (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    Some(Package {
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        source: source.into(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
        tree: "inv_pkgs",
        source,
    })
}

pub fn ms_rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// RFC 4180: quote a field with a comma, quote, CR or LF, doubling quotes inside. A
/// leading `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-', '@']) {
        format!("'{f}")
    } else {
        f.to_string()
    };
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: "dpkg".into(),
        }
    }

    fn inv() -> (tempfile::TempDir, Inventory) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let inv = Inventory::open(
            db.open_tree("p").unwrap(),
            db.open_tree("i").unwrap(),
            db.open_tree("h").unwrap(),
        );
        (dir, inv)
    }

    fn snapshot(inv: &Inventory, host: &str, pkgs: &[Package], scan: u32, now: u64) -> Reply {
        let mut last = Reply::None;
        for c in InventoryChunk::split(scan, "dpkg", pkgs) {
            last = inv.on_chunk(host, &c, now).unwrap();
        }
        last
    }

    #[test]
    fn removed_packages_keep_first_seen_and_come_back() {
        let (_d, inv) = inv();
        let v1 = vec![pkg("bash", "5.2"), pkg("curl", "7.88")];
        assert_eq!(
            snapshot(&inv, "h1", &v1, 1, 1000),
            Reply::Ack(inventory_digest(&v1))
        );
        let v2 = vec![pkg("bash", "5.2")];
        let d = InventoryDelta::between(&v1, &v2, "dpkg").unwrap();
        assert_eq!(
            inv.on_delta("h1", &d, 2000).unwrap(),
            Reply::Ack(d.new_digest)
        );
        let q = ListQuery {
            include_removed: true,
            page: 1,
            per_page: 50,
            sort: "name".into(),
            ..Default::default()
        };
        let page = inv.list("h1", &q, 2000).unwrap();
        let curl = page.items.iter().find(|p| p.name == "curl").unwrap();
        assert!(curl.removed && curl.removed_at == Some(2000) && curl.first_seen == 1000);
        assert_eq!((page.installed, page.removed), (1, 1));
        let d = InventoryDelta::between(&v2, &v1, "dpkg").unwrap();
        inv.on_delta("h1", &d, 3000).unwrap();
        let page = inv.list("h1", &q, 3000).unwrap();
        let curl = page.items.iter().find(|p| p.name == "curl").unwrap();
        assert!(!curl.removed && curl.first_seen == 1000 && curl.last_seen == 3000);
    }

    #[test]
    fn gaps_foreign_chunks_bad_digests_and_unknown_bases_resync_without_damage() {
        let (_d, inv) = inv();
        let pkgs: Vec<Package> = (0..1200).map(|i| pkg(&format!("p{i:04}"), "1")).collect();
        let chunks = InventoryChunk::split(4, "dpkg", &pkgs);
        // A lost middle chunk.
        assert_eq!(inv.on_chunk("h", &chunks[0], 1).unwrap(), Reply::None);
        assert_eq!(inv.on_chunk("h", &chunks[2], 1).unwrap(), Reply::Resync);
        assert!(
            inv.installed("h").unwrap().is_empty(),
            "nothing half-applied"
        );
        // The rest of a snapshot whose start this console never saw: throttled resync.
        assert_eq!(inv.on_chunk("h", &chunks[1], 1).unwrap(), Reply::None);
        // A corrupt body.
        let mut bad = chunks[0].clone();
        bad.packages_z[3] ^= 0xff;
        inv.resync_asked.lock().unwrap().clear();
        assert_eq!(inv.on_chunk("h", &bad, 1).unwrap(), Reply::Resync);
        // A wrong digest on the last chunk.
        inv.resync_asked.lock().unwrap().clear();
        let mut tampered = InventoryChunk::split(5, "dpkg", &pkgs[..10]);
        tampered[0].digest = Some([0; 8]);
        assert_eq!(inv.on_chunk("h", &tampered[0], 1).unwrap(), Reply::Resync);
        // A delta against a base the console does not hold.
        inv.resync_asked.lock().unwrap().clear();
        let d = InventoryDelta::between(&pkgs[..5], &pkgs[..6], "dpkg").unwrap();
        assert_eq!(inv.on_delta("h", &d, 1).unwrap(), Reply::Resync);
        assert!(inv.installed("h").unwrap().is_empty());
        // And a clean snapshot afterwards applies.
        assert_eq!(
            snapshot(&inv, "h", &pkgs, 6, 2),
            Reply::Ack(inventory_digest(&pkgs))
        );
        assert_eq!(inv.installed("h").unwrap().len(), 1200);
    }

    #[test]
    fn csv_quotes_commas_quotes_and_formula_starts() {
        assert_eq!(csv_field("1.2,3"), "\"1.2,3\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("plain"), "plain");
    }
}
