//! `edgefleet-agent`: the device daemon (`run`), the fleet simulator (`simulate`), one-shot
//! enrollment (`enroll`), and the local `status`, `version`, `config show|set` and
//! `polkit-rule` commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use edgefleet_agent::enrollment::{EnrollState, EnrollmentFile};
use edgefleet_agent::probe::SysinfoProbe;
use edgefleet_agent::simulate::SimulateOptions;
use edgefleet_agent::status::StatusFile;
use edgefleet_agent::AgentOptions;
use edgefleet_config::{parse_mqtt_url, AgentConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edgefleet-agent",
    version,
    about = "EdgeFleet agent: connects out to the console over MQTT; opens no listening socket"
)]
struct Args {
    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent until SIGTERM or SIGINT.
    Run {
        /// Config file; EDGEFLEET_AGENT_* variables override it, flags override both.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Console MQTT URL, mqtt://HOST:PORT or mqtts://HOST:PORT (replaces console_urls).
        #[arg(long)]
        console: Option<String>,
        /// Key, pinned console key, database and status file (replaces data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run N simulated agents in this process, each with its own key and connection.
    Simulate {
        #[arg(long)]
        count: usize,
        /// Console MQTT URL.
        #[arg(long)]
        console: String,
        /// Heartbeat interval, e.g. 1s or 30s.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Where the simulated identities live (default: a directory under the temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Enrollment token every simulated agent enrolls with (`edgefleet tokens create`).
        #[arg(long, env = "EDGEFLEET_AGENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The device number of the first virtual agent: two simulators with different
        /// ranges make different devices.
        #[arg(long, default_value_t = 0)]
        first_index: usize,
        /// Average connects per second while the fleet ramps up.
        #[arg(long, default_value_t = edgefleet_agent::simulate::RAMP_PER_SEC)]
        connect_rate: u32,
    },
    /// Show the local agent's identity, console, connection, last heartbeat, queue depth
    /// and pinned console key (from the state file the running agent writes).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Enroll this device once: write `console_urls` and `token` into the config, connect,
    /// and exit when the console has answered (approved or pending: 0; refused or no answer:
    /// non-zero). Run it while the agent service is stopped, then start the service.
    Enroll {
        /// Console MQTT URL, mqtt://HOST:PORT or mqtts://HOST:PORT.
        #[arg(long)]
        console: String,
        /// Enrollment token (`edgefleet tokens create`). Prefer the variable: a flag shows
        /// in `ps`.
        #[arg(long, env = "EDGEFLEET_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Config file to update (default /etc/edgefleet-agent/agent.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to wait for the console's answer.
        #[arg(long, default_value = "60s")]
        timeout: String,
    },
    /// Print the polkit rule that lets the service user start, stop and restart exactly the
    /// units of the config's `[[apps]]` (the package writes it on install).
    PolkitRule {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user the agent service runs as.
        #[arg(long, default_value = "edgefleet")]
        user: String,
        /// Write the rule to this file (atomically) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration, secrets redacted.
    Show {
        /// Default: /etc/edgefleet-agent/agent.toml if it exists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Set one key in the config file, keeping its comments, mode and owner. The result is
    /// validated before it replaces the file. Lists are comma-separated; `labels.NAME`
    /// sets one label; a VALUE of `-` is read from stdin (keeps a token out of `ps`).
    Set {
        key: String,
        value: String,
        /// Default /etc/edgefleet-agent/agent.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Where the package installs the config; commands use it when no `--config` is given.
const INSTALLED_CONFIG: &str = "/etc/edgefleet-agent/agent.toml";

/// `--config`, else the installed config if there is one (reading commands).
fn config_or_installed(config: Option<PathBuf>) -> Option<PathBuf> {
    config.or_else(|| {
        let installed = PathBuf::from(INSTALLED_CONFIG);
        installed.exists().then_some(installed)
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Version => {
            println!("edgefleet-agent {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Config {
            command: ConfigCmd::Show { config },
        } => {
            let config = config_or_installed(config);
            print!(
                "{}",
                AgentConfig::load_from_process_env(config.as_deref())?.show()
            );
            Ok(())
        }
        Cmd::Config {
            command: ConfigCmd::Set { key, value, config },
        } => {
            let path = config.unwrap_or_else(|| INSTALLED_CONFIG.into());
            let value = if value == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading the value from stdin")?;
                text.trim().to_string()
            } else {
                value
            };
            edgefleet_config::edit::set_agent_key(&path, &key, &value)?;
            eprintln!("{key} set in {}", path.display());
            Ok(())
        }
        Cmd::Enroll {
            console,
            token,
            config,
            timeout,
        } => {
            init_tracing(args.log_format);
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: expected a duration like 60s ({e})"))?;
            let path = config.unwrap_or_else(|| INSTALLED_CONFIG.into());
            enroll(&path, &console, &token, timeout)
        }
        Cmd::PolkitRule {
            config,
            user,
            output,
        } => {
            let config = config_or_installed(config);
            let cfg = AgentConfig::load_from_process_env(config.as_deref())?;
            let units: Vec<&str> = cfg.apps.iter().map(|a| a.unit.as_str()).collect();
            let rule = edgefleet_agent::polkit::rule(&user, &units);
            match output {
                None => print!("{rule}"),
                Some(path) => {
                    let tmp = path.with_extension("rules.tmp");
                    std::fs::write(&tmp, rule)
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "{}: user {user} may start, stop and restart {}",
                        path.display(),
                        if units.is_empty() {
                            "no units ([[apps]] is empty)".to_string()
                        } else {
                            units.join(", ")
                        }
                    );
                }
            }
            Ok(())
        }
        Cmd::Status { config, data_dir } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => {
                    let config = config_or_installed(config);
                    AgentConfig::load_from_process_env(config.as_deref())?.data_dir
                }
            };
            status(&data_dir)
        }
        Cmd::Run {
            config,
            console,
            data_dir,
        } => {
            init_tracing(args.log_format);
            let mut cfg = AgentConfig::load_from_process_env(config.as_deref())?;
            if let Some(c) = console {
                parse_mqtt_url(&c).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
                cfg.console_urls = vec![c];
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if cfg.console_urls.is_empty() {
                bail!("no console URL: set console_urls in the config, EDGEFLEET_AGENT_CONSOLE_URLS, or --console");
            }
            // One thread is plenty for one agent and keeps its footprint small.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(run(cfg))
        }
        Cmd::Simulate {
            count,
            console,
            interval,
            data_dir,
            token,
            first_index,
            connect_rate,
        } => {
            init_tracing(args.log_format);
            let url = parse_mqtt_url(&console).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
            let interval = humantime::parse_duration(&interval)
                .map_err(|e| anyhow::anyhow!("--interval: expected a duration like 5s ({e})"))?;
            // Sub-second intervals are for load tests of the console (many heartbeats from
            // few connections); the birth still announces whole seconds.
            if interval < Duration::from_millis(100) {
                bail!("--interval must be at least 100ms");
            }
            edgefleet_agent::simulate::raise_fd_limit(count)?;
            let token = token
                .map(|t| t.parse::<edgefleet_codec::EnrollToken>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            let data_dir =
                data_dir.unwrap_or_else(|| std::env::temp_dir().join("edgefleet-simulate"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                let signals = Signals::install()?;
                tokio::spawn({
                    let shutdown = shutdown.clone();
                    async move {
                        signals.recv().await;
                        shutdown.cancel();
                    }
                });
                let opts = SimulateOptions {
                    count,
                    url,
                    heartbeat_interval: interval,
                    data_dir,
                    token,
                    first_index,
                    connect_rate,
                };
                edgefleet_agent::simulate::run(opts, shutdown).await
            })
        }
    }
}

async fn run(cfg: AgentConfig) -> Result<()> {
    // Installed before anything else, so a SIGTERM during startup stops us cleanly too.
    let signals = Signals::install()?;
    if cfg.allow_scripts {
        tracing::warn!(allowlist = ?cfg.script_allowlist, "allow_scripts = true: the console may run the scripts whose SHA-256 is on the allow-list");
    }
    let probe = SysinfoProbe::new(cfg.disk_mounts.clone());
    let agent = edgefleet_agent::spawn(AgentOptions::new(cfg, probe)).await?;
    let mut watch = agent.watch();
    let stopped = async move { while watch.changed().await.is_ok() {} };
    tokio::select! {
        _ = signals.recv() => {}
        _ = stopped => bail!("the agent stopped unexpectedly"),
    }
    tracing::info!(agent.id = %agent.agent_id(), "stopping");
    // The goodbye waits at most 1.5 s; this bound keeps the exit within 2 s regardless.
    if tokio::time::timeout(Duration::from_millis(1900), agent.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the agent did not stop in time; exiting anyway");
    }
    Ok(())
}

/// SIGTERM and SIGINT: only `main` listens for signals.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// One-shot enrollment with the real agent: the same session code `run` uses, stopped as
/// soon as the console has decided.
fn enroll(path: &Path, console: &str, token: &str, timeout: Duration) -> Result<()> {
    parse_mqtt_url(console).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
    token
        .parse::<edgefleet_codec::EnrollToken>()
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let before = AgentConfig::load_from_process_env(path.exists().then_some(path))?;
    if let Ok(file) = StatusFile::read(&StatusFile::path(&before.data_dir)) {
        if agent_running(&file) {
            bail!(
                "an agent (pid {}) is running with data dir {}; stop it first (systemctl stop edgefleet-agent), or set the keys with `edgefleet-agent config set` and restart it",
                file.pid,
                before.data_dir.display()
            );
        }
    }
    edgefleet_config::edit::set_agent_key(path, "console_urls", console)?;
    edgefleet_config::edit::set_agent_key(path, "token", token)?;
    let cfg = AgentConfig::load_from_process_env(Some(path))?;
    let data_dir = cfg.data_dir.clone();
    // An explicit enroll asks the console again, whatever it answered before.
    let state = EnrollmentFile::in_dir(&data_dir);
    match std::fs::remove_file(state.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", state.path().display())),
    }
    eprintln!("enroll: wrote console_urls and token to {}", path.display());
    eprintln!("enroll: connecting to {console} (waiting up to {timeout:?})");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = rt.block_on(async {
        let probe = SysinfoProbe::new(cfg.disk_mounts.clone());
        let agent = edgefleet_agent::spawn(AgentOptions::new(cfg, probe)).await?;
        let id = agent.agent_id().to_string();
        let decided = agent
            .wait_for(timeout, |s| s.enrollment.is_some())
            .await
            .map(|s| s.enrollment);
        let last = agent.status();
        agent.shutdown().await;
        anyhow::Ok((id, decided, last))
    });
    hand_back(&data_dir);
    let (id, decided, last) = outcome?;
    match decided {
        Ok(Some(EnrollState::Approved)) => {
            println!("enrolled: agent {id} is approved; start the service: systemctl start edgefleet-agent");
            Ok(())
        }
        Ok(Some(EnrollState::Pending)) => {
            println!("enrolled: agent {id} is pending; an operator approves it (`edgefleet agents approve {id}` or the web UI); start the service: systemctl start edgefleet-agent");
            Ok(())
        }
        Ok(Some(EnrollState::Rejected)) => {
            let reason = state
                .load()
                .and_then(|e| e.reason)
                .unwrap_or_else(|| "no reason given".into());
            bail!("the console refused agent {id}: {reason}")
        }
        Ok(None) | Err(_) => bail!(
            "no enrollment answer from {console} within {timeout:?} ({}); is the console reachable and the URL its MQTT listener?",
            if last.connected {
                "connected, but no answer"
            } else {
                "never connected"
            }
        ),
    }
}

fn agent_running(file: &StatusFile) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    file.pid != std::process::id()
        && Path::new(&format!("/proc/{}", file.pid)).exists()
        && now.saturating_sub(file.written_at) < 15_000
}

/// When root runs `enroll` on an installed agent, the key, database and state it made must
/// stay usable by the service user, who owns the data dir.
fn hand_back(data_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let Ok(dir) = std::fs::metadata(data_dir) else {
        return;
    };
    if me != Some(0) || dir.uid() == 0 {
        return;
    }
    fn walk(path: &Path, uid: u32, gid: u32) {
        if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
            eprintln!("enroll: cannot chown {}: {e}", path.display());
        }
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), uid, gid);
            }
        }
    }
    walk(data_dir, dir.uid(), dir.gid());
}

fn status(data_dir: &Path) -> Result<()> {
    let file = StatusFile::read(&StatusFile::path(data_dir))?;
    let s = &file.snapshot;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let ago = |ms: u64| format!("{}s ago", now.saturating_sub(ms) / 1000);
    let running = Path::new(&format!("/proc/{}", file.pid)).exists()
        && now.saturating_sub(file.written_at) < 15_000;
    println!("agent id:      {}", s.agent_id);
    println!("console:       {}", s.console_url);
    println!(
        "console key:   {}",
        s.console_key.as_deref().unwrap_or("not pinned yet")
    );
    println!("connected:     {}", running && s.connected);
    // From the state file the session keeps, which outlives the process.
    let enrollment = EnrollmentFile::in_dir(data_dir).load();
    println!(
        "enrollment:    {}",
        match &enrollment {
            None => "not enrolled".to_string(),
            Some(e) => match (e.state, &e.reason) {
                (EnrollState::Approved, _) => "approved".to_string(),
                (EnrollState::Pending, _) => "pending".to_string(),
                (EnrollState::Rejected, Some(r)) => format!("rejected ({r})"),
                (EnrollState::Rejected, None) => "rejected".to_string(),
            },
        }
    );
    println!("bd_seq:        {}", s.bd_seq);
    println!(
        "last heartbeat {}",
        s.last_heartbeat.map(ago).unwrap_or_else(|| "never".into())
    );
    println!("queue depth:   {} ({} bytes)", s.queue_depth, s.queue_bytes);
    if s.unreceipted > 0 {
        println!(
            "unreceipted:   {} events delivered, waiting for the console to confirm storing them",
            s.unreceipted
        );
    }
    if s.requeued_heartbeats > 0 {
        println!(
            "requeued:      {} heartbeats the broker never acknowledged, resent as history",
            s.requeued_heartbeats
        );
    }
    if s.dropped_heartbeats > 0 || s.over_cap > 0 {
        println!(
            "queue cap:     {} heartbeat samples dropped, {} pushes over the cap",
            s.dropped_heartbeats, s.over_cap
        );
    }
    println!(
        "state written  {}{}",
        ago(file.written_at),
        if running {
            String::new()
        } else {
            format!(" (agent pid {} is not running)", file.pid)
        }
    );
    Ok(())
}

/// Human-readable logs by default, JSON on request; the level comes from RUST_LOG.
///
/// RUST_LOG is read as a list of `target=level` directives with an optional bare default
/// level (`warn,edgefleet_agent=debug`), tracing-subscriber's `Targets`. The console's
/// `EnvFilter` also takes span and field filters; they need the regex engine, which would
/// add about 300 KB of code to an agent that must stay within 8 MB of memory (issue 9).
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let (targets, error) = log_targets(std::env::var("RUST_LOG").ok().as_deref());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(targets);
    match format {
        LogFormat::Json => registry.with(layer.json()).init(),
        LogFormat::Human => registry.with(layer).init(),
    }
    if let Some(error) = error {
        tracing::warn!("RUST_LOG ignored, logging at info: {error}");
    }
}

/// The log filter for a RUST_LOG value: info when unset or empty; when it does not parse,
/// info and the reason, so a typo does not silence the agent.
fn log_targets(
    rust_log: Option<&str>,
) -> (
    tracing_subscriber::filter::Targets,
    Option<tracing_subscriber::filter::ParseError>,
) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => (info(), None),
        Some(s) => match s.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (info(), Some(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::log_targets;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_a_bad_value_falls_back_to_info_with_the_reason() {
        let (unset, error) = log_targets(None);
        assert!(error.is_none());
        assert!(unset.would_enable("edgefleet_agent", &Level::INFO));
        assert!(!unset.would_enable("edgefleet_agent", &Level::DEBUG));

        let (targets, error) = log_targets(Some("warn,edgefleet_agent::session=trace"));
        assert!(error.is_none());
        assert!(targets.would_enable("edgefleet_agent::session", &Level::TRACE));
        assert!(!targets.would_enable("rumqttc", &Level::INFO));
        assert!(targets.would_enable("rumqttc", &Level::WARN));

        let (fallback, error) = log_targets(Some("edgefleet_agent=loud"));
        assert!(error.is_some(), "a level that does not exist is an error");
        assert!(fallback.would_enable("edgefleet_agent", &Level::INFO));
    }
}
