//! `--demo N`: a simulated fleet in a child process, so a newcomer sees a live fleet at once.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// Starts `edgefleet-agent simulate` from next to our own executable.
pub fn spawn(count: usize, mqtt: SocketAddr, data_dir: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("locating the console executable")?;
    let agent = exe.with_file_name("edgefleet-agent");
    if !agent.is_file() {
        bail!(
            "--demo needs {} (build it with `cargo build -p edgefleet-agent`, or use `cargo xtask demo`)",
            agent.display()
        );
    }
    let host = if mqtt.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        mqtt.ip().to_string()
    };
    let url = format!("mqtt://{host}:{}", mqtt.port());
    let sim_dir = data_dir.join("sim");
    tracing::info!(count, console = %url, data = %sim_dir.display(), "starting simulated agents");
    Command::new(agent)
        .args([
            "simulate",
            "--count",
            &count.to_string(),
            "--console",
            &url,
            "--interval",
            "5s",
        ])
        .arg("--data-dir")
        .arg(&sim_dir)
        // Twenty-five agents logging every connect would drown the console's own log.
        .env(
            "RUST_LOG",
            std::env::var("EDGEFLEET_DEMO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .context("starting edgefleet-agent simulate")
}
