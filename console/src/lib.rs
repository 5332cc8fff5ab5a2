//! The console: broker link ingest, presence, the sled store and the REST API.
//!
//! - `fleet`: the in-memory index over sled, the connect policy, ingest and the sweep;
//!   `fleet::scoped` applies labels, per-agent and group settings and maintenance.
//! - `labels`: labels and the label selector language.
//! - `rollouts`: staged rollouts in waves with health gates, and their driver.
//! - `groups`: static and dynamic host groups and settings precedence.
//! - `maintenance`: maintenance windows and the command refusal.
//! - `presence`: the per-agent record and the status rules (pure logic, table in the docs).
//! - `store`: the sled trees, key-by-key writes, rollups and retention.
//! - `space`: the free-space guard that refuses writes before the disk is full.
//! - `http`: the axum REST API, `/healthz` and `/metrics`.
//! - `metrics`: counters rendered in Prometheus text format.
//! - `auth`: REST API keys (hashed in sled, roles, failure limits).
//! - `enrollment`: enrollment tokens and the duplicate-host rule.
//! - `audit`: the hash-chained audit log.
//! - `artifacts`: update files stored by hash and served with `Range`.
//! - `commands`: remote commands: records, states, redelivery, expiry.
//! - `alerts`: the alert rules (pure engine) and alert and silence storage.
//! - `notify`: the log notifier and webhooks with a durable outbox.
//! - `live`: the live event stream (`GET /api/events`, SSE) with resume.
//! - `demo`: the simulated fleet started by `--demo N`.
//! - `ui`: the web UI's built files at `/` (SPA fallback) and the demo login.
//! - `tls`: `init-tls`, a self-signed CA and server certificate for MQTT over TLS.

pub mod alerts;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod commands;
pub mod demo;
pub mod enrollment;
pub mod fleet;
pub mod groups;
pub mod http;
pub mod inventory;
pub mod labels;
pub mod live;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod presence;
pub mod rollouts;
pub mod space;
pub mod store;
pub mod tls;
pub mod ui;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use edgefleet_broker::external::{ExternalConfig, LinkState};
use edgefleet_broker::{
    BrokerConfig, ConsoleLink, EmbeddedBroker, Inbound, TlsListener, CONSOLE_LINK_ID,
};
use edgefleet_codec::{sign_console, ConsoleMessage, ConsoleState, Identity, Topics};
use edgefleet_config::ConsoleConfig;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fleet::Fleet;
use crate::presence::Timings;
use crate::store::{Store, Tier};

static BROKER: OnceLock<EmbeddedBroker> = OnceLock::new();

/// Messages the broker link had to drop because ingest fell behind: all of them, and
/// those that were not heartbeats.
pub fn broker_dropped() -> (u64, u64) {
    BROKER.get().map_or((0, 0), |b| {
        let stats = b.stats();
        (
            stats.console_queue_dropped.load(Ordering::Relaxed),
            stats.console_queue_dropped_other.load(Ordering::Relaxed),
        )
    })
}

/// Connections the embedded broker closed at accept because their address was over
/// `mqtt.connect_burst_per_ip` (0 behind an external broker).
pub fn broker_refused_per_ip() -> u64 {
    BROKER
        .get()
        .map_or(0, |b| b.stats().refused_per_ip.load(Ordering::Relaxed))
}

/// Addresses the console actually bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
}

/// Loads the console key from `data_dir/console.key`, creating it on first start.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Identity> {
    let path = data_dir.join("console.key");
    if path.exists() {
        let bytes = edgefleet_config::keyfile::read_secret(&path)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
        return Ok(Identity::from_seed(&seed));
    }
    let identity = Identity::generate();
    edgefleet_config::keyfile::write_secret(&path, identity.seed().as_ref())?;
    tracing::info!(path = %path.display(), "created the console key");
    Ok(identity)
}

/// Runs the console until `shutdown` is cancelled.
pub async fn run(
    config: ConsoleConfig,
    demo: Option<usize>,
    shutdown: CancellationToken,
) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let identity = load_or_create_identity(&config.data_dir)?;
    let guard = space::Guard::new(
        &config.data_dir,
        config.store.min_free_mb.saturating_mul(1 << 20),
    );
    // Sampled before sled opens: a console started on a nearly full disk refuses writes
    // from its first message.
    check_space(&guard);
    let store = Store::open_with(&config.data_dir.join("console.sled"), guard)
        .with_context(|| format!("opening sled in {}", config.data_dir.display()))?;
    let topics = Topics::new(&config.mqtt.topic_prefix)?;
    let timings = Timings::of(&config.presence);
    let a = &config.alerts;
    let settings = fleet::AlertSettings {
        rules: alerts::Rules {
            offline_grace_ms: a.offline_grace.get().as_millis() as u64,
            notify_on_clean_stop: a.notify_on_clean_stop,
            flap_count: a.flap_count as usize,
            flap_window_ms: a.flap_window.get().as_millis() as u64,
            hotspot_threshold: a.hotspot_threshold,
            hotspot_window_ms: a.hotspot_window.get().as_millis() as u64,
            stale_after_ms: timings.stale_after_ms,
        },
        webhooks: a
            .webhooks
            .iter()
            .map(|w| notify::Webhook {
                url: w.url.clone(),
                secret: w.secret.clone(),
            })
            .collect(),
        webhook_max_age: a.webhook_max_age.get(),
    };
    let fleet = Arc::new(Fleet::open_with(
        store,
        identity.clone(),
        topics.clone(),
        timings,
        settings,
    )?);
    let _ = fleet.artifacts_dir.set(artifacts::dir(&config.data_dir));
    let delivery = tokio::spawn(fleet.notifier.clone().run(shutdown.clone()));
    {
        // Live event streams never end by themselves; end them so the server can drain.
        let (fleet, shutdown) = (fleet.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            fleet.live.closed.cancel();
        });
    }

    let epoch = Arc::new(AtomicU64::new(rand::random()));
    let state = {
        let (identity, epoch) = (identity.clone(), epoch.clone());
        move |online: bool| {
            let msg = ConsoleMessage::ConsoleState(ConsoleState {
                online,
                epoch: epoch.load(Ordering::Relaxed),
                public_key: *identity.public_key().as_bytes(),
                at: fleet::now_ms() / 1000,
                receipts: true,
            });
            sign_console(&msg, None, &identity)
        }
    };
    let filters = topics.console_filters();
    let (link, mut inbound, agent_url) = match &config.mqtt.external {
        None => {
            let (link, inbound, addr) =
                start_embedded(&config, &fleet, filters, topics.agent_own_filter_patterns())
                    .await?;
            let link = Arc::new(link);
            link.publish(&topics.console_state(), state(true), true)
                .await?;
            (link, inbound, agent_url_of(addr))
        }
        Some(url) => {
            let external = external_config(&config, url, (topics.console_state(), state(false)))?;
            let (link, inbound, link_state) =
                edgefleet_broker::external::connect(&external, &filters)
                    .context("connecting to the external MQTT broker (mqtt.external)")?;
            let link = Arc::new(link);
            fleet.broker_link(false);
            tokio::spawn(follow_external(
                link_state,
                link.clone(),
                fleet.clone(),
                topics.console_state(),
                epoch.clone(),
                state.clone(),
            ));
            (link, inbound, url.clone())
        }
    };

    // Enrollment responses (and later commands) from ingest and the API, in order.
    let publisher = {
        let mut outbox = fleet.take_outbox().expect("the outbox is taken once, here");
        let link = link.clone();
        tokio::spawn(async move {
            while let Some(out) = outbox.recv().await {
                if let Err(e) = link.publish(&out.topic, out.payload, false).await {
                    tracing::warn!(topic = %out.topic, error = %e, "cannot publish");
                }
            }
        })
    };

    // Ingest runs on its own thread: it does sled writes and must never stall the broker
    // link, which only hands messages over through the bounded channel.
    let ingest_fleet = fleet.clone();
    let ingest = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            while let Some(first) = inbound.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match inbound.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                ingest_fleet.ingest(batch);
            }
        })?;
    let _ = ingest;

    let sweeper = {
        let fleet = fleet.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        fleet.sweep();
                        fleet.alert_tick();
                    }
                }
            }
        })
    };
    let rollouts = {
        let fleet = fleet.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            {
                let fleet = fleet.clone();
                let _ = tokio::task::spawn_blocking(move || fleet.resume_rollouts()).await;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let fleet = fleet.clone();
                        // Rollout steps are flushed to disk one by one: off the workers.
                        let _ = tokio::task::spawn_blocking(move || fleet.rollout_tick()).await;
                    }
                }
            }
        })
    };
    let space_watch = tokio::spawn(watch_space(
        fleet.clone(),
        link.clone(),
        topics.console_state(),
        epoch.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    let retention = {
        let fleet = fleet.clone();
        let shutdown = shutdown.clone();
        let keep = [
            config.retention.raw.get(),
            config.retention.rollup_1m.get(),
            config.retention.rollup_15m.get(),
        ];
        let history = config.retention.history.get();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            let mut trim = tokio::time::interval(memory::TRIM_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let fleet = fleet.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            enforce_retention(&fleet, keep, history);
                            memory::trim()
                        }).await;
                    }
                    _ = trim.tick() => {
                        if let Ok(Some(freed)) = tokio::task::spawn_blocking(memory::trim).await {
                            tracing::debug!(freed_bytes = freed, "heap trimmed");
                        }
                    }
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.bind))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(http = %http_addr, mqtt = %agent_url, "console listening: open http://{http_addr}/");

    let mut demo_child = match demo {
        Some(n) => {
            let token = demo::token(&fleet, &config.data_dir)?;
            Some(demo::spawn(n, &agent_url, &config.data_dir, &token)?)
        }
        None => None,
    };

    if fleet.api_keys.is_empty() {
        let secret = fleet
            .api_keys
            .create("admin", auth::Role::Admin, fleet::now_ms())?;
        let path = config.data_dir.join("admin.key");
        edgefleet_config::keyfile::write_secret(&path, format!("{secret}\n").as_bytes())?;
        // Printed once, on the first start, for the operator who just installed the console.
        println!("First start: created the admin API key. It is also in {} (mode 0600):\n\n    {secret}\n", path.display());
        tracing::info!(path = %path.display(), "created the first admin API key");
    }

    let ui = std::sync::Arc::new(ui::Ui::discover(
        demo.is_some().then(|| config.data_dir.join("admin.key")),
    ));
    if !ui.dir.join("index.html").is_file() {
        tracing::warn!(dir = %ui.dir.display(), "the web UI is not built: run `cargo xtask ui`");
    }
    let app = http::app(fleet.clone()).layer(axum::Extension(ui));
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::server_config(cert, key).context("HTTPS ([http] tls_cert/tls_key)")?;
            tracing::info!(https = %http_addr, "serving the REST API and UI over HTTPS");
            tls::serve_https(listener, app, tls, shutdown.clone()).await?;
        }
        _ => {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
                .context("HTTP server")?;
        }
    }

    if let Some(child) = demo_child.as_mut() {
        let _ = child.kill().await;
    }
    sweeper.abort();
    rollouts.abort();
    retention.abort();
    space_watch.abort();
    publisher.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), delivery).await;
    if let Err(e) = link
        .publish(&topics.console_state(), state(false), true)
        .await
    {
        tracing::warn!(error = %e, "could not publish the offline console state");
    }
    fleet.store.flush()?;
    tracing::info!("console stopped");
    Ok(())
}

/// Starts the embedded broker with the console's connect policy.
async fn start_embedded(
    config: &ConsoleConfig,
    fleet: &Arc<Fleet>,
    filters: Vec<String>,
    client_filters: Vec<String>,
) -> Result<(ConsoleLink, mpsc::Receiver<Inbound>, SocketAddr)> {
    let broker_config = BrokerConfig {
        listen: config.mqtt.bind,
        tls: match (
            config.mqtt.tls_bind,
            &config.mqtt.tls_cert,
            &config.mqtt.tls_key,
        ) {
            (Some(listen), Some(cert), Some(key)) => Some(TlsListener {
                listen,
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        max_connections: config.mqtt.max_connections,
        max_payload: config.mqtt.max_payload,
        client_filters,
        connect_limit_per_ip: (config.mqtt.connect_burst_per_ip > 0).then_some(
            edgefleet_broker::ConnectLimit {
                burst: config.mqtt.connect_burst_per_ip,
                per_second: config.mqtt.connects_per_ip_per_s,
            },
        ),
        ..BrokerConfig::default()
    };
    let policy_fleet = fleet.clone();
    let policy: edgefleet_broker::ConnectPolicy =
        Arc::new(move |attempt| policy_fleet.accept_connect(attempt));
    let (broker, link, inbound) = tokio::task::spawn_blocking(move || {
        EmbeddedBroker::start(&broker_config, policy, &filters)
    })
    .await?
    .context("starting the embedded MQTT broker")?;
    let addr = broker.mqtt_addr();
    let _ = BROKER.set(broker);
    Ok((link, inbound, addr))
}

/// The URL simulated agents (`--demo`) use for the embedded broker.
fn agent_url_of(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("mqtt://{host}:{}", addr.port())
}

fn external_config(
    config: &ConsoleConfig,
    url: &str,
    will: (String, Vec<u8>),
) -> Result<ExternalConfig> {
    // The config loader already refused anything but mqtt(s)://host[:port].
    let parsed = url::Url::parse(url).with_context(|| format!("mqtt.external = {url:?}"))?;
    let tls = parsed.scheme() == "mqtts";
    let host = parsed
        .host_str()
        .with_context(|| format!("mqtt.external = {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ExternalConfig {
        host,
        port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
        tls,
        ca_file: config.mqtt.ca_file.clone(),
        username: config.mqtt.username.clone(),
        password: config.mqtt.password.clone(),
        client_id: CONSOLE_LINK_ID.to_string(),
        keepalive: Duration::from_secs(10),
        max_payload: config.mqtt.max_payload,
        console_queue: BrokerConfig::default().console_queue,
        will,
    })
}

/// Follows the link to an external broker. While it is down, presence timeouts are held
/// (no heartbeat could arrive). On every reconnect after the first, the console announces
/// a new epoch: agents then publish their status and birth again, which refreshes
/// everything the console may have missed while it was cut off.
async fn follow_external(
    mut link_state: watch::Receiver<LinkState>,
    link: Arc<ConsoleLink>,
    fleet: Arc<Fleet>,
    state_topic: String,
    epoch: Arc<AtomicU64>,
    state: impl Fn(bool) -> Vec<u8>,
) {
    loop {
        let now = *link_state.borrow_and_update();
        match now {
            LinkState::Down => fleet.broker_link(false),
            LinkState::Up { connects } => {
                if connects > 1 {
                    epoch.store(rand::random(), Ordering::Relaxed);
                }
                if let Err(e) = link.publish(&state_topic, state(true), true).await {
                    tracing::error!(error = %e, "cannot publish the console state");
                }
                fleet.broker_link(true);
            }
        }
        if link_state.changed().await.is_err() {
            return;
        }
    }
}

/// Samples the data dir's free space and logs a change of the guard: ERROR when writes
/// stop, INFO when they resume. Once per transition, never per message.
fn check_space(guard: &space::Guard) -> Option<space::Change> {
    let change = match guard.check(fleet::now_ms()) {
        Ok(change) => change?,
        Err(e) => {
            // Rare and not per message; sled's own errors still reach `/healthz`.
            tracing::warn!(dir = %guard.dir().display(), error = %e, "cannot read the data dir's free space");
            return None;
        }
    };
    let (dir, reserve) = (guard.dir().display(), guard.reserve());
    match change {
        space::Change::Refused { free } => tracing::error!(
            data_dir = %dir,
            free_bytes = free,
            reserve_bytes = reserve,
            "disk space low: refusing writes (API changes answer 507, /healthz is degraded); agent events are held in memory until space is freed"
        ),
        space::Change::Resumed { free } => tracing::info!(
            data_dir = %dir,
            free_bytes = free,
            reserve_bytes = reserve,
            "disk space back above the reserve: writes resume"
        ),
    }
    Some(change)
}

/// Runs the free-space guard every [`space::CHECK_EVERY`]. When writes resume it stores
/// what ingest held back, then announces a new console epoch: every agent publishes its
/// status and birth again, which redelivers the commands whose results could not be stored
/// (the agent answers with its kept result) and lets inventory and presence catch up.
async fn watch_space(
    fleet: Arc<Fleet>,
    link: Arc<ConsoleLink>,
    state_topic: String,
    epoch: Arc<AtomicU64>,
    state: impl Fn(bool) -> Vec<u8>,
    shutdown: CancellationToken,
) {
    if fleet.store.guard().reserve() == 0 {
        return;
    }
    let mut tick = tokio::time::interval(space::CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !matches!(
            check_space(fleet.store.guard()),
            Some(space::Change::Resumed { .. })
        ) {
            continue;
        }
        let backlog = fleet.clone();
        let _ = tokio::task::spawn_blocking(move || backlog.write_backlog()).await;
        epoch.store(rand::random(), Ordering::Relaxed);
        if let Err(e) = link.publish(&state_topic, state(true), true).await {
            tracing::error!(error = %e, "cannot publish the console state after writes resumed");
        }
    }
}

/// Deletes samples past their tier's retention and events, results and status changes past
/// `history`. Audit entries and command records are kept.
fn enforce_retention(fleet: &Fleet, keep: [Duration; 3], history: Duration) {
    let now = fleet::now_ms();
    let mut removed = 0;
    for id in fleet.agent_ids() {
        match fleet
            .store
            .expire_history(&id, now.saturating_sub(history.as_millis() as u64))
        {
            Ok(n) => removed += n,
            Err(e) => tracing::error!(agent.id = %id, error = %e, "history retention failed"),
        }
        for (tier, keep) in Tier::ALL.into_iter().zip(keep) {
            match fleet
                .store
                .expire(&id, tier, now.saturating_sub(keep.as_millis() as u64))
            {
                Ok(n) => removed += n,
                Err(e) => tracing::error!(agent.id = %id, error = %e, "retention failed"),
            }
        }
    }
    tracing::debug!(removed, "retention pass done");
}
