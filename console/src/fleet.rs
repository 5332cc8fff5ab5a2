//! The fleet: in-memory index of hosts over the sled store, the connect policy, ingest of
//! agent telemetry, the timeout sweep, and the queries the REST API serves.
//!
//! sled is the source of truth; the in-memory map is rebuilt from it on start and every
//! change is written back in the same ingest round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::api::{self, AgentStatus, Cause, StatusChange};
use edgefleet_codec::{
    open_agent, open_enroll_request, sign_console, AgentId, AgentMessage, ConsoleMessage,
    EnrollDecision, EnrollRequest, EnrollResponse, Identity, MacKey, PublicKey, Topic, Topics,
    VerifyError,
};
use tokio::sync::mpsc;

use crate::alerts::{Alerts, HostFacts, Rules};
use crate::audit::{Audit, CONSOLE};
use crate::commands::{CommandRecord, CommandState, Commands};
use crate::enrollment::{find_duplicate, ConsumeError, Duplicate, Tokens};
use crate::inventory::{Inventory, Reply};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::notify::{Notifier, Webhook};
use crate::presence::{Approval, HostRecord, Timings};
use crate::store::{EventRecord, ResultRecord, Round, Sample, Store, StoreError};

mod scoped;

/// Failed connects allowed per agent id per minute before further attempts are refused
/// without checking (rumqttd's auth handler does not see the client address, so there is no
/// per-address limit at the MQTT layer).
pub const MAX_CONNECT_FAILURES: u32 = 5;
/// How often a not-approved agent that keeps sending telemetry is told its state.
const NOTICE_EVERY: Duration = Duration::from_secs(10);
/// Capacity of the queue of console publishes (enrollment responses) to the broker link.
const OUTBOX: usize = 4096;
/// Most events plus status changes held in memory while the free-space guard refuses
/// writes (a few hundred bytes each).
pub const MAX_BACKLOG: usize = 100_000;

/// A message the console publishes: enrollment responses and, later, commands.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Alert rules and notifiers ([`Fleet::open_with`]).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub rules: Rules,
    pub webhooks: Vec<Webhook>,
    pub webhook_max_age: Duration,
}

impl AlertSettings {
    /// The documented defaults, no webhooks.
    pub fn defaults(timings: &Timings) -> AlertSettings {
        AlertSettings {
            rules: Rules {
                offline_grace_ms: 10_000,
                notify_on_clean_stop: false,
                flap_count: 3,
                flap_window_ms: 600_000,
                hotspot_threshold: 80,
                hotspot_window_ms: 300_000,
                stale_after_ms: timings.stale_after_ms,
            },
            webhooks: Vec::new(),
            webhook_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Which host record an agent id's key belongs to, and the MAC key for its telemetry.
#[derive(Debug)]
struct AgentKey {
    host: String,
    mac: MacKey,
}

/// Why an operator decision on a host could not be made. Mapped to 404 / 409 by the API.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no agent {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storing the decision")]
    Store(#[from] StoreError),
}

/// How [`Fleet::issue_command_with`] issues a command.
#[derive(Debug, Clone, Copy)]
pub struct Issue {
    pub id: [u8; 16],
    /// Refuse it while the host is in maintenance (unless the action is allowed).
    pub maintenance: bool,
}

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
    /// When the console last (re)gained its broker: nobody times out within
    /// `restart_grace` of it. A console start, or a reconnect to an external broker.
    pub started_ms: std::sync::atomic::AtomicU64,
    /// False while an external broker is unreachable: no heartbeats can arrive, so the
    /// sweep must not call their silence a timeout. Always true with the embedded broker.
    pub broker_connected: std::sync::atomic::AtomicBool,
    pub metrics: Metrics,
    pub api_keys: crate::auth::ApiKeys,
    pub tokens: Tokens,
    pub audit: Audit,
    pub alerts: Alerts,
    pub commands: Commands,
    pub inventory: Inventory,
    /// Where uploaded update artifacts live (set by the console's run loop).
    pub artifacts_dir: std::sync::OnceLock<std::path::PathBuf>,
    pub notifier: std::sync::Arc<Notifier>,
    pub live: Live,
    pub groups: crate::groups::Groups,
    pub rollouts: crate::rollouts::Rollouts,
    /// Decisions written while the host lock was held, for alerts and the live stream to
    /// see once it is released ([`Fleet::flush_decided`]).
    decided: Mutex<Vec<(String, Option<String>, StatusChange)>>,
    /// Host records by host id. A host id is the agent id of the host's first key.
    hosts: RwLock<HashMap<String, HostRecord>>,
    /// Agent id (from the topic or client id) → host record and MAC key.
    keys: RwLock<HashMap<String, AgentKey>>,
    outbox: mpsc::Sender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    connect_failures: Mutex<HashMap<String, (Instant, u32)>>,
    notices: Mutex<HashMap<String, Instant>>,
    log_limiter: Mutex<HashMap<&'static str, Instant>>,
    backlog: Mutex<Backlog>,
}

/// What ingest and the sweep accepted while the free-space guard refused writes, held in
/// memory until [`Fleet::write_backlog`] stores it. The broker has already acknowledged
/// these messages to their agents; status changes held here are the only copy (a crash
/// loses them, and presence heals on the next birth), while events are not receipted
/// until they are stored, so their agents keep them and send them again. Samples are
/// not held (charts get a gap), nor command results and progress: the command stays
/// unfinished in sled, and after writes resume the console announces a new epoch, the
/// agents re-birth, the command is redelivered and the agent answers with its kept result.
#[derive(Debug, Default)]
struct Backlog {
    /// Host ids whose in-memory record changed since it was last written.
    hosts: std::collections::BTreeSet<String>,
    transitions: Vec<(String, StatusChange)>,
    events: Vec<(String, EventRecord)>,
    /// (host id, event id) of `events`: an agent sends an event again until its receipt
    /// comes, and the copies must not fill the backlog.
    event_keys: HashSet<(String, u64)>,
    /// The receipts owed once `events` are stored.
    receipts: Vec<(AgentId, u64)>,
}

impl Backlog {
    fn len(&self) -> usize {
        self.transitions.len() + self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.len() == 0
    }
}

/// Inventory traffic of one ingest round, handled after the host lock is released.
#[derive(Debug)]
enum InventoryWork {
    Birth(Option<[u8; 8]>, Option<u64>),
    Chunk(edgefleet_codec::InventoryChunk),
    Delta(edgefleet_codec::InventoryDelta),
    Unavailable(String),
}

impl Fleet {
    /// [`Fleet::open_with`] the default alert settings and no webhooks.
    pub fn open(
        store: Store,
        identity: Identity,
        topics: Topics,
        timings: Timings,
    ) -> Result<Fleet, StoreError> {
        let settings = AlertSettings::defaults(&timings);
        Fleet::open_with(store, identity, topics, timings, settings)
    }

    pub fn open_with(
        store: Store,
        identity: Identity,
        topics: Topics,
        timings: Timings,
        settings: AlertSettings,
    ) -> Result<Fleet, StoreError> {
        let mut hosts = HashMap::new();
        let mut keys = HashMap::new();
        for host in store.load_hosts()? {
            if let Some(key) = parse_key(&host.public_key) {
                match MacKey::derive_console(&identity, &key) {
                    Ok(mac) => {
                        keys.insert(
                            host.current_agent_id().to_string(),
                            AgentKey {
                                host: host.id.clone(),
                                mac,
                            },
                        );
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
        let tokens = Tokens::new(store.tree("tokens")?);
        let audit = Audit::open(store.tree("audit")?)?;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let facts: Vec<HostFacts> = hosts.values().filter_map(facts_of).collect();
        let alerts = Alerts::open(
            store.tree("alerts")?,
            store.tree("silences")?,
            settings.rules,
            &facts,
        )?;
        let commands = Commands::open(store.tree("commands")?, store.tree("agent_commands")?)?;
        let groups = crate::groups::Groups::open(store.tree("groups")?)?;
        let rollouts = crate::rollouts::Rollouts::open(store.tree("rollouts")?)?;
        let inventory = Inventory::open(
            store.tree("inv_pkgs")?,
            store.tree("inv_index")?,
            store.tree("inv_hosts")?,
        );
        let notifier = std::sync::Arc::new(Notifier::new(
            store.tree("outbox")?,
            settings.webhooks,
            settings.webhook_max_age,
        ));
        let fleet = Fleet {
            groups,
            rollouts,
            api_keys,
            tokens,
            audit,
            alerts,
            commands,
            inventory,
            artifacts_dir: std::sync::OnceLock::new(),
            notifier,
            live: Live::new(now_ms()),
            decided: Mutex::new(Vec::new()),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            connect_failures: Mutex::new(HashMap::new()),
            notices: Mutex::new(HashMap::new()),
            store,
            identity,
            topics,
            timings,
            started_ms: now_ms().into(),
            broker_connected: true.into(),
            metrics: Metrics::default(),
            hosts: RwLock::new(hosts),
            keys: RwLock::new(keys),
            log_limiter: Mutex::new(HashMap::new()),
            backlog: Mutex::new(Backlog::default()),
        };
        // Scoped alert rules and maintenance live in memory: rebuild them.
        fleet.apply_scoped(None);
        Ok(fleet)
    }

    /// What the console wants published, in order: the console's run loop hands these to
    /// the broker link. Taken once.
    pub fn take_outbox(&self) -> Option<mpsc::Receiver<Outgoing>> {
        self.outbox_rx.lock().expect("outbox lock").take()
    }

    /// The broker's connect policy (docs/wire.md, "Connect"): the client id is
    /// `{agent_id}-{n}`, the username the agent id (plus a token claim before enrollment),
    /// and the password a fresh signature by the agent's key. Known agents get in unless
    /// revoked; unknown keys only with a claim for a live token.
    pub fn accept_connect(&self, attempt: &ConnectAttempt) -> bool {
        match self.check_connect(attempt) {
            Ok(()) => true,
            Err(reason) => {
                self.metrics.connect_refused(reason);
                false
            }
        }
    }

    fn check_connect(&self, attempt: &ConnectAttempt) -> Result<(), &'static str> {
        let now = now_ms();
        // Agents connect as `{agent_id}-{bd_seq}`; see docs/wire.md.
        let agent_part = match attempt.client_id.split_once('-') {
            Some((id, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => id,
            _ => return Err("bad_client_id"),
        };
        let (user_id, claim) =
            edgefleet_codec::connect::parse_username(&attempt.username).map_err(|e| e.reason())?;
        if user_id != agent_part {
            return Err("username_mismatch");
        }
        if self.connect_limited(agent_part) {
            return Err("rate_limited");
        }
        let refuse = |reason: &'static str, why: &dyn std::fmt::Display| {
            self.connect_failed(agent_part);
            self.warn_limited(reason, || {
                tracing::warn!(client.id = %attempt.client_id.escape_default(), reason, error = %why, "connect refused (further refusals for this reason are logged at most every 10 s)")
            });
            reason
        };
        let key =
            edgefleet_codec::connect::verify_password(agent_part, &attempt.password, now / 1000)
                .map_err(|e| refuse(e.reason(), &e))?;
        let known = self
            .keys
            .read()
            .expect("keys lock")
            .get(agent_part)
            .map(|k| k.host.clone());
        if let Some(host_id) = known {
            let (approval, deleted) = self
                .hosts
                .read()
                .expect("hosts lock")
                .get(&host_id)
                .map(|h| (h.approval, h.deleted_at.is_some()))
                .unwrap_or((Approval::Active, false));
            if approval == Approval::Revoked {
                return Err(refuse("revoked", &"the agent is revoked"));
            }
            if deleted {
                self.return_after_delete(&host_id, now);
                self.flush_decided();
            }
            return Ok(());
        }
        let Some(claim) = claim else {
            return Err(refuse(
                "not_enrolled",
                &"unknown key and no enrollment token claim",
            ));
        };
        self.tokens
            .check(&claim.token_id, &key, &claim.proof, now)
            .map(|_| ())
            .map_err(|r| refuse(r.reason(), &r))
    }

    fn connect_limited(&self, id: &str) -> bool {
        let failures = self.connect_failures.lock().expect("failures lock");
        failures.get(id).is_some_and(|(start, n)| {
            *n >= MAX_CONNECT_FAILURES && start.elapsed() < Duration::from_secs(60)
        })
    }

    fn connect_failed(&self, id: &str) {
        let mut failures = self.connect_failures.lock().expect("failures lock");
        let now = Instant::now();
        if failures.len() > 100_000 {
            failures.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = failures.entry(id.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// A soft-deleted host's key proved itself again: it is treated as new, so it waits
    /// for approval. Its record (and history) is kept.
    fn return_after_delete(&self, host_id: &str, now: u64) {
        let mut hosts = self.hosts.write().expect("hosts lock");
        let Some(host) = hosts.get_mut(host_id) else {
            return;
        };
        if host.deleted_at.is_none() {
            return;
        }
        host.deleted_at = None;
        host.approval = Approval::Pending;
        let change = host.decide(AgentStatus::Pending, Cause::Enrolled, now);
        self.write(&hosts, host_id, change);
        drop(hosts);
        self.audit_or_log(
            CONSOLE,
            "returned",
            host_id,
            "a deleted agent connected again; it is pending approval",
        );
    }

    fn write(&self, hosts: &HashMap<String, HostRecord>, host_id: &str, change: StatusChange) {
        self.decided.lock().expect("decided lock").push((
            host_id.to_string(),
            hosts.get(host_id).and_then(|h| h.hostname.clone()),
            change.clone(),
        ));
        let round = Round {
            hosts: hosts.get(host_id).into_iter().collect(),
            transitions: vec![(host_id.to_string(), change)],
            ..Round::default()
        };
        if let Err(e) = self.store.write_round(&round) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(agent.id = %host_id, error = %e, "cannot store a host decision");
        }
    }

    /// Keeps what a round could not write while the free-space guard refuses writes. Over
    /// [`MAX_BACKLOG`] the newest are dropped and counted (the oldest already waited
    /// longest to be stored, and events are keyed by id, so order is not at stake).
    fn hold_back(
        &self,
        hosts: Vec<String>,
        transitions: Vec<(String, StatusChange)>,
        events: Vec<(String, EventRecord)>,
        receipts: Vec<(AgentId, u64)>,
    ) {
        let mut backlog = self.backlog.lock().expect("backlog lock");
        backlog.hosts.extend(hosts);
        let mut dropped = 0u64;
        for t in transitions {
            if backlog.len() < MAX_BACKLOG {
                backlog.transitions.push(t);
            } else {
                dropped += 1;
            }
        }
        // Pushed together by ingest: a receipt for every event, in the same order.
        debug_assert_eq!(events.len(), receipts.len(), "one receipt per held event");
        for (e, receipt) in events.into_iter().zip(receipts) {
            let key = (e.0.clone(), e.1.event_id);
            if backlog.event_keys.contains(&key) {
                continue;
            }
            if backlog.len() < MAX_BACKLOG {
                backlog.event_keys.insert(key);
                backlog.events.push(e);
                backlog.receipts.push(receipt);
            } else {
                // Not receipted: the agent keeps it and sends it again later.
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.metrics
                .store_backlog_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.warn_limited("backlog_full", || {
                tracing::error!(
                    dropped,
                    held = MAX_BACKLOG,
                    "writes are refused and the backlog is full: agent events and status changes are being lost"
                )
            });
        }
    }

    /// Events and status changes waiting for writes to resume.
    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().expect("backlog lock").len()
    }

    /// Stores what was held back while writes were refused, then lets alerts and the live
    /// stream see its status changes. Does nothing while writes are still refused; on a
    /// failed write everything stays held for the next try.
    pub fn write_backlog(&self) {
        if self.store.is_refusing() {
            return;
        }
        let hosts = self.hosts.write().expect("hosts lock");
        let backlog = std::mem::take(&mut *self.backlog.lock().expect("backlog lock"));
        if backlog.is_empty() {
            return;
        }
        let Backlog {
            hosts: ids,
            transitions,
            events,
            event_keys,
            receipts,
        } = backlog;
        let round = Round {
            hosts: ids.iter().filter_map(|id| hosts.get(id)).collect(),
            transitions,
            events,
            ..Round::default()
        };
        // Transitions must reach disk now, not at the next periodic flush: the ones in a
        // normal round are flushed too (`Store::write_round`).
        let written = self
            .store
            .write_admitted(&round)
            .and_then(|()| self.store.flush());
        let Round {
            transitions,
            events,
            ..
        } = round;
        if let Err(e) = written {
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot write what was held back while writes were refused");
            let mut backlog = self.backlog.lock().expect("backlog lock");
            backlog.hosts.extend(ids);
            backlog.transitions.extend(transitions);
            backlog.events.extend(events);
            backlog.event_keys.extend(event_keys);
            backlog.receipts.extend(receipts);
            return;
        }
        tracing::info!(
            hosts = ids.len(),
            transitions = transitions.len(),
            events = events.len(),
            "stored what was held back while writes were refused"
        );
        let named: Vec<_> = transitions
            .into_iter()
            .map(|(id, c)| {
                let name = hosts.get(&id).and_then(|h| h.hostname.clone());
                (id, name, c)
            })
            .collect();
        drop(hosts);
        self.send_receipts(receipts);
        self.react(&named, &[]);
    }

    /// Tells agents that their events are stored (flushed): they may forget them. Sent
    /// only after the write and its flush; a receipt lost on the way costs a resend.
    fn send_receipts(&self, receipts: Vec<(AgentId, u64)>) {
        let mut by_agent: BTreeMap<String, (AgentId, Vec<u64>)> = BTreeMap::new();
        for (agent, event_id) in receipts {
            by_agent
                .entry(agent.to_string())
                .or_insert_with(|| (agent, Vec::new()))
                .1
                .push(event_id);
        }
        let at = now_ms() / 1000;
        for (agent, ids) in by_agent.into_values() {
            for chunk in ids.chunks(edgefleet_codec::MAX_RECEIPT_IDS) {
                let receipt = ConsoleMessage::EventReceipt(edgefleet_codec::EventReceipt {
                    at,
                    event_ids: chunk.to_vec(),
                });
                let out = Outgoing {
                    topic: self.topics.agent(&agent, edgefleet_codec::Channel::Command),
                    payload: sign_console(&receipt, Some(&agent), &self.identity),
                };
                if self.outbox.try_send(out).is_err() {
                    // The agent sends the events again after its receipt timeout.
                    self.metrics.rejected("outbox_full");
                }
            }
        }
    }

    /// Appends to the audit log and tells the live stream.
    pub fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: &str,
    ) -> Result<api::AuditEntry, StoreError> {
        let now = now_ms();
        let entry = self.audit.record(actor, action, target, detail, now)?;
        self.live.publish(
            api::LiveBody::Audit {
                entry: entry.clone(),
            },
            now,
        );
        Ok(entry)
    }

    /// Hands decisions queued by [`Fleet::write`] to alerts and the live stream. Called
    /// with no host lock held.
    pub fn flush_decided(&self) {
        let decided = std::mem::take(&mut *self.decided.lock().expect("decided lock"));
        if !decided.is_empty() {
            self.react(&decided, &[]);
        }
    }

    /// Presence changes and vitals, after they are stored: alert rules and live events.
    fn react(
        &self,
        transitions: &[(String, Option<String>, StatusChange)],
        vitals: &[(String, Option<String>, [u8; 3])],
    ) {
        let now = now_ms();
        let mut changes = Vec::new();
        {
            let mut engine = self.alerts.engine.lock().expect("engine lock");
            for (id, hostname, change) in transitions {
                changes.extend(engine.on_transition(
                    id,
                    hostname,
                    change.status,
                    change.cause,
                    now,
                ));
            }
            for (id, hostname, [cpu, mem, disk]) in vitals {
                changes.extend(engine.on_vitals(
                    id,
                    hostname,
                    [("cpu", *cpu), ("mem", *mem), ("disk", *disk)],
                    now,
                ));
            }
        }
        for (id, _, change) in transitions {
            self.live.publish(
                api::LiveBody::Status {
                    agent: id.clone(),
                    status: change.status,
                    cause: change.cause,
                },
                now,
            );
        }
        for (id, _, [cpu, mem, disk]) in vitals {
            self.live.publish(
                api::LiveBody::Vitals {
                    agent: id.clone(),
                    cpu: *cpu,
                    mem: *mem,
                    disk: *disk,
                },
                now,
            );
        }
        self.emit_alerts(changes, now);
    }

    /// Stores alert changes, notifies, and tells the live stream.
    pub fn emit_alerts(&self, changes: Vec<api::AlertView>, now: u64) {
        if changes.is_empty() {
            return;
        }
        let stored = match self.alerts.store(changes, now, &|g, h| self.in_group(g, h)) {
            Ok(stored) => stored,
            Err(e) => {
                self.metrics
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "cannot store alerts");
                return;
            }
        };
        for alert in stored {
            let summary = self.host(&alert.agent).map(|h| self.summary_of(&h, now));
            if let Err(e) = self.notifier.alert(&alert, summary, now) {
                tracing::error!(error = %e, alert.id = alert.id, "cannot queue a notification");
            }
            self.live.publish(api::LiveBody::Alert { alert }, now);
        }
    }

    /// The time-driven alert rules; run every half second. Paused while writes are refused:
    /// an alert must be stored before it is notified, and transitions held back have not
    /// reached the engine yet.
    pub fn alert_tick(&self) {
        if self.store.is_refusing() {
            return;
        }
        let facts: Vec<HostFacts> = self
            .hosts
            .read()
            .expect("hosts lock")
            .values()
            .filter_map(facts_of)
            .collect();
        let now = now_ms();
        let changes = self
            .alerts
            .engine
            .lock()
            .expect("engine lock")
            .tick(&facts, now);
        self.emit_alerts(changes, now);
        self.expire_commands(now);
    }

    /// Signs, stores and (if the agent is online) publishes a command. `Conflict` if the
    /// host is not active.
    pub fn issue_command(
        &self,
        host_id: &str,
        action: edgefleet_codec::CommandAction,
        ttl: Duration,
        actor: &str,
    ) -> Result<CommandRecord, DecisionError> {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        self.issue_command_with(
            host_id,
            action,
            ttl,
            actor,
            Issue {
                id,
                maintenance: true,
            },
        )
    }

    /// [`Fleet::issue_command`] with a chosen command id (a rollout records the id before
    /// it sends, so a restart never sends a second command) and, for the console's own
    /// settings pushes, without the maintenance check.
    pub fn issue_command_with(
        &self,
        host_id: &str,
        action: edgefleet_codec::CommandAction,
        ttl: Duration,
        actor: &str,
        issue: Issue,
    ) -> Result<CommandRecord, DecisionError> {
        let now = now_ms();
        let id = issue.id;
        let (agent_id, online) = {
            let hosts = self.hosts.read().expect("hosts lock");
            let host = live(&hosts, host_id)?;
            if host.approval != Approval::Active {
                return Err(DecisionError::Conflict(format!(
                    "agent {host_id} is {}: commands go to active agents only",
                    host.status.as_str()
                )));
            }
            if let (true, Some(m)) = (issue.maintenance, &host.maintenance) {
                let name = crate::commands::action_name(&action);
                if !m.allow.iter().any(|a| a == name) {
                    return Err(DecisionError::Conflict(crate::maintenance::refusal(
                        host_id, m, name,
                    )));
                }
            }
            let agent_id: AgentId = host
                .current_agent_id()
                .parse()
                .map_err(|_| DecisionError::NotFound(host_id.into()))?;
            (agent_id, host.status == AgentStatus::Online)
        };
        let expires_at = now + ttl.as_millis() as u64;
        let command = edgefleet_codec::Command {
            id,
            target: agent_id.to_string(),
            issued_at: now / 1000,
            expires_at: expires_at / 1000,
            action: action.clone(),
        };
        let signed = sign_console(
            &ConsoleMessage::Command(command),
            Some(&agent_id),
            &self.identity,
        );
        let mut record = CommandRecord {
            id,
            agent: host_id.to_string(),
            action,
            actor: actor.to_string(),
            issued_at: now,
            expires_at,
            state: CommandState::Queued,
            delivered_at: None,
            finished_at: None,
            progress: Vec::new(),
            message: None,
            signed,
        };
        self.commands.put(&record)?;
        let view = record.view();
        // A script is named by its hash: that is what agents allow-list.
        let script = match &record.action {
            edgefleet_codec::CommandAction::RunScript { script } => format!(
                " script sha256 {}",
                crate::commands::hex(&<sha2::Sha256 as sha2::Digest>::digest(script.as_bytes()))
            ),
            _ => String::new(),
        };
        self.audit_or_log(
            actor,
            "command",
            host_id,
            &format!(
                "{} {}{}{script} (expires in {} s)",
                view.action,
                view.id,
                view.app.map(|a| format!(" app {a}")).unwrap_or_default(),
                ttl.as_secs()
            ),
        );
        if online {
            self.deliver(&mut record, &agent_id);
        } else {
            self.command_changed(&record);
        }
        Ok(record)
    }

    /// Records the delivery, then publishes the signed command: the agent can answer
    /// within a millisecond, before a delivery written afterwards (which `Commands::put`
    /// would then drop rather than turn `succeeded` back into `delivered`; the soak caught
    /// that race).
    fn deliver(&self, record: &mut CommandRecord, agent_id: &AgentId) {
        let out = Outgoing {
            topic: self
                .topics
                .agent(agent_id, edgefleet_codec::Channel::Command),
            payload: record.signed.clone(),
        };
        let before = (record.delivered_at, record.state);
        record.delivered_at = Some(now_ms());
        if record.state == CommandState::Queued {
            record.state = CommandState::Delivered;
        }
        if let Err(e) = self.commands.put(record) {
            tracing::error!(error = %e, "cannot store a command delivery");
        }
        if self.outbox.try_send(out).is_err() {
            // Never sent, so no result can race this write.
            self.metrics.rejected("outbox_full");
            (record.delivered_at, record.state) = before;
            if let Err(e) = self.commands.put(record) {
                tracing::error!(error = %e, "cannot store a command delivery");
            }
            return;
        }
        self.command_changed(record);
    }

    /// Publishes every unfinished, unexpired command of a host again (after its birth).
    fn redeliver(&self, host_id: &str) {
        let ids = self.commands.open_for(host_id);
        if ids.is_empty() {
            return;
        }
        let agent_id = self
            .host(host_id)
            .and_then(|h| h.current_agent_id().parse::<AgentId>().ok());
        let Some(agent_id) = agent_id else { return };
        let now = now_ms();
        for id in ids {
            match self.commands.get(&id) {
                Ok(Some(mut r)) if !r.state.is_final() && r.expires_at > now => {
                    self.deliver(&mut r, &agent_id)
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read a command"),
            }
        }
    }

    /// Applies inventory traffic and answers the agent (ack, or a request for everything).
    fn inventory_work(&self, host: &str, agent: &AgentId, work: InventoryWork, now: u64) {
        let reply = match work {
            InventoryWork::Birth(digest, interval) => {
                self.inventory.on_birth(host, digest, interval)
            }
            InventoryWork::Chunk(c) => self.inventory.on_chunk(host, &c, now),
            InventoryWork::Delta(d) => self.inventory.on_delta(host, &d, now),
            InventoryWork::Unavailable(why) => {
                self.inventory.on_error(host, &why).map(|()| Reply::None)
            }
        };
        let digest = match reply {
            Ok(Reply::None) => return,
            Ok(Reply::Ack(d)) => Some(d),
            Ok(Reply::Resync) => None,
            Err(e) => {
                self.metrics
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(agent.id = %host, error = %e, "cannot store inventory");
                return;
            }
        };
        let ack = ConsoleMessage::InventoryAck(edgefleet_codec::InventoryAck {
            at: now / 1000,
            digest,
        });
        let out = Outgoing {
            topic: self.topics.agent(agent, edgefleet_codec::Channel::Command),
            payload: sign_console(&ack, Some(agent), &self.identity),
        };
        if self.outbox.try_send(out).is_err() {
            self.metrics.rejected("outbox_full");
        }
    }

    fn command_progress(&self, host_id: &str, p: &edgefleet_codec::CommandProgress) {
        let Ok(Some(mut r)) = self.commands.get(&p.command_id) else {
            self.metrics.rejected("unknown_command");
            return;
        };
        if r.agent != host_id || r.state.is_final() {
            self.metrics.rejected("unknown_command");
            return;
        }
        r.state = CommandState::Running;
        r.progress.push(api::CommandStep {
            at: p.at_ms,
            step: p.step.clone(),
            pct: p.pct,
        });
        if let Err(e) = self.commands.put(&r) {
            tracing::error!(error = %e, "cannot store command progress");
        }
        self.command_changed(&r);
    }

    fn command_finished(&self, host_id: &str, result: &edgefleet_codec::CommandResult) {
        let Ok(Some(mut r)) = self.commands.get(&result.command_id) else {
            self.metrics.rejected("unknown_command");
            return;
        };
        if r.agent != host_id {
            self.metrics.rejected("unknown_command");
            return;
        }
        if r.state.is_final() {
            // A redelivered result (the agent resends until PUBACK): already recorded.
            return;
        }
        r.state = result.outcome.into();
        r.finished_at = Some(result.at_ms);
        r.message = Some(result.message.clone());
        // Audit first: whoever sees the final state through the API finds its audit entry.
        let view = r.view();
        self.audit_or_log(
            "agent",
            "command_result",
            host_id,
            &format!(
                "{} {}: {} ({})",
                view.action, view.id, view.state, result.message
            ),
        );
        if let Err(e) = self.commands.put(&r) {
            tracing::error!(error = %e, "cannot store a command result");
        }
        self.command_changed(&r);
    }

    /// Queued or delivered commands past their expiry are expired; the agent refuses them
    /// too, by their signed expiry.
    fn expire_commands(&self, now: u64) {
        for id in self.commands.all_open() {
            let Ok(Some(mut r)) = self.commands.get(&id) else {
                continue;
            };
            if r.expires_at > now
                || !matches!(r.state, CommandState::Queued | CommandState::Delivered)
            {
                continue;
            }
            r.state = CommandState::Expired;
            r.finished_at = Some(now);
            if let Err(e) = self.commands.put(&r) {
                tracing::error!(error = %e, "cannot store a command expiry");
                continue;
            }
            let view = r.view();
            self.audit_or_log(
                CONSOLE,
                "command_expired",
                &r.agent,
                &format!(
                    "{} {}: not delivered before its expiry",
                    view.action, view.id
                ),
            );
            self.command_changed(&r);
        }
    }

    fn command_changed(&self, r: &CommandRecord) {
        self.live
            .publish(api::LiveBody::Command { command: r.view() }, now_ms());
    }

    pub fn audit_or_log(&self, actor: &str, action: &str, target: &str, detail: &str) {
        if let Err(e) = self.record_audit(actor, action, Some(target), detail) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, action, target, detail, "cannot write an audit entry");
        }
    }

    /// Verifies and applies one round of messages, then writes everything in one batch.
    pub fn ingest(&self, batch: Vec<Inbound>) {
        let refusing = self.store.is_refusing();
        if !refusing {
            self.write_backlog();
        }
        let now = now_ms();
        let received: Vec<Instant> = batch.iter().map(|m| m.received).collect();
        let mut changed: BTreeMap<String, ()> = BTreeMap::new();
        // Hosts whose record changed beyond the routine fields (`store::Hot`): a birth, a
        // status, a transition, new app states. The rest get the small hot write.
        let mut whole: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut round_transitions = Vec::new();
        let mut samples = Vec::new();
        let mut events = Vec::new();
        let mut receipts: Vec<(AgentId, u64)> = Vec::new();
        let mut results = Vec::new();
        let mut enrollments = Vec::new();
        let mut notices = Vec::new();
        let mut live_vitals = Vec::new();
        let mut progress = Vec::new();
        let mut finished = Vec::new();
        let mut inventory: Vec<(String, AgentId, InventoryWork)> = Vec::new();
        let mut births: Vec<String> = Vec::new();
        // The write lock is held until the round is in sled: a reader that sees a
        // new status must also find its transition in the store.
        let mut hosts = self.hosts.write().expect("hosts lock");
        {
            let keys = self.keys.read().expect("keys lock");
            for msg in batch {
                let (id, channel) = match self.topics.parse(&msg.topic) {
                    Ok(Topic::Agent { id, channel }) => (id, channel),
                    Ok(Topic::Enroll { id }) => {
                        enrollments.push((id, msg));
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
                let Some((key, host)) = keys
                    .get(id.as_str())
                    .and_then(|k| Some((k, hosts.get_mut(&k.host)?)))
                else {
                    self.reject("unknown_agent", &msg.topic, None);
                    continue;
                };
                if host.approval != Approval::Active || host.deleted_at.is_some() {
                    // Pending, revoked or deleted: nothing but enrollment counts.
                    self.reject("not_approved", &msg.topic, None);
                    notices.push(id.clone());
                    continue;
                }
                let host_id = host.id.clone();
                let message = match open_agent(&msg.payload, &id, &key.mac) {
                    Ok(m) => m,
                    Err(e) => {
                        self.reject(e.reason(), &msg.topic, Some(&e));
                        continue;
                    }
                };
                let kind = message.kind().name();
                let bd_seq_before = host.bd_seq;
                let outcome = match &message {
                    AgentMessage::Birth(b) => host.on_birth(b, now).inspect(|_| {
                        births.push(host_id.clone());
                        inventory.push((
                            host_id.clone(),
                            id.clone(),
                            InventoryWork::Birth(b.inventory_digest, b.inventory_interval_s),
                        ));
                    }),
                    AgentMessage::Status(s) => host.on_status(s, now),
                    AgentMessage::Heartbeat(hb) => host.on_heartbeat(hb, now).inspect(|_| {
                        let at = hb.at.map_or(now, |s| s.saturating_mul(1000));
                        let mut v = host.vitals.unwrap_or_default();
                        v.apply(hb);
                        // A history sample dated beyond the clock skew a CONNECT allows
                        // would head every chart and outlive retention: its vitals still
                        // apply, but it is not stored. (An ancient one is stored and goes
                        // with the next retention sweep.)
                        if at > now.saturating_add(edgefleet_codec::connect::MAX_SKEW_SECS * 1000) {
                            self.reject("future_sample", &msg.topic, None);
                        } else {
                            samples.push((host_id.clone(), at, Sample::one(&v)));
                        }
                        if hb.at.is_none() {
                            live_vitals.push((host_id.clone(), [v.cpu_pct, v.mem_pct, v.disk_pct]));
                        }
                    }),
                    AgentMessage::Event(ev) => host.on_other(message.sequence(), now).map(|()| {
                        if ev.kind == "inventory_unavailable" {
                            inventory.push((
                                host_id.clone(),
                                id.clone(),
                                InventoryWork::Unavailable(ev.message.clone()),
                            ));
                        }
                        receipts.push((id.clone(), ev.event_id));
                        events.push((
                            host_id.clone(),
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
                    AgentMessage::CommandProgress(p) => {
                        host.on_other(message.sequence(), now).map(|()| {
                            progress.push((host_id.clone(), p.clone()));
                            None
                        })
                    }
                    AgentMessage::CommandResult(r) => {
                        host.on_other(message.sequence(), now).map(|()| {
                            // An agent sends a result again when the command is redelivered
                            // (this console lost the first copy, or never stored it): keep
                            // one record per finished command.
                            let recorded = matches!(
                                self.commands.get(&r.command_id),
                                Ok(Some(c)) if c.state.is_final()
                            );
                            finished.push((host_id.clone(), r.clone()));
                            if recorded {
                                return None;
                            }
                            results.push((
                                host_id.clone(),
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
                    AgentMessage::InventoryChunk(c) => {
                        host.on_other(message.sequence(), now).map(|()| {
                            inventory.push((
                                host_id.clone(),
                                id.clone(),
                                InventoryWork::Chunk(c.clone()),
                            ));
                            None
                        })
                    }
                    AgentMessage::InventoryDelta(d) => {
                        host.on_other(message.sequence(), now).map(|()| {
                            inventory.push((
                                host_id.clone(),
                                id.clone(),
                                InventoryWork::Delta(d.clone()),
                            ));
                            None
                        })
                    }
                };
                // A heartbeat that opened a newer connection stands in for its lost birth
                // (`HostRecord::on_heartbeat`): that connection gets what a birth would.
                let resumed = matches!(message, AgentMessage::Heartbeat(_))
                    && outcome.is_ok()
                    && host.bd_seq > bd_seq_before;
                if resumed {
                    tracing::warn!(agent.id = %host_id, bd_seq = host.bd_seq, "presence: a heartbeat from a connection whose birth has not arrived (lost, or overtaken by it); treated as its birth");
                    births.push(host_id.clone());
                }
                let routine = match &message {
                    AgentMessage::Birth(_) | AgentMessage::Status(_) => false,
                    AgentMessage::Heartbeat(hb) => hb.apps.is_none() && !resumed,
                    _ => true,
                };
                match outcome {
                    Ok(change) => {
                        self.metrics.ingested(kind);
                        if !routine || change.is_some() {
                            whole.insert(host_id.clone());
                        }
                        if let Some(change) = change {
                            self.metrics.transition(cause_name(change.cause));
                            tracing::info!(agent.id = %host_id, status = change.status.as_str(), cause = cause_name(change.cause), "presence");
                            round_transitions.push((host_id.clone(), change));
                        }
                        changed.insert(host_id, ());
                    }
                    Err(ignored) => self.reject(ignored.reason(), &msg.topic, None),
                }
            }
        }
        if refusing {
            // Presence stays current in memory; what must be kept waits in the backlog,
            // and the rest is left for the agents to send again (see `Backlog`).
            self.metrics
                .store_refused_samples
                .fetch_add(samples.len() as u64, Ordering::Relaxed);
            for _ in &enrollments {
                self.metrics.rejected("writes_refused");
            }
            drop(hosts);
            self.hold_back(
                changed.into_keys().collect(),
                round_transitions,
                events,
                receipts,
            );
            for id in notices {
                self.notice(&id);
            }
            for t in received {
                self.metrics.ingest_latency(t.elapsed().as_secs_f64());
            }
            return;
        }
        let round = Round {
            hosts: whole.iter().filter_map(|id| hosts.get(id)).collect(),
            hot: changed
                .keys()
                .filter(|id| !whole.contains(*id))
                .filter_map(|id| hosts.get(id))
                .collect(),
            transitions: round_transitions,
            samples,
            events,
            results,
        };
        match self.store.write_admitted(&round) {
            // The round is flushed when it has events (`Store::write_round`).
            Ok(()) => self.send_receipts(receipts),
            Err(e) => {
                self.metrics
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "cannot write ingest round to sled");
            }
        }
        let name = |id: &String| hosts.get(id).and_then(|h| h.hostname.clone());
        let transitions: Vec<_> = round
            .transitions
            .iter()
            .map(|(id, c)| (id.clone(), name(id), c.clone()))
            .collect();
        let vitals: Vec<_> = live_vitals
            .into_iter()
            .map(|(id, v)| {
                let n = name(&id);
                (id, n, v)
            })
            .collect();
        drop(round);
        drop(hosts);
        self.react(&transitions, &vitals);
        for (host, p) in progress {
            self.command_progress(&host, &p);
        }
        for (host, r) in finished {
            self.command_finished(&host, &r);
        }
        for (host, agent, work) in inventory {
            self.inventory_work(&host, &agent, work, now);
        }
        // A birth is a new connection with fresh subscriptions: hand it what is pending,
        // also when the status did not change (a reconnect after a console restart).
        // Its labels may have changed, and with them its groups and settings.
        if !births.is_empty() {
            self.apply_scoped(Some(&births));
        }
        for host in &births {
            self.redeliver(host);
        }
        for (id, msg) in enrollments {
            self.enroll(&id, &msg, now);
        }
        for id in notices {
            self.notice(&id);
        }
        self.flush_decided();
        for t in received {
            self.metrics.ingest_latency(t.elapsed().as_secs_f64());
        }
    }

    /// Handles an enrollment request: verify, decide, answer (signed) on the reply topic.
    fn enroll(&self, id: &AgentId, msg: &Inbound, now: u64) {
        let req = match open_enroll_request(&msg.payload, id) {
            Ok(req) => req,
            Err(e) => {
                self.reject(e.reason(), &msg.topic, Some(&e));
                return;
            }
        };
        if req.at.abs_diff(now / 1000) > edgefleet_codec::connect::MAX_SKEW_SECS {
            self.reject("clock_skew", &msg.topic, None);
            return;
        }
        self.metrics.ingested("enroll_request");
        let decision = self.decide_enrollment(id, &req, now);
        if let EnrollDecision::Rejected { reason } = &decision {
            tracing::warn!(agent.id = %id, hostname = %req.hostname.escape_default(), %reason, "enrollment rejected");
        }
        self.respond(id, decision);
    }

    fn decide_enrollment(&self, id: &AgentId, req: &EnrollRequest, now: u64) -> EnrollDecision {
        let key = PublicKey::from_bytes(req.public_key);
        let known = self
            .keys
            .read()
            .expect("keys lock")
            .get(id.as_str())
            .map(|k| k.host.clone());
        if let Some(host_id) = known {
            // Re-enrolling a known key: the same host record and its current decision.
            let mut hosts = self.hosts.write().expect("hosts lock");
            let conflict = hosts.get(&host_id).and_then(|h| {
                (h.approval == Approval::Pending)
                    .then(|| find_duplicate(hosts.values(), &host_id, &req.hostname, &req.ips))
                    .flatten()
            });
            if let Some(host) = hosts.get_mut(&host_id) {
                if host.deleted_at.is_none() {
                    if host.approval == Approval::Pending {
                        host.hostname = Some(req.hostname.clone());
                        host.os = Some(req.os.clone());
                        host.ips = req.ips.clone();
                        host.conflict = conflict.map(|d| match d {
                            Duplicate::Reject { message, .. } => message,
                            Duplicate::Adopt { reason, .. } => {
                                format!("approving adopts the existing record: {reason}")
                            }
                        });
                        let record = host.clone();
                        if let Err(e) = self.store.write_round(&Round {
                            hosts: vec![&record],
                            ..Round::default()
                        }) {
                            tracing::error!(agent.id = %host_id, error = %e, "cannot store a pending host");
                        }
                    }
                    if host.approval == Approval::Revoked {
                        // Counted like the embedded broker's connect refusal, which an
                        // external broker cannot make.
                        self.metrics.rejected("revoked");
                    }
                    return decision_of(host);
                }
            }
        }
        if let Err(refusal) = self.tokens.check(&req.token_id, &key, &req.proof, now) {
            self.metrics.rejected(refusal.reason());
            return EnrollDecision::Rejected {
                reason: refusal.to_string(),
            };
        }
        let mac = match MacKey::derive_console(&self.identity, &key) {
            Ok(mac) => mac,
            Err(e) => {
                self.metrics.rejected(e.reason());
                return EnrollDecision::Rejected {
                    reason: format!("unusable agent key: {e}"),
                };
            }
        };
        let mut hosts = self.hosts.write().expect("hosts lock");
        let duplicate = find_duplicate(hosts.values(), id.as_str(), &req.hostname, &req.ips);
        if let Some(Duplicate::Reject { host, message }) = &duplicate {
            self.metrics.rejected("duplicate_host");
            drop(hosts);
            self.audit_or_log(
                CONSOLE,
                "enroll_rejected",
                id.as_str(),
                &format!(
                    "hostname {:?}: {message} (existing host {host})",
                    req.hostname
                ),
            );
            return EnrollDecision::Rejected {
                reason: message.clone(),
            };
        }
        let token = match self.tokens.consume(&req.token_id, &key, &req.proof, now) {
            Ok(token) => token,
            Err(ConsumeError::Refused(refusal)) => {
                self.metrics.rejected(refusal.reason());
                return EnrollDecision::Rejected {
                    reason: refusal.to_string(),
                };
            }
            Err(ConsumeError::Store(e)) => {
                tracing::error!(error = %e, "cannot store a token use");
                return EnrollDecision::Rejected {
                    reason: "the console could not store the enrollment; try again".into(),
                };
            }
        };
        let (host_id, action, detail) = match duplicate {
            Some(Duplicate::Adopt { host, reason }) => {
                let record = hosts
                    .get_mut(&host)
                    .expect("find_duplicate returns known hosts");
                let old = record.current_agent_id().to_string();
                adopt(record, id, &key, req, now);
                self.keys.write().expect("keys lock").remove(&old);
                (
                    host,
                    "adopt",
                    format!(
                        "agent {id} enrolled with token {} and took over this host record ({reason}); the previous key (agent {old}) is no longer accepted",
                        token.id
                    ),
                )
            }
            _ => {
                let mut record = HostRecord::new(id.as_str(), &req.public_key, now);
                record.hostname = Some(req.hostname.clone());
                record.os = Some(req.os.clone());
                record.ips = req.ips.clone();
                let detail = if token.auto_approve {
                    record.approval = Approval::Active;
                    record.decide(AgentStatus::Unknown, Cause::Enrolled, now);
                    format!("enrolled with token {}; auto-approved", token.id)
                } else {
                    record.approval = Approval::Pending;
                    record.decide(AgentStatus::Pending, Cause::Enrolled, now);
                    format!("enrolled with token {}; pending approval", token.id)
                };
                hosts.insert(id.to_string(), record);
                (id.to_string(), "enroll", detail)
            }
        };
        let record = hosts.get(&host_id).expect("just inserted or adopted");
        let change = StatusChange {
            status: record.status,
            cause: record.cause.unwrap_or(Cause::Enrolled),
            at: now,
        };
        let decision = decision_of(record);
        self.write(&hosts, &host_id, change);
        drop(hosts);
        self.keys.write().expect("keys lock").insert(
            id.to_string(),
            AgentKey {
                host: host_id.clone(),
                mac,
            },
        );
        self.audit_or_log(CONSOLE, action, &host_id, &detail);
        decision
    }

    /// Signs and queues an enrollment response for `id`.
    fn respond(&self, id: &AgentId, decision: EnrollDecision) {
        let msg = ConsoleMessage::EnrollResponse(EnrollResponse {
            agent_id: id.to_string(),
            decision,
            at: now_ms() / 1000,
        });
        let out = Outgoing {
            topic: self.topics.enroll_reply(id),
            payload: sign_console(&msg, Some(id), &self.identity),
        };
        if self.outbox.try_send(out).is_err() {
            // The agent asks again (pending agents every 30 s); count it and move on.
            self.metrics.rejected("outbox_full");
        }
    }

    /// Tells an agent whose telemetry is being ignored what its state is, at most every
    /// [`NOTICE_EVERY`].
    fn notice(&self, id: &AgentId) {
        {
            let mut notices = self.notices.lock().expect("notices lock");
            let now = Instant::now();
            if notices
                .get(id.as_str())
                .is_some_and(|t| now.duration_since(*t) < NOTICE_EVERY)
            {
                return;
            }
            if notices.len() > 100_000 {
                notices.retain(|_, t| now.duration_since(*t) < NOTICE_EVERY);
            }
            notices.insert(id.to_string(), now);
        }
        let host_id = self
            .keys
            .read()
            .expect("keys lock")
            .get(id.as_str())
            .map(|k| k.host.clone());
        let Some(host_id) = host_id else { return };
        let deleted = self
            .hosts
            .read()
            .expect("hosts lock")
            .get(&host_id)
            .is_some_and(|h| h.deleted_at.is_some());
        if deleted {
            self.return_after_delete(&host_id, now_ms());
        }
        let decision = self
            .hosts
            .read()
            .expect("hosts lock")
            .get(&host_id)
            .map(decision_of);
        if let Some(decision) = decision {
            self.respond(id, decision);
        }
    }

    /// `POST /api/agents/{id}/approve`: a pending agent becomes active, unless it collides
    /// with an online or revoked host; colliding with an offline one adopts that record.
    pub fn approve(&self, host_id: &str, actor: &str) -> Result<HostRecord, DecisionError> {
        let now = now_ms();
        let mut hosts = self.hosts.write().expect("hosts lock");
        let host = live(&hosts, host_id)?;
        if host.approval != Approval::Pending {
            return Err(DecisionError::Conflict(format!(
                "agent {host_id} is not pending (it is {})",
                host.status.as_str()
            )));
        }
        let agent_id: AgentId = host
            .current_agent_id()
            .parse()
            .map_err(|_| DecisionError::NotFound(host_id.into()))?;
        let hostname = host.hostname.clone().unwrap_or_default();
        let ips = host.ips.clone();
        let (target, change, detail) = match find_duplicate(
            hosts.values(),
            host_id,
            &hostname,
            &ips,
        ) {
            Some(Duplicate::Reject { message, .. }) => {
                let host = hosts.get_mut(host_id).expect("checked above");
                host.conflict = Some(message.clone());
                let record = host.clone();
                self.store.write_round(&Round {
                    hosts: vec![&record],
                    ..Round::default()
                })?;
                return Err(DecisionError::Conflict(message));
            }
            Some(Duplicate::Adopt {
                host: existing,
                reason,
            }) => {
                let key = parse_key(&hosts[host_id].public_key)
                    .ok_or_else(|| DecisionError::NotFound(host_id.into()))?;
                let pending = hosts.remove(host_id).expect("checked above");
                let record = hosts
                    .get_mut(&existing)
                    .expect("find_duplicate returns known hosts");
                let old = record.current_agent_id().to_string();
                adopt(record, &agent_id, &key, &pending_request(&pending), now);
                let change = StatusChange {
                    status: record.status,
                    cause: Cause::Adopted,
                    at: now,
                };
                // The pending record is folded into the existing one; keep it, deleted,
                // for the audit trail.
                let mut folded = pending;
                folded.deleted_at = Some(now);
                folded.conflict = Some(format!("adopted by host {existing}"));
                self.store.write_round(&Round {
                    hosts: vec![&folded],
                    ..Round::default()
                })?;
                hosts.insert(host_id.to_string(), folded);
                let mut keys = self.keys.write().expect("keys lock");
                keys.remove(&old);
                if let Some(k) = keys.get_mut(agent_id.as_str()) {
                    k.host = existing.clone();
                }
                (
                        existing.clone(),
                        change,
                        format!("approved agent {agent_id}, which took over host {existing} ({reason}); the previous key (agent {old}) is no longer accepted"),
                    )
            }
            None => {
                let host = hosts.get_mut(host_id).expect("checked above");
                host.approval = Approval::Active;
                host.conflict = None;
                let change = host.decide(AgentStatus::Unknown, Cause::Approved, now);
                (host_id.to_string(), change, "approved".to_string())
            }
        };
        self.write(&hosts, &target, change);
        let record = hosts.get(&target).expect("target exists").clone();
        let decision = decision_of(&record);
        drop(hosts);
        self.audit_or_log(actor, "approve", &target, &detail);
        self.respond(&agent_id, decision);
        self.flush_decided();
        Ok(record)
    }

    /// `POST /api/agents/{id}/revoke`: the agent is refused at connect from now on and its
    /// telemetry is ignored; a connected agent is told, signed, and disconnects.
    pub fn revoke(&self, host_id: &str, actor: &str) -> Result<HostRecord, DecisionError> {
        let now = now_ms();
        let mut hosts = self.hosts.write().expect("hosts lock");
        live(&hosts, host_id)?;
        let host = hosts.get_mut(host_id).expect("checked above");
        host.approval = Approval::Revoked;
        let change = host.decide(AgentStatus::Revoked, Cause::Revoked, now);
        let agent_id = host.current_agent_id().parse::<AgentId>().ok();
        let record = host.clone();
        self.write(&hosts, host_id, change);
        drop(hosts);
        self.audit_or_log(actor, "revoke", host_id, "revoked");
        if let Some(agent_id) = agent_id {
            self.respond(&agent_id, decision_of(&record));
        }
        self.flush_decided();
        Ok(record)
    }

    /// `DELETE /api/agents/{id}`: hides the host and keeps its record for audit. If its
    /// key connects again, it is treated as new and waits for approval.
    pub fn delete(&self, host_id: &str, actor: &str) -> Result<(), DecisionError> {
        let now = now_ms();
        let mut hosts = self.hosts.write().expect("hosts lock");
        live(&hosts, host_id)?;
        let host = hosts.get_mut(host_id).expect("checked above");
        host.deleted_at = Some(now);
        let change = StatusChange {
            status: host.status,
            cause: Cause::Deleted,
            at: now,
        };
        self.write(&hosts, host_id, change);
        drop(hosts);
        self.audit_or_log(actor, "delete", host_id, "deleted (record kept)");
        self.flush_decided();
        Ok(())
    }

    /// The link to an external broker went down or came back. Coming back starts a new
    /// restart grace: agents get as long to be heard from again as after a console start.
    pub fn broker_link(&self, connected: bool) {
        if connected {
            self.started_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.broker_connected.store(connected, Ordering::Relaxed);
    }

    /// Marks agents offline whose heartbeats stopped.
    pub fn sweep(&self) {
        let now = now_ms();
        let refusing = self.store.is_refusing();
        if !refusing {
            self.write_backlog();
            self.expire_maintenance(now);
        }
        if !self.broker_connected.load(Ordering::Relaxed) {
            return;
        }
        let started = self.started_ms.load(Ordering::Relaxed);
        let mut transitions = Vec::new();
        let mut hosts = self.hosts.write().expect("hosts lock");
        for host in hosts.values_mut() {
            if let Some(change) = host.sweep(&self.timings, started, now) {
                tracing::info!(agent.id = %host.id, "presence: offline by timeout");
                self.metrics.transition(cause_name(change.cause));
                transitions.push((host.id.clone(), change));
            }
        }
        if transitions.is_empty() {
            return;
        }
        if refusing {
            let ids: Vec<String> = transitions.iter().map(|(id, _)| id.clone()).collect();
            self.hold_back(ids, transitions, Vec::new(), Vec::new());
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
        if let Err(e) = self.store.write_admitted(&round) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "cannot write timeouts to sled");
        }
        let transitions: Vec<_> = transitions
            .into_iter()
            .map(|(id, c)| {
                let name = hosts.get(&id).and_then(|h| h.hostname.clone());
                (id, name, c)
            })
            .collect();
        drop(round);
        drop(hosts);
        self.react(&transitions, &[]);
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

    /// A snapshot of all host records that are not deleted, for queries.
    pub fn snapshot(&self) -> Vec<HostRecord> {
        self.hosts
            .read()
            .expect("hosts lock")
            .values()
            .filter(|h| h.deleted_at.is_none())
            .cloned()
            .collect()
    }

    /// Runs `f` over every host that is not deleted, under the read lock and without
    /// cloning a record: what the host list and the fleet summary need at 100,000 hosts,
    /// where [`Fleet::snapshot`] alone cost about 200 ms a request (BENCHMARKS.md, "API
    /// latency"). Ingest waits for the lock meanwhile, so `f` must be short, must not
    /// block, and must take no other lock (a writer queued on this one would otherwise
    /// deadlock against a thread that holds that lock and wants this one).
    pub fn with_hosts<R>(&self, f: impl FnOnce(Vec<&HostRecord>) -> R) -> R {
        let hosts = self.hosts.read().expect("hosts lock");
        f(hosts.values().filter(|h| h.deleted_at.is_none()).collect())
    }

    /// Host names for many ids under one read lock (deleted hosts have none).
    pub fn hostnames<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Option<String>> {
        let hosts = self.hosts.read().expect("hosts lock");
        ids.into_iter()
            .map(|id| {
                let name = hosts
                    .get(id)
                    .filter(|h| h.deleted_at.is_none())
                    .and_then(|h| h.hostname.clone());
                (id.to_string(), name)
            })
            .collect()
    }

    pub fn host(&self, id: &str) -> Option<HostRecord> {
        self.hosts
            .read()
            .expect("hosts lock")
            .get(id)
            .filter(|h| h.deleted_at.is_none())
            .cloned()
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
        self.summary_counted(host, now, self.alerts.firing_for(&host.id))
    }

    /// [`Fleet::summary_of`] with the host's firing-alert count already known (the host
    /// list counts them for all hosts at once).
    pub fn summary_counted(&self, host: &HostRecord, now: u64, alerts: usize) -> api::AgentSummary {
        api::AgentSummary {
            alerts,
            labels: host.labels(),
            maintenance: host.maintenance.clone(),
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
            conflict: host.conflict.clone(),
        }
    }
}

/// The alert engine's view of a host: active (approved, not deleted) hosts only.
fn facts_of(h: &HostRecord) -> Option<HostFacts> {
    (h.approval == Approval::Active && h.deleted_at.is_none()).then(|| HostFacts {
        id: h.id.clone(),
        hostname: h.hostname.clone(),
        status: h.status,
        cause: h.cause,
        status_since: h.status_since,
        last_seen: h.last_seen,
        active: true,
    })
}

/// What an agent is told about its record.
fn decision_of(host: &HostRecord) -> EnrollDecision {
    match host.approval {
        Approval::Active => EnrollDecision::Approved,
        Approval::Pending => EnrollDecision::Pending,
        Approval::Revoked => EnrollDecision::Rejected {
            reason: "revoked by an operator".into(),
        },
    }
}

fn live<'a>(
    hosts: &'a HashMap<String, HostRecord>,
    host_id: &str,
) -> Result<&'a HostRecord, DecisionError> {
    hosts
        .get(host_id)
        .filter(|h| h.deleted_at.is_none())
        .ok_or_else(|| DecisionError::NotFound(host_id.to_string()))
}

/// Rotates a new key onto an existing host record (duplicate-host adoption). The host id,
/// history and approval state stay; the sequence rules start over for the new key.
fn adopt(record: &mut HostRecord, id: &AgentId, key: &PublicKey, req: &EnrollRequest, now: u64) {
    record.public_key = hex(key.as_bytes());
    record.agent_id = if id.as_str() == record.id {
        String::new()
    } else {
        id.to_string()
    };
    record.bd_seq = 0;
    record.last_seq = (0, 0);
    record.seen = 0;
    record.offline_seen = false;
    record.hostname = Some(req.hostname.clone());
    record.os = Some(req.os.clone());
    record.ips = req.ips.clone();
    record.conflict = None;
    let status = record.status;
    record.decide(status, Cause::Adopted, now);
}

/// The facts of a pending record, in the shape of the request that created it.
fn pending_request(host: &HostRecord) -> EnrollRequest {
    EnrollRequest {
        agent_id: host.current_agent_id().to_string(),
        public_key: parse_key(&host.public_key)
            .map(|k| *k.as_bytes())
            .unwrap_or_default(),
        hostname: host.hostname.clone().unwrap_or_default(),
        os: host.os.clone().unwrap_or_default(),
        ips: host.ips.clone(),
        token_id: String::new(),
        proof: [0; 32],
        at: 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        Cause::Enrolled => "enrolled",
        Cause::Approved => "approved",
        Cause::Revoked => "revoked",
        Cause::Adopted => "adopted",
        Cause::Deleted => "deleted",
    }
}

/// Parses an agent id from a URL path segment.
pub fn parse_id(id: &str) -> Option<AgentId> {
    id.parse().ok()
}
