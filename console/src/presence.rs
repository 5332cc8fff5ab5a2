//! Presence: the per-agent record and the rules that move its status. Pure logic: every
//! function takes `now_ms`, nothing sleeps or reads a clock.
//!
//! | event | condition | new status | cause |
//! |---|---|---|---|
//! | enrollment accepted | new key, live token | unknown (auto-approve) or pending | enrolled |
//! | operator approves / revokes | pending / any | unknown / revoked | approved / revoked |
//! | birth / online status | `bd_seq` ≥ current | online | birth |
//! | offline status, not clean | `bd_seq` = current | offline | will |
//! | offline status, clean | `bd_seq` = current | offline | clean |
//! | offline status | `bd_seq` < current | ignored (stale) | |
//! | heartbeat | `bd_seq` = current, status offline by timeout | online | heartbeat |
//! | sweep | online, no message for `missed × interval + grace`, and the console has been up for `restart_grace` | offline | timeout |
//!
//! Every telemetry message must advance `(bd_seq, seq)`; the one exception is an offline
//! status for the current `bd_seq` (a last-will is sealed at connect time with a low `seq`),
//! accepted once. Stale (no heartbeat for `stale_after`) is a flag, not a status.

use std::collections::BTreeMap;

use edgefleet_codec::api::{AgentStatus, Cause, StatusChange};

use edgefleet_codec::api::{MaintenanceView, ScopedSettings};
use edgefleet_codec::{AppState, Birth, Heartbeat, Status, Vitals};
use serde::{Deserialize, Serialize};

/// Everything the console knows about one agent. Stored as JSON in sled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub ips: Vec<String>,
    pub agent_version: Option<String>,
    pub boot_time: Option<u64>,
    pub apps: Vec<AppState>,
    pub heartbeat_interval_s: Option<u32>,
    pub first_seen: u64,
    pub last_seen: Option<u64>,
    pub vitals: Option<Vitals>,
    pub status: AgentStatus,
    pub status_since: u64,
    pub cause: Option<Cause>,
    /// The connection the current birth came from.
    pub bd_seq: u64,
    /// The newest accepted `(bd_seq, seq)`.
    pub last_seq: (u64, u64),
    /// Which of the [`REPLAY_WINDOW`] seqs up to `last_seq` (same connection) were
    /// accepted: bit i is `last_seq.1 - i`. Records from before the window count all as
    /// seen.
    #[serde(default = "all_seen")]
    pub seen: u64,
    /// Whether an offline status for `bd_seq` was already accepted.
    pub offline_seen: bool,
    /// Whether the agent may send telemetry. Records from before enrollment existed are
    /// active.
    #[serde(default)]
    pub approval: Approval,
    /// The agent id of the key currently on this record. Empty means `id`: it differs only
    /// after a new key adopted the record (duplicate-host adoption).
    #[serde(default)]
    pub agent_id: String,
    /// Set by a soft delete: the record is hidden but kept for audit.
    #[serde(default)]
    pub deleted_at: Option<u64>,
    /// For a pending host: the existing host it collides with, as the API shows it.
    #[serde(default)]
    pub conflict: Option<String>,
    /// Labels from the agent's own config (its birth).
    #[serde(default)]
    pub agent_labels: BTreeMap<String, String>,
    /// Labels operators set through the API; they win over the agent's.
    #[serde(default)]
    pub operator_labels: BTreeMap<String, String>,
    /// Operator settings for this host alone (they beat its groups').
    #[serde(default)]
    pub settings: ScopedSettings,
    #[serde(default)]
    pub maintenance: Option<MaintenanceView>,
    /// The heartbeat interval last sent in a `set-heartbeat-interval` command (0: back
    /// to the agent's own); `None`: never sent.
    #[serde(default)]
    pub interval_requested: Option<u32>,
}

/// How far below the newest accepted seq of a connection a message may still arrive, once.
/// MQTT keeps order only per topic and QoS: a broker holds QoS 1 messages (births,
/// statuses, events) back while its in-flight window to the console is full but passes
/// QoS 0 heartbeats straight on, so a connection's first heartbeat can overtake its birth
/// (Mosquitto, 10,000 agents: the birth came 150 ms later and was rejected as a replay, and
/// the agent stayed "unknown"). A bitmap of this many seqs, as IPsec's anti-replay window
/// (RFC 4303, 3.4.3), takes each message once in any order within it.
pub const REPLAY_WINDOW: u64 = 64;

/// The replay window of a record stored before it existed: nothing below `last_seq` again.
pub fn all_seen() -> u64 {
    u64::MAX
}

/// The operator's decision about an agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    #[default]
    Active,
    Pending,
    Revoked,
}

/// Why a message was not applied. Counted on /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// `(bd_seq, seq)` did not advance.
    Replay,
    /// A status or will from an older connection than the current birth.
    StaleBdSeq,
}

impl Ignored {
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::Replay => "replay",
            Ignored::StaleBdSeq => "stale_bd_seq",
        }
    }
}

/// Timings the rules depend on.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub default_interval_ms: u64,
    pub missed_intervals: u64,
    pub grace_ms: u64,
    pub restart_grace_ms: u64,
    pub stale_after_ms: u64,
}

impl Timings {
    /// The timings of a `[presence]` config (`Timings::of(&PresenceConfig::default())` for
    /// the defaults: 30 s interval, 2 missed, 5 s grace, 60 s restart grace, stale at
    /// 15 min).
    pub fn of(p: &edgefleet_config::console::PresenceConfig) -> Timings {
        Timings {
            default_interval_ms: p.heartbeat_interval.get().as_millis() as u64,
            missed_intervals: p.missed_intervals.into(),
            grace_ms: p.grace.get().as_millis() as u64,
            restart_grace_ms: p.restart_grace.get().as_millis() as u64,
            stale_after_ms: p.stale_after.get().as_millis() as u64,
        }
    }
}

impl HostRecord {
    pub fn new(id: &str, public_key: &[u8; 32], now_ms: u64) -> HostRecord {
        HostRecord {
            id: id.to_string(),
            public_key: public_key.iter().map(|b| format!("{b:02x}")).collect(),
            hostname: None,
            os: None,
            kernel: None,
            arch: None,
            ips: Vec::new(),
            agent_version: None,
            boot_time: None,
            apps: Vec::new(),
            heartbeat_interval_s: None,
            first_seen: now_ms,
            last_seen: None,
            vitals: None,
            status: AgentStatus::Unknown,
            status_since: now_ms,
            cause: Some(Cause::Connect),
            bd_seq: 0,
            last_seq: (0, 0),
            seen: 0,
            offline_seen: false,
            approval: Approval::Active,
            agent_id: String::new(),
            deleted_at: None,
            conflict: None,
            agent_labels: BTreeMap::new(),
            operator_labels: BTreeMap::new(),
            settings: ScopedSettings::default(),
            maintenance: None,
            interval_requested: None,
        }
    }

    /// Effective labels: operator labels over the agent's own.
    pub fn labels(&self) -> BTreeMap<String, String> {
        crate::labels::effective(&self.agent_labels, &self.operator_labels)
    }

    /// The agent id whose key is on this record now (the MQTT topics use it).
    pub fn current_agent_id(&self) -> &str {
        if self.agent_id.is_empty() {
            &self.id
        } else {
            &self.agent_id
        }
    }

    /// Moves the record to `status` for an operator or enrollment decision, recording why.
    pub fn decide(&mut self, status: AgentStatus, cause: Cause, now_ms: u64) -> StatusChange {
        self.status = status;
        self.status_since = now_ms;
        self.cause = Some(cause);
        StatusChange {
            status,
            cause,
            at: now_ms,
        }
    }

    fn set(&mut self, status: AgentStatus, cause: Cause, now_ms: u64) -> Option<StatusChange> {
        if self.status == status {
            return None;
        }
        self.status = status;
        self.status_since = now_ms;
        self.cause = Some(cause);
        Some(StatusChange {
            status,
            cause,
            at: now_ms,
        })
    }

    /// The replay rule shared by every message: each `(bd_seq, seq)` once, newer than the
    /// newest accepted or within [`REPLAY_WINDOW`] below it on the same connection.
    fn advance(&mut self, seq: (u64, u64)) -> Result<(), Ignored> {
        if self.mark(seq) {
            Ok(())
        } else {
            Err(Ignored::Replay)
        }
    }

    /// Records `seq` as accepted; false if it was already, or is too old to tell.
    fn mark(&mut self, seq: (u64, u64)) -> bool {
        let last = self.last_seq;
        if last == (0, 0) || seq > last {
            let shift = seq.1.wrapping_sub(last.1);
            self.seen = if last != (0, 0) && seq.0 == last.0 && shift < REPLAY_WINDOW {
                (self.seen << shift) | 1
            } else {
                1
            };
            self.last_seq = seq;
            return true;
        }
        let back = last.1 - seq.1;
        if seq.0 != last.0 || back >= REPLAY_WINDOW {
            return false;
        }
        let bit = 1 << back;
        let fresh = self.seen & bit == 0;
        self.seen |= bit;
        fresh
    }

    pub fn on_birth(&mut self, b: &Birth, now_ms: u64) -> Result<Option<StatusChange>, Ignored> {
        if b.bd_seq < self.bd_seq {
            return Err(Ignored::StaleBdSeq);
        }
        self.advance((b.bd_seq, b.seq))?;
        if b.bd_seq > self.bd_seq {
            self.offline_seen = false;
        }
        self.bd_seq = b.bd_seq;
        self.hostname = Some(b.hostname.clone());
        self.os = Some(b.os.clone());
        self.kernel = Some(b.kernel.clone());
        self.arch = Some(b.arch.clone());
        self.ips = b.ips.clone();
        self.agent_version = Some(b.agent_version.clone());
        self.boot_time = Some(b.boot_time);
        self.apps = b.apps.clone();
        self.heartbeat_interval_s = Some(b.heartbeat_interval_s);
        // Labels come from a local config: keep the well-formed ones, within the cap.
        self.agent_labels = b
            .labels
            .iter()
            .filter(|(k, v)| {
                crate::labels::check_key(k).is_ok() && crate::labels::check_value(k, v).is_ok()
            })
            .take(crate::labels::MAX_LABELS)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.last_seen = Some(now_ms);
        Ok(self.set(AgentStatus::Online, Cause::Birth, now_ms))
    }

    pub fn on_status(&mut self, s: &Status, now_ms: u64) -> Result<Option<StatusChange>, Ignored> {
        if s.bd_seq < self.bd_seq {
            return Err(Ignored::StaleBdSeq);
        }
        if !s.online && s.bd_seq == self.bd_seq && !self.offline_seen {
            // The will was sealed at connect time, so its seq does not advance; accept it
            // once per connection.
            self.offline_seen = true;
            self.mark((s.bd_seq, s.seq));
        } else {
            self.advance((s.bd_seq, s.seq))?;
        }
        if s.online {
            if s.bd_seq > self.bd_seq {
                self.offline_seen = false;
            }
            self.bd_seq = s.bd_seq;
            self.last_seen = Some(now_ms);
            Ok(self.set(AgentStatus::Online, Cause::Birth, now_ms))
        } else if s.bd_seq > self.bd_seq {
            // An offline status from a connection whose birth we never saw: note it.
            self.bd_seq = s.bd_seq;
            self.offline_seen = true;
            let cause = if s.clean { Cause::Clean } else { Cause::Will };
            Ok(self.set(AgentStatus::Offline, cause, now_ms))
        } else {
            let cause = if s.clean { Cause::Clean } else { Cause::Will };
            Ok(self.set(AgentStatus::Offline, cause, now_ms))
        }
    }

    pub fn on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        now_ms: u64,
    ) -> Result<Option<StatusChange>, Ignored> {
        if hb.bd_seq < self.bd_seq {
            return Err(Ignored::StaleBdSeq);
        }
        self.advance((hb.bd_seq, hb.seq))?;
        // A live heartbeat from a newer connection than any birth or will seen: its birth
        // was lost on the way (rumqttd silently skips what a lagging subscriber has not read
        // once the filter's log wraps; seen with 10,000 agents reconnecting at once). The
        // agent is connected now, so it is online. Before, it stayed offline, heartbeating,
        // until its next connection. The caller treats this like a birth for what it sends
        // (pending commands, scoped settings).
        let resumed = hb.bd_seq > self.bd_seq && hb.at.is_none();
        if resumed {
            self.bd_seq = hb.bd_seq;
            self.offline_seen = false;
        }
        let mut vitals = self.vitals.unwrap_or_default();
        vitals.apply(hb);
        if hb.at.is_none() {
            // History samples replayed from the queue do not refresh presence.
            self.vitals = Some(vitals);
            self.last_seen = Some(now_ms);
            if let Some(apps) = &hb.apps {
                self.apps = apps.clone();
            }
        }
        let back = matches!(self.status, AgentStatus::Offline | AgentStatus::Unknown)
            && (resumed
                || (self.cause == Some(Cause::Timeout)
                    && hb.bd_seq == self.bd_seq
                    && hb.at.is_none()));
        Ok(if back {
            self.set(AgentStatus::Online, Cause::Heartbeat, now_ms)
        } else {
            None
        })
    }

    /// Any other accepted telemetry (events, results, inventory).
    pub fn on_other(&mut self, seq: (u64, u64), now_ms: u64) -> Result<(), Ignored> {
        if seq.0 < self.bd_seq {
            return Err(Ignored::StaleBdSeq);
        }
        self.advance(seq)?;
        self.last_seen = Some(now_ms);
        Ok(())
    }

    /// The timeout rule, run by the sweeper.
    pub fn sweep(
        &mut self,
        t: &Timings,
        console_started_ms: u64,
        now_ms: u64,
    ) -> Option<StatusChange> {
        if self.status != AgentStatus::Online || self.approval != Approval::Active {
            return None;
        }
        let interval = self
            .heartbeat_interval_s
            .map(|s| u64::from(s) * 1000)
            .unwrap_or(t.default_interval_ms);
        let last = self.last_seen.unwrap_or(self.status_since);
        let deadline = (last + interval * t.missed_intervals + t.grace_ms)
            .max(console_started_ms + t.restart_grace_ms);
        if now_ms > deadline {
            self.set(AgentStatus::Offline, Cause::Timeout, now_ms)
        } else {
            None
        }
    }

    pub fn is_stale(&self, t: &Timings, now_ms: u64) -> bool {
        self.status != AgentStatus::Offline
            && self
                .last_seen
                .is_some_and(|seen| now_ms.saturating_sub(seen) > t.stale_after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timings = Timings {
        default_interval_ms: 30_000,
        missed_intervals: 2,
        grace_ms: 5_000,
        restart_grace_ms: 60_000,
        stale_after_ms: 900_000,
    };

    fn birth(bd_seq: u64, seq: u64) -> Birth {
        Birth {
            bd_seq,
            seq,
            hostname: "h".into(),
            os: "Debian".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            ips: vec![],
            agent_version: "0.1.0".into(),
            boot_time: 0,
            apps: vec![],
            inventory_digest: None,
            heartbeat_interval_s: 30,
            inventory_interval_s: None,
            labels: Default::default(),
        }
    }

    fn status(bd_seq: u64, seq: u64, online: bool, clean: bool) -> Status {
        Status {
            bd_seq,
            seq,
            online,
            clean,
        }
    }

    fn host() -> HostRecord {
        HostRecord::new("abcdefghijklmnop", &[0; 32], 0)
    }

    /// A live heartbeat (not a history sample).
    fn live(bd_seq: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            bd_seq,
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn birth_makes_online_and_will_makes_offline() {
        let mut h = host();
        assert_eq!(h.status, AgentStatus::Unknown);
        let c = h.on_birth(&birth(1, 1), 1000).unwrap().unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Online, Cause::Birth));
        let c = h
            .on_status(&status(1, 0, false, false), 2000)
            .unwrap()
            .unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Offline, Cause::Will));
        // The same will again is a replay.
        assert_eq!(
            h.on_status(&status(1, 0, false, false), 3000),
            Err(Ignored::Replay)
        );
    }

    #[test]
    fn clean_stop_is_offline_with_cause_clean() {
        let mut h = host();
        h.on_birth(&birth(1, 1), 1000).unwrap();
        let c = h
            .on_status(&status(1, 9, false, true), 2000)
            .unwrap()
            .unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Offline, Cause::Clean));
    }

    #[test]
    fn a_stale_will_after_a_reconnect_is_ignored() {
        let mut h = host();
        h.on_birth(&birth(1, 1), 1000).unwrap();
        h.on_birth(&birth(2, 1), 2000).unwrap();
        assert_eq!(
            h.on_status(&status(1, 0, false, false), 3000),
            Err(Ignored::StaleBdSeq)
        );
        assert_eq!(h.status, AgentStatus::Online);
    }

    #[test]
    fn a_live_heartbeat_from_a_newer_connection_stands_in_for_its_lost_birth() {
        // Connection 1 is born; the agent reconnects (2), the birth of 2 is lost, and the
        // will of 1 arrives late: offline, though connection 2 is up and heartbeating.
        let mut h = host();
        h.on_birth(&birth(1, 1), 1000).unwrap();
        h.on_status(&status(1, 0, false, false), 2000).unwrap();
        assert_eq!(h.status, AgentStatus::Offline);
        let live = |seq, at| Heartbeat {
            bd_seq: 2,
            seq,
            at,
            ..Default::default()
        };
        // A history sample of connection 2 is no proof it is up now.
        assert_eq!(h.on_heartbeat(&live(2, Some(1)), 2500), Ok(None));
        assert_eq!(h.status, AgentStatus::Offline);
        let c = h.on_heartbeat(&live(3, None), 3000).unwrap().unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Online, Cause::Heartbeat));
        assert_eq!(h.bd_seq, 2);
        // Connection 2's own will still counts, once; connection 1's never again.
        assert_eq!(
            h.on_status(&status(1, 0, false, false), 3500),
            Err(Ignored::StaleBdSeq)
        );
        let c = h
            .on_status(&status(2, 0, false, false), 4000)
            .unwrap()
            .unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Offline, Cause::Will));
        // And a heartbeat of the same connection after its will does not undo it.
        assert_eq!(h.on_heartbeat(&live(4, None), 4500), Ok(None));
        assert_eq!(h.status, AgentStatus::Offline);
    }

    #[test]
    fn replays_are_refused() {
        let mut h = host();
        h.on_birth(&birth(1, 5), 1000).unwrap();
        let hb = Heartbeat {
            bd_seq: 1,
            seq: 6,
            cpu_pct: Some(10),
            ..Default::default()
        };
        assert_eq!(h.on_heartbeat(&hb, 1100), Ok(None));
        assert_eq!(h.on_heartbeat(&hb, 1200), Err(Ignored::Replay));
        assert_eq!(h.on_birth(&birth(1, 5), 1250), Err(Ignored::Replay));
        // Older than the newest but never seen (overtaken on the way): once.
        assert_eq!(h.on_other((1, 3), 1300), Ok(()));
        assert_eq!(h.on_other((1, 3), 1400), Err(Ignored::Replay));
        assert_eq!(h.vitals.map(|v| v.cpu_pct), Some(10));
        // The window reaches REPLAY_WINDOW - 1 back, and no further.
        h.on_other((1, 6 + REPLAY_WINDOW), 1500).unwrap();
        assert_eq!(h.on_other((1, 7), 1600), Ok(()));
        assert_eq!(h.on_other((1, 7), 1650), Err(Ignored::Replay));
        assert_eq!(h.on_other((1, 4), 1700), Err(Ignored::Replay));
        assert_eq!(h.on_heartbeat(&hb, 1800), Err(Ignored::Replay));
        // A jump past the window forgets it: nothing older is taken.
        h.on_other((1, 1000), 1900).unwrap();
        assert_eq!(h.on_other((1, 999), 2000), Ok(()));
        assert_eq!(h.on_other((1, 900), 2100), Err(Ignored::Replay));
        // An older connection's messages never come back in.
        h.on_birth(&birth(2, 1), 2200).unwrap();
        assert_eq!(h.on_other((1, 1001), 2300), Err(Ignored::StaleBdSeq));
        assert_eq!(h.on_other((2, 0), 2400), Ok(()));
    }

    #[test]
    fn a_birth_overtaken_by_its_first_heartbeat_still_counts() {
        // The agent sends status (1), birth (2), heartbeat (3); the broker delivers the
        // QoS 0 heartbeat first.
        let mut h = host();
        let c = h.on_heartbeat(&live(1, 3), 1000).unwrap().unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Online, Cause::Heartbeat));
        assert_eq!(h.on_status(&status(1, 1, true, false), 1100), Ok(None));
        assert_eq!(h.on_birth(&birth(1, 2), 1150), Ok(None));
        assert_eq!(
            h.hostname.as_deref(),
            Some("h"),
            "the birth's facts were applied"
        );
        assert_eq!(h.on_heartbeat(&live(1, 4), 1200), Ok(None));
        assert_eq!(h.status, AgentStatus::Online);
        // Stored before the window existed: nothing below the newest is taken again.
        let mut json = serde_json::to_value(&h).unwrap();
        json.as_object_mut().unwrap().remove("seen");
        let mut old: HostRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.on_other((1, 2), 1300), Err(Ignored::Replay));
        assert_eq!(old.on_other((1, 5), 1300), Ok(()));
    }

    #[test]
    fn silence_times_out_after_missed_intervals_plus_grace() {
        let mut h = host();
        let start = 0;
        h.on_birth(&birth(1, 1), 100_000).unwrap();
        assert_eq!(h.sweep(&T, start, 100_000 + 65_000), None);
        let c = h.sweep(&T, start, 100_000 + 65_001).unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Offline, Cause::Timeout));
        // A heartbeat on the same connection brings it back.
        let hb = Heartbeat {
            bd_seq: 1,
            seq: 2,
            ..Default::default()
        };
        let c = h.on_heartbeat(&hb, 200_000).unwrap().unwrap();
        assert_eq!((c.status, c.cause), (AgentStatus::Online, Cause::Heartbeat));
    }

    #[test]
    fn nobody_times_out_within_the_restart_grace() {
        let mut h = host();
        h.on_birth(&birth(1, 1), 0).unwrap();
        let console_started = 1_000_000;
        assert_eq!(h.sweep(&T, console_started, console_started + 59_000), None);
        assert!(h
            .sweep(&T, console_started, console_started + 60_001)
            .is_some());
    }

    #[test]
    fn a_history_sample_does_not_refresh_presence() {
        let mut h = host();
        h.on_birth(&birth(1, 1), 0).unwrap();
        let hb = Heartbeat {
            bd_seq: 1,
            seq: 2,
            cpu_pct: Some(99),
            at: Some(5),
            ..Default::default()
        };
        h.on_heartbeat(&hb, 50_000).unwrap();
        assert_eq!(h.last_seen, Some(0));
        assert_eq!(h.vitals, None);
    }

    #[test]
    fn stale_is_a_flag_after_fifteen_minutes() {
        let mut h = host();
        h.on_birth(&birth(1, 1), 0).unwrap();
        assert!(!h.is_stale(&T, 900_000));
        assert!(h.is_stale(&T, 900_001));
    }
}
