//! `edgefleet-agent simulate`: many virtual agents in one process, each with its own key,
//! MQTT connection and simulated probe, running the same session code as a real agent.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use edgefleet_codec::Topics;
use edgefleet_config::MqttUrl;
use tokio_util::sync::CancellationToken;

use crate::probe::SimProbe;
use crate::session::SessionConfig;
use crate::state::Storage;

/// Connects per second during the ramp: the embedded broker accepts ~850/s at best.
pub const RAMP_PER_SEC: u64 = 200;

/// Runs `count` virtual agents until `shutdown`. Identities live in `data_dir/sim-keys/`,
/// so a restart keeps the same fleet.
pub async fn run(
    count: usize,
    url: MqttUrl,
    interval: Duration,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // One database for every virtual agent: sled runs a flusher thread per database.
    let db = sled::Config::new()
        .path(data_dir.join("sim.sled"))
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(Some(1000))
        .open()
        .with_context(|| format!("opening {}", data_dir.join("sim.sled").display()))?;
    let mut agents = Vec::with_capacity(count);
    let pause = Duration::from_micros(1_000_000 / RAMP_PER_SEC);
    for i in 0..count {
        if shutdown.is_cancelled() {
            break;
        }
        let identity =
            crate::load_or_create_identity(&data_dir.join("sim-keys").join(format!("{i}.key")))?;
        let storage = Storage::in_db(&db, &format!("-{i}"), 1024 * 1024)?;
        let cfg = SessionConfig {
            identity,
            urls: vec![url.clone()],
            ca_file: None,
            token: None,
            heartbeat_interval: interval,
            keepalive: Duration::from_secs(30),
            topics: Topics::default(),
            storage,
            probe: Box::new(SimProbe::new(i)),
        };
        agents.push(crate::spawn(cfg));
        tokio::time::sleep(pause).await;
    }
    tracing::info!(count = agents.len(), "all simulated agents started");
    shutdown.cancelled().await;
    for agent in &agents {
        agent.shutdown_token().cancel();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for agent in agents {
            agent.join().await;
        }
    })
    .await;
    db.flush()?;
    Ok(())
}
