//! The audit log: who did what, append-only and hash-chained.
//!
//! Entries live in the sled tree `audit`, keyed by a big-endian sequence number. Each
//! entry's `hash` is SHA-256 over the previous entry's hash and this entry's fields, so
//! editing, removing or reordering an entry breaks the chain from that entry on, and
//! [`Audit::verify`] names the first broken entry. The chain detects tampering with the
//! database file; it cannot stop someone who rewrites the whole chain from the start, which
//! would need an external anchor (not built).

use std::sync::Mutex;

use edgefleet_codec::api::{AuditEntry, AuditPage, AuditVerify};
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// The actor recorded for decisions the console makes by itself (auto-approval, adoption).
pub const CONSOLE: &str = "console";

/// Which entries `GET /api/audit` returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The agent (or key, token) acted on.
    pub target: Option<String>,
    pub action: Option<String>,
    /// Unix milliseconds: only entries at or after.
    pub since: Option<u64>,
}

#[derive(Debug)]
pub struct Audit {
    tree: sled::Tree,
    /// The last sequence number and hash; appends are serialized through it.
    head: Mutex<(u64, [u8; 32])>,
}

fn entry_hash(prev: &[u8; 32], e: &AuditEntry) -> [u8; 32] {
    let fields = serde_json::to_vec(&(e.seq, e.at, &e.actor, &e.action, &e.target, &e.detail))
        .expect("audit fields serialize");
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&fields);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(v: &[u8]) -> Result<AuditEntry, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
        tree: "audit",
        source,
    })
}

impl Audit {
    pub fn open(tree: sled::Tree) -> Result<Audit, StoreError> {
        let head = match tree.last()? {
            Some((_, v)) => {
                let e = decode(&v)?;
                let mut hash = [0u8; 32];
                for (i, b) in hash.iter_mut().enumerate() {
                    *b = e
                        .hash
                        .get(i * 2..i * 2 + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or(0);
                }
                (e.seq, hash)
            }
            None => (0, [0; 32]),
        };
        Ok(Audit {
            tree,
            head: Mutex::new(head),
        })
    }

    /// Appends an entry and flushes it: an audit entry is never in a write-back window.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: &str,
        now_ms: u64,
    ) -> Result<AuditEntry, StoreError> {
        let mut head = self.head.lock().expect("audit lock");
        let mut entry = AuditEntry {
            seq: head.0 + 1,
            at: now_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.map(str::to_string),
            detail: detail.to_string(),
            hash: String::new(),
        };
        let hash = entry_hash(&head.1, &entry);
        entry.hash = hex(&hash);
        self.tree.insert(
            entry.seq.to_be_bytes(),
            serde_json::to_vec(&entry).expect("audit entries serialize"),
        )?;
        self.tree.flush()?;
        *head = (entry.seq, hash);
        tracing::info!(actor, action, target, detail, "audit");
        Ok(entry)
    }

    /// Newest first, optionally only entries about `target`.
    pub fn page(
        &self,
        filter: &AuditFilter,
        page: usize,
        per_page: usize,
    ) -> Result<AuditPage, StoreError> {
        let mut total = 0;
        let mut items = Vec::new();
        let skip = (page - 1) * per_page;
        for item in self.tree.iter().rev() {
            let (_, v) = item?;
            let e = decode(&v)?;
            if filter.since.is_some_and(|s| e.at < s) {
                // Newest first: everything after this is older still.
                break;
            }
            if filter
                .target
                .as_deref()
                .is_some_and(|t| e.target.as_deref() != Some(t))
                || filter.action.as_deref().is_some_and(|a| e.action != a)
            {
                continue;
            }
            if total >= skip && items.len() < per_page {
                items.push(e);
            }
            total += 1;
        }
        Ok(AuditPage {
            items,
            total,
            page,
            per_page,
        })
    }

    /// Walks the whole chain.
    pub fn verify(&self) -> Result<AuditVerify, StoreError> {
        let mut prev = [0u8; 32];
        let mut entries = 0;
        for (expected_seq, item) in (1u64..).zip(self.tree.iter()) {
            let (k, v) = item?;
            let broken = |seq| AuditVerify {
                ok: false,
                entries,
                broken_at: Some(seq),
            };
            let Ok(e) = decode(&v) else {
                return Ok(broken(expected_seq));
            };
            let hash = entry_hash(&prev, &e);
            if e.seq != expected_seq || k.as_ref() != e.seq.to_be_bytes() || e.hash != hex(&hash) {
                return Ok(broken(expected_seq));
            }
            prev = hash;
            entries += 1;
        }
        Ok(AuditVerify {
            ok: true,
            entries,
            broken_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> (sled::Db, Audit) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let audit = Audit::open(db.open_tree("audit").unwrap()).unwrap();
        (db, audit)
    }

    #[test]
    fn the_chain_verifies_and_survives_a_reopen() {
        let (db, audit) = audit();
        audit
            .record("admin", "approve", Some("a1"), "ok", 1)
            .unwrap();
        audit
            .record("admin", "revoke", Some("a2"), "ok", 2)
            .unwrap();
        drop(audit);
        let audit = Audit::open(db.open_tree("audit").unwrap()).unwrap();
        let e = audit.record("ops", "delete", Some("a1"), "", 3).unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(
            audit.verify().unwrap(),
            AuditVerify {
                ok: true,
                entries: 3,
                broken_at: None
            }
        );
        let filter = AuditFilter {
            target: Some("a1".into()),
            ..AuditFilter::default()
        };
        let page = audit.page(&filter, 1, 10).unwrap();
        let deletes = AuditFilter {
            action: Some("delete".into()),
            since: Some(3),
            ..AuditFilter::default()
        };
        assert_eq!(audit.page(&deletes, 1, 10).unwrap().total, 1);
        assert_eq!(page.total, 2);
        assert_eq!(page.items[0].action, "delete", "newest first");
    }

    #[test]
    fn an_edited_or_removed_entry_breaks_the_chain_there() {
        let (db, audit) = audit();
        for i in 1..=4 {
            audit.record("admin", "approve", Some("a"), "", i).unwrap();
        }
        let tree = db.open_tree("audit").unwrap();
        let mut e: AuditEntry =
            serde_json::from_slice(&tree.get(2u64.to_be_bytes()).unwrap().unwrap()).unwrap();
        e.actor = "someone-else".into();
        tree.insert(2u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
            .unwrap();
        assert_eq!(audit.verify().unwrap().broken_at, Some(2));

        let (db, audit) = self::audit();
        for i in 1..=4 {
            audit.record("admin", "approve", Some("a"), "", i).unwrap();
        }
        db.open_tree("audit")
            .unwrap()
            .remove(3u64.to_be_bytes())
            .unwrap();
        let v = audit.verify().unwrap();
        assert_eq!((v.ok, v.broken_at), (false, Some(3)));
    }
}
