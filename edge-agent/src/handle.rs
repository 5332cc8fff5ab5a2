//! Starting an agent inside a tokio runtime and talking to it: [`AgentOptions`],
//! [`spawn`], [`AgentHandle`]. The binary uses exactly this, and so do the end-to-end
//! tests, which run real agents in the test process against a real broker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgefleet_codec::{AgentId, CommandOutcome, EnrollToken, EventLevel, Topics};
use edgefleet_config::AgentConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::identity::ConsolePin;
use crate::probe::Probe;
use crate::session::{Request, Session, SessionConfig};
use crate::state::Storage;
use crate::status::{self, AgentStatusSnapshot, StatusFile};

/// What [`spawn`] needs to start one agent.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use edgefleet_agent::{probe::SimProbe, AgentOptions};
/// let mut config = edgefleet_config::AgentConfig::default();
/// config.console_urls = vec!["mqtt://127.0.0.1:1883".into()];
/// config.data_dir = "/tmp/agent-1".into();
/// let agent = edgefleet_agent::spawn(AgentOptions::new(config, SimProbe::new(1))).await?;
/// agent.emit_event(edgefleet_codec::EventLevel::Info, "test", "hello").await?;
/// agent.shutdown().await;
/// # Ok(()) }
/// ```
pub struct AgentOptions {
    /// Used as given: the caller has loaded and validated it (`AgentConfig::load…`), or
    /// built it by hand in a test (then out-of-range values such as a 200 ms heartbeat
    /// interval are allowed). `console_urls` must not be empty; `data_dir` holds
    /// `agent.key`, `console.pub`, `agent.sled` and `status.json`.
    pub config: AgentConfig,
    /// Where vitals and system facts come from.
    pub probe: Box<dyn Probe>,
    /// Overrides `config.queue_cap_mb` with an exact byte cap (tests of the cap).
    pub queue_cap_bytes: Option<u64>,
    /// Keep `data_dir/status.json` current for `edgefleet-agent status` (default true).
    pub write_status_file: bool,
    /// How app commands act on the OS (default: `systemctl`).
    pub services: Option<std::sync::Arc<dyn crate::service::ServiceManager>>,
    /// Where the software inventory comes from (default: the host's package manager).
    pub collector: Option<std::sync::Arc<dyn crate::inventory::Collector>>,
}

impl AgentOptions {
    pub fn new(config: AgentConfig, probe: impl Probe + 'static) -> AgentOptions {
        AgentOptions {
            config,
            probe: Box::new(probe),
            queue_cap_bytes: None,
            write_status_file: true,
            services: None,
            collector: None,
        }
    }
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("config", &self.config)
            .field("queue_cap_bytes", &self.queue_cap_bytes)
            .field("write_status_file", &self.write_status_file)
            .finish_non_exhaustive()
    }
}

/// Starts an agent on the current tokio runtime: loads or creates its key in `data_dir`,
/// opens its database (waiting up to 5 s if an agent that was just stopped in this process
/// still holds it), and spawns the session task, which connects and reconnects on its own.
///
/// Errors are configuration or storage errors; connection problems are not errors, the
/// agent keeps retrying with backoff (watch [`AgentHandle::status`]).
pub async fn spawn(opts: AgentOptions) -> Result<AgentHandle> {
    let AgentOptions {
        config,
        probe,
        queue_cap_bytes,
        write_status_file,
        services,
        collector,
    } = opts;
    let mut probe = probe;
    let apps = if config.apps.is_empty() {
        // A simulated probe brings its own apps; a real agent has only configured ones.
        crate::simulate::apps_of(&mut *probe)
    } else {
        config
            .apps
            .iter()
            .map(crate::service::ManagedApp::from_config)
            .collect()
    };
    let urls = config.mqtt_urls();
    if urls.is_empty() || urls.len() != config.console_urls.len() {
        bail!(
            "console_urls must list mqtt:// or mqtts:// URLs (got {:?})",
            config.console_urls
        );
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    let identity = crate::identity::load_or_create(&dir.join("agent.key"))?;
    let token = config
        .token
        .as_deref()
        .map(str::parse::<EnrollToken>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("token: {e}"))?;
    let topics =
        Topics::new(&config.topic_prefix).map_err(|e| anyhow::anyhow!("topic_prefix: {e}"))?;
    let cap = queue_cap_bytes.unwrap_or(config.queue_cap_mb.saturating_mul(1024 * 1024));
    let storage = Storage::open_dir(dir, cap)
        .await
        .with_context(|| format!("opening the agent database in {}", dir.display()))?;
    let session = SessionConfig {
        identity,
        urls,
        ca_file: config.ca_file.clone(),
        token,
        heartbeat_interval: config.heartbeat_interval.get(),
        history_interval: config.history_interval.get(),
        keepalive: config.keepalive.get(),
        topics,
        storage,
        pin: ConsolePin::in_dir(dir),
        enrollment: crate::enrollment::EnrollmentFile::in_dir(dir),
        probe,
        apps,
        services: services
            .unwrap_or_else(|| std::sync::Arc::new(crate::service::Systemd::default())),
        downloads: dir.join("downloads"),
        update_limits: crate::update::Limits {
            max_download: config.artifact_max_mb.saturating_mul(1024 * 1024),
            max_unpacked: config.artifact_unpacked_max_mb.saturating_mul(1024 * 1024),
            ..crate::update::Limits::default()
        },
        labels: config.labels.clone(),
        scripts: crate::script::ScriptPolicy::from_config(&config),
        collector: Some(
            collector.unwrap_or_else(|| std::sync::Arc::new(crate::inventory::SystemCollector)),
        ),
        inventory_interval: config.inventory_interval.get(),
    };
    let status_file = write_status_file.then(|| StatusFile::path(dir));
    spawn_session(session, status_file)
}

/// Starts a session from already-loaded parts (the simulator shares one database among
/// many agents this way). `status_file`: where to keep the state file, if anywhere.
pub fn spawn_session(cfg: SessionConfig, status_file: Option<PathBuf>) -> Result<AgentHandle> {
    if cfg.urls.is_empty() {
        bail!("no console URL");
    }
    let pinned = cfg.pin.load()?;
    let id = cfg.identity.agent_id();
    tracing::info!(agent.id = %id, console = ?cfg.urls.iter().map(|u| format!("{}:{}", u.host, u.port)).collect::<Vec<_>>(), pinned = pinned.is_some(), "starting the agent");
    let (requests, rx) = mpsc::channel(256);
    let (status_tx, status) = watch::channel(AgentStatusSnapshot::default());
    let shutdown = CancellationToken::new();
    let session = Session::new(cfg, rx, requests.clone(), status_tx, pinned);
    let done = CancellationToken::new();
    let session = tokio::spawn({
        let shutdown = shutdown.clone();
        let id = id.clone();
        let done_guard = done.clone().drop_guard();
        async move {
            let _done_guard = done_guard;
            if let Err(e) = session.run(shutdown).await {
                tracing::error!(agent.id = %id, error = %format!("{e:#}"), "the agent stopped");
            }
        }
    });
    let writer =
        status_file.map(|path| tokio::spawn(status::keep_written(path, status.clone(), done)));
    Ok(AgentHandle {
        id,
        requests,
        status,
        shutdown,
        session,
        writer,
    })
}

/// A running agent. Cheap to query; dropping it stops the agent gracefully, like
/// [`AgentHandle::shutdown`] without waiting.
#[derive(Debug)]
pub struct AgentHandle {
    id: AgentId,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<AgentStatusSnapshot>,
    shutdown: CancellationToken,
    session: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl AgentHandle {
    pub fn agent_id(&self) -> &AgentId {
        &self.id
    }

    /// Connected?, bd_seq, queue depth, last heartbeat, pinned console key, counters.
    pub fn status(&self) -> AgentStatusSnapshot {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (for waiting on a condition).
    pub fn watch(&self) -> watch::Receiver<AgentStatusSnapshot> {
        self.status.clone()
    }

    /// Waits until `cond` holds for the status, at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        cond: impl FnMut(&AgentStatusSnapshot) -> bool,
    ) -> Result<AgentStatusSnapshot> {
        let mut watch = self.status.clone();
        let snapshot = tokio::time::timeout(timeout, watch.wait_for(cond))
            .await
            .context("timed out waiting for the agent status")?
            .context("the agent has stopped")?;
        Ok(snapshot.clone())
    }

    /// Queues an event. It is delivered in order with other events and results, at least
    /// once (the console deduplicates by `event_id`), whenever the link allows. Returns its
    /// `event_id` once it is stored in the queue on disk.
    pub async fn emit_event(&self, level: EventLevel, kind: &str, message: &str) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Event {
            level,
            kind: kind.into(),
            message: message.into(),
            reply,
        })
        .await?;
        rx.await
            .context("the agent has stopped")?
            .map_err(|e| anyhow::anyhow!("queueing the event: {e}"))
    }

    /// Queues a command result, in order with events. Returns once it is stored.
    pub async fn emit_result(
        &self,
        command_id: [u8; 16],
        outcome: CommandOutcome,
        message: &str,
    ) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Result {
            command_id,
            outcome,
            message: message.into(),
            reply,
        })
        .await?;
        rx.await
            .context("the agent has stopped")?
            .map_err(|e| anyhow::anyhow!("queueing the result: {e}"))
    }

    /// Sends a full (keyframe) heartbeat now if connected; otherwise does nothing.
    pub async fn request_heartbeat_now(&self) -> Result<()> {
        self.request(Request::HeartbeatNow).await
    }

    async fn request(&self, req: Request) -> Result<()> {
        self.requests
            .send(req)
            .await
            .map_err(|_| anyhow::anyhow!("the agent has stopped"))
    }

    /// Graceful stop: retained clean offline status (waiting at most 1 s for its PUBACK),
    /// DISCONNECT, and the database closed. Returns when the agent is fully stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Abrupt stop, as in a crash or a power cut: the session task is dropped with its
    /// socket and sends nothing, so the broker publishes the last-will. The database is
    /// released once the task is gone; [`spawn`] on the same `data_dir` waits for that.
    pub fn abort(self) {
        let AgentHandle {
            requests,
            session,
            writer,
            ..
        } = self;
        session.abort();
        if let Some(writer) = writer {
            writer.abort();
        }
        // The request channel closing means "stop gracefully" to the session, which must
        // not happen here: keep it open until the aborted task is really gone.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = session.await;
                    drop(requests);
                });
            }
            Err(_) => std::mem::forget(requests),
        }
    }

    /// A token that stops the agent gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the agent has stopped (after the token was cancelled).
    pub async fn join(self) {
        let _ = self.session.await;
        if let Some(writer) = self.writer {
            let _ = writer.await;
        }
    }
}
