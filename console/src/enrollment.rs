//! Enrollment tokens and the duplicate-host rule.
//!
//! Tokens live in the sled tree `tokens`, keyed by token id. The console keeps each token's
//! secret, because it must check the agent's HMAC proof of it; the whole token is shown
//! once, when it is created. A token is usable while it is not revoked, not expired and
//! has uses left. Checking a claim at MQTT connect does not use the token up; accepting an
//! enrollment request does ([`Tokens::consume`]).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use edgefleet_codec::api::{AgentStatus, TokenCreate, TokenView};
use edgefleet_codec::{EnrollToken, PublicKey};
use serde::{Deserialize, Serialize};

use crate::presence::{Approval, HostRecord};
use crate::store::StoreError;

/// Default lifetime of a token created without `expires`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest lifetime a token may be given (besides `never`).
pub const MAX_EXPIRY: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Base32 of the 16-byte secret.
    pub secret: String,
    pub auto_approve: bool,
    pub created_at: u64,
    pub created_by: String,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked_at: Option<u64>,
}

/// Why a token claim or enrollment was refused. The message goes to the agent and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the enrollment token is unknown to this console")]
    Unknown,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token has no uses left")]
    UsedUp,
    #[error("the enrollment token was revoked")]
    Revoked,
    #[error("the proof of the enrollment token's secret is wrong (wrong secret)")]
    BadProof,
}

impl TokenRefusal {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "token_unknown",
            TokenRefusal::Expired => "token_expired",
            TokenRefusal::UsedUp => "token_used_up",
            TokenRefusal::Revoked => "token_revoked",
            TokenRefusal::BadProof => "token_bad_proof",
        }
    }
}

impl TokenRecord {
    pub fn state(&self, now_ms: u64) -> Result<(), TokenRefusal> {
        if self.revoked_at.is_some() {
            Err(TokenRefusal::Revoked)
        } else if self.expires_at.is_some_and(|t| now_ms >= t) {
            Err(TokenRefusal::Expired)
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Err(TokenRefusal::UsedUp)
        } else {
            Ok(())
        }
    }

    fn secret_bytes(&self) -> Option<[u8; 16]> {
        data_encoding::BASE32_NOPAD
            .decode(self.secret.as_bytes())
            .ok()?
            .try_into()
            .ok()
    }

    pub fn view(&self, now_ms: u64) -> TokenView {
        TokenView {
            id: self.id.clone(),
            auto_approve: self.auto_approve,
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            expires_at: self.expires_at,
            max_uses: self.max_uses,
            uses: self.uses,
            revoked: self.revoked_at.is_some(),
            state: match self.state(now_ms) {
                Ok(()) => "active",
                Err(TokenRefusal::Expired) => "expired",
                Err(TokenRefusal::UsedUp) => "used_up",
                Err(_) => "revoked",
            }
            .to_string(),
        }
    }
}

/// Parses `expires`: a duration such as `7d`, `12h`, `30m`, or `never`.
pub fn parse_expiry(text: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(text) = text.map(str::trim) else {
        return Ok(Some(DEFAULT_EXPIRY));
    };
    if text == "never" {
        return Ok(None);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("expires: {e} (use e.g. `7d`, `12h` or `never`)"))?;
    if d < Duration::from_secs(1) || d > MAX_EXPIRY {
        return Err(format!(
            "expires: must be between 1s and 366d, or `never` (got {text:?})"
        ));
    }
    Ok(Some(d))
}

#[derive(Debug)]
pub struct Tokens {
    tree: sled::Tree,
    /// Serializes read-modify-write of use counts.
    lock: Mutex<()>,
}

fn decode(v: &[u8]) -> Result<TokenRecord, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
        tree: "tokens",
        source,
    })
}

impl Tokens {
    pub fn new(tree: sled::Tree) -> Tokens {
        Tokens {
            tree,
            lock: Mutex::new(()),
        }
    }

    /// Creates a token naming `console_fingerprint`; returns it whole (shown once).
    pub fn create(
        &self,
        req: &TokenCreate,
        actor: &str,
        console_fingerprint: [u8; 32],
        now_ms: u64,
    ) -> Result<(EnrollToken, TokenRecord), CreateError> {
        let expiry = parse_expiry(req.expires.as_deref()).map_err(CreateError::Invalid)?;
        if req.uses == Some(0) {
            return Err(CreateError::Invalid("uses: must be at least 1".into()));
        }
        let token = EnrollToken::generate(console_fingerprint);
        let record = TokenRecord {
            id: token.id.clone(),
            secret: data_encoding::BASE32_NOPAD.encode(&token.secret),
            auto_approve: req.auto_approve,
            created_at: now_ms,
            created_by: actor.to_string(),
            expires_at: expiry.map(|d| now_ms + d.as_millis() as u64),
            max_uses: req.uses,
            uses: 0,
            revoked_at: None,
        };
        self.put(&record).map_err(CreateError::Store)?;
        Ok((token, record))
    }

    fn put(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.tree.insert(
            record.id.as_bytes(),
            serde_json::to_vec(record).expect("token records serialize"),
        )?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tree
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            out.push(decode(&item?.1)?);
        }
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    /// Revokes a token; `None` if there is no such token.
    pub fn revoke(&self, id: &str, now_ms: u64) -> Result<Option<TokenRecord>, StoreError> {
        let _guard = self.lock.lock().expect("tokens lock");
        let Some(mut record) = self.get(id)? else {
            return Ok(None);
        };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(now_ms);
            self.put(&record)?;
        }
        Ok(Some(record))
    }

    /// Checks a claim without using the token up: the connect-time check.
    pub fn check(
        &self,
        id: &str,
        key: &PublicKey,
        proof: &[u8; 32],
        now_ms: u64,
    ) -> Result<TokenRecord, TokenRefusal> {
        let record = self.get(id).ok().flatten().ok_or(TokenRefusal::Unknown)?;
        let secret = record.secret_bytes().ok_or(TokenRefusal::Unknown)?;
        if !edgefleet_codec::token::verify_proof(&secret, key, proof) {
            return Err(TokenRefusal::BadProof);
        }
        record.state(now_ms)?;
        Ok(record)
    }

    /// Checks a claim and takes one use of the token: an accepted enrollment.
    pub fn consume(
        &self,
        id: &str,
        key: &PublicKey,
        proof: &[u8; 32],
        now_ms: u64,
    ) -> Result<TokenRecord, ConsumeError> {
        let _guard = self.lock.lock().expect("tokens lock");
        let mut record = self
            .check(id, key, proof, now_ms)
            .map_err(ConsumeError::Refused)?;
        record.uses += 1;
        self.put(&record).map_err(ConsumeError::Store)?;
        Ok(record)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("storing the token")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Refused(TokenRefusal),
    #[error("storing the token")]
    Store(#[source] StoreError),
}

/// What to do about an existing host that looks like the same machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duplicate {
    /// It is online or revoked: refuse, with the message for the agent and the API.
    Reject { host: String, message: String },
    /// It is offline or unknown: the new key takes over its record.
    Adopt { host: String, reason: String },
}

/// The duplicate-host rule (seed: Hosts & Inventory): an existing, not deleted host with the
/// same hostname or an overlapping routable IP. Loopback, link-local and unspecified
/// addresses are ignored: every machine has them.
pub fn find_duplicate<'a>(
    hosts: impl IntoIterator<Item = &'a HostRecord>,
    exclude: &str,
    hostname: &str,
    ips: &[String],
) -> Option<Duplicate> {
    let ips: Vec<IpAddr> = ips.iter().filter_map(|ip| routable(ip)).collect();
    let hostname = hostname.trim();
    let mut best: Option<Duplicate> = None;
    for host in hosts {
        if host.id == exclude || host.deleted_at.is_some() {
            continue;
        }
        let same_name = !hostname.is_empty()
            && host
                .hostname
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(hostname));
        let shared_ip = host
            .ips
            .iter()
            .filter_map(|ip| routable(ip))
            .find(|ip| ips.contains(ip));
        let why = match (same_name, shared_ip) {
            (true, _) => format!("the same hostname {hostname:?}"),
            (false, Some(ip)) => format!("the same IP address {ip}"),
            (false, None) => continue,
        };
        let label = format!(
            "{} ({})",
            host.id,
            host.hostname.as_deref().unwrap_or("no hostname")
        );
        if host.status == AgentStatus::Online || host.approval == Approval::Revoked {
            let state = if host.approval == Approval::Revoked {
                "revoked"
            } else {
                "online"
            };
            // A rejection outranks an adoption: never take over one host while another
            // live one claims the same identity.
            return Some(Duplicate::Reject {
                host: host.id.clone(),
                message: format!("already exists: host {label} with {why} is {state}"),
            });
        }
        if best.is_none() {
            best = Some(Duplicate::Adopt {
                host: host.id.clone(),
                reason: format!("host {label} with {why} was {}", host.status.as_str()),
            });
        }
    }
    best
}

fn routable(ip: &str) -> Option<IpAddr> {
    let ip: IpAddr = ip.split('/').next()?.trim().parse().ok()?;
    let local = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    (!local).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::Identity;

    fn tokens() -> (sled::Db, Tokens) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = Tokens::new(db.open_tree("tokens").unwrap());
        (db, t)
    }

    #[test]
    fn a_token_checks_until_used_up_expired_or_revoked() {
        let (_db, tokens) = tokens();
        let req = TokenCreate {
            auto_approve: false,
            expires: Some("1h".into()),
            uses: Some(1),
        };
        let (token, record) = tokens.create(&req, "admin", [7; 32], 1_000).unwrap();
        assert_eq!(record.expires_at, Some(1_000 + 3_600_000));
        let key = Identity::generate().public_key();
        let proof = token.proof(&key);
        assert!(tokens.check(&token.id, &key, &proof, 2_000).is_ok());
        assert!(
            tokens.check(&token.id, &key, &proof, 2_000).is_ok(),
            "checking does not use it"
        );
        assert_eq!(
            tokens.check(&token.id, &key, &[0; 32], 2_000),
            Err(TokenRefusal::BadProof)
        );
        assert_eq!(
            tokens.check(&token.id, &key, &proof, 1_000 + 3_600_000),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            tokens.check("aaaaaaaa", &key, &proof, 2_000),
            Err(TokenRefusal::Unknown)
        );
        tokens.consume(&token.id, &key, &proof, 2_000).unwrap();
        assert!(matches!(
            tokens.consume(&token.id, &key, &proof, 2_000),
            Err(ConsumeError::Refused(TokenRefusal::UsedUp))
        ));
        assert_eq!(
            tokens.get(&token.id).unwrap().unwrap().view(2_000).state,
            "used_up"
        );

        let (token, _) = tokens
            .create(&TokenCreate::default(), "admin", [7; 32], 0)
            .unwrap();
        tokens.revoke(&token.id, 5).unwrap().unwrap();
        assert_eq!(
            tokens.check(&token.id, &key, &token.proof(&key), 6),
            Err(TokenRefusal::Revoked)
        );
        assert!(tokens.revoke("nosuchid", 5).unwrap().is_none());
    }

    #[test]
    fn expiry_parses_durations_and_never_and_refuses_nonsense() {
        assert_eq!(parse_expiry(None), Ok(Some(DEFAULT_EXPIRY)));
        assert_eq!(parse_expiry(Some("never")), Ok(None));
        assert_eq!(
            parse_expiry(Some("12h")),
            Ok(Some(Duration::from_secs(12 * 3600)))
        );
        assert!(parse_expiry(Some("soon")).unwrap_err().contains("expires"));
        assert!(parse_expiry(Some("500ms")).unwrap_err().contains("between"));
        assert!(parse_expiry(Some("400d")).unwrap_err().contains("between"));
    }

    fn host(id: &str, name: &str, ip: &str, status: AgentStatus) -> HostRecord {
        let mut h = HostRecord::new(id, &[1; 32], 0);
        h.hostname = Some(name.into());
        h.ips = vec![ip.into(), "127.0.0.1".into()];
        h.status = status;
        h
    }

    #[test]
    fn duplicates_by_name_or_routable_ip_are_rejected_when_online_and_adopted_when_offline() {
        let online = host("a", "shop-1", "10.0.0.1", AgentStatus::Online);
        let offline = host("b", "shop-2", "10.0.0.2", AgentStatus::Offline);
        let mut revoked = host("c", "shop-3", "10.0.0.3", AgentStatus::Revoked);
        revoked.approval = Approval::Revoked;
        let mut deleted = host("d", "shop-4", "10.0.0.4", AgentStatus::Offline);
        deleted.deleted_at = Some(1);
        let all = [online, offline, revoked, deleted];
        let ips = |ip: &str| vec![ip.to_string(), "127.0.0.1".to_string()];

        assert!(matches!(
            find_duplicate(&all, "new", "SHOP-1", &ips("192.168.1.1")),
            Some(Duplicate::Reject { host, .. }) if host == "a"
        ));
        assert!(matches!(
            find_duplicate(&all, "new", "other", &ips("10.0.0.2")),
            Some(Duplicate::Adopt { host, reason }) if host == "b" && reason.contains("10.0.0.2")
        ));
        assert!(matches!(
            find_duplicate(&all, "new", "shop-3", &[]),
            Some(Duplicate::Reject { message, .. }) if message.contains("revoked")
        ));
        assert_eq!(
            find_duplicate(&all, "new", "shop-4", &ips("10.0.0.4")),
            None,
            "deleted hosts do not count"
        );
        assert_eq!(
            find_duplicate(&all, "new", "fresh", &ips("10.9.9.9")),
            None,
            "loopback alone is no match"
        );
        assert_eq!(
            find_duplicate(&all, "a", "shop-1", &ips("10.0.0.1")),
            None,
            "a host is no duplicate of itself"
        );
    }
}
