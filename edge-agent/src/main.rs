//! `edgefleet-agent`: the device daemon (`run`), the fleet simulator (`simulate`), and the
//! local `status`, `version` and `config show` commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
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
    },
    /// Show the local agent's identity, console, connection, last heartbeat, queue depth
    /// and pinned console key (from the state file the running agent writes).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
        #[arg(long)]
        config: Option<PathBuf>,
    },
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
            print!(
                "{}",
                AgentConfig::load_from_process_env(config.as_deref())?.show()
            );
            Ok(())
        }
        Cmd::Status { config, data_dir } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => AgentConfig::load_from_process_env(config.as_deref())?.data_dir,
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
        } => {
            init_tracing(args.log_format);
            let url = parse_mqtt_url(&console).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
            let interval = humantime::parse_duration(&interval)
                .map_err(|e| anyhow::anyhow!("--interval: expected a duration like 5s ({e})"))?;
            if interval < Duration::from_secs(1) {
                bail!("--interval must be at least 1s");
            }
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
    println!("bd_seq:        {}", s.bd_seq);
    println!(
        "last heartbeat {}",
        s.last_heartbeat.map(ago).unwrap_or_else(|| "never".into())
    );
    println!("queue depth:   {} ({} bytes)", s.queue_depth, s.queue_bytes);
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
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
