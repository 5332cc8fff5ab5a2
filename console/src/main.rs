//! `edgefleet-console`: the console process (embedded broker, store, REST API).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use edgefleet_config::ConsoleConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edgefleet-console",
    version,
    about = "EdgeFleet console: embedded MQTT broker, fleet state and REST API"
)]
struct Args {
    /// Config file (TOML); EDGEFLEET_CONSOLE_* variables override it, and flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Embedded MQTT listen address, e.g. 0.0.0.0:1883.
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Start N simulated agents (loopback only, data under ./edgefleet-demo unless --data-dir).
    #[arg(long, value_name = "N")]
    demo: Option<usize>,
    /// Log output: human (default) or json.
    #[arg(long, default_value = "human")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create a self-signed CA and a server certificate for MQTT over TLS.
    InitTls {
        /// Directory for ca.pem, ca.key, server.pem and server.key.
        #[arg(long)]
        out: PathBuf,
        /// DNS name or IP address the server certificate is valid for (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Cmd::InitTls { out, names }) = &args.command {
        let files = edgefleet_console::tls::init_tls(out, names)?;
        println!(
            "CA certificate:     {}  (give this to agents as ca_file)\nCA key:             {}  (keep offline)\nserver certificate: {}\nserver key:         {}\n\nSet [mqtt] tls_cert and tls_key to the server files and tls_bind to the listen address.",
            files.ca_cert.display(),
            files.ca_key.display(),
            files.server_cert.display(),
            files.server_key.display()
        );
        return Ok(());
    }
    init_tracing(&args.log_format)?;
    let mut config = ConsoleConfig::load_from_process_env(args.config.as_deref())?;
    if args.demo.is_some() {
        // Demo mode never listens beyond this machine.
        config.http.bind.set_ip([127, 0, 0, 1].into());
        config.mqtt.bind.set_ip([127, 0, 0, 1].into());
        config.data_dir = PathBuf::from("edgefleet-demo");
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(h) = args.http {
        config.http.bind = h;
    }
    if let Some(m) = args.mqtt {
        config.mqtt.bind = m;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    });
    edgefleet_console::run(config, args.demo, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_tracing(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        "json" => builder.json().init(),
        "human" => builder.init(),
        other => anyhow::bail!("--log-format must be human or json, got {other:?}"),
    }
    Ok(())
}
