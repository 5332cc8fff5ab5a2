//! The console's MQTT side: the embedded broker (the only crate that imports `rumqttd`), or
//! a client of an external broker.
//!
//! - [`EmbeddedBroker::start`] runs rumqttd 0.20 on its own threads (its `start()` blocks
//!   forever and has no shutdown) and returns once the listener accepts connections.
//! - [`ConsoleLink`] is the console's in-process link: publishes go straight to the router,
//!   and everything the console subscribed to arrives on a bounded tokio channel.
//! - [`external::connect`] makes the same [`ConsoleLink`] and channel as a rumqttc client of
//!   an external broker (Mosquitto, an EMQX or VerneMQ cluster).
//! - [`ConnectPolicy`] is the single place where connect-time policy lives. The broker
//!   itself refuses client ids that rumqttd mishandles before the policy is even asked.
//!
//! Settings that matter, and why (see ARCHITECTURE.md for the measured pitfalls):
//! - MQTT 3.1.1 only. A v5 publish with properties crashes v3.1.1 subscribers.
//! - Small router segments, so memory stays bounded with thousands of clients.
//! - `next_connection_delay_ms = 0`, because accepts are already slow.

mod limit;
pub use limit::ConnectLimit;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{
    Config, ConnectionSettings, Notification, RouterConfig, SegmentConfig, ServerSettings,
    TlsConfig,
};
use tokio::sync::mpsc;

pub mod external;

/// Client id the console uses for its in-process link. It cannot collide with an agent
/// id, which is 16 lowercase base32 characters.
pub const CONSOLE_LINK_ID: &str = "edgefleet-console";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS file {path} does not exist")]
    TlsFile { path: PathBuf },
    #[error("the broker did not accept connections on {addr} within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },
    #[error("could not open the console link to the broker router: {0}")]
    Link(String),
    #[error("could not start the broker thread")]
    Thread(#[source] std::io::Error),
    #[error("refusing to publish an empty payload to {topic}: it would clear retained state")]
    EmptyPayload { topic: String },
    #[error("the broker router has stopped")]
    RouterGone,
    #[error("too many publishes are waiting for the external broker; this one was not queued")]
    Backlog,
}

/// Segment size of the logs of [`BrokerConfig::client_filters`]. A message larger than this
/// still fits: a segment overflows by its last message.
pub const CLIENT_SEGMENT_SIZE: usize = 4 * 1024;
/// Segment count of those logs: the full one before the active one is kept.
pub const CLIENT_SEGMENT_COUNT: usize = 2;

/// Segment size of the logs of the console's own subscriptions (`filters` in
/// [`EmbeddedBroker::start`]): every agent's telemetry passes through them. rumqttd skips
/// silently what a subscriber has not read once a log wraps ("jumping to head"), so these
/// logs must hold the fleet's traffic for the console's worst pause. With the shared
/// 256 KiB × 4, 10,000 agents reconnecting at once (births and inventory snapshots of up
/// to 27 KB each) lapped the console five times, and the lost births left agents shown
/// offline. 4 MiB × 8 holds several seconds of such a storm; an idle log costs nothing, a
/// full one 32 MiB (filled over hours in a small fleet).
pub const CONSOLE_SEGMENT_SIZE: usize = 4 * 1024 * 1024;
/// Segment count of those logs.
pub const CONSOLE_SEGMENT_COUNT: usize = 8;

/// Settings for the embedded broker. Defaults suit a console with up to 10,000 agents.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Plain MQTT listener. Port 0 picks a free port; see [`EmbeddedBroker::mqtt_addr`].
    pub listen: SocketAddr,
    pub tls: Option<TlsListener>,
    pub max_connections: usize,
    /// Largest PUBLISH payload accepted, in bytes.
    pub max_payload: usize,
    pub max_inflight: usize,
    /// Router log segment size and count per subscription filter. Memory per filter is up
    /// to their product: the log keeps what was published to the filter, read or not,
    /// until its segments wrap.
    pub segment_size: usize,
    pub segment_count: usize,
    /// Filter patterns (MQTT wildcards) of logs that each hold one client's own messages,
    /// such as `ef/a/+/cmd`: every filter they match gets [`CLIENT_SEGMENT_SIZE`] ×
    /// [`CLIENT_SEGMENT_COUNT`] instead. With the shared sizes, every agent's command log
    /// grew towards 1 MiB over the days (every command, acknowledgement and receipt the
    /// console sent it stays there). The cost: a client that is away while more than a
    /// segment of messages arrives for it gets only the newest on its return, so the
    /// protocol on these topics must resend what matters (the console redelivers commands
    /// on every birth; agents resend unreceipted events).
    pub client_filters: Vec<String>,
    /// Capacity of the channel between the router and the console.
    pub console_queue: usize,
    /// New connections per peer address, checked right after `accept` (patched rumqttd,
    /// `vendor/rumqttd`); `None` accepts all.
    pub connect_limit_per_ip: Option<ConnectLimit>,
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            tls: None,
            max_connections: 10_000,
            max_payload: 64 * 1024,
            max_inflight: 100,
            segment_size: 256 * 1024,
            segment_count: 4,
            client_filters: Vec::new(),
            console_queue: 65_536,
            connect_limit_per_ip: Some(ConnectLimit {
                burst: 1_000,
                per_second: 100,
            }),
        }
    }
}

/// What a client presented in its CONNECT packet.
#[derive(Debug, Clone)]
pub struct ConnectAttempt {
    pub client_id: String,
    pub username: String,
    pub password: String,
}

/// Decides whether a client may connect. It runs on the broker's accept path, so it must
/// be quick and must not block.
pub type ConnectPolicy = Arc<dyn Fn(&ConnectAttempt) -> bool + Send + Sync>;

/// A message the console received from the broker.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    /// When the broker link handed it over, for the ingest latency histogram.
    pub received: Instant,
}

impl Inbound {
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Inbound {
        Inbound {
            topic: topic.into(),
            payload: payload.into(),
            received: Instant::now(),
        }
    }
}

/// Counters an operator would graph.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Messages dropped because the console did not drain its queue fast enough.
    pub console_queue_dropped: AtomicU64,
    /// Of those, messages other than heartbeats (births, statuses, events, results): only
    /// once the queue is completely full, after heartbeats stopped being admitted.
    pub console_queue_dropped_other: AtomicU64,
    /// Messages delivered to the console queue.
    pub console_received: AtomicU64,
    /// CONNECTs refused because the client id is unsafe for rumqttd.
    pub refused_client_id: AtomicU64,
    /// CONNECTs refused by the console's policy.
    pub refused_policy: AtomicU64,
    /// Connections closed at accept because their address was over
    /// [`BrokerConfig::connect_limit_per_ip`].
    pub refused_per_ip: AtomicU64,
}

/// A running embedded broker. It cannot be stopped (rumqttd has no shutdown); it lives as
/// long as the process.
#[derive(Debug)]
pub struct EmbeddedBroker {
    mqtt_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stats: Arc<BrokerStats>,
}

/// The console's connection to MQTT: in-process to the embedded router, or a client of an
/// external broker.
pub struct ConsoleLink {
    kind: LinkKind,
    stats: Arc<BrokerStats>,
}

enum LinkKind {
    Embedded(tokio::sync::Mutex<LinkTx>),
    External(rumqttc::AsyncClient),
}

impl EmbeddedBroker {
    /// Starts the broker and the console link, and waits until the listeners accept.
    ///
    /// `filters` are the console's subscriptions; its messages arrive on the returned
    /// receiver. The pump that fills it never blocks the router: when the queue is full
    /// the message is dropped and counted in [`BrokerStats::console_queue_dropped`].
    /// Heartbeats stop being admitted at [`HEARTBEAT_SHARE`] of the queue, so births,
    /// statuses, events and results keep the rest (see [`pump`]).
    pub fn start(
        config: &BrokerConfig,
        policy: ConnectPolicy,
        filters: &[String],
    ) -> Result<(EmbeddedBroker, ConsoleLink, mpsc::Receiver<Inbound>), BrokerError> {
        let stats = Arc::new(BrokerStats::default());
        let mqtt_addr = reserve(config.listen)?;
        let tls_addr = match &config.tls {
            Some(tls) => {
                for path in [&tls.cert, &tls.key] {
                    if !path.exists() {
                        return Err(BrokerError::TlsFile { path: path.clone() });
                    }
                }
                Some(reserve(tls.listen)?)
            }
            None => None,
        };

        let connections = connection_settings(config, policy, stats.clone());
        // One limiter for both listeners: the limit is per address, not per port.
        let accept_filter = config.connect_limit_per_ip.map(|limit| {
            let limiter = limit::PerIpLimiter::new(limit);
            let stats = stats.clone();
            rumqttd::AcceptFilter(Arc::new(move |peer: SocketAddr| {
                let admitted = limiter.admit(peer.ip(), Instant::now());
                if !admitted {
                    stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                }
                admitted
            }))
        });
        let mut v4 = HashMap::new();
        v4.insert(
            "mqtt".to_string(),
            server_settings(
                "mqtt",
                mqtt_addr,
                None,
                connections.clone(),
                accept_filter.clone(),
            ),
        );
        if let (Some(tls), Some(addr)) = (&config.tls, tls_addr) {
            let tls_config = TlsConfig::Rustls {
                capath: None,
                certpath: tls.cert.display().to_string(),
                keypath: tls.key.display().to_string(),
            };
            v4.insert(
                "mqtts".to_string(),
                server_settings("mqtts", addr, Some(tls_config), connections, accept_filter),
            );
        }
        let rumqttd_config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: config.max_connections + 1,
                // As many as a connection's channel holds per turn (`MAX_CHANNEL_CAPACITY`,
                // patched to 2,000 for the console's fan-in link).
                max_outgoing_packet_count: 2_000,
                max_segment_size: config.segment_size,
                max_segment_count: config.segment_count,
                // Where patterns overlap (`ef/a/+/cmd` also matches `ef/a/+/+`), the most
                // specific entry wins (patched rumqttd, `router/logs.rs`).
                custom_segment: Some(
                    config
                        .client_filters
                        .iter()
                        .map(|f| {
                            let small = SegmentConfig {
                                max_segment_size: CLIENT_SEGMENT_SIZE,
                                max_segment_count: CLIENT_SEGMENT_COUNT,
                            };
                            (f.clone(), small)
                        })
                        .chain(filters.iter().map(|f| {
                            let large = SegmentConfig {
                                max_segment_size: CONSOLE_SEGMENT_SIZE,
                                max_segment_count: CONSOLE_SEGMENT_COUNT,
                            };
                            (f.clone(), large)
                        }))
                        .collect(),
                ),
                ..RouterConfig::default()
            },
            v4: Some(v4),
            ..Config::default()
        };

        let mut broker = rumqttd::Broker::new(rumqttd_config);
        let (mut link_tx, link_rx) = broker
            .link(CONSOLE_LINK_ID)
            .map_err(|e| BrokerError::Link(e.to_string()))?;
        for filter in filters {
            link_tx
                .subscribe(filter.clone())
                .map_err(|e| BrokerError::Link(e.to_string()))?;
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(config.console_queue.max(4));
        std::thread::Builder::new()
            .name("broker-link".into())
            .spawn({
                let stats = stats.clone();
                move || pump(link_rx, inbound_tx, &stats)
            })
            .map_err(BrokerError::Thread)?;
        std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;

        let waited = Duration::from_secs(10);
        for addr in std::iter::once(mqtt_addr).chain(tls_addr) {
            wait_until_accepting(addr, waited)?;
        }
        tracing::info!(mqtt = %mqtt_addr, mqtts = ?tls_addr, "embedded broker listening");
        let link = ConsoleLink {
            kind: LinkKind::Embedded(tokio::sync::Mutex::new(link_tx)),
            stats: stats.clone(),
        };
        Ok((
            EmbeddedBroker {
                mqtt_addr,
                tls_addr,
                stats,
            },
            link,
            inbound_rx,
        ))
    }

    /// The address the plain MQTT listener is bound to (with the real port if 0 was asked).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }
}

impl std::fmt::Debug for ConsoleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleLink").finish_non_exhaustive()
    }
}

impl ConsoleLink {
    /// Publishes from inside the embedded broker (QoS 0), or to the external broker (QoS 1).
    /// `retain` keeps it for later subscribers.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), BrokerError> {
        // An empty payload clears a retained message; nothing EdgeFleet sends is empty, so
        // refuse it rather than silently wiping state.
        if payload.is_empty() {
            return Err(BrokerError::EmptyPayload {
                topic: topic.to_string(),
            });
        }
        match &self.kind {
            LinkKind::Embedded(tx) => {
                let publish = Publish::new(
                    Bytes::copy_from_slice(topic.as_bytes()),
                    Bytes::from(payload),
                    retain,
                );
                tx.lock()
                    .await
                    .send(Packet::Publish(publish, None))
                    .await
                    .map(|_| ())
                    .map_err(|_| BrokerError::RouterGone)
            }
            LinkKind::External(client) => external::publish(client, topic, payload, retain),
        }
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }
}

/// Rejects client ids that rumqttd mishandles (`/ + # $` can poison a router mutex) and
/// anything that is not short printable ASCII. The console's policy decides the rest.
pub fn client_id_is_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn connection_settings(
    config: &BrokerConfig,
    policy: ConnectPolicy,
    stats: Arc<BrokerStats>,
) -> ConnectionSettings {
    let mut settings = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: config.max_payload,
        max_inflight_count: config.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    settings.set_auth_handler(move |client_id: String, username: String, password: String| {
        let allowed = if !client_id_is_safe(&client_id) || client_id == CONSOLE_LINK_ID {
            stats.refused_client_id.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client.id = %client_id.escape_default(), "refused unsafe client id");
            false
        } else if policy(&ConnectAttempt {
            client_id,
            username,
            password,
        }) {
            true
        } else {
            stats.refused_policy.fetch_add(1, Ordering::Relaxed);
            false
        };
        std::future::ready(allowed)
    });
    settings
}

fn server_settings(
    name: &str,
    listen: SocketAddr,
    tls: Option<TlsConfig>,
    connections: ConnectionSettings,
    accept_filter: Option<rumqttd::AcceptFilter>,
) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls,
        next_connection_delay_ms: 0,
        connections,
        accept_filter,
    }
}

/// Share of the console queue heartbeats may fill. A heartbeat lost under overload is
/// replaced by the next one; a birth, status, event or result is not (the broker has
/// already acknowledged it), so those keep the last quarter of the queue to themselves.
pub const HEARTBEAT_SHARE: (usize, usize) = (3, 4);

/// Moves router notifications to the console's channel. It must never block: a stalled
/// local link makes rumqttd drop messages silently once its segments wrap. One queue keeps
/// each agent's messages in order (the console rejects a sequence number that goes back).
fn pump(mut rx: LinkRx, tx: mpsc::Sender<Inbound>, stats: &BrokerStats) {
    let reserved = tx.max_capacity() - tx.max_capacity() * HEARTBEAT_SHARE.0 / HEARTBEAT_SHARE.1;
    loop {
        match rx.recv() {
            Ok(Some(Notification::Forward(forward))) => {
                let heartbeat = forward.publish.topic.ends_with(b"/hb");
                if heartbeat && tx.capacity() <= reserved {
                    stats.console_queue_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                let inbound = Inbound::new(topic, forward.publish.payload);
                match tx.try_send(inbound) {
                    Ok(()) => {
                        stats.console_received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        stats.console_queue_dropped.fetch_add(1, Ordering::Relaxed);
                        stats
                            .console_queue_dropped_other
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Ok(Some(Notification::Unschedule)) => {
                // Without this the router stops scheduling the link and it stalls.
                if rx.ready().is_err() {
                    return;
                }
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "console link to the broker router closed");
                return;
            }
        }
    }
}

/// rumqttd binds its own listener and never reports the port, so a port-0 request is
/// resolved by binding a free port here first and handing that to rumqttd.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })?;
    Ok(bound)
}

fn wait_until_accepting(addr: SocketAddr, waited: Duration) -> Result<(), BrokerError> {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let deadline = Instant::now() + waited;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotReady { addr, waited })
}
