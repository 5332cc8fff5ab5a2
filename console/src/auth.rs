//! REST API keys: `Authorization: Bearer <key>` on every `/api` route.
//!
//! Keys are `efk_` plus 32 characters of base32 (160 random bits). Only their SHA-256 is
//! stored (sled tree `api_keys`), with a name and a role. On first start the console creates
//! an `admin` key and writes it to `data_dir/admin.key` (mode 0600). Failed attempts are
//! limited per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also send commands.
    Operator,
    /// Also approve, revoke, and manage tokens and keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub role: Role,
    pub created: u64,
}

/// Failed attempts allowed per client address per window before 429.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ApiKeys {
    tree: sled::Tree,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl ApiKeys {
    pub fn new(tree: sled::Tree) -> ApiKeys {
        ApiKeys {
            tree,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Creates a key and returns its secret, which is not stored and cannot be shown again.
    pub fn create(&self, name: &str, role: Role, now_ms: u64) -> Result<String, sled::Error> {
        use rand::RngCore;
        let mut raw = [0u8; 20];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!(
            "efk_{}",
            data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase()
        );
        let record = KeyRecord {
            name: name.to_string(),
            role,
            created: now_ms,
        };
        self.tree.insert(
            digest(&secret),
            serde_json::to_vec(&record).expect("key records serialize"),
        )?;
        self.tree.flush()?;
        Ok(secret)
    }

    /// Every key's record (never a secret: only hashes are stored), oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, sled::Error> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, v) = item?;
            if let Ok(record) = serde_json::from_slice::<KeyRecord>(&v) {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Deletes the key named `name`; `false` if there is none.
    pub fn delete(&self, name: &str) -> Result<bool, sled::Error> {
        let mut found = None;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if serde_json::from_slice::<KeyRecord>(&v).is_ok_and(|r| r.name == name) {
                found = Some(k);
            }
        }
        match found {
            Some(k) => {
                self.tree.remove(k)?;
                self.tree.flush()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The key's record, if the secret is a known key. The lookup is by hash, so its timing
    /// says nothing about the secret.
    pub fn check(&self, secret: &str) -> Option<KeyRecord> {
        if !secret.starts_with("efk_") || secret.len() > 64 {
            return None;
        }
        let bytes = self.tree.get(digest(secret)).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Counts a failure from `addr`; returns false when it is over the limit.
    pub fn note_failure(&self, addr: Option<IpAddr>) -> bool {
        let mut failures = self.failures.lock().expect("failures lock");
        let now = Instant::now();
        if failures.len() > 10_000 {
            failures.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
        }
        let entry = failures.entry(addr).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= MAX_FAILURES
    }

    /// Whether `addr` is currently locked out.
    pub fn locked_out(&self, addr: Option<IpAddr>) -> bool {
        let failures = self.failures.lock().expect("failures lock");
        failures
            .get(&addr)
            .is_some_and(|(start, n)| *n >= MAX_FAILURES && start.elapsed() < FAILURE_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_by_hash_and_only_the_hash_is_stored() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let keys = ApiKeys::new(db.open_tree("api_keys").unwrap());
        assert!(keys.is_empty());
        let secret = keys.create("ci", Role::Viewer, 1).unwrap();
        assert!(secret.starts_with("efk_") && secret.len() == 36, "{secret}");
        assert_eq!(keys.check(&secret).map(|r| r.role), Some(Role::Viewer));
        assert_eq!(keys.check("efk_wrong"), None);
        assert_eq!(keys.check(&secret.to_uppercase()), None);
        let stored: Vec<u8> = keys
            .tree
            .iter()
            .flat_map(|kv| {
                let (k, v) = kv.unwrap();
                [k.to_vec(), v.to_vec()].concat()
            })
            .collect();
        assert!(!String::from_utf8_lossy(&stored).contains(&secret[4..]));
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        keys.create("ops", Role::Operator, 2).unwrap();
        let names: Vec<String> = keys.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["ci", "ops"]);
        assert!(keys.delete("ci").unwrap());
        assert!(!keys.delete("ci").unwrap());
        assert_eq!(keys.check(&secret), None, "a deleted key no longer works");
    }

    #[test]
    fn failures_lock_out_after_the_limit() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let keys = ApiKeys::new(db.open_tree("api_keys").unwrap());
        let ip = Some("10.0.0.1".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(keys.note_failure(ip));
        }
        assert!(keys.locked_out(ip));
        assert!(!keys.note_failure(ip));
        assert!(!keys.locked_out(Some("10.0.0.2".parse().unwrap())));
    }
}
