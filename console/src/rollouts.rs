//! Staged rollouts (sled tree `rollouts`): an update-app or push-config applied to a
//! target in waves (a canary, then cumulative percentages), each wave gated on the health
//! of the hosts updated so far.
//!
//! **Gate.** A wave passes when, after every reachable host of the wave has a result and
//! the soak time has passed, (1) failed plus rolled-back hosts are at most
//! `max_failure_pct` of the executed ones (counted over every wave so far, once at least
//! `min_executed` have executed), and (2) every host updated so far stayed healthy during
//! the soak: online, the app `active`, no hotspot alert raised after its update. The
//! failure rate is checked on every tick, so a bad canary stops the rollout at once. A
//! failed gate pauses the rollout and raises a `rollout-gate` alert; the operator resumes
//! (overriding the gate) or aborts, which rolls the updated hosts back (update-app only).
//!
//! **Exactly once.** A host's command id is stored with the rollout *before* the command is
//! signed and sent; after a crash the driver finds the id and re-issues that same command
//! only if the console never recorded it, and agents drop a command id they already ran.
//! Offline hosts get their command queued and count as pending, not failed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use edgefleet_codec::api::{
    self, AgentStatus, AlertState, AlertView, GateView, RolloutHostView, RolloutView, WaveView,
};
use edgefleet_codec::CommandAction;
use serde::{Deserialize, Serialize};

use crate::commands::{hex, parse_hex_id, CommandState};
use crate::fleet::{now_ms, DecisionError, Fleet, Issue};
use crate::store::StoreError;

/// How long a rollout's command waits for an offline host.
const COMMAND_TTL: Duration = Duration::from_secs(7 * 86_400);
/// The most hosts one tick starts (or rolls back), so a tick stays short.
const STARTS_PER_TICK: usize = 500;
/// How long a health problem of an updated host must last to count against the gate.
pub const HEALTH_CONFIRM_MS: u64 = 5_000;
/// The most hosts one rollout targets.
pub const MAX_HOSTS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Paused,
    Aborting,
    Aborted,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    Waiting,
    /// The command is stored; the agent has not answered yet.
    Sent,
    Succeeded,
    Failed,
    RolledBack,
    /// The command expired before the host came back.
    Expired,
    /// Not sent: the host is gone, revoked, or in maintenance.
    Skipped,
    Reverting,
    Reverted,
    RevertFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaveState {
    Waiting,
    Running,
    Soaking,
    Passed,
    Failed,
    Overridden,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub canary: usize,
    pub percents: Vec<u8>,
    pub soak_ms: u64,
    pub max_failure_pct: f32,
    pub min_executed: usize,
    pub rate_per_minute: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub label: String,
    /// Indexes into [`Rollout::hosts`].
    pub hosts: Vec<usize>,
    pub state: WaveState,
    pub started_at: Option<u64>,
    pub soak_until: Option<u64>,
    pub gate: Option<GateView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEntry {
    pub agent: String,
    pub hostname: Option<String>,
    pub wave: usize,
    pub state: HostState,
    pub command: Option<String>,
    pub revert: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Why the host was unhealthy during a soak (sticky).
    pub unhealthy: Option<String>,
    /// A health problem seen but not yet confirmed: since when, and why.
    #[serde(default)]
    pub suspect: Option<(u64, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub name: Option<String>,
    pub action: CommandAction,
    pub plan: Plan,
    pub state: State,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub current_wave: usize,
    pub waves: Vec<Wave>,
    pub hosts: Vec<HostEntry>,
    /// When hosts were started in the last minute (the rate limit).
    pub recent_starts: Vec<u64>,
    /// The firing `rollout-gate` alert, if any.
    pub alert: Option<AlertView>,
}

/// Splits `n` hosts into waves: `canary` hosts, then cumulative percentages.
pub fn plan_waves(n: usize, canary: usize, percents: &[u8]) -> Vec<(String, Vec<usize>)> {
    let mut waves = Vec::new();
    let mut next = 0;
    let canary = canary.min(n);
    if canary > 0 {
        waves.push(("canary".to_string(), (0..canary).collect()));
        next = canary;
    }
    for p in percents {
        let upto = (n * usize::from(*p)).div_ceil(100).max(next).min(n);
        if upto > next || (*p == 100 && waves.is_empty()) {
            waves.push((format!("{p}%"), (next..upto).collect()));
            next = upto;
        }
    }
    waves
}

/// Validates a request against the plan rules (400 messages).
pub fn check_plan(req: &api::RolloutCreate) -> Result<Plan, String> {
    let canary = req.canary.unwrap_or(1);
    let percents = req.waves.clone().unwrap_or_else(|| vec![100]);
    if percents.is_empty() || percents.len() > 20 {
        return Err("waves: give 1 to 20 cumulative percentages ending at 100".into());
    }
    if percents.windows(2).any(|w| w[0] >= w[1])
        || percents.iter().any(|p| *p == 0 || *p > 100)
        || percents.last() != Some(&100)
    {
        return Err(format!(
            "waves: percentages must rise from 1 to 100 and end at 100, got {percents:?}"
        ));
    }
    let soak = req.soak.as_deref().unwrap_or("5m");
    let soak_ms = humantime::parse_duration(soak.trim())
        .map_err(|e| format!("soak: {e} (a duration such as `5m`)"))?
        .as_millis() as u64;
    if soak_ms > 7 * 86_400_000 {
        return Err("soak: at most 7d".into());
    }
    let max_failure_pct = req.max_failure_pct.unwrap_or(5.0);
    if !(0.0..=100.0).contains(&max_failure_pct) {
        return Err(format!(
            "max_failure_pct: must be 0 to 100, got {max_failure_pct}"
        ));
    }
    let min_executed = req.min_executed.unwrap_or(1).max(1);
    if req.rate_per_minute == Some(0) {
        return Err("rate_per_minute: at least 1 (leave it out for no limit)".into());
    }
    Ok(Plan {
        canary,
        percents,
        soak_ms,
        max_failure_pct,
        min_executed,
        rate_per_minute: req.rate_per_minute,
    })
}

impl Rollout {
    pub fn new(
        id: String,
        name: Option<String>,
        action: CommandAction,
        plan: Plan,
        targets: Vec<(String, Option<String>)>,
        actor: &str,
        now: u64,
    ) -> Rollout {
        let waves_plan = plan_waves(targets.len(), plan.canary, &plan.percents);
        let mut hosts: Vec<HostEntry> = targets
            .into_iter()
            .map(|(agent, hostname)| HostEntry {
                agent,
                hostname,
                wave: 0,
                state: HostState::Waiting,
                command: None,
                revert: None,
                message: None,
                started_at: None,
                finished_at: None,
                unhealthy: None,
                suspect: None,
            })
            .collect();
        let waves = waves_plan
            .into_iter()
            .enumerate()
            .map(|(i, (label, members))| {
                for m in &members {
                    hosts[*m].wave = i;
                }
                Wave {
                    label,
                    hosts: members,
                    state: WaveState::Waiting,
                    started_at: None,
                    soak_until: None,
                    gate: None,
                }
            })
            .collect();
        Rollout {
            id,
            name,
            action,
            plan,
            state: State::Running,
            reason: None,
            created_by: actor.to_string(),
            created_at: now,
            updated_at: now,
            current_wave: 0,
            waves,
            hosts,
            recent_starts: Vec::new(),
            alert: None,
        }
    }

    pub fn app(&self) -> Option<&str> {
        match &self.action {
            CommandAction::UpdateApp { app, .. } | CommandAction::PushConfig { app, .. } => {
                Some(app)
            }
            _ => None,
        }
    }

    pub fn view(&self) -> RolloutView {
        let (action, version) = match &self.action {
            CommandAction::UpdateApp { version, .. } => ("update-app", Some(version.clone())),
            _ => ("push-config", None),
        };
        RolloutView {
            id: self.id.clone(),
            name: self.name.clone(),
            action: action.to_string(),
            app: self.app().map(str::to_string),
            version,
            state: word(&self.state),
            reason: self.reason.clone(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            current_wave: self.current_wave,
            canary: self.plan.canary,
            percents: self.plan.percents.clone(),
            soak_s: self.plan.soak_ms / 1000,
            max_failure_pct: self.plan.max_failure_pct,
            min_executed: self.plan.min_executed,
            rate_per_minute: self.plan.rate_per_minute,
            waves: self
                .waves
                .iter()
                .enumerate()
                .map(|(i, w)| WaveView {
                    index: i,
                    label: w.label.clone(),
                    hosts: w.hosts.len(),
                    state: word(&w.state),
                    started_at: w.started_at,
                    soak_until: w.soak_until,
                    gate: w.gate.clone(),
                })
                .collect(),
            hosts: self
                .hosts
                .iter()
                .map(|h| RolloutHostView {
                    agent: h.agent.clone(),
                    hostname: h.hostname.clone(),
                    wave: h.wave,
                    state: word(&h.state),
                    command: h.command.clone(),
                    message: h.message.clone().or_else(|| h.unhealthy.clone()),
                    started_at: h.started_at,
                    finished_at: h.finished_at,
                })
                .collect(),
        }
    }

    fn is_final(&self) -> bool {
        matches!(self.state, State::Aborted | State::Completed)
    }

    /// Executed (a final result) and failed hosts over waves `0..=upto`.
    fn tally(&self, upto: usize) -> (usize, usize) {
        let mut executed = 0;
        let mut failed = 0;
        for h in self.hosts.iter().filter(|h| h.wave <= upto) {
            match h.state {
                HostState::Succeeded
                | HostState::Reverting
                | HostState::Reverted
                | HostState::RevertFailed => executed += 1,
                HostState::Failed | HostState::RolledBack => {
                    executed += 1;
                    failed += 1;
                }
                _ => {}
            }
        }
        (executed, failed)
    }
}

fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The rollouts and their sled tree.
#[derive(Debug)]
pub struct Rollouts {
    tree: sled::Tree,
    /// Every rollout, by id; the driver walks the unfinished ones.
    all: Mutex<BTreeMap<String, Rollout>>,
}

impl Rollouts {
    pub fn open(tree: sled::Tree) -> Result<Rollouts, StoreError> {
        let mut all = BTreeMap::new();
        for item in tree.iter() {
            let (_, v) = item?;
            let r: Rollout = serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                tree: "rollouts",
                source,
            })?;
            all.insert(r.id.clone(), r);
        }
        Ok(Rollouts {
            tree,
            all: Mutex::new(all),
        })
    }

    fn save(&self, r: &Rollout) -> Result<(), StoreError> {
        self.tree.insert(
            r.id.as_bytes(),
            serde_json::to_vec(r).expect("rollouts serialize"),
        )?;
        // Flushed: a command id must be on disk before its command leaves.
        self.tree.flush()?;
        Ok(())
    }

    pub fn insert(&self, r: Rollout) -> Result<(), StoreError> {
        self.save(&r)?;
        self.all
            .lock()
            .expect("rollouts lock")
            .insert(r.id.clone(), r);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<RolloutView> {
        self.all
            .lock()
            .expect("rollouts lock")
            .get(id)
            .map(Rollout::view)
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RolloutView> {
        let all = self.all.lock().expect("rollouts lock");
        let mut out: Vec<RolloutView> = all.values().map(Rollout::view).collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        out
    }

    /// Whether any rollout still has work.
    pub fn active(&self) -> bool {
        self.all
            .lock()
            .expect("rollouts lock")
            .values()
            .any(|r| !r.is_final())
    }
}

/// What an operator does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Abort,
}

impl Fleet {
    /// Creates and stores a rollout; the driver starts it on its next tick.
    pub fn create_rollout(&self, r: Rollout) -> Result<RolloutView, StoreError> {
        let detail = format!(
            "created {}: {} {} to {} hosts in {} waves (canary {}, {:?}, soak {} s, max failure {}%)",
            r.id,
            crate::commands::action_name(&r.action),
            r.app().unwrap_or_default(),
            r.hosts.len(),
            r.waves.len(),
            r.plan.canary,
            r.plan.percents,
            r.plan.soak_ms / 1000,
            r.plan.max_failure_pct
        );
        let view = r.view();
        let id = r.id.clone();
        let actor = r.created_by.clone();
        self.rollouts.insert(r)?;
        self.audit_or_log(&actor, "rollout", &format!("rollout:{id}"), &detail);
        Ok(view)
    }

    /// Pause, resume or abort; `Err(Conflict)` when the state does not allow it.
    pub fn control_rollout(
        &self,
        id: &str,
        control: Control,
        actor: &str,
    ) -> Result<RolloutView, DecisionError> {
        let now = now_ms();
        let mut all = self.rollouts.all.lock().expect("rollouts lock");
        let r = all
            .get_mut(id)
            .ok_or_else(|| DecisionError::NotFound(format!("rollout {id}")))?;
        let conflict = |what: &str| {
            DecisionError::Conflict(format!("rollout {id} is {}: cannot {what}", word(&r.state)))
        };
        let detail = match (control, r.state) {
            (Control::Pause, State::Running) => {
                r.state = State::Paused;
                r.reason = Some(format!("paused by {actor}"));
                "paused".to_string()
            }
            (Control::Resume, State::Paused) => {
                r.state = State::Running;
                r.reason = None;
                let (n, cw) = (r.waves.len(), r.current_wave);
                let w = &mut r.waves[cw];
                if w.state == WaveState::Failed {
                    // The operator overrides the failed gate: on to the next wave.
                    w.state = WaveState::Overridden;
                    let text = format!("resumed, overriding the failed gate of wave {}", w.label);
                    if cw + 1 < n {
                        r.current_wave += 1;
                    } else {
                        r.state = State::Completed;
                    }
                    text
                } else {
                    "resumed".to_string()
                }
            }
            (Control::Abort, State::Running | State::Paused) => {
                r.state = State::Aborting;
                r.reason = Some(format!("aborted by {actor}"));
                "aborted: rolling back the updated hosts".to_string()
            }
            (Control::Pause, _) => return Err(conflict("pause")),
            (Control::Resume, _) => return Err(conflict("resume")),
            (Control::Abort, _) => return Err(conflict("abort")),
        };
        r.updated_at = now;
        let resolved = matches!(control, Control::Resume | Control::Abort)
            .then(|| r.alert.take())
            .flatten();
        self.rollouts.save(r)?;
        let view = r.view();
        drop(all);
        if let Some(mut alert) = resolved {
            alert.state = AlertState::Resolved;
            alert.ended_at = Some(now);
            self.emit_alerts(vec![alert], now);
        }
        self.audit_or_log(actor, "rollout", &format!("rollout:{id}"), &detail);
        Ok(view)
    }

    /// Advances every unfinished rollout; run every second.
    pub fn rollout_tick(&self) {
        // A rollout step is stored before its command is sent: none while writes are
        // refused. The rollout waits where it is and goes on once they resume.
        if !self.rollouts.active() || self.store.is_refusing() {
            return;
        }
        let now = now_ms();
        let mut all = self.rollouts.all.lock().expect("rollouts lock");
        let mut audits = Vec::new();
        let mut alerts = Vec::new();
        for r in all.values_mut().filter(|r| !r.is_final()) {
            let before = r.clone();
            self.drive(r, now, &mut audits, &mut alerts);
            if *r != before {
                r.updated_at = now;
                if let Err(e) = self.rollouts.save(r) {
                    tracing::error!(rollout = %r.id, error = %e, "cannot store a rollout");
                }
            }
        }
        drop(all);
        for (id, detail) in audits {
            self.audit_or_log("console", "rollout", &format!("rollout:{id}"), &detail);
        }
        self.emit_alerts(alerts, now);
    }

    fn drive(
        &self,
        r: &mut Rollout,
        now: u64,
        audits: &mut Vec<(String, String)>,
        alerts: &mut Vec<AlertView>,
    ) {
        self.refresh_results(r, now);
        match r.state {
            State::Running => self.run_wave(r, now, audits, alerts),
            State::Aborting => self.revert(r, audits),
            _ => {}
        }
    }

    /// Moves sent hosts to their command's result; watches the health of updated hosts.
    fn refresh_results(&self, r: &mut Rollout, now: u64) {
        let app = r.app().map(str::to_string);
        let soaking = r.waves[r.current_wave].state == WaveState::Soaking
            || r.waves[r.current_wave].state == WaveState::Running;
        let current = r.current_wave;
        for h in &mut r.hosts {
            let tracked = match h.state {
                HostState::Sent => h.command.clone(),
                HostState::Reverting => h.revert.clone(),
                _ => None,
            };
            if let Some(cid) = tracked {
                let Some(record) =
                    parse_hex_id(&cid).and_then(|id| self.commands.get(&id).ok().flatten())
                else {
                    continue;
                };
                if record.state.is_final() {
                    h.finished_at = record.finished_at.or(Some(now));
                    h.message = record.message.clone();
                    h.state = match (h.state, record.state) {
                        (HostState::Reverting, CommandState::Succeeded) => HostState::Reverted,
                        (HostState::Reverting, _) => HostState::RevertFailed,
                        (_, CommandState::Succeeded) => HostState::Succeeded,
                        (_, CommandState::RolledBack) => HostState::RolledBack,
                        (_, CommandState::Expired) => HostState::Expired,
                        _ => HostState::Failed,
                    };
                }
            }
            // Health of updated hosts while their gate is open. A problem counts once it
            // lasted HEALTH_CONFIRM_MS: a heartbeat from the middle of the update (the app
            // stopped) must not fail the gate.
            if soaking
                && h.state == HostState::Succeeded
                && h.wave <= current
                && h.unhealthy.is_none()
            {
                match self.unhealthy(&h.agent, app.as_deref(), h.finished_at.unwrap_or(now)) {
                    Some(why) => {
                        let since = h.suspect.as_ref().map_or(now, |(t, _)| *t);
                        if now.saturating_sub(since) >= HEALTH_CONFIRM_MS {
                            h.unhealthy = Some(why);
                            h.suspect = None;
                        } else {
                            h.suspect = Some((since, why));
                        }
                    }
                    None => h.suspect = None,
                }
            }
        }
    }

    /// Why an updated host is not healthy, if it is not.
    fn unhealthy(&self, agent: &str, app: Option<&str>, since: u64) -> Option<String> {
        let host = self.host(agent)?;
        if host.status != AgentStatus::Online {
            return Some(format!("{} during the soak", host.status.as_str()));
        }
        if let Some(app) = app {
            match host.apps.iter().find(|a| a.id == app) {
                Some(a) if a.status != edgefleet_codec::AppStatus::Active => {
                    return Some(format!("{app} is {} during the soak", a.status.as_str()))
                }
                None => return Some(format!("{app} is not reported during the soak")),
                _ => {}
            }
        }
        let hot = self
            .alerts
            .engine
            .lock()
            .expect("engine lock")
            .open_for(agent)
            .into_iter()
            .find(|a| a.rule.starts_with("hotspot-") && a.started_at >= since);
        hot.map(|a| format!("{} fired during the soak: {}", a.rule, a.cause))
    }

    fn run_wave(
        &self,
        r: &mut Rollout,
        now: u64,
        audits: &mut Vec<(String, String)>,
        alerts: &mut Vec<AlertView>,
    ) {
        let w = r.current_wave;
        if r.waves[w].state == WaveState::Passed {
            // The last gate passed; hosts that were offline still get their update.
            if !r.hosts.iter().any(|h| h.state == HostState::Sent) {
                r.state = State::Completed;
                audits.push((r.id.clone(), "completed".into()));
            }
            return;
        }
        if r.waves[w].state == WaveState::Waiting {
            r.waves[w].state = WaveState::Running;
            r.waves[w].started_at = Some(now);
            audits.push((
                r.id.clone(),
                format!(
                    "wave {} ({}) started: {} hosts",
                    w,
                    r.waves[w].label,
                    r.waves[w].hosts.len()
                ),
            ));
        }
        // Start hosts, within the rate limit.
        r.recent_starts.retain(|t| now.saturating_sub(*t) < 60_000);
        let room = r.plan.rate_per_minute.map_or(usize::MAX, |l| {
            (l as usize).saturating_sub(r.recent_starts.len())
        });
        let batch: Vec<usize> = r.waves[w]
            .hosts
            .iter()
            .copied()
            .filter(|i| r.hosts[*i].state == HostState::Waiting)
            .take(room.min(STARTS_PER_TICK))
            .collect();
        let action = r.action.clone();
        let sent = self.start_batch(r, &batch, |h| {
            h.state = HostState::Sent;
            h.started_at = Some(now);
            &mut h.command
        });
        for (i, id) in sent {
            r.recent_starts.push(now);
            let agent = r.hosts[i].agent.clone();
            self.send(r, i, id, action.clone(), &agent);
        }
        let (executed, failed) = r.tally(w);
        // Skipped and expired hosts never execute: a gate must not wait for them.
        let reachable = r
            .hosts
            .iter()
            .filter(|h| h.wave <= w)
            .filter(|h| !matches!(h.state, HostState::Skipped | HostState::Expired))
            .count();
        let needed = r.plan.min_executed.min(reachable);
        let pct = if executed == 0 {
            0.0
        } else {
            failed as f32 * 100.0 / executed as f32
        };
        let unhealthy: Vec<String> = r
            .hosts
            .iter()
            .filter(|h| h.wave <= w)
            .filter_map(|h| {
                h.unhealthy
                    .as_ref()
                    .map(|u| format!("{}: {u}", h.hostname.as_deref().unwrap_or(&h.agent)))
            })
            .collect();
        let too_many = executed >= needed && executed > 0 && pct > r.plan.max_failure_pct;
        let wave = &r.waves[w];
        // Every host of the wave is started, and all but the offline ones answered.
        let settled = wave.hosts.iter().all(|i| {
            let h = &r.hosts[*i];
            match h.state {
                HostState::Waiting => false,
                HostState::Sent => self
                    .host(&h.agent)
                    .is_none_or(|x| x.status != AgentStatus::Online),
                _ => true,
            }
        });
        if r.waves[w].state == WaveState::Running && settled && !too_many {
            r.waves[w].state = WaveState::Soaking;
            r.waves[w].soak_until = Some(now + r.plan.soak_ms);
        }
        let soaked = r.waves[w].state == WaveState::Soaking
            && r.waves[w].soak_until.is_some_and(|t| now >= t);
        let verdict = if too_many {
            Some((
                false,
                format!(
                    "{failed} of {executed} executed hosts failed or rolled back ({pct:.1}% > {}%)",
                    r.plan.max_failure_pct
                ),
            ))
        } else if soaked && !unhealthy.is_empty() {
            Some((
                false,
                format!(
                    "{} updated hosts were unhealthy during the soak",
                    unhealthy.len()
                ),
            ))
        } else if soaked && executed >= needed {
            Some((
                true,
                format!(
                    "{failed} of {executed} failed ({pct:.1}% ≤ {}%), all updated hosts healthy",
                    r.plan.max_failure_pct
                ),
            ))
        } else {
            None // still running, soaking, or waiting for enough executed hosts
        };
        let Some((passed, text)) = verdict else {
            return;
        };
        r.waves[w].gate = Some(GateView {
            at: now,
            passed,
            executed,
            failed,
            failure_pct: pct,
            unhealthy,
            verdict: text.clone(),
        });
        let label = r.waves[w].label.clone();
        if passed {
            r.waves[w].state = WaveState::Passed;
            audits.push((
                r.id.clone(),
                format!("wave {w} ({label}) gate passed: {text}"),
            ));
            if w + 1 < r.waves.len() {
                r.current_wave += 1;
            }
        } else {
            r.waves[w].state = WaveState::Failed;
            r.state = State::Paused;
            r.reason = Some(format!("the gate of wave {w} ({label}) failed: {text}"));
            audits.push((
                r.id.clone(),
                format!("wave {w} ({label}) gate failed, paused: {text}"),
            ));
            let mut engine = self.alerts.engine.lock().expect("engine lock");
            let alert = AlertView {
                id: engine.allocate_id(),
                rule: crate::alerts::ROLLOUT_GATE.to_string(),
                agent: format!("rollout:{}", r.id),
                hostname: r.name.clone(),
                state: AlertState::Firing,
                started_at: now,
                ended_at: None,
                cause: r.reason.clone().unwrap_or_default(),
                silenced: false,
            };
            r.alert = Some(alert.clone());
            alerts.push(alert);
        }
    }

    /// Gives each host of `batch` a command id (`slot` marks the host and returns where
    /// the id goes), and stores the rollout once, flushed, before anything is sent: the
    /// write-ahead that makes a crash never send a host a second command. On a store
    /// error nothing changes and nothing is sent.
    fn start_batch(
        &self,
        r: &mut Rollout,
        batch: &[usize],
        slot: impl Fn(&mut HostEntry) -> &mut Option<String>,
    ) -> Vec<(usize, [u8; 16])> {
        if batch.is_empty() {
            return Vec::new();
        }
        let before: Vec<HostEntry> = batch.iter().map(|i| r.hosts[*i].clone()).collect();
        let mut out = Vec::with_capacity(batch.len());
        for i in batch {
            let mut id = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
            *slot(&mut r.hosts[*i]) = Some(hex(&id));
            out.push((*i, id));
        }
        if let Err(e) = self.rollouts.save(r) {
            tracing::error!(rollout = %r.id, error = %e, "cannot record a rollout step; not sending");
            for (i, h) in batch.iter().zip(before) {
                r.hosts[*i] = h;
            }
            return Vec::new();
        }
        out
    }

    fn send(&self, r: &mut Rollout, i: usize, id: [u8; 16], action: CommandAction, agent: &str) {
        let sent = self.issue_command_with(
            agent,
            action,
            COMMAND_TTL,
            &format!("rollout:{}", r.id),
            Issue {
                id,
                maintenance: true,
            },
        );
        if let Err(e) = sent {
            let h = &mut r.hosts[i];
            h.state = if h.state == HostState::Reverting {
                HostState::RevertFailed
            } else {
                HostState::Skipped
            };
            h.message = Some(e.to_string());
            h.finished_at = Some(now_ms());
        }
    }

    /// Abort: roll back every host the update reached, then stop.
    fn revert(&self, r: &mut Rollout, audits: &mut Vec<(String, String)>) {
        let app = r.app().map(str::to_string);
        let can_revert = matches!(r.action, CommandAction::UpdateApp { .. });
        let updated: Vec<usize> = (0..r.hosts.len())
            .filter(|i| r.hosts[*i].state == HostState::Succeeded)
            .filter(|i| r.hosts[*i].revert.is_none())
            .take(STARTS_PER_TICK)
            .collect();
        if !can_revert {
            for i in &updated {
                r.hosts[*i].message = Some("push-config has no rollback; left as is".into());
            }
        } else {
            let sent = self.start_batch(r, &updated, |h| {
                h.state = HostState::Reverting;
                &mut h.revert
            });
            let action = CommandAction::RollbackApp {
                app: app.clone().unwrap_or_default(),
            };
            for (i, id) in sent {
                let agent = r.hosts[i].agent.clone();
                self.send(r, i, id, action.clone(), &agent);
            }
        }
        // Done once nothing is in flight. An offline host still holds its queued update
        // (commands cannot be recalled), so the rollout stays aborting until that update
        // lands, is rolled back in turn, or expires.
        let busy = r
            .hosts
            .iter()
            .any(|h| matches!(h.state, HostState::Reverting | HostState::Sent));
        if !busy {
            r.state = State::Aborted;
            let reverted = r
                .hosts
                .iter()
                .filter(|h| h.state == HostState::Reverted)
                .count();
            let failed = r
                .hosts
                .iter()
                .filter(|h| h.state == HostState::RevertFailed)
                .count();
            audits.push((
                r.id.clone(),
                format!("aborted: {reverted} hosts rolled back, {failed} rollbacks failed"),
            ));
        }
    }

    /// Re-sends commands a crash may have recorded but not issued (on start).
    pub fn resume_rollouts(&self) {
        let mut all = self.rollouts.all.lock().expect("rollouts lock");
        for r in all.values_mut().filter(|r| !r.is_final()) {
            for i in 0..r.hosts.len() {
                let (cid, action) = match r.hosts[i].state {
                    HostState::Sent => (r.hosts[i].command.clone(), r.action.clone()),
                    HostState::Reverting => (
                        r.hosts[i].revert.clone(),
                        CommandAction::RollbackApp {
                            app: r.app().unwrap_or_default().to_string(),
                        },
                    ),
                    _ => continue,
                };
                let Some(id) = cid.as_deref().and_then(parse_hex_id) else {
                    continue;
                };
                if matches!(self.commands.get(&id), Ok(Some(_))) {
                    continue; // issued before the crash: redelivery handles it
                }
                tracing::info!(rollout = %r.id, agent = %r.hosts[i].agent, "re-issuing a rollout command recorded before a crash");
                let agent = r.hosts[i].agent.clone();
                self.send(r, i, id, action, &agent);
            }
            if let Err(e) = self.rollouts.save(r) {
                tracing::error!(rollout = %r.id, error = %e, "cannot store a rollout");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_are_a_canary_then_cumulative_percentages() {
        let sizes = |n, c, p: &[u8]| {
            plan_waves(n, c, p)
                .into_iter()
                .map(|(l, h)| (l, h.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sizes(50, 2, &[20, 100]),
            vec![("canary".into(), 2), ("20%".into(), 8), ("100%".into(), 40)]
        );
        assert_eq!(
            sizes(3, 0, &[10, 50, 100]),
            vec![("10%".into(), 1), ("50%".into(), 1), ("100%".into(), 1)]
        );
        // A percentage that adds nobody is skipped; the canary can cover everything.
        assert_eq!(sizes(2, 5, &[50, 100]), vec![("canary".into(), 2)]);
        let all: Vec<usize> = plan_waves(97, 3, &[10, 33, 100])
            .into_iter()
            .flat_map(|(_, h)| h)
            .collect();
        assert_eq!(
            all,
            (0..97).collect::<Vec<_>>(),
            "every host exactly once, in order"
        );
    }

    #[test]
    fn plans_are_checked() {
        let req = |f: fn(&mut api::RolloutCreate)| {
            let mut r = api::RolloutCreate::default();
            f(&mut r);
            check_plan(&r)
        };
        assert!(req(|_| {}).is_ok());
        assert!(req(|r| r.waves = Some(vec![50, 20, 100]))
            .unwrap_err()
            .contains("rise"));
        assert!(req(|r| r.waves = Some(vec![50]))
            .unwrap_err()
            .contains("end at 100"));
        assert!(req(|r| r.soak = Some("soon".into()))
            .unwrap_err()
            .contains("soak"));
        assert!(req(|r| r.max_failure_pct = Some(120.0))
            .unwrap_err()
            .contains("max_failure_pct"));
        assert!(req(|r| r.rate_per_minute = Some(0))
            .unwrap_err()
            .contains("rate_per_minute"));
    }
}
