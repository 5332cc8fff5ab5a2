//! The fleet: in-memory index of hosts over the sled store, the connect policy, ingest of
//! agent telemetry, the timeout sweep, and the queries the REST API serves.
//!
//! sled is the source of truth; the in-memory map is rebuilt from it on start and every
//! change is written back in the same ingest round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::api::{self, AgentStatus, Cause};
use edgefleet_codec::{
    open_agent, AgentId, AgentMessage, Identity, MacKey, PublicKey, Topic, Topics, VerifyError,
};

use crate::metrics::Metrics;
use crate::presence::{HostRecord, Timings};
use crate::store::{EventRecord, ResultRecord, Round, Sample, Store, StoreError};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shared console state. One per process, behind an `Arc`.
#[derive(Debug)]
pub struct Fleet {
    pub store: Store,
    pub identity: Identity,
    pub topics: Topics,
    pub timings: Timings,
    pub started_ms: u64,
    pub metrics: Metrics,
    pub api_keys: crate::auth::ApiKeys,
    hosts: RwLock<HashMap<String, HostRecord>>,
    keys: RwLock<HashMap<String, MacKey>>,
    log_limiter: Mutex<HashMap<&'static str, Instant>>,
}

impl Fleet {
    pub fn open(
        store: Store,
        identity: Identity,
        topics: Topics,
        timings: Timings,
    ) -> Result<Fleet, StoreError> {
        let mut hosts = HashMap::new();
        let mut keys = HashMap::new();
        for host in store.load_hosts()? {
            if let Some(key) = parse_key(&host.public_key) {
                match MacKey::derive_console(&identity, &key) {
                    Ok(mac) => {
                        keys.insert(host.id.clone(), mac);
                    }
                    Err(e) => {
                        tracing::warn!(agent.id = %host.id, error = %e, "cannot derive MAC key")
                    }
                }
            }
            hosts.insert(host.id.clone(), host);
        }
        tracing::info!(hosts = hosts.len(), "fleet restored from sled");
        let api_keys = crate::auth::ApiKeys::new(store.api_keys_tree()?);
        Ok(Fleet {
            api_keys,
            store,
            identity,
            topics,
            timings,
            started_ms: now_ms(),
            metrics: Metrics::default(),
            hosts: RwLock::new(hosts),
            keys: RwLock::new(keys),
            log_limiter: Mutex::new(HashMap::new()),
        })
    }

    /// The broker's connect policy: the client id must be the agent id of the key that signed
    /// the password. A first connect registers the agent (status unknown until its birth).
    pub fn accept_connect(&self, attempt: &ConnectAttempt) -> bool {
        let now_unix = now_ms() / 1000;
        // Agents connect as `{agent_id}-{bd_seq}`; see docs/wire.md.
        let agent_part = match attempt.client_id.split_once('-') {
            Some((id, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => id,
            _ => {
                self.metrics.connect_refused("bad_client_id");
                return false;
            }
        };
        let key = match edgefleet_codec::connect::verify_password(
            agent_part,
            &attempt.password,
            now_unix,
        ) {
            Ok(key) => key,
            Err(e) => {
                self.metrics.connect_refused(e.reason());
                self.warn_limited(e.reason(), || {
                    tracing::warn!(client.id = %attempt.client_id.escape_default(), error = %e, "connect refused")
                });
                return false;
            }
        };
        if attempt.username != agent_part {
            self.metrics.connect_refused("username_mismatch");
            return false;
        }
        let id = agent_part.to_string();
        if self.keys.read().expect("keys lock").contains_key(&id) {
            return true;
        }
        let mac = match MacKey::derive_console(&self.identity, &key) {
            Ok(mac) => mac,
            Err(_) => {
                self.metrics.connect_refused("weak_key");
                return false;
            }
        };
        let now = now_ms();
        let host = HostRecord::new(&id, key.as_bytes(), now);
        let change = api::StatusChange {
            status: AgentStatus::Unknown,
            cause: Cause::Connect,
            at: now,
        };
        let round = Round {
            hosts: vec![&host],
            transitions: vec![(id.clone(), change)],
            ..Round::default()
        };
        if let Err(e) = self.store.write_round(&round) {
            tracing::error!(agent.id = %id, error = %e, "cannot store a new agent");
            return false;
        }
        tracing::info!(agent.id = %id, "new agent proved its key");
        self.keys
            .write()
            .expect("keys lock")
            .insert(id.clone(), mac);
        self.hosts
            .write()
            .expect("hosts lock")
            .entry(id)
            .or_insert(host);
        true
    }

    /// Verifies and applies one round of messages, then writes everything in one batch.
    pub fn ingest(&self, batch: Vec<Inbound>) {
        let now = now_ms();
        let received: Vec<Instant> = batch.iter().map(|m| m.received).collect();
        let mut changed: BTreeMap<String, ()> = BTreeMap::new();
        let mut round_transitions = Vec::new();
        let mut samples = Vec::new();
        let mut events = Vec::new();
        let mut results = Vec::new();
        {
            let keys = self.keys.read().expect("keys lock");
            let mut hosts = self.hosts.write().expect("hosts lock");
            for msg in batch {
                let (id, channel) = match self.topics.parse(&msg.topic) {
                    Ok(Topic::Agent { id, channel }) => (id, channel),
                    Ok(Topic::Enroll { .. }) => {
                        self.reject("enrollment_unsupported", &msg.topic, None);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        self.reject("bad_topic", &msg.topic, None);
                        continue;
                    }
                };
                if channel == edgefleet_codec::Channel::Command {
                    continue; // our own commands, echoed by the wildcard subscription
                }
                let (Some(key), Some(host)) = (keys.get(id.as_str()), hosts.get_mut(id.as_str()))
                else {
                    self.reject("unknown_agent", &msg.topic, None);
                    continue;
                };
                let message = match open_agent(&msg.payload, &id, key) {
                    Ok(m) => m,
                    Err(e) => {
                        self.reject(e.reason(), &msg.topic, Some(&e));
                        continue;
                    }
                };
                let kind = message.kind().name();
                let outcome = match &message {
                    AgentMessage::Birth(b) => host.on_birth(b, now),
                    AgentMessage::Status(s) => host.on_status(s, now),
                    AgentMessage::Heartbeat(hb) => host.on_heartbeat(hb, now).inspect(|_| {
                        let at = hb.at.map(|s| s * 1000).unwrap_or(now);
                        let mut v = host.vitals.unwrap_or_default();
                        v.apply(hb);
                        samples.push((id.to_string(), at, Sample::one(&v)));
                    }),
                    AgentMessage::Event(ev) => host.on_other(message.sequence(), now).map(|()| {
                        events.push((
                            id.to_string(),
                            EventRecord {
                                event_id: ev.event_id,
                                at: ev.at_ms,
                                level: ev.level.as_str().to_string(),
                                kind: ev.kind.clone(),
                                message: ev.message.clone(),
                            },
                        ));
                        None
                    }),
                    AgentMessage::CommandResult(r) => {
                        host.on_other(message.sequence(), now).map(|()| {
                            results.push((
                                id.to_string(),
                                ResultRecord {
                                    command_id: r
                                        .command_id
                                        .iter()
                                        .map(|b| format!("{b:02x}"))
                                        .collect(),
                                    outcome: format!("{:?}", r.outcome).to_lowercase(),
                                    message: r.message.clone(),
                                    at: r.at_ms,
                                },
                            ));
                            None
                        })
                    }
                    _ => host.on_other(message.sequence(), now).map(|()| None),
                };
                match outcome {
                    Ok(change) => {
                        self.metrics.ingested(kind);
                        if let Some(change) = change {
                            self.metrics.transition(cause_name(change.cause));
                            tracing::info!(agent.id = %id, status = change.status.as_str(), cause = cause_name(change.cause), "presence");
                            round_transitions.push((id.to_string(), change));
                        }
                        changed.insert(id.to_string(), ());
                    }
                    Err(ignored) => self.reject(ignored.reason(), &msg.topic, None),
                }
            }
        }
        let hosts = self.hosts.read().expect("hosts lock");
        let round = Round {
            hosts: changed.keys().filter_map(|id| hosts.get(id)).collect(),
            transitions: round_transitions,
            samples,
            events,
            results,
        };
        if let Err(e) = self.store.write_round(&round) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "cannot write ingest round to sled");
        }
        for t in received {
            self.metrics.ingest_latency(t.elapsed().as_secs_f64());
        }
    }

    /// Marks agents offline whose heartbeats stopped.
    pub fn sweep(&self) {
        let now = now_ms();
        let mut transitions = Vec::new();
        let mut hosts = self.hosts.write().expect("hosts lock");
        for host in hosts.values_mut() {
            if let Some(change) = host.sweep(&self.timings, self.started_ms, now) {
                tracing::info!(agent.id = %host.id, "presence: offline by timeout");
                self.metrics.transition(cause_name(change.cause));
                transitions.push((host.id.clone(), change));
            }
        }
        if transitions.is_empty() {
            return;
        }
        let round = Round {
            hosts: transitions
                .iter()
                .filter_map(|(id, _)| hosts.get(id))
                .collect(),
            transitions: transitions.clone(),
            ..Round::default()
        };
        if let Err(e) = self.store.write_round(&round) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "cannot write timeouts to sled");
        }
    }

    fn reject(&self, reason: &'static str, topic: &str, error: Option<&VerifyError>) {
        self.metrics.rejected(reason);
        self.warn_limited(reason, || {
            tracing::warn!(topic = %topic.escape_default(), reason, error = ?error.map(|e| e.to_string()), "message rejected (further rejects for this reason are logged at most every 10 s)")
        });
    }

    fn warn_limited(&self, reason: &'static str, log: impl FnOnce()) {
        let mut last = self.log_limiter.lock().expect("limiter lock");
        let now = Instant::now();
        let due = last
            .get(reason)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10));
        if due {
            last.insert(reason, now);
            log();
        }
    }

    /// A snapshot of all host records, for queries.
    pub fn snapshot(&self) -> Vec<HostRecord> {
        self.hosts
            .read()
            .expect("hosts lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn host(&self, id: &str) -> Option<HostRecord> {
        self.hosts.read().expect("hosts lock").get(id).cloned()
    }

    pub fn agent_ids(&self) -> Vec<String> {
        self.hosts
            .read()
            .expect("hosts lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn summary_of(&self, host: &HostRecord, now: u64) -> api::AgentSummary {
        api::AgentSummary {
            id: host.id.clone(),
            hostname: host.hostname.clone(),
            display_name: host.hostname.clone(),
            status: host.status,
            stale: host.is_stale(&self.timings, now),
            os: host.os.clone(),
            ips: host.ips.clone(),
            cpu: host.vitals.map(|v| v.cpu_pct),
            mem: host.vitals.map(|v| v.mem_pct),
            disk: host.vitals.map(|v| v.disk_pct),
            last_seen: host.last_seen,
        }
    }
}

fn parse_key(hex: &str) -> Option<PublicKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(PublicKey::from_bytes(key))
}

pub fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::Will => "will",
        Cause::Clean => "clean",
        Cause::Timeout => "timeout",
        Cause::Birth => "birth",
        Cause::Heartbeat => "heartbeat",
        Cause::Connect => "connect",
    }
}

/// Parses an agent id from a URL path segment.
pub fn parse_id(id: &str) -> Option<AgentId> {
    id.parse().ok()
}
