//! The edge agent: identity, MQTT session, probes, heartbeats and store-and-forward.
//!
//! - `session`: the MQTT session (connect, pin, birth, heartbeats, queue drain, goodbye).
//! - `backoff`: reconnect delays with full jitter.
//! - `queue`: the store-and-forward queue in sled.
//! - `state`: persistent counters and the pinned console key.
//! - `probe`: where vitals come from: `sysinfo` on a device, random walks in the simulator.
//! - `identity`: the agent key file.
//! - `simulate`: many virtual agents in one process.
//!
//! In-process use (the end-to-end tests do this): [`spawn`] returns an [`AgentHandle`].

pub mod backoff;
pub mod probe;
pub mod queue;
pub mod session;
pub mod simulate;
pub mod state;

use std::path::Path;

use anyhow::{Context, Result};
use edgefleet_codec::{AgentId, CommandOutcome, EventLevel, Identity};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use session::{SessionConfig, Snapshot};

/// Loads the agent key from `dir/agent.key`, creating it (mode 0600) on first run.
pub fn load_or_create_identity(path: &Path) -> Result<Identity> {
    if path.exists() {
        let bytes = edgefleet_config::keyfile::read_secret(path)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte agent key", path.display()))?;
        return Ok(Identity::from_seed(&seed));
    }
    let identity = Identity::generate();
    edgefleet_config::keyfile::write_secret(path, identity.seed().as_ref())
        .with_context(|| format!("writing the new agent key to {}", path.display()))?;
    tracing::info!(agent.id = %identity.agent_id(), path = %path.display(), "created a new agent key");
    Ok(identity)
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    id: AgentId,
    requests: mpsc::Sender<session::Request>,
    status: watch::Receiver<Snapshot>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a session on the current tokio runtime.
pub fn spawn(cfg: SessionConfig) -> AgentHandle {
    let id = cfg.identity.agent_id();
    let (requests, rx) = mpsc::channel(1024);
    let (status_tx, status) = watch::channel(Snapshot::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(session::run(cfg, rx, status_tx, shutdown.clone()));
    AgentHandle {
        id,
        requests,
        status,
        shutdown,
        task,
    }
}

impl AgentHandle {
    pub fn agent_id(&self) -> &AgentId {
        &self.id
    }

    pub fn status(&self) -> Snapshot {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.status.clone()
    }

    /// Queues an event; it is delivered in order, exactly once, whenever the link allows.
    pub async fn emit_event(&self, level: EventLevel, kind: &str, message: &str) -> Result<()> {
        self.requests
            .send(session::Request::Event {
                level,
                kind: kind.into(),
                message: message.into(),
            })
            .await
            .context("the agent has stopped")
    }

    pub async fn emit_result(
        &self,
        command_id: [u8; 16],
        outcome: CommandOutcome,
        message: &str,
    ) -> Result<()> {
        self.requests
            .send(session::Request::Result {
                command_id,
                outcome,
                message: message.into(),
            })
            .await
            .context("the agent has stopped")
    }

    pub async fn request_heartbeat(&self) -> Result<()> {
        self.requests
            .send(session::Request::HeartbeatNow)
            .await
            .context("the agent has stopped")
    }

    /// Graceful stop: clean offline status, DISCONNECT.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Abrupt stop: the task and its socket are dropped without a word, as in a crash.
    pub fn abort(self) {
        self.task.abort();
    }

    /// A token that stops the agent gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn join(self) {
        let _ = self.task.await;
    }
}
