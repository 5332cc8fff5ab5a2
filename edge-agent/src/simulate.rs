//! `edgefleet-agent simulate`: many virtual agents in one process, each with its own key,
//! MQTT connection and [`SimProbe`], running the same session code as a real agent.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use edgefleet_codec::Topics;
use edgefleet_config::MqttUrl;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::identity::ConsolePin;
use crate::probe::{Probe, SimProbe};
use crate::session::SessionConfig;
use crate::state::Storage;

/// Default connects per second during the ramp (`--connect-rate`), well below what the
/// embedded broker accepts.
pub const RAMP_PER_SEC: u32 = 500;
/// File descriptors the simulator needs besides one socket per virtual agent (sled, the
/// runtime, logs).
pub const FD_MARGIN: u64 = 256;
/// Packages in each virtual agent's inventory.
const SIM_PACKAGES: usize = 150;
/// Queue cap of each virtual agent.
const SIM_QUEUE_CAP: u64 = 1024 * 1024;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub count: usize,
    pub url: MqttUrl,
    pub heartbeat_interval: Duration,
    /// `sim-<i>/` holds agent `i`'s key and pinned console key, so a restart keeps the
    /// same fleet; `sim.sled` is the one database they share.
    pub data_dir: std::path::PathBuf,
    /// The enrollment token every virtual agent presents.
    pub token: Option<edgefleet_codec::EnrollToken>,
    /// The device number of the first virtual agent.
    pub first_index: usize,
    /// Average connects per second during the ramp.
    pub connect_rate: u32,
}

/// How the ramp went, printed by the binary so benchmarks can read it.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub started: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for Ramp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.started as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "ramp: {} simulated agents started in {secs:.1} s ({rate:.0} connects/s)",
            self.started
        )
    }
}

/// Raises this process's soft limit on open files to its hard limit, and checks that
/// `count` virtual agents fit in it (one socket each, plus [`FD_MARGIN`]).
pub fn raise_fd_limit(count: usize) -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)
            .context("raising the soft limit on open files to the hard limit")?;
    }
    let available = limit.current.unwrap_or(u64::MAX);
    let needed = count as u64 + FD_MARGIN;
    if needed > available {
        anyhow::bail!(
            "{count} simulated agents need about {needed} open files, but this process may \
             open {available} (raise the hard limit with `ulimit -Hn`, or split the fleet over \
             several simulators with --first-index)"
        );
    }
    Ok(available)
}

/// The apps a probe reports, with units named `<id>.service` and no config file.
pub fn apps_of(probe: &mut dyn crate::probe::Probe) -> Vec<crate::service::ManagedApp> {
    probe
        .apps()
        .into_iter()
        .map(|a| crate::service::ManagedApp {
            unit: format!("{}.service", a.id),
            id: a.id,
            config: None,
            health_url: None,
            binary_dir: None,
            version: a.version.map(crate::service::VersionSource::Fixed),
        })
        .collect()
}

/// The app every simulated device runs, so a fleet-wide rollout has a common target.
pub const SIM_COMMON_APP: &str = "sensor-hub";

/// A simulated device's managed apps: the probe's plus [`SIM_COMMON_APP`], each installed
/// in `<agent_dir>/opt/<app>` with a `VERSION` file, so update-app and rollback-app work
/// on them for real (download, verify, swap the directory, restart via
/// [`crate::service::Simulated`]).
pub fn sim_apps(
    index: usize,
    agent_dir: &Path,
) -> std::io::Result<Vec<crate::service::ManagedApp>> {
    let mut apps = apps_of(&mut SimProbe::new(index));
    apps.push(crate::service::ManagedApp {
        unit: format!("{SIM_COMMON_APP}.service"),
        id: SIM_COMMON_APP.to_string(),
        config: None,
        health_url: None,
        binary_dir: None,
        version: Some(crate::service::VersionSource::Fixed("1.0.0".into())),
    });
    for app in &mut apps {
        let dir = agent_dir.join("opt").join(&app.id);
        let file = dir.join("VERSION");
        if !file.exists() {
            let initial = match &app.version {
                Some(crate::service::VersionSource::Fixed(v)) => v.clone(),
                _ => "1.0.0".to_string(),
            };
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&file, format!("{initial}\n"))?;
        }
        app.binary_dir = Some(dir);
        app.version = Some(crate::service::VersionSource::File(file));
    }
    Ok(apps)
}

/// A simulated device's own labels: its site and hardware.
pub fn sim_labels(index: usize) -> std::collections::BTreeMap<String, String> {
    let facts = SimProbe::new(index).facts();
    let site = facts
        .hostname
        .rsplit('-')
        .next()
        .unwrap_or("site")
        .to_string();
    let hw = if facts.arch == "aarch64" {
        "pi4"
    } else {
        "nuc"
    };
    [
        ("site".to_string(), format!("{site}-{}", index % 7)),
        ("hw".to_string(), hw.to_string()),
    ]
    .into_iter()
    .collect()
}

/// Runs the virtual agents until `shutdown`, then stops them all gracefully (each sends
/// its clean offline status), within 2 s.
pub async fn run(opts: SimulateOptions, shutdown: CancellationToken) -> Result<()> {
    if opts.connect_rate == 0 {
        anyhow::bail!("the connect rate must be at least 1 per second");
    }
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // One database for every virtual agent: sled runs a flusher thread per database.
    let db_path = dir.join("sim.sled");
    let db = tokio::task::spawn_blocking({
        let db_path = db_path.clone();
        move || {
            sled::Config::new()
                .path(db_path)
                .cache_capacity(16 * 1024 * 1024)
                .flush_every_ms(Some(1000))
                .open()
        }
    })
    .await?
    .with_context(|| format!("opening {}", db_path.display()))?;
    // Simulators before keyspaces kept four trees per virtual agent (`state-7`, ...).
    let old_trees: std::collections::HashSet<sled::IVec> = db.tree_names().into_iter().collect();
    let mut agents = Vec::with_capacity(opts.count);
    let mut rng = rand::rngs::StdRng::from_entropy();
    let step_us = (1_000_000 / u64::from(opts.connect_rate)).max(2);
    let ramp_start = tokio::time::Instant::now();
    for i in opts.first_index..opts.first_index + opts.count {
        let agent_dir = dir.join(format!("sim-{i}"));
        let identity = crate::identity::load_or_create(&agent_dir.join("agent.key"))?;
        let owner = format!("-{i}");
        let moved = old_trees.contains(format!("state{owner}").as_bytes());
        let storage = Storage::shared(&db, &owner, SIM_QUEUE_CAP, moved)
            .with_context(|| format!("opening the storage of simulated agent {i}"))?;
        let cfg = SessionConfig {
            identity,
            urls: vec![opts.url.clone()],
            ca_file: None,
            token: opts.token.clone(),
            heartbeat_interval: opts.heartbeat_interval,
            history_interval: crate::heartbeat::HISTORY_EVERY,
            keepalive: edgefleet_config::AgentConfig::default().keepalive.get(),
            topics: Topics::default(),
            storage,
            pin: ConsolePin::in_dir(&agent_dir),
            enrollment: crate::enrollment::EnrollmentFile::in_dir(&agent_dir),
            apps: sim_apps(i, &agent_dir)
                .with_context(|| format!("preparing the apps of simulated agent {i}"))?,
            labels: sim_labels(i),
            services: std::sync::Arc::new(crate::service::Simulated::new(agent_dir.join("apps"))),
            downloads: agent_dir.join("downloads"),
            update_limits: crate::update::Limits::default(),
            scripts: crate::script::ScriptPolicy::default(),
            collector: Some(std::sync::Arc::new(
                crate::inventory::SimInventory::generated(i, SIM_PACKAGES),
            )),
            inventory_interval: Duration::from_secs(6 * 3600),
            probe: Box::new(SimProbe::new(i)),
        };
        agents.push(crate::spawn_session(cfg, None)?);
        // Jittered ramp: on average `connect_rate` connects per second, never in lockstep.
        let pause = Duration::from_micros(rng.gen_range(step_us / 2..=step_us * 3 / 2));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    let ramp = Ramp {
        started: agents.len(),
        elapsed: ramp_start.elapsed(),
    };
    tracing::info!(count = ramp.started, elapsed = ?ramp.elapsed, "simulated agents started");
    println!("{ramp}");
    shutdown.cancelled().await;
    for agent in &agents {
        agent.shutdown_token().cancel();
    }
    let all = async {
        for agent in agents {
            agent.join().await;
        }
    };
    if tokio::time::timeout(Duration::from_millis(1800), all)
        .await
        .is_err()
    {
        tracing::warn!("some simulated agents did not stop in time");
    }
    db.flush_async()
        .await
        .context("flushing the simulator database")?;
    Ok(())
}
