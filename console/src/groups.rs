//! Host groups (sled tree `groups`): static member lists and dynamic label selectors, and
//! the scoped settings they carry, resolved with the precedence agent > group > global.
//!
//! When a host is in several groups that set the same field, the group with the lowest
//! `priority` wins, ties broken by group id.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use edgefleet_codec::api::{EffectiveSetting, EffectiveSettings, GroupSpec, ScopedSettings};
use serde::{Deserialize, Serialize};

use crate::labels::Selector;
use crate::store::StoreError;

/// The most groups a console keeps.
pub const MAX_GROUPS: usize = 1000;
/// The most members of a static group.
pub const MAX_MEMBERS: usize = 100_000;

/// One group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub members: Option<Vec<String>>,
    pub selector: Option<String>,
    pub settings: ScopedSettings,
    pub priority: i32,
    pub created_at: u64,
    pub updated_at: u64,
}

/// The console-wide values a setting falls back to.
#[derive(Debug, Clone, Copy)]
pub struct Globals {
    pub offline_grace_s: u64,
    pub hotspot_threshold: u8,
    pub hotspot_window_s: u64,
}

/// A group with its membership rule built once (the selector parsed, the members hashed).
#[derive(Debug)]
struct Entry {
    group: Group,
    membership: Arc<Membership>,
}

impl Entry {
    fn new(group: Group) -> Entry {
        let membership = match (&group.members, &group.selector) {
            (Some(m), _) => Membership::Static(m.iter().cloned().collect()),
            (None, Some(text)) => match Selector::parse(text) {
                Ok(s) => Membership::Dynamic(s),
                Err(e) => {
                    tracing::error!(group = %group.id, error = %e, "stored selector no longer parses; the group matches nothing");
                    Membership::Static(Default::default())
                }
            },
            (None, None) => Membership::Static(Default::default()),
        };
        Entry {
            group,
            membership: Arc::new(membership),
        }
    }
}

#[derive(Debug)]
pub struct Groups {
    tree: sled::Tree,
    entries: RwLock<BTreeMap<String, Entry>>,
}

fn check_settings(s: &ScopedSettings) -> Result<(), String> {
    if let Some(v) = s.heartbeat_interval_s {
        if !(5..=3600).contains(&v) {
            return Err(format!(
                "settings.heartbeat_interval_s must be 5 to 3600, got {v}"
            ));
        }
    }
    if let Some(v) = s.offline_grace_s {
        if v > 7 * 86_400 {
            return Err(format!(
                "settings.offline_grace_s must be at most 604800 (7 days), got {v}"
            ));
        }
    }
    if let Some(v) = s.hotspot_threshold {
        if !(1..=100).contains(&v) {
            return Err(format!(
                "settings.hotspot_threshold must be 1 to 100, got {v}"
            ));
        }
    }
    if let Some(v) = s.hotspot_window_s {
        if v > 86_400 {
            return Err(format!(
                "settings.hotspot_window_s must be at most 86400, got {v}"
            ));
        }
    }
    Ok(())
}

/// Validates operator settings for one agent (the same rules as a group's).
pub fn check_agent_settings(s: &ScopedSettings) -> Result<(), String> {
    check_settings(s)
}

/// A checked group from a request; `known` says whether a host id exists.
pub fn validate(
    spec: GroupSpec,
    now: u64,
    created_at: Option<u64>,
    known: impl Fn(&str) -> bool,
) -> Result<Group, String> {
    let id = spec.id.trim().to_string();
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "id must be 1-64 characters of a-z, 0-9, '-' and '_', got {id:?}"
        ));
    }
    let selector = match (&spec.members, &spec.selector) {
        (Some(_), Some(_)) => {
            return Err(
                "give either members (a static group) or selector (a dynamic group), not both"
                    .into(),
            )
        }
        (None, None) => {
            return Err("give members (a static group) or selector (a dynamic group)".into())
        }
        (None, Some(text)) => {
            Selector::parse(text).map_err(|e| format!("selector: {e}"))?;
            Some(text.trim().to_string())
        }
        (Some(members), None) => {
            if members.len() > MAX_MEMBERS {
                return Err(format!("members: at most {MAX_MEMBERS} hosts"));
            }
            if let Some(unknown) = members.iter().find(|m| !known(m)) {
                return Err(format!("members: no agent {unknown:?}"));
            }
            None
        }
    };
    check_settings(&spec.settings)?;
    let mut members = spec.members;
    if let Some(m) = &mut members {
        m.sort();
        m.dedup();
    }
    let name = spec
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.clone());
    if name.chars().count() > 200 {
        return Err("name: at most 200 characters".into());
    }
    Ok(Group {
        id,
        name,
        description: spec.description.filter(|d| !d.trim().is_empty()),
        members,
        selector,
        settings: spec.settings,
        priority: spec.priority,
        created_at: created_at.unwrap_or(now),
        updated_at: now,
    })
}

impl Group {
    pub fn kind(&self) -> &'static str {
        if self.selector.is_some() {
            "dynamic"
        } else {
            "static"
        }
    }
}

impl Groups {
    pub fn open(tree: sled::Tree) -> Result<Groups, StoreError> {
        let mut entries = BTreeMap::new();
        for item in tree.iter() {
            let (_, v) = item?;
            let group: Group =
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    tree: "groups",
                    source,
                })?;
            entries.insert(group.id.clone(), Entry::new(group));
        }
        Ok(Groups {
            tree,
            entries: RwLock::new(entries),
        })
    }

    pub fn list(&self) -> Vec<Group> {
        let entries = self.entries.read().expect("groups lock");
        entries.values().map(|e| e.group.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Group> {
        let entries = self.entries.read().expect("groups lock");
        entries.get(id).map(|e| e.group.clone())
    }

    /// Stores a validated group (new or replacing one); `Ok(false)` when the group limit
    /// is reached.
    pub fn put(&self, group: Group) -> Result<bool, StoreError> {
        let mut entries = self.entries.write().expect("groups lock");
        if !entries.contains_key(&group.id) && entries.len() >= MAX_GROUPS {
            return Ok(false);
        }
        self.tree.insert(
            group.id.as_bytes(),
            serde_json::to_vec(&group).expect("groups serialize"),
        )?;
        self.tree.flush()?;
        entries.insert(group.id.clone(), Entry::new(group));
        Ok(true)
    }

    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut entries = self.entries.write().expect("groups lock");
        if entries.remove(id).is_none() {
            return Ok(false);
        }
        self.tree.remove(id.as_bytes())?;
        self.tree.flush()?;
        Ok(true)
    }

    /// Whether host `id` with effective `labels` is in group `group`; `None` if there is
    /// no such group.
    pub fn contains(
        &self,
        group: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<bool> {
        let entries = self.entries.read().expect("groups lock");
        entries
            .get(group)
            .map(|e| e.membership.contains(id, labels))
    }

    /// A membership test for one group that holds no lock while it runs, for filtering
    /// many hosts.
    pub fn matcher(&self, group: &str) -> Option<Arc<Membership>> {
        let entries = self.entries.read().expect("groups lock");
        entries.get(group).map(|e| e.membership.clone())
    }

    /// The groups host `id` is in, highest precedence first.
    pub fn of(&self, id: &str, labels: &BTreeMap<String, String>) -> Vec<Group> {
        let entries = self.entries.read().expect("groups lock");
        let mut out: Vec<Group> = entries
            .values()
            .filter(|e| e.membership.contains(id, labels))
            .map(|e| e.group.clone())
            .collect();
        out.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

/// A group's membership rule, shared out of the group lock.
#[derive(Debug)]
pub enum Membership {
    Static(std::collections::HashSet<String>),
    Dynamic(Selector),
}

impl Membership {
    pub fn contains(&self, id: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Membership::Static(m) => m.contains(id),
            Membership::Dynamic(s) => s.matches(labels),
        }
    }
}

/// Resolves the settings of one agent: its own, then its groups in order, then `global`.
pub fn resolve(agent: &ScopedSettings, groups: &[Group], global: Globals) -> EffectiveSettings {
    fn pick<T: Copy + Into<u64>>(
        agent: Option<T>,
        groups: &[Group],
        field: impl Fn(&ScopedSettings) -> Option<T>,
    ) -> Option<EffectiveSetting> {
        if let Some(v) = agent {
            return Some(EffectiveSetting {
                value: v.into(),
                source: "agent".into(),
            });
        }
        groups.iter().find_map(|g| {
            field(&g.settings).map(|v| EffectiveSetting {
                value: v.into(),
                source: format!("group:{}", g.id),
            })
        })
    }
    let global_of = |value: u64| EffectiveSetting {
        value,
        source: "global".into(),
    };
    EffectiveSettings {
        heartbeat_interval_s: pick(agent.heartbeat_interval_s, groups, |s| {
            s.heartbeat_interval_s
        }),
        offline_grace_s: pick(agent.offline_grace_s, groups, |s| s.offline_grace_s)
            .unwrap_or_else(|| global_of(global.offline_grace_s)),
        hotspot_threshold: pick(agent.hotspot_threshold, groups, |s| s.hotspot_threshold)
            .unwrap_or_else(|| global_of(global.hotspot_threshold.into())),
        hotspot_window_s: pick(agent.hotspot_window_s, groups, |s| s.hotspot_window_s)
            .unwrap_or_else(|| global_of(global.hotspot_window_s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, priority: i32, settings: ScopedSettings) -> Group {
        Group {
            id: id.into(),
            name: id.into(),
            description: None,
            members: Some(vec![]),
            selector: None,
            settings,
            priority,
            created_at: 0,
            updated_at: 0,
        }
    }

    const GLOBAL: Globals = Globals {
        offline_grace_s: 60,
        hotspot_threshold: 90,
        hotspot_window_s: 300,
    };

    #[test]
    fn agent_beats_group_beats_global_and_priority_orders_groups() {
        let ferries = group(
            "ferries",
            10,
            ScopedSettings {
                offline_grace_s: Some(600),
                hotspot_threshold: Some(95),
                ..Default::default()
            },
        );
        let pilots = group(
            "pilots",
            1,
            ScopedSettings {
                offline_grace_s: Some(30),
                heartbeat_interval_s: Some(10),
                ..Default::default()
            },
        );
        let agent = ScopedSettings {
            hotspot_threshold: Some(70),
            ..Default::default()
        };
        // Callers pass groups in precedence order, as Groups::of returns them.
        let e = resolve(&agent, &[pilots, ferries], GLOBAL);
        assert_eq!(e.offline_grace_s.value, 30);
        assert_eq!(e.offline_grace_s.source, "group:pilots");
        assert_eq!(e.hotspot_threshold.value, 70);
        assert_eq!(e.hotspot_threshold.source, "agent");
        assert_eq!(e.hotspot_window_s.value, 300);
        assert_eq!(e.hotspot_window_s.source, "global");
        assert_eq!(e.heartbeat_interval_s.unwrap().source, "group:pilots");
        let none = resolve(&ScopedSettings::default(), &[], GLOBAL);
        assert!(none.heartbeat_interval_s.is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let spec = |f: fn(&mut GroupSpec)| {
            let mut s = GroupSpec {
                id: "ferries".into(),
                selector: Some("site in (ferry-*)".into()),
                ..Default::default()
            };
            f(&mut s);
            validate(s, 1, None, |_| true)
        };
        assert!(spec(|_| {}).is_ok());
        for (f, needle) in [
            (
                (|s: &mut GroupSpec| s.id = "Ferries!".into()) as fn(&mut GroupSpec),
                "id must be",
            ),
            (|s| s.members = Some(vec![]), "not both"),
            (|s| s.selector = None, "give members"),
            (
                |s| s.selector = Some("site in".into()),
                "selector: at character",
            ),
            (
                |s| s.settings.heartbeat_interval_s = Some(1),
                "heartbeat_interval_s",
            ),
            (
                |s| s.settings.hotspot_threshold = Some(0),
                "hotspot_threshold",
            ),
        ] {
            let e = spec(f).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let e = validate(
            GroupSpec {
                id: "pilots".into(),
                members: Some(vec!["nope".into()]),
                ..Default::default()
            },
            1,
            None,
            |_| false,
        )
        .unwrap_err();
        assert!(e.contains("no agent \"nope\""), "{e}");
    }
}
