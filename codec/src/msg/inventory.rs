//! Software inventory: full snapshots in chunks, deltas against an acknowledged digest, and
//! the console's acknowledgement (or request for a full snapshot).
//!
//! A snapshot chunk carries its packages as zlib-compressed packed CBOR: package lists are
//! highly repetitive (architectures, sources, version stems), so 2,000 packages fit in
//! about a quarter of their plain size. Deltas are small and stay plain.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;

/// At most this many packages per snapshot chunk.
pub const CHUNK_PACKAGES: usize = 500;
/// A chunk's packages never inflate beyond this (a guard against compression bombs).
pub const MAX_CHUNK_INFLATED: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Where it came from: the collector (`dpkg`, `rpm`, `pacman`, `apk`, `snap`, ...).
    pub source: String,
}

impl Package {
    /// What identifies "the same package" across versions: a version change of this key is
    /// a `changed` entry in a delta.
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.name, &self.arch, &self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChunk {
    pub bd_seq: u64,
    pub seq: u64,
    /// Which snapshot the chunk belongs to (chunks of different scans never mix).
    pub scan_id: u32,
    pub index: u16,
    pub is_last: bool,
    /// The collector that produced the scan (`dpkg`, ...).
    pub source: String,
    /// The digest of the whole snapshot, on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub digest: Option<[u8; 8]>,
    /// zlib of the packed CBOR of this chunk's `Vec<Package>`; see [`InventoryChunk::packages`].
    #[serde(with = "serde_bytes")]
    pub packages_z: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDelta {
    pub bd_seq: u64,
    pub seq: u64,
    /// The digest the console must hold for this delta to apply.
    #[serde(with = "serde_bytes")]
    pub base_digest: [u8; 8],
    /// The digest after applying it; the console checks it and acknowledges it.
    #[serde(with = "serde_bytes")]
    pub new_digest: [u8; 8],
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    /// Packages whose key ([`Package::key`]) stayed and whose version changed (new version).
    pub changed: Vec<Package>,
    pub source: String,
}

/// The console's answer to inventory traffic, signed and scoped to the agent: `digest` is
/// the inventory it now holds; `None` asks for a full snapshot (it has no usable base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryAck {
    /// Unix seconds; the agent ignores a request for a snapshot older than ten minutes, so a
    /// replayed one cannot make it resend its inventory over and over.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub digest: Option<[u8; 8]>,
}

/// The 8-byte digest of a package set: the first 8 bytes of SHA-256 over the sorted,
/// de-duplicated packages. Agent and console compute it the same way.
pub fn inventory_digest<'a>(packages: impl IntoIterator<Item = &'a Package>) -> [u8; 8] {
    let mut sorted: Vec<&Package> = packages.into_iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut h = Sha256::new();
    for p in sorted {
        for field in [&p.name, &p.version, &p.arch, &p.source] {
            h.update((field.len() as u32).to_be_bytes());
            h.update(field.as_bytes());
        }
    }
    let full = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

impl InventoryChunk {
    /// Splits a snapshot into chunks of at most [`CHUNK_PACKAGES`], the last one carrying the
    /// digest. An empty inventory is one empty last chunk.
    pub fn split(scan_id: u32, source: &str, packages: &[Package]) -> Vec<InventoryChunk> {
        let digest = inventory_digest(packages);
        let mut parts: Vec<&[Package]> = packages.chunks(CHUNK_PACKAGES).collect();
        if parts.is_empty() {
            parts.push(&[]);
        }
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| InventoryChunk {
                bd_seq: 0,
                seq: 0,
                scan_id,
                index: i as u16,
                is_last: i + 1 == n,
                source: source.to_string(),
                digest: (i + 1 == n).then_some(digest),
                packages_z: compress(&super::encode(&part)),
            })
            .collect()
    }

    /// The chunk's packages; a corrupt or oversized body is a [`DecodeError`].
    pub fn packages(&self) -> Result<Vec<Package>, DecodeError> {
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&self.packages_z[..])
            .take(MAX_CHUNK_INFLATED as u64 + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| DecodeError::Malformed(format!("inventory chunk: {e}")))?;
        if inflated.len() > MAX_CHUNK_INFLATED {
            return Err(DecodeError::TooLarge {
                len: inflated.len(),
                max: MAX_CHUNK_INFLATED,
            });
        }
        let packages: Vec<Package> = super::decode(&inflated)?;
        if packages.len() > CHUNK_PACKAGES {
            return Err(DecodeError::Malformed(format!(
                "inventory chunk with {} packages (at most {CHUNK_PACKAGES})",
                packages.len()
            )));
        }
        Ok(packages)
    }
}

impl InventoryDelta {
    /// The delta from `old` to `new`, or `None` if they hold the same packages. A key
    /// ([`Package::key`]) present exactly once on both sides with another version is
    /// `changed`; everything else is plain `added` / `removed` (so several installed
    /// versions of one package, like RPM kernels, stay exact).
    pub fn between(old: &[Package], new: &[Package], source: &str) -> Option<InventoryDelta> {
        let (base, next) = (inventory_digest(old), inventory_digest(new));
        if base == next {
            return None;
        }
        let old: BTreeSet<&Package> = old.iter().collect();
        let new: BTreeSet<&Package> = new.iter().collect();
        let mut removed: Vec<&Package> = old.difference(&new).copied().collect();
        let mut added: Vec<&Package> = new.difference(&old).copied().collect();
        fn count<'a>(set: &BTreeSet<&'a Package>) -> BTreeMap<(&'a str, &'a str, &'a str), usize> {
            let mut n = BTreeMap::new();
            for p in set {
                *n.entry(p.key()).or_default() += 1;
            }
            n
        }
        let (in_old, in_new) = (count(&old), count(&new));
        let single =
            |p: &Package| in_old.get(&p.key()) == Some(&1) && in_new.get(&p.key()) == Some(&1);
        let changed: Vec<Package> = added
            .iter()
            .filter(|p| single(p) && removed.iter().any(|r| r.key() == p.key()))
            .map(|p| (*p).clone())
            .collect();
        added.retain(|p| !changed.iter().any(|c| c.key() == p.key()));
        removed.retain(|p| !changed.iter().any(|c| c.key() == p.key()));
        Some(InventoryDelta {
            bd_seq: 0,
            seq: 0,
            base_digest: base,
            new_digest: next,
            added: added.into_iter().cloned().collect(),
            removed: removed.into_iter().cloned().collect(),
            changed,
            source: source.to_string(),
        })
    }

    /// Applies the delta to `set`; the caller checks the result's digest against
    /// `new_digest`.
    pub fn apply(&self, set: &[Package]) -> Vec<Package> {
        let mut out: BTreeSet<Package> = set.iter().cloned().collect();
        for p in &self.removed {
            out.remove(p);
        }
        for p in &self.changed {
            out.retain(|o| o.key() != p.key());
            out.insert(p.clone());
        }
        out.extend(self.added.iter().cloned());
        out.into_iter().collect()
    }
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).expect("writing to a Vec cannot fail");
    z.finish().expect("writing to a Vec cannot fail")
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

    #[test]
    fn digests_ignore_order_and_duplicates_and_see_every_field() {
        let a = [pkg("curl", "7.88"), pkg("bash", "5.2")];
        let b = [pkg("bash", "5.2"), pkg("curl", "7.88"), pkg("bash", "5.2")];
        assert_eq!(inventory_digest(&a), inventory_digest(&b));
        assert_ne!(
            inventory_digest(&a),
            inventory_digest(&[pkg("curl", "7.89"), pkg("bash", "5.2")])
        );
        // Field boundaries count: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            inventory_digest(&[pkg("ab", "c")]),
            inventory_digest(&[pkg("a", "bc")])
        );
    }

    #[test]
    fn a_delta_applied_to_its_base_gives_the_new_set() {
        let old = vec![pkg("bash", "5.2"), pkg("curl", "7.88"), pkg("vim", "9.0")];
        let new = vec![pkg("bash", "5.2"), pkg("curl", "7.89"), pkg("zsh", "5.9")];
        let d = InventoryDelta::between(&old, &new, "dpkg").unwrap();
        assert_eq!(d.added, [pkg("zsh", "5.9")]);
        assert_eq!(d.removed, [pkg("vim", "9.0")]);
        assert_eq!(d.changed, [pkg("curl", "7.89")]);
        let applied = d.apply(&old);
        assert_eq!(inventory_digest(&applied), d.new_digest);
        assert!(InventoryDelta::between(&new, &new, "dpkg").is_none());

        // Two installed versions of one package stay two packages through a delta.
        let old = vec![pkg("kernel", "5.14-362"), pkg("kernel", "5.14-427")];
        let new = vec![pkg("kernel", "5.14-427"), pkg("kernel", "5.14-430")];
        let d = InventoryDelta::between(&old, &new, "rpm").unwrap();
        assert!(d.changed.is_empty());
        assert_eq!(inventory_digest(&d.apply(&old)), d.new_digest);
    }

    #[test]
    fn chunks_round_trip_and_bombs_and_garbage_are_errors() {
        let pkgs: Vec<Package> = (0..1234).map(|i| pkg(&format!("p{i}"), "1.0")).collect();
        let chunks = InventoryChunk::split(7, "dpkg", &pkgs);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[2].is_last && chunks[2].digest == Some(inventory_digest(&pkgs)));
        let back: Vec<Package> = chunks.iter().flat_map(|c| c.packages().unwrap()).collect();
        assert_eq!(back, pkgs);
        let empty = InventoryChunk::split(1, "dpkg", &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].packages().unwrap().is_empty());

        let mut bad = chunks[0].clone();
        bad.packages_z = b"not zlib at all".to_vec();
        assert!(matches!(bad.packages(), Err(DecodeError::Malformed(_))));
        bad.packages_z = compress(&vec![0u8; MAX_CHUNK_INFLATED * 4]);
        assert!(matches!(bad.packages(), Err(DecodeError::TooLarge { .. })));
    }
}
