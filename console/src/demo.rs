//! `--demo N`: a simulated fleet in a child process, so a newcomer sees a live fleet at once.

use std::path::Path;

use anyhow::{bail, Context, Result};
use edgefleet_codec::api::TokenCreate;
use edgefleet_codec::EnrollToken;

use crate::fleet::{now_ms, Fleet};
use tokio::process::{Child, Command};

/// The demo fleet's enrollment token: auto-approve, no expiry, kept in
/// `data_dir/demo.token` (mode 0600) so a restarted demo reuses it instead of piling up
/// tokens.
pub fn token(fleet: &Fleet, data_dir: &Path) -> Result<String> {
    let path = data_dir.join("demo.token");
    if let Ok(bytes) = edgefleet_config::keyfile::read_secret(&path) {
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if let Ok(token) = text.parse::<EnrollToken>() {
            let live = fleet
                .tokens
                .get(&token.id)?
                .is_some_and(|t| t.state(now_ms()).is_ok());
            if live {
                return Ok(text);
            }
        }
    }
    let req = TokenCreate {
        auto_approve: true,
        expires: Some("never".into()),
        uses: None,
    };
    let (token, record) = fleet
        .tokens
        .create(
            &req,
            "demo",
            fleet.identity.public_key().fingerprint(),
            now_ms(),
        )
        .map_err(|e| anyhow::anyhow!("creating the demo token: {e}"))?;
    fleet.record_audit(
        "demo",
        "token_create",
        Some(&record.id),
        "auto_approve=true expires_at=None uses=None (demo fleet)",
    )?;
    let text = token.to_string();
    edgefleet_config::keyfile::write_secret(&path, text.as_bytes())?;
    Ok(text)
}

/// Starts `edgefleet-agent simulate` from next to our own executable.
pub fn spawn(count: usize, url: &str, data_dir: &Path, token: &str) -> Result<Child> {
    let exe = std::env::current_exe().context("locating the console executable")?;
    let agent = exe.with_file_name("edgefleet-agent");
    if !agent.is_file() {
        bail!(
            "--demo needs {} (build it with `cargo build -p edgefleet-agent`, or use `cargo xtask demo`)",
            agent.display()
        );
    }
    let sim_dir = data_dir.join("sim");
    tracing::info!(count, console = %url, data = %sim_dir.display(), "starting simulated agents");
    Command::new(agent)
        .args([
            "simulate",
            "--count",
            &count.to_string(),
            "--console",
            url,
            "--interval",
            "5s",
        ])
        .arg("--data-dir")
        .arg(&sim_dir)
        .env("EDGEFLEET_AGENT_TOKEN", token)
        // Twenty-five agents logging every connect would drown the console's own log.
        .env(
            "RUST_LOG",
            std::env::var("EDGEFLEET_DEMO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .context("starting edgefleet-agent simulate")
}
