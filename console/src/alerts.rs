//! Alerts: the built-in rules ([`Engine`], pure logic with explicit clocks) and their
//! persistence ([`Alerts`]: sled trees `alerts` and `silences`).
//!
//! | rule | fires | resolves |
//! |---|---|---|
//! | `agent-offline` | offline (will, timeout, or clean stop if configured) for `offline_grace` | the next birth |
//! | `agent-flapping` | more than `flap_count` offline transitions within `flap_window`; replaces per-transition offline alerts | `flap_window` without an offline transition |
//! | `stale` | no heartbeat for `stale_after` while not offline | a heartbeat, or going offline |
//! | `hotspot-cpu`/`-mem`/`-disk` | at or above `hotspot_threshold` for `hotspot_window` | a value below the threshold |
//!
//! Firing alerts are kept in sled and reloaded on start, so an alert is never fired twice for
//! the same condition, even across restarts. Hosts found offline at start without an alert
//! (the console died inside the grace window) get their grace counted from when they went
//! offline. A console restart itself records no transitions, so it raises no alert.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use edgefleet_codec::api::{
    AgentStatus, AlertPage, AlertState, AlertView, Cause, SilenceCreate, SilenceUntil, SilenceView,
};

use crate::store::StoreError;

/// Rule settings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub offline_grace_ms: u64,
    pub notify_on_clean_stop: bool,
    pub flap_count: usize,
    pub flap_window_ms: u64,
    pub hotspot_threshold: u8,
    pub hotspot_window_ms: u64,
    pub stale_after_ms: u64,
}

pub const OFFLINE: &str = "agent-offline";
pub const FLAPPING: &str = "agent-flapping";
pub const STALE: &str = "stale";
/// A rollout's health gate failed; `agent` is `rollout:<id>`. Raised and resolved by the
/// rollout, outside the engine's host rules.
pub const ROLLOUT_GATE: &str = "rollout-gate";
pub const RULES: [&str; 6] = [
    OFFLINE,
    FLAPPING,
    STALE,
    "hotspot-cpu",
    "hotspot-mem",
    "hotspot-disk",
];

/// What the engine needs to know of a host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub id: String,
    pub hostname: Option<String>,
    pub status: AgentStatus,
    pub cause: Option<Cause>,
    pub status_since: u64,
    pub last_seen: Option<u64>,
    /// Active (approved) and not deleted.
    pub active: bool,
}

/// What groups, operator settings and maintenance change for one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostRules {
    pub offline_grace_ms: Option<u64>,
    pub hotspot_threshold: Option<u8>,
    pub hotspot_window_ms: Option<u64>,
    /// In maintenance: offline and hotspot alerts wait until it ends.
    pub suppressed: bool,
}

/// The alert rules' memory. Every method takes `now` and returns the alerts that changed
/// (fired or resolved), for the caller to store and notify.
#[derive(Debug)]
pub struct Engine {
    rules: Rules,
    next_id: u64,
    /// Firing alerts by (host, rule).
    open: HashMap<(String, String), AlertView>,
    /// Offline hosts waiting out the grace: since, cause.
    pending_offline: HashMap<String, (u64, Cause)>,
    flaps: HashMap<String, VecDeque<u64>>,
    /// Per host, each metric at or above the threshold and since when. Keyed by host so a
    /// heartbeat or a tick looks at its own host only: a scan of every hot host per
    /// heartbeat was a tenth of the ingest thread's time at 2,000 agents (BENCHMARKS.md,
    /// "Where the console's ingest time goes").
    hot_since: HashMap<String, Vec<(&'static str, u64)>>,
    /// Hosts whose rules differ from `rules`.
    overrides: HashMap<String, HostRules>,
}

fn cause_word(c: Cause) -> &'static str {
    match c {
        Cause::Will => "connection lost (will)",
        Cause::Clean => "stopped (clean)",
        Cause::Timeout => "no heartbeat (timeout)",
        _ => "offline",
    }
}

impl Engine {
    /// `firing`: the firing alerts from sled; `hosts`: every active host now.
    pub fn new(rules: Rules, firing: Vec<AlertView>, next_id: u64, hosts: &[HostFacts]) -> Engine {
        let mut engine = Engine {
            rules,
            next_id,
            open: firing
                .into_iter()
                .map(|a| ((a.agent.clone(), a.rule.clone()), a))
                .collect(),
            pending_offline: HashMap::new(),
            flaps: HashMap::new(),
            hot_since: HashMap::new(),
            overrides: HashMap::new(),
        };
        for h in hosts.iter().filter(|h| h.active) {
            let cause = h.cause.unwrap_or(Cause::Will);
            let alerting = cause != Cause::Clean || rules.notify_on_clean_stop;
            if h.status == AgentStatus::Offline
                && alerting
                && !engine
                    .open
                    .contains_key(&(h.id.clone(), OFFLINE.to_string()))
            {
                engine
                    .pending_offline
                    .insert(h.id.clone(), (h.status_since, cause));
            }
        }
        engine
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The alerts firing on `host` now.
    pub fn open_for(&self, host: &str) -> Vec<AlertView> {
        self.open
            .iter()
            .filter(|((h, _), _)| h == host)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// A fresh alert id for an alert raised outside the host rules.
    pub fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Sets (or with the default, clears) the scoped rules of one host.
    pub fn set_host_rules(&mut self, host: &str, rules: HostRules) {
        if rules == HostRules::default() {
            self.overrides.remove(host);
        } else {
            self.overrides.insert(host.to_string(), rules);
        }
    }

    pub fn host_rules(&self, host: &str) -> HostRules {
        self.overrides.get(host).copied().unwrap_or_default()
    }

    fn grace(&self, host: &str) -> u64 {
        self.host_rules(host)
            .offline_grace_ms
            .unwrap_or(self.rules.offline_grace_ms)
    }

    fn threshold(&self, host: &str) -> u8 {
        self.host_rules(host)
            .hotspot_threshold
            .unwrap_or(self.rules.hotspot_threshold)
    }

    fn window(&self, host: &str) -> u64 {
        self.host_rules(host)
            .hotspot_window_ms
            .unwrap_or(self.rules.hotspot_window_ms)
    }

    fn suppressed(&self, host: &str) -> bool {
        self.host_rules(host).suppressed
    }

    /// Hosts with at least one firing alert.
    pub fn firing_hosts(&self) -> std::collections::HashSet<&str> {
        self.open.keys().map(|(h, _)| h.as_str()).collect()
    }

    fn fire(
        &mut self,
        host: &str,
        hostname: &Option<String>,
        rule: &str,
        cause: String,
        now: u64,
    ) -> Option<AlertView> {
        let key = (host.to_string(), rule.to_string());
        if self.open.contains_key(&key) {
            return None;
        }
        let alert = AlertView {
            id: self.next_id,
            rule: rule.to_string(),
            agent: host.to_string(),
            hostname: hostname.clone(),
            state: AlertState::Firing,
            started_at: now,
            ended_at: None,
            cause,
            silenced: false,
        };
        self.next_id += 1;
        self.open.insert(key, alert.clone());
        Some(alert)
    }

    fn resolve(&mut self, host: &str, rule: &str, now: u64) -> Option<AlertView> {
        let mut alert = self.open.remove(&(host.to_string(), rule.to_string()))?;
        alert.state = AlertState::Resolved;
        alert.ended_at = Some(now);
        Some(alert)
    }

    /// Marks a just-fired alert silenced (kept in the open set so it resolves silently).
    pub fn set_silenced(&mut self, alert: &AlertView) {
        if let Some(a) = self
            .open
            .get_mut(&(alert.agent.clone(), alert.rule.clone()))
        {
            a.silenced = true;
        }
    }

    pub fn on_transition(
        &mut self,
        host: &str,
        hostname: &Option<String>,
        status: AgentStatus,
        cause: Cause,
        now: u64,
    ) -> Vec<AlertView> {
        let mut out = Vec::new();
        if cause == Cause::Deleted {
            self.forget(host, now, &mut out);
            return out;
        }
        match status {
            AgentStatus::Offline => {
                let window = self.rules.flap_window_ms;
                let flaps = self.flaps.entry(host.to_string()).or_default();
                flaps.push_back(now);
                while flaps
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > window)
                {
                    flaps.pop_front();
                }
                let count = flaps.len();
                if count > self.rules.flap_count {
                    let cause = format!("{count} offline transitions within {} s", window / 1000);
                    out.extend(self.fire(host, hostname, FLAPPING, cause, now));
                    // One flapping alert replaces the per-transition offline alerts.
                    self.pending_offline.remove(host);
                    out.extend(self.resolve(host, OFFLINE, now));
                } else if (cause != Cause::Clean || self.rules.notify_on_clean_stop)
                    && !self
                        .open
                        .contains_key(&(host.to_string(), FLAPPING.to_string()))
                {
                    if self.grace(host) == 0 && !self.suppressed(host) {
                        // No grace: fire now rather than at the next tick.
                        let text = format!("{} for 0 s", cause_word(cause));
                        out.extend(self.fire(host, hostname, OFFLINE, text, now));
                    } else {
                        self.pending_offline
                            .entry(host.to_string())
                            .or_insert((now, cause));
                    }
                }
                out.extend(self.resolve(host, STALE, now));
            }
            AgentStatus::Online => {
                self.pending_offline.remove(host);
                out.extend(self.resolve(host, OFFLINE, now));
                out.extend(self.resolve(host, STALE, now));
            }
            AgentStatus::Revoked | AgentStatus::Pending => {
                // Revoked or back to pending: nobody expects this host any more.
                self.forget(host, now, &mut out);
            }
            AgentStatus::Unknown => {}
        }
        out
    }

    fn forget(&mut self, host: &str, now: u64, out: &mut Vec<AlertView>) {
        self.pending_offline.remove(host);
        self.flaps.remove(host);
        self.hot_since.remove(host);
        for rule in RULES {
            out.extend(self.resolve(host, rule, now));
        }
    }

    /// Current vitals of a host (from a heartbeat).
    pub fn on_vitals(
        &mut self,
        host: &str,
        hostname: &Option<String>,
        values: [(&'static str, u8); 3],
        now: u64,
    ) -> Vec<AlertView> {
        let mut out = Vec::new();
        let threshold = self.threshold(host);
        for (metric, value) in values {
            let hot = self.hot_since.get_mut(host);
            if value >= threshold {
                match hot {
                    Some(hot) if hot.iter().any(|(m, _)| *m == metric) => {}
                    Some(hot) => hot.push((metric, now)),
                    None => {
                        self.hot_since.insert(host.to_string(), vec![(metric, now)]);
                    }
                }
            } else {
                if let Some(hot) = hot {
                    hot.retain(|(m, _)| *m != metric);
                    if hot.is_empty() {
                        self.hot_since.remove(host);
                    }
                }
                out.extend(self.resolve(host, &format!("hotspot-{metric}"), now));
            }
        }
        // A zero window fires on the first hot value.
        out.extend(self.fire_hotspots(host, hostname, now));
        out
    }

    fn fire_hotspots(&mut self, host: &str, hostname: &Option<String>, now: u64) -> Vec<AlertView> {
        if self.suppressed(host) {
            return Vec::new();
        }
        let window = self.window(host);
        let due: Vec<&'static str> = self
            .hot_since
            .get(host)
            .into_iter()
            .flatten()
            .filter(|(_, since)| now.saturating_sub(*since) >= window)
            .map(|(m, _)| *m)
            .collect();
        let mut out = Vec::new();
        for metric in due {
            let cause = format!(
                "{metric} at or above {}% for {} s",
                self.threshold(host),
                window / 1000
            );
            out.extend(self.fire(host, hostname, &format!("hotspot-{metric}"), cause, now));
        }
        out
    }

    /// The time-driven part of every rule; `hosts` are the active hosts now.
    pub fn tick(&mut self, hosts: &[HostFacts], now: u64) -> Vec<AlertView> {
        let mut out = Vec::new();
        let by_id: HashMap<&str, &HostFacts> = hosts.iter().map(|h| (h.id.as_str(), h)).collect();
        let due: Vec<(String, u64, Cause)> = self
            .pending_offline
            .iter()
            .filter(|(h, (since, _))| {
                now.saturating_sub(*since) >= self.grace(h) && !self.suppressed(h)
            })
            .map(|(h, (since, c))| (h.clone(), *since, *c))
            .collect();
        for (host, since, cause) in due {
            self.pending_offline.remove(&host);
            let Some(facts) = by_id.get(host.as_str()) else {
                continue;
            };
            if facts.status != AgentStatus::Offline {
                continue;
            }
            let text = format!(
                "{} for {} s",
                cause_word(cause),
                now.saturating_sub(since) / 1000
            );
            out.extend(self.fire(&host, &facts.hostname, OFFLINE, text, now));
        }
        let window = self.rules.flap_window_ms;
        let calm: Vec<String> = self
            .open
            .keys()
            .filter(|(_, r)| r == FLAPPING)
            .filter(|(h, _)| {
                self.flaps
                    .get(h)
                    .and_then(|f| f.back())
                    .is_none_or(|last| now.saturating_sub(*last) >= window)
            })
            .map(|(h, _)| h.clone())
            .collect();
        for host in calm {
            out.extend(self.resolve(&host, FLAPPING, now));
        }
        for h in hosts {
            let stale = h.status != AgentStatus::Offline
                && h.active
                && h.last_seen
                    .is_some_and(|seen| now.saturating_sub(seen) > self.rules.stale_after_ms);
            if stale {
                let cause = format!(
                    "no heartbeat for {} s",
                    now.saturating_sub(h.last_seen.unwrap_or(now)) / 1000
                );
                out.extend(self.fire(&h.id, &h.hostname, STALE, cause, now));
            } else {
                out.extend(self.resolve(&h.id, STALE, now));
            }
            out.extend(self.fire_hotspots(&h.id, &h.hostname, now));
        }
        // Hosts that disappeared (deleted) take their alerts with them.
        let gone: Vec<String> = self
            .open
            .keys()
            .map(|(h, _)| h.clone())
            .filter(|h| !by_id.contains_key(h.as_str()))
            .collect();
        for host in gone {
            self.forget(&host, now, &mut out);
        }
        out
    }
}

/// The engine plus its sled trees and the silences.
#[derive(Debug)]
pub struct Alerts {
    tree: sled::Tree,
    silences_tree: sled::Tree,
    pub engine: Mutex<Engine>,
    silences: Mutex<Vec<SilenceView>>,
}

fn decode<T: serde::de::DeserializeOwned>(tree: &'static str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt { tree, source })
}

impl Alerts {
    pub fn open(
        tree: sled::Tree,
        silences_tree: sled::Tree,
        rules: Rules,
        hosts: &[HostFacts],
    ) -> Result<Alerts, StoreError> {
        let mut firing = Vec::new();
        let mut next_id = 1;
        for item in tree.iter() {
            let a: AlertView = decode("alerts", &item?.1)?;
            next_id = next_id.max(a.id + 1);
            // Rollout alerts belong to their rollout, not to a host rule.
            if a.state == AlertState::Firing && a.rule != ROLLOUT_GATE {
                firing.push(a);
            }
        }
        let mut silences = Vec::new();
        for item in silences_tree.iter() {
            silences.push(decode("silences", &item?.1)?);
        }
        Ok(Alerts {
            tree,
            silences_tree,
            engine: Mutex::new(Engine::new(rules, firing, next_id, hosts)),
            silences: Mutex::new(silences),
        })
    }

    /// Stores changed alerts (one batch, flushed: an alert must not fire twice after a
    /// crash) and marks the silenced ones. Returns the changes with `silenced` set.
    pub fn store(
        &self,
        changes: Vec<AlertView>,
        now: u64,
        in_group: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<AlertView>, StoreError> {
        if changes.is_empty() {
            return Ok(changes);
        }
        let mut out = Vec::with_capacity(changes.len());
        {
            let silences = self.silences.lock().expect("silences lock");
            let mut engine = self.engine.lock().expect("engine lock");
            for mut a in changes {
                if a.state == AlertState::Firing
                    && silences.iter().any(|s| matches(s, &a, now, in_group))
                {
                    a.silenced = true;
                    engine.set_silenced(&a);
                }
                out.push(a);
            }
        }
        let mut batch = sled::Batch::default();
        for a in &out {
            batch.insert(
                &a.id.to_be_bytes(),
                serde_json::to_vec(a).expect("alerts serialize"),
            );
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(out)
    }

    /// `GET /api/alerts`: newest first, filtered.
    pub fn page(
        &self,
        state: Option<AlertState>,
        agent: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<AlertPage, StoreError> {
        let mut total = 0;
        let mut items = Vec::new();
        let skip = (page - 1) * per_page;
        for item in self.tree.iter().rev() {
            let a: AlertView = decode("alerts", &item?.1)?;
            if state.is_some_and(|s| s != a.state) || agent.is_some_and(|g| g != a.agent) {
                continue;
            }
            if total >= skip && items.len() < per_page {
                items.push(a);
            }
            total += 1;
        }
        Ok(AlertPage {
            items,
            total,
            page,
            per_page,
        })
    }

    /// Firing alerts per host.
    pub fn firing_counts(&self) -> HashMap<String, usize> {
        let engine = self.engine.lock().expect("engine lock");
        let mut counts = HashMap::new();
        for (host, _) in engine.open.keys() {
            *counts.entry(host.clone()).or_default() += 1;
        }
        counts
    }

    /// Firing alerts on one host.
    pub fn firing_for(&self, host: &str) -> usize {
        let engine = self.engine.lock().expect("engine lock");
        engine.open.keys().filter(|(h, _)| h == host).count()
    }

    pub fn firing_hosts(&self) -> usize {
        self.engine
            .lock()
            .expect("engine lock")
            .firing_hosts()
            .len()
    }

    pub fn add_silence(
        &self,
        req: &SilenceCreate,
        actor: &str,
        now: u64,
    ) -> Result<SilenceView, SilenceError> {
        if let Some(rule) = &req.rule {
            if !RULES.contains(&rule.as_str()) {
                return Err(SilenceError::Invalid(format!(
                    "rule must be one of {}, got {rule:?}",
                    RULES.join(", ")
                )));
            }
        }
        let until = match &req.until {
            SilenceUntil::At(ms) => *ms,
            SilenceUntil::For(text) => {
                let d = humantime::parse_duration(text.trim()).map_err(|e| {
                    SilenceError::Invalid(format!(
                        "until: {e} (a duration such as `2h`, or unix ms)"
                    ))
                })?;
                now + d.as_millis() as u64
            }
        };
        if until <= now {
            return Err(SilenceError::Invalid("until: must be in the future".into()));
        }
        let mut silences = self.silences.lock().expect("silences lock");
        let id = self
            .silences_tree
            .last()
            .map_err(StoreError::from)?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
            + 1;
        let view = SilenceView {
            id,
            agent: req.agent.clone(),
            group: req.group.clone(),
            rule: req.rule.clone(),
            until,
            reason: req.reason.clone(),
            created_by: actor.to_string(),
            created_at: now,
        };
        self.silences_tree
            .insert(
                id.to_be_bytes(),
                serde_json::to_vec(&view).expect("serializes"),
            )
            .map_err(StoreError::from)?;
        self.silences_tree.flush().map_err(StoreError::from)?;
        silences.push(view.clone());
        Ok(view)
    }

    /// Silences still in force.
    pub fn silences(&self, now: u64) -> Vec<SilenceView> {
        self.silences
            .lock()
            .expect("silences lock")
            .iter()
            .filter(|s| s.until > now)
            .cloned()
            .collect()
    }

    pub fn remove_silence(&self, id: u64) -> Result<bool, StoreError> {
        let removed = self.silences_tree.remove(id.to_be_bytes())?.is_some();
        self.silences_tree.flush()?;
        self.silences
            .lock()
            .expect("silences lock")
            .retain(|s| s.id != id);
        Ok(removed)
    }
}

fn matches(
    s: &SilenceView,
    a: &AlertView,
    now: u64,
    in_group: &dyn Fn(&str, &str) -> bool,
) -> bool {
    s.until > now
        && s.group.as_ref().is_none_or(|g| in_group(g, &a.agent))
        && s.agent.as_ref().is_none_or(|g| *g == a.agent)
        && s.rule.as_ref().is_none_or(|r| *r == a.rule)
}

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("{0}")]
    Invalid(String),
    #[error("storing the silence")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rules = Rules {
        offline_grace_ms: 10_000,
        notify_on_clean_stop: false,
        flap_count: 3,
        flap_window_ms: 600_000,
        hotspot_threshold: 80,
        hotspot_window_ms: 300_000,
        stale_after_ms: 900_000,
    };

    fn facts(id: &str, status: AgentStatus, last_seen: u64) -> HostFacts {
        HostFacts {
            id: id.into(),
            hostname: Some(format!("{id}.example")),
            status,
            cause: Some(Cause::Will),
            status_since: 0,
            last_seen: Some(last_seen),
            active: true,
        }
    }

    fn names(v: &[AlertView]) -> Vec<(String, AlertState)> {
        v.iter().map(|a| (a.rule.clone(), a.state)).collect()
    }

    #[test]
    fn offline_fires_after_grace_and_a_reconnect_within_grace_fires_nothing() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        let none = &None;
        assert!(e
            .on_transition("a", none, AgentStatus::Offline, Cause::Will, 1_000)
            .is_empty());
        let off = [facts("a", AgentStatus::Offline, 0)];
        assert!(e.tick(&off, 10_999).is_empty(), "still within grace");
        let fired = e.tick(&off, 11_000);
        assert_eq!(names(&fired), [(OFFLINE.to_string(), AlertState::Firing)]);
        assert!(fired[0].cause.contains("will"));
        assert!(e.tick(&off, 20_000).is_empty(), "fired once");
        let back = e.on_transition("a", none, AgentStatus::Online, Cause::Birth, 30_000);
        assert_eq!(names(&back), [(OFFLINE.to_string(), AlertState::Resolved)]);

        e.on_transition("a", none, AgentStatus::Offline, Cause::Will, 40_000);
        e.on_transition("a", none, AgentStatus::Online, Cause::Birth, 45_000);
        let on = [facts("a", AgentStatus::Online, 45_000)];
        assert!(
            e.tick(&on, 60_000).is_empty(),
            "a reconnect within grace is silent"
        );
    }

    #[test]
    fn with_no_grace_the_offline_alert_fires_at_the_transition() {
        let mut e = Engine::new(
            Rules {
                offline_grace_ms: 0,
                ..R
            },
            vec![],
            1,
            &[],
        );
        let fired = e.on_transition("a", &None, AgentStatus::Offline, Cause::Timeout, 5);
        assert_eq!(names(&fired), [(OFFLINE.to_string(), AlertState::Firing)]);
        assert!(e
            .tick(&[facts("a", AgentStatus::Offline, 0)], 10)
            .is_empty());
    }

    #[test]
    fn clean_stops_alert_only_when_configured() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        e.on_transition("a", &None, AgentStatus::Offline, Cause::Clean, 0);
        assert!(e
            .tick(&[facts("a", AgentStatus::Offline, 0)], 60_000)
            .is_empty());
        let mut e = Engine::new(
            Rules {
                notify_on_clean_stop: true,
                ..R
            },
            vec![],
            1,
            &[],
        );
        e.on_transition("a", &None, AgentStatus::Offline, Cause::Clean, 0);
        assert_eq!(
            e.tick(&[facts("a", AgentStatus::Offline, 0)], 60_000).len(),
            1
        );
    }

    #[test]
    fn ten_flaps_make_one_flapping_alert_that_resolves_when_calm() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        let mut all = Vec::new();
        for i in 0..10u64 {
            let t = i * 6_000;
            all.extend(e.on_transition("a", &None, AgentStatus::Offline, Cause::Will, t));
            all.extend(e.on_transition("a", &None, AgentStatus::Online, Cause::Birth, t + 2_000));
            all.extend(e.tick(&[facts("a", AgentStatus::Online, t + 2_000)], t + 3_000));
        }
        assert_eq!(names(&all), [(FLAPPING.to_string(), AlertState::Firing)]);
        let on = [facts("a", AgentStatus::Online, 600_000)];
        assert!(e.tick(&on, 54_000 + 599_000).is_empty());
        assert_eq!(
            names(&e.tick(&on, 54_000 + 600_000)),
            [(FLAPPING.to_string(), AlertState::Resolved)]
        );
    }

    #[test]
    fn hotspots_need_the_whole_window_and_a_spike_is_not_enough() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        let v = |cpu| [("cpu", cpu), ("mem", 10), ("disk", 10)];
        assert!(e.on_vitals("a", &None, v(95), 0).is_empty());
        assert!(
            e.on_vitals("a", &None, v(20), 1_000).is_empty(),
            "the spike ended"
        );
        assert!(e
            .tick(&[facts("a", AgentStatus::Online, 0)], 400_000)
            .is_empty());
        e.on_vitals("a", &None, v(90), 500_000);
        e.on_vitals("a", &None, v(91), 700_000);
        let fired = e.tick(&[facts("a", AgentStatus::Online, 800_000)], 800_000);
        assert_eq!(
            names(&fired),
            [("hotspot-cpu".to_string(), AlertState::Firing)]
        );
        let resolved = e.on_vitals("a", &None, v(50), 810_000);
        assert_eq!(
            names(&resolved),
            [("hotspot-cpu".to_string(), AlertState::Resolved)]
        );
    }

    #[test]
    fn hotspots_are_kept_per_host_and_metric_and_a_revoked_host_forgets_them() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        let v = |cpu, mem| [("cpu", cpu), ("mem", mem), ("disk", 10)];
        e.on_vitals("a", &None, v(95, 95), 0);
        e.on_vitals("b", &None, v(10, 95), 0);
        // A later hot reading keeps the first "since"; another host's readings change nothing.
        assert!(e.on_vitals("a", &None, v(96, 20), 200_000).is_empty());
        assert!(e.on_vitals("b", &None, v(10, 10), 200_000).is_empty());
        let fired = e.on_vitals("a", &None, v(97, 20), 300_000);
        assert_eq!(
            names(&fired),
            [("hotspot-cpu".to_string(), AlertState::Firing)],
            "a's memory cooled down at 200 s, b was never hot on cpu"
        );
        assert!(e.on_vitals("b", &None, v(10, 10), 300_000).is_empty());
        // Revoked: its hot metric is forgotten, so coming back hot starts a new window.
        e.on_transition("a", &None, AgentStatus::Revoked, Cause::Clean, 310_000);
        assert!(e.on_vitals("a", &None, v(99, 10), 320_000).is_empty());
        assert!(e.on_vitals("a", &None, v(99, 10), 600_000).is_empty());
        assert_eq!(
            names(&e.on_vitals("a", &None, v(99, 10), 620_000)),
            [("hotspot-cpu".to_string(), AlertState::Firing)]
        );
    }

    #[test]
    fn stale_fires_for_a_silent_online_host_and_a_restart_does_not_refire() {
        let mut e = Engine::new(R, vec![], 1, &[]);
        let fired = e.tick(&[facts("a", AgentStatus::Online, 0)], 900_001);
        assert_eq!(names(&fired), [(STALE.to_string(), AlertState::Firing)]);
        // A restarted console reloads the firing alert and does not fire it again.
        let mut e = Engine::new(R, fired, 2, &[facts("a", AgentStatus::Online, 0)]);
        assert!(e
            .tick(&[facts("a", AgentStatus::Online, 0)], 1_000_000)
            .is_empty());
        // An offline host found at start without an alert gets the rest of its grace.
        let off = HostFacts {
            status_since: 995_000,
            ..facts("b", AgentStatus::Offline, 0)
        };
        let mut e = Engine::new(R, vec![], 1, std::slice::from_ref(&off));
        assert!(e.tick(std::slice::from_ref(&off), 1_004_000).is_empty());
        assert_eq!(e.tick(&[off], 1_005_000).len(), 1);
    }
}
