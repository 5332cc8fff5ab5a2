//! Labels, per-agent settings, maintenance, and applying group-scoped settings: the
//! alert rule overrides and the heartbeat interval pushed to agents.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_codec::api::{
    EffectiveSettings, LabelsUpdate, LabelsView, MaintenanceView, ScopedSettings,
};
use edgefleet_codec::CommandAction;

use super::{live, DecisionError, Fleet, Issue};
use crate::alerts::HostRules;
use crate::groups::{resolve, Globals};
use crate::presence::{Approval, HostRecord};
use crate::store::Round;

/// How long a pushed interval waits for an offline agent.
const PUSH_TTL: Duration = Duration::from_secs(7 * 86_400);

impl Fleet {
    pub fn globals(&self) -> Globals {
        let engine = self.alerts.engine.lock().expect("engine lock");
        let rules = engine.rules();
        Globals {
            offline_grace_s: rules.offline_grace_ms / 1000,
            hotspot_threshold: rules.hotspot_threshold,
            hotspot_window_s: rules.hotspot_window_ms / 1000,
        }
    }

    /// The settings that apply to `host`, with where each comes from.
    pub fn effective_settings(&self, host: &HostRecord) -> EffectiveSettings {
        let groups = self.groups.of(&host.id, &host.labels());
        resolve(&host.settings, &groups, self.globals())
    }

    fn store_host(&self, host: &HostRecord) {
        if let Err(e) = self.store.write_round(&Round {
            hosts: vec![host],
            ..Round::default()
        }) {
            self.metrics
                .store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(agent.id = %host.id, error = %e, "cannot store a host record");
        }
    }

    /// Changes one live host record under the lock and stores it.
    fn update_host<T>(
        &self,
        host_id: &str,
        f: impl FnOnce(&mut HostRecord) -> Result<T, DecisionError>,
    ) -> Result<T, DecisionError> {
        let mut hosts = self.hosts.write().expect("hosts lock");
        live(&hosts, host_id)?;
        let host = hosts.get_mut(host_id).expect("checked above");
        let out = f(host)?;
        let record = host.clone();
        self.store_host(&record);
        Ok(out)
    }

    /// `PUT /api/agents/{id}/labels`.
    pub fn set_labels(
        &self,
        host_id: &str,
        update: LabelsUpdate,
        actor: &str,
    ) -> Result<LabelsView, DecisionError> {
        for (k, v) in &update.set {
            crate::labels::check_key(k).map_err(DecisionError::Conflict)?;
            crate::labels::check_value(k, v).map_err(DecisionError::Conflict)?;
        }
        for k in &update.remove {
            crate::labels::check_key(k).map_err(DecisionError::Conflict)?;
            if update.set.contains_key(k) {
                return Err(DecisionError::Conflict(format!(
                    "label {k:?} is both set and removed"
                )));
            }
        }
        let view = self.update_host(host_id, |h| {
            let mut operator = h.operator_labels.clone();
            for k in &update.remove {
                operator.remove(k);
            }
            operator.extend(update.set.clone());
            if crate::labels::effective(&h.agent_labels, &operator).len()
                > crate::labels::MAX_LABELS
            {
                return Err(DecisionError::Conflict(format!(
                    "a host carries at most {} labels",
                    crate::labels::MAX_LABELS
                )));
            }
            h.operator_labels = operator;
            Ok(LabelsView {
                labels: h.labels(),
                agent: h.agent_labels.clone(),
                operator: h.operator_labels.clone(),
            })
        })?;
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut detail = Vec::new();
        if !update.set.is_empty() {
            detail.push(format!("set {}", pairs(&update.set)));
        }
        if !update.remove.is_empty() {
            detail.push(format!("removed {}", update.remove.join(", ")));
        }
        self.audit_or_log(actor, "labels", host_id, &detail.join("; "));
        self.apply_scoped(Some(&[host_id.to_string()]));
        Ok(view)
    }

    /// `PUT /api/agents/{id}/settings`: replaces the host's own settings.
    pub fn set_agent_settings(
        &self,
        host_id: &str,
        settings: ScopedSettings,
        actor: &str,
    ) -> Result<EffectiveSettings, DecisionError> {
        crate::groups::check_agent_settings(&settings).map_err(DecisionError::Conflict)?;
        let record = self.update_host(host_id, |h| {
            h.settings = settings.clone();
            Ok(h.clone())
        })?;
        self.audit_or_log(
            actor,
            "settings",
            host_id,
            &serde_json::to_string(&settings).expect("settings serialize"),
        );
        self.apply_scoped(Some(&[host_id.to_string()]));
        Ok(self.effective_settings(&record))
    }

    /// Puts a host in maintenance (or replaces its window).
    pub fn maintenance_on(
        &self,
        host_id: &str,
        m: MaintenanceView,
        actor: &str,
    ) -> Result<MaintenanceView, DecisionError> {
        self.update_host(host_id, |h| {
            h.maintenance = Some(m.clone());
            Ok(())
        })?;
        let until = m
            .until
            .map(|u| format!(" until {}", crate::inventory::ms_rfc3339(u)))
            .unwrap_or_default();
        let allow = if m.allow.is_empty() {
            String::new()
        } else {
            format!("; allowed: {}", m.allow.join(", "))
        };
        self.audit_or_log(
            actor,
            "maintenance_on",
            host_id,
            &format!("{}{until}{allow}", m.reason),
        );
        self.apply_scoped(Some(&[host_id.to_string()]));
        Ok(m)
    }

    /// Ends a host's maintenance; `Ok(false)` if it was not in maintenance.
    pub fn maintenance_off(
        &self,
        host_id: &str,
        actor: &str,
        why: &str,
    ) -> Result<bool, DecisionError> {
        let was = self.update_host(host_id, |h| Ok(h.maintenance.take()))?;
        if was.is_none() {
            return Ok(false);
        }
        self.audit_or_log(actor, "maintenance_off", host_id, why);
        self.apply_scoped(Some(&[host_id.to_string()]));
        Ok(true)
    }

    /// Ends maintenance windows whose end time passed (called by the sweep).
    pub fn expire_maintenance(&self, now: u64) {
        let due: Vec<String> = {
            let hosts = self.hosts.read().expect("hosts lock");
            hosts
                .values()
                .filter(|h| h.deleted_at.is_none())
                .filter(|h| {
                    h.maintenance
                        .as_ref()
                        .and_then(|m| m.until)
                        .is_some_and(|u| u <= now)
                })
                .map(|h| h.id.clone())
                .collect()
        };
        for id in due {
            if let Err(e) = self.maintenance_off(&id, "console", "the end time passed") {
                tracing::warn!(agent.id = %id, error = %e, "cannot end maintenance");
            }
        }
    }

    /// Applies scoped settings to `only` (or every host): alert rule overrides and
    /// maintenance go to the alert engine; a changed heartbeat interval is pushed to the
    /// agent as a `set-heartbeat-interval` command (queued while it is offline).
    pub fn apply_scoped(&self, only: Option<&[String]>) {
        let hosts: Vec<HostRecord> = match only {
            Some(ids) => ids.iter().filter_map(|id| self.host(id)).collect(),
            None => self.snapshot(),
        };
        let globals = self.globals();
        let mut pushes = Vec::new();
        {
            let mut engine = self.alerts.engine.lock().expect("engine lock");
            for h in &hosts {
                let groups = self.groups.of(&h.id, &h.labels());
                let eff = resolve(&h.settings, &groups, globals);
                let scoped = |e: &edgefleet_codec::api::EffectiveSetting| {
                    (e.source != "global").then_some(e.value)
                };
                engine.set_host_rules(
                    &h.id,
                    HostRules {
                        offline_grace_ms: scoped(&eff.offline_grace_s).map(|s| s * 1000),
                        hotspot_threshold: scoped(&eff.hotspot_threshold)
                            .map(|v| u8::try_from(v).unwrap_or(u8::MAX)),
                        hotspot_window_ms: scoped(&eff.hotspot_window_s).map(|s| s * 1000),
                        suppressed: h.maintenance.is_some(),
                    },
                );
                if h.approval != Approval::Active {
                    continue;
                }
                let want = eff
                    .heartbeat_interval_s
                    .map(|e| u32::try_from(e.value).unwrap_or(u32::MAX));
                let send = match (want, h.interval_requested) {
                    (Some(w), r) if r != Some(w) => Some(w),
                    // Nothing scoped any more: hand the agent back its own interval.
                    (None, Some(r)) if r != 0 => Some(0),
                    _ => None,
                };
                if let Some(seconds) = send {
                    pushes.push((h.id.clone(), seconds));
                }
            }
        }
        for (id, seconds) in pushes {
            let mut cid = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cid);
            let sent = self.issue_command_with(
                &id,
                CommandAction::SetHeartbeatInterval { seconds },
                PUSH_TTL,
                "console (scoped settings)",
                Issue {
                    id: cid,
                    maintenance: false,
                },
            );
            match sent {
                Ok(_) => {
                    let _ = self.update_host(&id, |h| {
                        h.interval_requested = Some(seconds);
                        Ok(())
                    });
                }
                Err(e) => {
                    tracing::warn!(agent.id = %id, error = %e, "cannot push the heartbeat interval")
                }
            }
        }
    }

    /// Effective labels of every live host, for filters: `(id, labels)`.
    pub fn label_values(&self) -> BTreeMap<String, Vec<String>> {
        let hosts = self.hosts.read().expect("hosts lock");
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for h in hosts.values().filter(|h| h.deleted_at.is_none()) {
            for (k, v) in h.labels() {
                out.entry(k).or_default().insert(v);
            }
        }
        out.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }

    /// Whether host `host_id` is in group `group` now (for group silences).
    pub fn in_group(&self, group: &str, host_id: &str) -> bool {
        let labels = {
            let hosts = self.hosts.read().expect("hosts lock");
            match hosts.get(host_id) {
                Some(h) => h.labels(),
                None => return false,
            }
        };
        self.groups
            .contains(group, host_id, &labels)
            .unwrap_or(false)
    }
}
