//! `edgefleet groups`, `edgefleet rollouts`, `edgefleet agents maintenance` and
//! `edgefleet agents labels`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use edgefleet_codec::api::{
    AgentPage, CommandRequest, ConfigScalar, GroupSpec, GroupView, LabelsUpdate, LabelsView,
    MaintenanceRequest, MaintenanceView, RolloutCreate, RolloutView, ScopedSettings, SilenceUntil,
};

use super::{artifact_source, format_ms, Ctx};
use crate::client::encode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Every group with its agent count.
    List,
    /// One group.
    Show {
        id: String,
    },
    /// Create (or with --replace, replace) a static group (--members) or a dynamic one
    /// (--selector, e.g. "site in (ferry-*), hw=pi4").
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "members")]
        selector: Option<String>,
        /// Comma-separated host ids.
        #[arg(long, value_delimiter = ',')]
        members: Option<Vec<String>>,
        /// A scoped setting, repeatable: heartbeat_interval_s=30, offline_grace_s=600,
        /// hotspot_threshold=95, hotspot_window_s=300.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Lower wins when an agent is in several groups that set the same field.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Replace an existing group of this id.
        #[arg(long)]
        replace: bool,
    },
    Delete {
        id: String,
    },
    /// The group's agents.
    Agents {
        id: String,
    },
    /// Maintenance for every current member.
    Maintenance {
        state: OnOff,
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// When it ends by itself, e.g. 2h.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Command actions still allowed, comma-separated.
        #[arg(long, value_delimiter = ',')]
        allow: Vec<String>,
    },
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum RolloutsCmd {
    /// Every rollout, newest first.
    List,
    /// Start an update-app rollout (or push-config with --config KEY=VALUE) in waves.
    Create {
        #[arg(long)]
        app: String,
        /// The new version (update-app).
        #[arg(long, required_unless_present = "config")]
        version: Option<String>,
        /// An http:// URL, or a local .tar.gz uploaded to the console first.
        #[arg(long, required_unless_present = "config")]
        artifact: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        /// push-config instead: a dotted key and value, repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = super::parse_setting, conflicts_with_all = ["version", "artifact"])]
        config: Vec<(String, ConfigScalar)>,
        #[arg(long)]
        name: Option<String>,
        /// Target: a group id.
        #[arg(long, conflicts_with_all = ["selector", "agents"])]
        group: Option<String>,
        /// Target: a label selector.
        #[arg(long, conflicts_with = "agents")]
        selector: Option<String>,
        /// Target: comma-separated host ids, in this order.
        #[arg(long, value_delimiter = ',')]
        agents: Option<Vec<String>>,
        /// Hosts in the canary wave.
        #[arg(long, default_value_t = 1)]
        canary: usize,
        /// Cumulative percentages after the canary, e.g. 10,50,100.
        #[arg(long, value_delimiter = ',', default_value = "100")]
        waves: Vec<u8>,
        /// How long each wave's hosts must stay healthy, e.g. 5m.
        #[arg(long, default_value = "5m")]
        soak: String,
        /// The gate fails above this share of failed or rolled-back hosts.
        #[arg(long, default_value_t = 5.0)]
        max_failure_pct: f32,
        #[arg(long, default_value_t = 1)]
        min_executed: usize,
        /// At most this many hosts start per minute.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// A rollout's waves, gates and hosts; --watch follows it with a bar per wave.
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
    },
    Pause {
        id: String,
    },
    /// Resume a paused rollout (after a failed gate: override it and go on).
    Resume {
        id: String,
    },
    /// Stop and roll back the updated hosts.
    Abort {
        id: String,
    },
}

fn parse_settings(pairs: &[String]) -> Result<ScopedSettings> {
    let mut s = ScopedSettings::default();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        let bad = |e: std::num::ParseIntError| anyhow::anyhow!("--set {k}: {e}");
        match k {
            "heartbeat_interval_s" => s.heartbeat_interval_s = Some(v.parse().map_err(bad)?),
            "offline_grace_s" => s.offline_grace_s = Some(v.parse().map_err(bad)?),
            "hotspot_threshold" => s.hotspot_threshold = Some(v.parse().map_err(bad)?),
            "hotspot_window_s" => s.hotspot_window_s = Some(v.parse().map_err(bad)?),
            other => bail!(
                "--set {other}: not a scoped setting (heartbeat_interval_s, offline_grace_s, hotspot_threshold, hotspot_window_s)"
            ),
        }
    }
    Ok(s)
}

fn print_group(g: &GroupView) {
    let rule = g
        .selector
        .clone()
        .unwrap_or_else(|| format!("{} members", g.members.as_ref().map_or(0, Vec::len)));
    println!(
        "{:<20} {:<8} {:>6} agents  {}  {}",
        g.id,
        g.kind,
        g.agents,
        rule,
        serde_json::to_string(&g.settings).unwrap_or_default()
    );
}

pub fn groups(ctx: &Ctx, cmd: &GroupsCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        GroupsCmd::List => {
            let list: Vec<GroupView> = c.get("/api/groups")?;
            ctx.emit(&list, |list| {
                for g in list {
                    print_group(g);
                }
                println!("{} groups", list.len());
            })?;
        }
        GroupsCmd::Show { id } => {
            let g: GroupView = c.get(&format!("/api/groups/{}", encode(id)))?;
            ctx.emit(&g, print_group)?;
        }
        GroupsCmd::Create {
            id,
            name,
            description,
            selector,
            members,
            settings,
            priority,
            replace,
        } => {
            let spec = GroupSpec {
                id: id.clone(),
                name: name.clone(),
                description: description.clone(),
                members: members.clone(),
                selector: selector.clone(),
                settings: parse_settings(settings)?,
                priority: *priority,
            };
            let body = serde_json::to_string(&spec)?;
            let g: GroupView = if *replace {
                c.send(&format!("/api/groups/{}", encode(id)), "PUT", Some(&body))?
            } else {
                c.send("/api/groups", "POST", Some(&body))?
            };
            ctx.emit(&g, print_group)?;
        }
        GroupsCmd::Delete { id } => {
            c.request("DELETE", &format!("/api/groups/{}", encode(id)), b"")?;
            if !ctx.json {
                println!("group {id} deleted");
            }
        }
        GroupsCmd::Agents { id } => {
            let page: AgentPage =
                c.get(&format!("/api/groups/{}/agents?per_page=200", encode(id)))?;
            ctx.emit(&page, |p| {
                for a in &p.items {
                    println!(
                        "{:<18} {:<28} {}",
                        a.id,
                        a.hostname.as_deref().unwrap_or("-"),
                        a.status.as_str()
                    );
                }
                println!("{} of {} agents", p.items.len(), p.total);
            })?;
        }
        GroupsCmd::Maintenance {
            state,
            id,
            reason,
            duration,
            allow,
        } => {
            let path = format!("/api/groups/{}/maintenance", encode(id));
            let answer: serde_json::Value = match state {
                OnOff::On => {
                    let body = maintenance_body(reason, duration, allow)?;
                    c.send(&path, "POST", Some(&body))?
                }
                OnOff::Off => c.send(&path, "DELETE", None)?,
            };
            ctx.emit(&answer, |a| {
                println!(
                    "maintenance {} for {} agents of group {id}",
                    match state {
                        OnOff::On => "on",
                        OnOff::Off => "off",
                    },
                    a["agents"]
                )
            })?;
        }
    }
    Ok(())
}

fn maintenance_body(
    reason: &Option<String>,
    duration: &Option<String>,
    allow: &[String],
) -> Result<String> {
    let reason = reason
        .clone()
        .context("--reason is required to enter maintenance")?;
    Ok(serde_json::to_string(&MaintenanceRequest {
        reason,
        until: duration.clone().map(SilenceUntil::For),
        allow: allow.to_vec(),
    })?)
}

/// `edgefleet agents maintenance on|off ID`.
pub fn agent_maintenance(
    ctx: &Ctx,
    state: OnOff,
    id: &str,
    reason: &Option<String>,
    duration: &Option<String>,
    allow: &[String],
) -> Result<()> {
    let path = format!("/api/agents/{}/maintenance", encode(id));
    match state {
        OnOff::On => {
            let body = maintenance_body(reason, duration, allow)?;
            let m: MaintenanceView = ctx.client.send(&path, "POST", Some(&body))?;
            ctx.emit(&m, |m| {
                println!(
                    "agent {id} in maintenance{}: {}",
                    m.until
                        .map(|u| format!(" until {}", format_ms(u)))
                        .unwrap_or_default(),
                    m.reason
                )
            })?;
        }
        OnOff::Off => {
            ctx.client.request("DELETE", &path, b"")?;
            if !ctx.json {
                println!("agent {id}: maintenance ended");
            }
        }
    }
    Ok(())
}

/// `edgefleet agents labels ID [--set k=v] [--remove k]`.
pub fn agent_labels(ctx: &Ctx, id: &str, set: &[String], remove: &[String]) -> Result<()> {
    let view: LabelsView = if set.is_empty() && remove.is_empty() {
        let d: serde_json::Value = ctx.client.get(&format!("/api/agents/{}", encode(id)))?;
        serde_json::from_value(d["label_sources"].clone()).context("label_sources")?
    } else {
        let mut pairs = BTreeMap::new();
        for pair in set {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
            pairs.insert(k.to_string(), v.to_string());
        }
        let body = serde_json::to_string(&LabelsUpdate {
            set: pairs,
            remove: remove.to_vec(),
        })?;
        ctx.client.send(
            &format!("/api/agents/{}/labels", encode(id)),
            "PUT",
            Some(&body),
        )?
    };
    ctx.emit(&view, |v| {
        for (k, val) in &v.labels {
            let source = if v.operator.contains_key(k) {
                "operator"
            } else {
                "agent"
            };
            println!("{k}={val}  ({source})");
        }
    })
}

fn progress_line(r: &RolloutView) -> String {
    format!(
        "rollout {} {}: {} {} {} — wave {}/{}{}",
        r.id,
        r.name.as_deref().unwrap_or(""),
        r.action,
        r.app.as_deref().unwrap_or(""),
        r.version.as_deref().unwrap_or(""),
        r.current_wave + 1,
        r.waves.len(),
        r.reason
            .as_ref()
            .map(|why| format!(" — {}: {why}", r.state))
            .unwrap_or_else(|| format!(" — {}", r.state))
    )
}

fn wave_counts(r: &RolloutView, wave: usize) -> (usize, usize, usize) {
    let hosts: Vec<_> = r.hosts.iter().filter(|h| h.wave == wave).collect();
    let done = hosts
        .iter()
        .filter(|h| !matches!(h.state.as_str(), "waiting" | "sent"))
        .count();
    let failed = hosts
        .iter()
        .filter(|h| matches!(h.state.as_str(), "failed" | "rolled-back"))
        .count();
    (hosts.len(), done, failed)
}

fn print_rollout(r: &RolloutView) {
    println!("{}", progress_line(r));
    for w in &r.waves {
        let (n, done, failed) = wave_counts(r, w.index);
        let gate = w
            .gate
            .as_ref()
            .map(|g| format!("  gate: {}", g.verdict))
            .unwrap_or_default();
        println!(
            "  wave {} {:<7} {:<10} {done}/{n} done, {failed} failed{gate}",
            w.index, w.label, w.state
        );
    }
}

pub fn rollouts(ctx: &Ctx, cmd: &RolloutsCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        RolloutsCmd::List => {
            let list: Vec<RolloutView> = c.get("/api/rollouts")?;
            ctx.emit(&list, |list| {
                for r in list {
                    println!("{}", progress_line(r));
                }
                println!("{} rollouts", list.len());
            })?;
        }
        RolloutsCmd::Create {
            app,
            version,
            artifact,
            sha256,
            config,
            name,
            group,
            selector,
            agents,
            canary,
            waves,
            soak,
            max_failure_pct,
            min_executed,
            rate,
        } => {
            let (action, request) = if config.is_empty() {
                let artifact = artifact.as_deref().context("--artifact is required")?;
                let (url, sha) = artifact_source(ctx, artifact, sha256.as_deref())?;
                (
                    "update-app",
                    CommandRequest {
                        app: Some(app.clone()),
                        url: Some(url),
                        version: version.clone(),
                        sha256: Some(sha),
                        ..Default::default()
                    },
                )
            } else {
                let values: BTreeMap<String, ConfigScalar> = config.iter().cloned().collect();
                (
                    "push-config",
                    CommandRequest {
                        app: Some(app.clone()),
                        values,
                        ..Default::default()
                    },
                )
            };
            if group.is_none() && selector.is_none() && agents.is_none() {
                bail!("give a target: --group, --selector or --agents");
            }
            let body = serde_json::to_string(&RolloutCreate {
                name: name.clone(),
                action: action.to_string(),
                request,
                group: group.clone(),
                selector: selector.clone(),
                agents: agents.clone(),
                canary: Some(*canary),
                waves: Some(waves.clone()),
                soak: Some(soak.clone()),
                max_failure_pct: Some(*max_failure_pct),
                min_executed: Some(*min_executed),
                rate_per_minute: *rate,
            })?;
            let r: RolloutView = c.send("/api/rollouts", "POST", Some(&body))?;
            ctx.emit(&r, print_rollout)?;
        }
        RolloutsCmd::Status { id, watch } => {
            let path = format!("/api/rollouts/{}", encode(id));
            if !*watch || ctx.json || !std::io::stdout().is_terminal() {
                let mut r: RolloutView = c.get(&path)?;
                while *watch && !matches!(r.state.as_str(), "completed" | "aborted" | "paused") {
                    std::thread::sleep(Duration::from_secs(2));
                    r = c.get(&path)?;
                }
                ctx.emit(&r, print_rollout)?;
                return Ok(());
            }
            watch_rollout(ctx, &path)?;
        }
        RolloutsCmd::Pause { id } | RolloutsCmd::Resume { id } | RolloutsCmd::Abort { id } => {
            let verb = match cmd {
                RolloutsCmd::Pause { .. } => "pause",
                RolloutsCmd::Resume { .. } => "resume",
                _ => "abort",
            };
            let r: RolloutView = c.send(
                &format!("/api/rollouts/{}/{verb}", encode(id)),
                "POST",
                None,
            )?;
            ctx.emit(&r, print_rollout)?;
        }
    }
    Ok(())
}

/// A progress bar per wave until the rollout completes, pauses or is aborted.
fn watch_rollout(ctx: &Ctx, path: &str) -> Result<()> {
    let multi = indicatif::MultiProgress::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:<18} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
    let head = multi.add(indicatif::ProgressBar::new_spinner());
    let mut bars = Vec::new();
    loop {
        let r: RolloutView = ctx.client.get(path)?;
        head.set_message(progress_line(&r));
        while bars.len() < r.waves.len() {
            let b = multi.add(indicatif::ProgressBar::new(0));
            b.set_style(style.clone());
            bars.push(b);
        }
        for (w, bar) in r.waves.iter().zip(&bars) {
            let (n, done, failed) = wave_counts(&r, w.index);
            bar.set_length(n as u64);
            bar.set_position(done as u64);
            bar.set_prefix(format!("wave {} {}", w.index, w.label));
            let gate = w
                .gate
                .as_ref()
                .map(|g| g.verdict.clone())
                .unwrap_or_default();
            bar.set_message(format!("{} {failed} failed {gate}", w.state));
        }
        if matches!(r.state.as_str(), "completed" | "aborted" | "paused") {
            head.finish();
            for b in &bars {
                b.finish();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
