//! The console: broker link ingest, presence, the sled store and the REST API.
//!
//! - `fleet`: the in-memory index over sled, the connect policy, ingest and the sweep;
//!   `fleet::scoped` applies labels, per-agent and group settings and maintenance.
//! - `labels`: labels and the label selector language.
//! - `rollouts`: staged rollouts in waves with health gates, and their driver.
//! - `groups`: static and dynamic host groups and settings precedence.
//! - `maintenance`: maintenance windows and the command refusal.
//! - `presence`: the per-agent record and the status rules (pure logic, table in the docs).
//! - `store`: the sled trees, batched writes, rollups and retention.
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
pub mod metrics;
pub mod notify;
pub mod presence;
pub mod rollouts;
pub mod store;
pub mod tls;
pub mod ui;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgefleet_broker::{BrokerConfig, EmbeddedBroker, TlsListener};
use edgefleet_codec::{sign_console, ConsoleMessage, ConsoleState, Identity, Topics};
use edgefleet_config::ConsoleConfig;
use tokio_util::sync::CancellationToken;

use crate::fleet::Fleet;
use crate::presence::Timings;
use crate::store::{Store, Tier};

static BROKER: OnceLock<EmbeddedBroker> = OnceLock::new();

/// Messages the broker link had to drop because ingest fell behind.
pub fn broker_dropped() -> u64 {
    BROKER
        .get()
        .map(|b| b.stats().console_queue_dropped.load(Ordering::Relaxed))
        .unwrap_or(0)
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
    if let Some(external) = &config.mqtt.external {
        bail!(
            "mqtt.external = {external:?}: external broker mode is not implemented yet; \
             remove it to use the embedded broker"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let identity = load_or_create_identity(&config.data_dir)?;
    let store = Store::open(&config.data_dir.join("console.sled"))
        .with_context(|| format!("opening sled in {}", config.data_dir.display()))?;
    let topics = Topics::new(&config.mqtt.topic_prefix)?;
    let p = &config.presence;
    let timings = Timings {
        default_interval_ms: p.heartbeat_interval.get().as_millis() as u64,
        missed_intervals: p.missed_intervals.into(),
        grace_ms: p.grace.get().as_millis() as u64,
        restart_grace_ms: p.restart_grace.get().as_millis() as u64,
        stale_after_ms: p.stale_after.get().as_millis() as u64,
    };
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
        ..BrokerConfig::default()
    };
    let policy_fleet = fleet.clone();
    let policy: edgefleet_broker::ConnectPolicy =
        Arc::new(move |attempt| policy_fleet.accept_connect(attempt));
    let filters = topics.console_filters();
    let (broker, link, mut inbound) = tokio::task::spawn_blocking(move || {
        EmbeddedBroker::start(&broker_config, policy, &filters)
    })
    .await?
    .context("starting the embedded MQTT broker")?;
    let mqtt_addr = broker.mqtt_addr();
    let _ = BROKER.set(broker);

    let epoch: u64 = rand::random();
    let state = |online: bool| {
        let msg = ConsoleMessage::ConsoleState(ConsoleState {
            online,
            epoch,
            public_key: *identity.public_key().as_bytes(),
            at: fleet::now_ms() / 1000,
        });
        sign_console(&msg, None, &identity)
    };
    let link = Arc::new(link);
    link.publish(&topics.console_state(), state(true), true)
        .await?;

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
    let retention = {
        let fleet = fleet.clone();
        let shutdown = shutdown.clone();
        let keep = [
            config.retention.raw.get(),
            config.retention.rollup_1m.get(),
            config.retention.rollup_15m.get(),
        ];
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let fleet = fleet.clone();
                        let _ = tokio::task::spawn_blocking(move || enforce_retention(&fleet, keep)).await;
                    }
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.bind))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(http = %http_addr, mqtt = %mqtt_addr, "console listening: open http://{http_addr}/");

    let mut demo_child = match demo {
        Some(n) => {
            let token = demo::token(&fleet, &config.data_dir)?;
            Some(demo::spawn(n, mqtt_addr, &config.data_dir, &token)?)
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

fn enforce_retention(fleet: &Fleet, keep: [Duration; 3]) {
    let now = fleet::now_ms();
    let mut removed = 0;
    for id in fleet.agent_ids() {
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
