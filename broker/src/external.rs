//! The console as a client of an external MQTT broker (Mosquitto, an EMQX or VerneMQ
//! cluster), instead of the embedded rumqttd.
//!
//! The console connects with a fixed client id and a persistent session (clean session
//! off), subscribes at QoS 1 on every CONNACK (rumqttc does not restore subscriptions), and
//! publishes at QoS 1. Its will is the signed "console offline" state, retained.
//!
//! Delivery into the console is back-pressured, not dropped: the event loop waits for room
//! in the bounded channel, so a slow ingest makes the broker buffer (and, past its limits,
//! apply its own queue policy) instead of losing messages silently here.
//!
//! What an external broker cannot do for the console: refuse CONNECTs. The embedded broker
//! asks the console's connect policy; an external broker does its own authentication. Every
//! message is still verified (COSE) at ingest, so an admitted stranger cannot forge
//! anything, but it can read traffic. See ARCHITECTURE.md, "Beyond one machine".

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::{BrokerError, BrokerStats, ConsoleLink, Inbound, LinkKind};

/// Debian's (and most distributions') bundle of the system's trusted CAs.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the console reaches an external broker.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// CA that signs the broker's certificate; the system bundle when `None`.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Fixed, so the broker keeps the console's session (and its QoS 1 queue) across
    /// reconnects.
    pub client_id: String,
    pub keepalive: Duration,
    /// Largest PUBLISH payload, in bytes; packets are allowed a little more for the topic.
    pub max_payload: usize,
    /// Capacity of the channel between the event loop and the console.
    pub console_queue: usize,
    /// Published by the broker when the console's connection dies: (topic, payload).
    pub will: (String, Vec<u8>),
}

/// Whether the console is connected to the external broker right now. Each new `Up`
/// carries a count, so a reconnect is visible even if the watcher missed the `Down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down,
    Up { connects: u64 },
}

/// Connects to the external broker in the background and returns at once: an unreachable
/// broker must not stop the console (its API and stored state stay useful), so the event
/// loop retries with capped, jittered backoff and reports through the returned watch.
pub fn connect(
    config: &ExternalConfig,
    filters: &[String],
) -> Result<
    (
        ConsoleLink,
        mpsc::Receiver<Inbound>,
        watch::Receiver<LinkState>,
    ),
    BrokerError,
> {
    let mut opts = MqttOptions::new(&config.client_id, &config.host, config.port);
    opts.set_keep_alive(config.keepalive);
    opts.set_clean_session(false);
    let packet = config.max_payload + 1024;
    opts.set_max_packet_size(packet, packet);
    // Commands fan out to many agents at once; the default of 100 unacknowledged QoS 1
    // publishes would make the API wait on the broker's acks.
    opts.set_inflight(1_000);
    if let (Some(user), password) = (&config.username, &config.password) {
        opts.set_credentials(user, password.clone().unwrap_or_default());
    }
    let (topic, payload) = &config.will;
    opts.set_last_will(LastWill::new(
        topic,
        payload.clone(),
        QoS::AtLeastOnce,
        true,
    ));
    if config.tls {
        let path = config
            .ca_file
            .as_deref()
            .unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        let ca = std::fs::read(path).map_err(|_| BrokerError::TlsFile {
            path: path.to_path_buf(),
        })?;
        // rumqttc builds its rustls config with the process-wide crypto provider. A build
        // that also links ring (the agent's provider, unified in by a workspace-wide cargo
        // invocation such as the tests') has two compiled in, and rustls then refuses to
        // pick one: name the console's own, aws-lc-rs, unless one is already installed.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }
    let (client, eventloop) = AsyncClient::new(opts, 10_000);
    let stats = Arc::new(BrokerStats::default());
    let (inbound_tx, inbound_rx) = mpsc::channel(config.console_queue.max(1));
    let (state_tx, state_rx) = watch::channel(LinkState::Down);
    let address = format!("{}:{}", config.host, config.port);
    tokio::spawn(pump(
        eventloop,
        client.clone(),
        filters.to_vec(),
        inbound_tx,
        state_tx,
        stats.clone(),
        address,
    ));
    let link = ConsoleLink {
        kind: LinkKind::External(client),
        stats,
    };
    Ok((link, inbound_rx, state_rx))
}

pub(crate) fn publish(
    client: &AsyncClient,
    topic: &str,
    payload: Vec<u8>,
    retain: bool,
) -> Result<(), BrokerError> {
    // Queued in rumqttc's request channel, which its event loop drains once connected; a
    // full channel (a long outage) refuses rather than blocking the caller.
    client
        .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        .map_err(|e| match e {
            ClientError::TryRequest(_) => BrokerError::Backlog,
            ClientError::Request(_) => BrokerError::RouterGone,
        })
}

async fn pump(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    inbound: mpsc::Sender<Inbound>,
    state: watch::Sender<LinkState>,
    stats: Arc<BrokerStats>,
    address: String,
) {
    let mut connects = 0u64;
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connects += 1;
                failures = 0;
                tracing::info!(broker = %address, session_present = ack.session_present, "connected to the external broker");
                for filter in &filters {
                    if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                        tracing::error!(%filter, error = %e, "cannot subscribe at the external broker");
                    }
                }
                state.send_replace(LinkState::Up { connects });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if inbound
                    .send(Inbound::new(publish.topic, publish.payload))
                    .await
                    .is_err()
                {
                    return;
                }
                stats.console_received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                if state.send_replace(LinkState::Down) != LinkState::Down || failures == 0 {
                    tracing::error!(broker = %address, error = %e, "no connection to the external broker; retrying");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
                if inbound.is_closed() {
                    return;
                }
            }
        }
    }
}

/// 0.5 s doubling to 30 s, with up to 50% random jitter so consoles (and the broker after
/// its own restart) are not hit in lock step.
fn backoff(failures: u32) -> Duration {
    let base =
        Duration::from_millis(500).saturating_mul(1 << failures.clamp(1, 7).saturating_sub(1));
    let base = base.min(Duration::from_secs(30));
    base.mul_f64(1.0 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(750));
            let late = backoff(50);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(45));
        }
        assert!(backoff(3) > backoff(1));
    }
}
