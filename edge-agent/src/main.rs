//! `edgefleet-agent`: the device daemon (`run`), the fleet simulator (`simulate`), and the
//! local `status`, `version` and `config show` commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgefleet_agent::probe::SysinfoProbe;
use edgefleet_agent::state::Storage;
use edgefleet_agent::{SessionConfig, Snapshot};
use edgefleet_codec::{EnrollToken, Topics};
use edgefleet_config::{parse_mqtt_url, AgentConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edgefleet-agent",
    version,
    about = "EdgeFleet agent: connects out to the console over MQTT"
)]
struct Args {
    /// Log output: human (default) or json.
    #[arg(long, global = true, default_value = "human")]
    log_format: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        /// Config file; EDGEFLEET_AGENT_* variables override it, flags override both.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Console MQTT URL, e.g. mqtt://console.example.net:1883.
        #[arg(long)]
        console: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run N simulated agents in this process.
    Simulate {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        console: String,
        /// Heartbeat interval, e.g. 1s or 30s.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Where the simulated identities live (default: a directory under /tmp).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Show identity, connection state, last heartbeat and queue depth of the local agent.
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
            let mut cfg = AgentConfig::load_from_process_env(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            status(&cfg.data_dir)
        }
        Cmd::Run {
            config,
            console,
            data_dir,
        } => {
            init_tracing(&args.log_format)?;
            let mut cfg = AgentConfig::load_from_process_env(config.as_deref())?;
            if let Some(c) = console {
                parse_mqtt_url(&c).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
                cfg.console_urls = vec![c];
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            // One thread is plenty for one agent and keeps its footprint small.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(cfg))
        }
        Cmd::Simulate {
            count,
            console,
            interval,
            data_dir,
        } => {
            init_tracing(&args.log_format)?;
            let url = parse_mqtt_url(&console).map_err(|e| anyhow::anyhow!("--console: {e}"))?;
            let interval = humantime::parse_duration(&interval)
                .map_err(|e| anyhow::anyhow!("--interval: expected a duration like 5s ({e})"))?;
            if interval < Duration::from_secs(1) {
                bail!("--interval must be at least 1s");
            }
            let dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join("edgefleet-simulate"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                edgefleet_agent::simulate::run(count, url, interval, &dir, shutdown).await
            })
        }
    }
}

async fn run(cfg: AgentConfig) -> Result<()> {
    let urls = cfg.mqtt_urls();
    if urls.is_empty() {
        bail!("no console URL: set console_urls in the config, EDGEFLEET_AGENT_CONSOLE_URLS, or --console");
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let identity = edgefleet_agent::load_or_create_identity(&cfg.data_dir.join("agent.key"))?;
    let token = match &cfg.token {
        Some(t) => Some(
            t.parse::<EnrollToken>()
                .map_err(|e| anyhow::anyhow!("token: {e}"))?,
        ),
        None => None,
    };
    let storage = Storage::open_dir(&cfg.data_dir, cfg.queue_cap_mb * 1024 * 1024)
        .with_context(|| format!("opening the agent database in {}", cfg.data_dir.display()))?;
    tracing::info!(agent.id = %identity.agent_id(), console = ?cfg.console_urls, "starting");
    let session = SessionConfig {
        identity,
        urls,
        ca_file: cfg.ca_file.clone(),
        token,
        heartbeat_interval: cfg.heartbeat_interval.get(),
        keepalive: cfg.keepalive.get(),
        topics: Topics::new(&cfg.topic_prefix)?,
        storage,
        probe: Box::new(SysinfoProbe::new(
            cfg.disk_mounts.clone(),
            cfg.apps.iter().map(|a| a.id.clone()).collect(),
        )),
    };
    let agent = edgefleet_agent::spawn(session);
    let status_path = cfg.data_dir.join("status.json");
    let mut watch = agent.watch();
    let token = agent.shutdown_token();
    let writer = tokio::spawn(async move {
        loop {
            let snapshot = watch.borrow_and_update().clone();
            write_status(&status_path, &snapshot);
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    stop_on_signal(token).await;
    tracing::info!("stopping");
    agent.join().await;
    writer.abort();
    Ok(())
}

async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = token.cancelled() => {}
    }
    token.cancel();
}

/// The running agent's state for `edgefleet-agent status`, written atomically (the sled
/// database can only be opened by one process).
fn write_status(path: &Path, snapshot: &Snapshot) {
    let mut doc = serde_json::to_value(snapshot).unwrap_or_default();
    doc["written_at"] = serde_json::json!(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0));
    doc["pid"] = serde_json::json!(std::process::id());
    let tmp = path.with_extension("json.tmp");
    let ok = std::fs::write(&tmp, doc.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}

fn status(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("status.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is the agent running with this data dir?)",
            path.display()
        )
    })?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ago = |ms: Option<u64>| {
        ms.map(|t| format!("{}s ago", now.saturating_sub(t) / 1000))
            .unwrap_or_else(|| "never".into())
    };
    println!("agent id:      {}", doc["agent_id"].as_str().unwrap_or("?"));
    println!(
        "console:       {}",
        doc["console_url"].as_str().unwrap_or("?")
    );
    println!(
        "console key:   {}",
        doc["console_key"].as_str().unwrap_or("not pinned yet")
    );
    println!(
        "connected:     {}",
        doc["connected"].as_bool().unwrap_or(false)
    );
    println!("bd_seq:        {}", doc["bd_seq"]);
    println!("last heartbeat {}", ago(doc["last_heartbeat"].as_u64()));
    println!("queue depth:   {}", doc["queue_depth"]);
    println!("state written  {}", ago(doc["written_at"].as_u64()));
    Ok(())
}

fn init_tracing(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "human" => builder.init(),
        other => bail!("--log-format must be human or json, got {other:?}"),
    }
    Ok(())
}
