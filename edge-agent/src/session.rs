//! The MQTT session: connect, pin the console key, status and birth, heartbeats, queue
//! drain, reconnect with backoff, and the graceful goodbye. The agent side of
//! docs/wire.md, "Session protocol".
//!
//! One task owns everything: the rumqttc event loop, the probe, the storage. It waits on
//! the event loop, the heartbeat clock, requests from the [`crate::AgentHandle`] and the
//! shutdown token in a single `select!`, and never awaits anything slow in between, so the
//! event loop is always polled. Publishes use `try_publish`: rumqttc's `publish().await`
//! blocks while disconnected, and a full request channel must cost a heartbeat, not a hang.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_codec::{
    open_console, open_console_state_pinning, open_console_state_self_signed, seal_agent,
    sign_enroll_request, AgentId, AgentMessage, Birth, Channel, Command, CommandAction,
    CommandOutcome, CommandResult, ConsoleMessage, Deadband, EnrollDecision, EnrollRequest,
    EnrollToken, Event, EventLevel, Identity, MacKey, PublicKey, Status, Topics,
};
use edgefleet_config::MqttUrl;
use rand::{Rng, SeedableRng};
use rumqttc::{
    AsyncClient, ConnectReturnCode, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::enrollment::{EnrollState, Enrollment, EnrollmentFile};
use crate::heartbeat::{Heartbeats, Unconfirmed};
use crate::identity::{hex, ConsolePin};
use crate::probe::Probe;
use crate::queue::{Delivery, Receipts, Tag};
use crate::service::ServiceManager;
use crate::state::Storage;
use crate::status::{now_ms, AgentStatusSnapshot};

/// Largest MQTT packet in either direction (docs/wire.md: `MAX_PAYLOAD`).
pub const MAX_PACKET: usize = 64 * 1024;
/// How many queued items may await their PUBACK at once.
const QUEUE_WINDOW: usize = 16;
/// rumqttc's deadline for the TCP + TLS + CONNECT/CONNACK handshake and for each write
/// (its `connection_timeout`, 5 s by default). At 64 kbit/s and 600 ms round trips the TLS
/// handshake alone takes seconds and a 64 KiB message takes 8 s to write, and an agent
/// that gives up on a connect the broker later completes leaves a will behind (a false
/// offline). A dead link is still closed by `TCP_USER_TIMEOUT` and the keepalive.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an acknowledged event waits for the console's receipt before the queue is
/// read from the start again (a console that crashed between the broker's PUBACK and its
/// write never sends one). A reconnect or a new console epoch resends at once.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Capacity of rumqttc's request channel.
const CLIENT_REQUESTS: usize = 128;
/// Longest event message kept; longer ones are cut (a sealed payload must fit a packet).
pub const MAX_EVENT_MESSAGE: usize = 16 * 1024;
/// Longest event kind kept.
pub const MAX_EVENT_KIND: usize = 64;
/// How long the goodbye waits for its PUBACK, and then for DISCONNECT to be written.
const GOODBYE_ACK: Duration = Duration::from_secs(1);
/// Full inventory snapshots on the console's request are at most this frequent.
const RESYNC_MIN_GAP: Duration = Duration::from_secs(30);
const GOODBYE_DISCONNECT: Duration = Duration::from_millis(500);
/// How often a pending agent asks the console again.
pub const ENROLL_RETRY: Duration = Duration::from_secs(30);
/// How long a restarted app gets before `is-active` decides success.
pub const RESTART_SETTLE: Duration = Duration::from_millis(500);
/// How long an agent the console rejected waits before it tries again (jittered up to 2x).
pub const REJECTED_RETRY: Duration = Duration::from_secs(60);
/// The range of heartbeat intervals the console may push.
pub const MIN_PUSHED_INTERVAL_S: u32 = 1;
pub const MAX_PUSHED_INTERVAL_S: u32 = 3600;

/// Everything one session needs, already loaded: the lower-level way to start an agent
/// ([`crate::spawn_session`]), used by the simulator to share one database among many
/// agents. [`crate::spawn`] builds this from an `AgentConfig`.
pub struct SessionConfig {
    pub identity: Identity,
    /// Tried in order, one per connection attempt.
    pub urls: Vec<MqttUrl>,
    /// PEM CA for `mqtts://` URLs.
    pub ca_file: Option<PathBuf>,
    /// Pins the console key on first contact (docs/wire.md, "Console key pinning").
    pub token: Option<EnrollToken>,
    pub heartbeat_interval: Duration,
    /// While offline, one history sample is queued this often (`history_interval`).
    pub history_interval: Duration,
    pub keepalive: Duration,
    pub topics: Topics,
    pub storage: Storage,
    pub pin: ConsolePin,
    /// The enrollment state file (`enrollment.json`).
    pub enrollment: EnrollmentFile,
    pub probe: Box<dyn Probe>,
    /// Managed apps, from the agent config (or the simulator's).
    pub apps: Vec<crate::service::ManagedApp>,
    /// How app commands act on the OS.
    pub services: std::sync::Arc<dyn ServiceManager>,
    /// Where update-app keeps (partial) downloads.
    pub downloads: PathBuf,
    /// Size caps on update-app artifacts.
    pub update_limits: crate::update::Limits,
    /// Whether and which scripts `run-script` may run (the local admin's decision).
    pub scripts: crate::script::ScriptPolicy,
    /// Where the software inventory comes from (`None`: no inventory at all).
    pub collector: Option<std::sync::Arc<dyn crate::inventory::Collector>>,
    pub inventory_interval: Duration,
    /// The agent's own labels, reported in every birth.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("agent", &self.identity.agent_id())
            .field("urls", &self.urls)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("history_interval", &self.history_interval)
            .finish_non_exhaustive()
    }
}

/// Requests from the handle to the running session.
#[derive(Debug)]
pub(crate) enum Request {
    Event {
        level: EventLevel,
        kind: String,
        message: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Result {
        command_id: [u8; 16],
        outcome: CommandOutcome,
        message: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    HeartbeatNow,
    /// A command step, from a task running the command.
    Progress {
        command_id: [u8; 16],
        step: String,
        pct: Option<u8>,
    },
    /// A scan finished (off the session task).
    Scanned(Result<crate::inventory::Scan, String>),
}

/// How one connection ended.
enum End {
    Shutdown,
    /// The console key was just pinned: reconnect at once, now with a sealed last-will.
    Pinned,
    /// The console rejected this agent (signed): wait [`REJECTED_RETRY`], then try again.
    Rejected(String),
    Lost(String),
}

/// What became of a publish request.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Yes,
    /// Not now: no MAC key yet, or the client's request channel is full.
    NotNow,
    /// Can never be sent: the sealed message does not fit a packet.
    TooLarge,
}

/// One MQTT connection's state.
struct Link {
    client: AsyncClient,
    mac: Option<MacKey>,
    url: String,
    bd_seq: u64,
    seq: u64,
    delivery: Delivery,
    /// Acknowledged events waiting for the console's receipt.
    receipts: Receipts,
    /// The console state said offline (its last-will): no timed resends meanwhile, since
    /// an external broker queues them for the console's session, and it comes back with a
    /// new epoch, which resends anyway.
    console_down: bool,
    /// The console epoch seen on this connection.
    epoch: Option<u64>,
    connected: bool,
    /// The console approved this agent: telemetry may flow.
    approved: bool,
    /// When a pending agent sends its next enrollment request.
    enroll_due: Option<Instant>,
    /// When the broker last sent anything on this connection.
    last_heard: Instant,
}

impl Link {
    fn can_send(&self) -> bool {
        self.connected && self.mac.is_some() && self.approved
    }

    /// Passes an event loop result through, noting when the broker last sent anything.
    fn note_heard<T>(&mut self, event: Result<rumqttc::Event, T>) -> Result<rumqttc::Event, T> {
        if let Ok(rumqttc::Event::Incoming(_)) = &event {
            self.last_heard = Instant::now();
        }
        event
    }
}

pub(crate) struct Session {
    cfg: SessionConfig,
    id: AgentId,
    requests: mpsc::Receiver<Request>,
    /// For tasks that run commands and report back through the same queue.
    requests_tx: mpsc::Sender<Request>,
    status: watch::Sender<AgentStatusSnapshot>,
    heartbeats: Heartbeats,
    backoff: Backoff,
    rng: rand::rngs::StdRng,
    pinned: Option<PublicKey>,
    enrollment: Option<Enrollment>,
    /// The managed apps' status and version, polled off this task.
    app_watch: crate::service::AppWatch,
    /// Stops the app poller when the session ends.
    _app_watch_stop: tokio_util::sync::DropGuard,
    inventory: InventoryState,
    /// Live heartbeats not yet shown to have reached the broker.
    unconfirmed: Unconfirmed,
}

/// The session's inventory bookkeeping around the persisted [`crate::inventory::SyncState`].
#[derive(Debug)]
struct InventoryState {
    sync: crate::inventory::SyncState,
    /// When the next scheduled scan is due.
    next_scan: Instant,
    running: bool,
    /// rescan-inventory commands answered when the running (or next) scan ends.
    waiting: Vec<[u8; 16]>,
    last_resync: Option<Instant>,
    /// The acknowledged digest the last heartbeat carried.
    reported: Option<[u8; 8]>,
    /// The last collector error, reported once per distinct error.
    last_error: Option<String>,
}

impl Session {
    pub(crate) fn new(
        cfg: SessionConfig,
        requests: mpsc::Receiver<Request>,
        requests_tx: mpsc::Sender<Request>,
        status: watch::Sender<AgentStatusSnapshot>,
        pinned: Option<PublicKey>,
    ) -> Session {
        let id = cfg.identity.agent_id();
        // An interval the console pushed outlives restarts; the config's is the fallback.
        let interval = cfg
            .storage
            .interval_override()
            .map_or(cfg.heartbeat_interval, |s| Duration::from_secs(s.into()));
        let heartbeats = Heartbeats::new(
            interval,
            cfg.history_interval,
            Deadband::default(),
            Instant::now(),
        );
        let enrollment = cfg.enrollment.load();
        status.send_modify(|s| {
            s.agent_id = id.to_string();
            s.console_key = pinned.map(|k| hex(&k.fingerprint()));
            s.bd_seq = cfg.storage.bd_seq();
            s.queue_depth = cfg.storage.queue.len();
            s.queue_bytes = cfg.storage.queue.bytes();
            s.enrollment = enrollment.as_ref().map(|e| e.state);
        });
        let stop = CancellationToken::new();
        let app_watch = crate::service::AppWatch::spawn(
            cfg.services.clone(),
            cfg.apps.clone(),
            cfg.heartbeat_interval
                .clamp(Duration::from_secs(5), Duration::from_secs(60)),
            stop.clone(),
        );
        let inventory = InventoryState {
            sync: cfg.storage.inventory(),
            next_scan: Instant::now(),
            running: false,
            waiting: Vec::new(),
            last_resync: None,
            reported: None,
            last_error: None,
        };
        Session {
            inventory,
            unconfirmed: Unconfirmed::default(),
            cfg,
            id,
            requests,
            requests_tx,
            status,
            heartbeats,
            backoff: Backoff::default(),
            rng: rand::rngs::StdRng::from_entropy(),
            pinned,
            enrollment,
            app_watch,
            _app_watch_stop: stop.drop_guard(),
        }
    }

    /// Runs until `shutdown` is cancelled (or every handle is gone), reconnecting forever.
    #[tracing::instrument(name = "agent", skip_all, fields(agent.id = %self.id))]
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        for app in &self.cfg.apps {
            tokio::spawn(recover_interrupted_update(
                self.cfg.services.clone(),
                self.requests_tx.clone(),
                app.clone(),
            ));
        }
        let mut attempt = 0usize;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let url = self.cfg.urls[attempt % self.cfg.urls.len()].clone();
            let url_text = format!(
                "{}://{}:{}",
                if url.tls { "mqtts" } else { "mqtt" },
                url.host,
                url.port
            );
            let end = match self.cfg.storage.next_bd_seq() {
                Ok(bd_seq) => {
                    self.status.send_modify(|s| {
                        s.console_url = url_text.clone();
                        s.bd_seq = bd_seq;
                    });
                    match self.connect(&url, bd_seq) {
                        Ok((client, eventloop, mac)) => {
                            let link = Link {
                                client,
                                mac,
                                url: url_text.clone(),
                                bd_seq,
                                // The last-will is sealed with seq 0 at connect time;
                                // everything this connection publishes comes after it.
                                seq: 1,
                                delivery: Delivery::new(),
                                receipts: Receipts::default(),
                                console_down: false,
                                epoch: None,
                                connected: false,
                                approved: self.approved(),
                                enroll_due: None,
                                last_heard: Instant::now(),
                            };
                            self.connection(link, eventloop, &shutdown).await
                        }
                        Err(e) => End::Lost(e),
                    }
                }
                Err(e) => End::Lost(format!("cannot persist bd_seq: {e}")),
            };
            self.heartbeats.disconnected();
            self.requeue_unconfirmed();
            self.status.send_modify(|s| s.connected = false);
            match end {
                End::Shutdown => return Ok(()),
                End::Pinned => continue,
                End::Rejected(reason) => {
                    let delay = REJECTED_RETRY
                        + Duration::from_millis(self.rng.gen_range(
                            0..=u64::try_from(REJECTED_RETRY.as_millis()).unwrap_or(u64::MAX),
                        ));
                    tracing::error!(
                        %reason,
                        retry_in_s = delay.as_secs(),
                        "the console rejected this agent; disconnected. An operator must resolve it in the console (approve, un-revoke, or delete the conflicting host)"
                    );
                    attempt = attempt.wrapping_add(1);
                    if self.wait_offline(delay, &shutdown).await {
                        return Ok(());
                    }
                }
                End::Lost(error) => {
                    let delay = self.backoff.next_delay(&mut self.rng);
                    tracing::warn!(
                        attempt = self.backoff.attempt(),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        url = %url_text,
                        %error,
                        "no connection to the console; retrying"
                    );
                    attempt = attempt.wrapping_add(1);
                    if self.wait_offline(delay, &shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn connect(
        &self,
        url: &MqttUrl,
        bd_seq: u64,
    ) -> Result<(AsyncClient, EventLoop, Option<MacKey>), String> {
        // A fresh client id per connection: rumqttd looks wills up by client id, so a
        // takeover by the same id can publish or lose the *new* connection's will.
        let mut opts = MqttOptions::new(client_id(&self.id, bd_seq), url.host.clone(), url.port);
        opts.set_keep_alive(self.cfg.keepalive.max(Duration::from_secs(1)));
        opts.set_clean_session(true);
        opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        // Until the console has approved this agent, the username carries the token claim:
        // the console lets an unknown key in only with a claim for a live token.
        let claim = if self.approved() {
            None
        } else {
            self.cfg.token.as_ref()
        };
        opts.set_credentials(
            edgefleet_codec::connect::username(&self.cfg.identity, claim),
            edgefleet_codec::connect::password(&self.cfg.identity, now_ms() / 1000),
        );
        if url.tls {
            let Some(path) = &self.cfg.ca_file else {
                return Err(
                    "mqtts:// needs ca_file: the CA that signs the console's certificate".into(),
                );
            };
            let ca = std::fs::read(path)
                .map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
            // rumqttc builds its rustls config with the process-wide crypto provider. The
            // agent ships ring; a build that also links aws-lc-rs (the agent built in one
            // cargo invocation with the console, as the tests do) has two providers
            // compiled in, and rustls then refuses to pick one by itself.
            let _ = rustls::crypto::ring::default_provider().install_default();
            // rumqttc checks the certificate against the URL host (the server name).
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            }));
        }
        let mac = match &self.pinned {
            Some(key) => Some(
                MacKey::derive_agent(&self.cfg.identity, key)
                    .map_err(|e| format!("the pinned console key is unusable: {e}"))?,
            ),
            None => None,
        };
        // Without the console key the will cannot be sealed: the first contact connects
        // without one, pins the key and reconnects (docs/wire.md).
        if let Some(mac) = &mac {
            let will = AgentMessage::Status(Status {
                bd_seq,
                seq: 0,
                online: false,
                clean: false,
            });
            opts.set_last_will(LastWill::new(
                self.cfg.topics.agent(&self.id, Channel::Status),
                seal_agent(&will, &self.id, mac),
                QoS::AtLeastOnce,
                true,
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, CLIENT_REQUESTS);
        // A dead network (no RST, no FIN) shows first in TCP: close the connection once
        // sent data has waited two keepalives for an ACK, between 20 and 60 s, not after
        // the kernel's ~15 min of retries. A link that ACKs but delivers nothing (a hung
        // broker) is caught by rumqttc's ping: due after a keepalive with nothing received
        // (no heartbeat PUBACK either), fatal when unanswered one keepalive later. There is
        // no shorter deadline on the heartbeat's PUBACK on purpose: a broker that is slow
        // under load acknowledges late, and agents that dropped their links for it would
        // only add reconnects to its load.
        eventloop
            .network_options
            .set_tcp_user_timeout(
                (self.cfg.keepalive * 2).clamp(Duration::from_secs(20), Duration::from_secs(60)),
            )
            .set_connection_timeout(NETWORK_TIMEOUT.as_secs());
        Ok((client, eventloop, mac))
    }

    async fn connection(
        &mut self,
        mut link: Link,
        mut eventloop: EventLoop,
        shutdown: &CancellationToken,
    ) -> End {
        loop {
            let live = self.heartbeats.live_deadline();
            let history = self.heartbeats.history_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if link.connected {
                        self.goodbye(&mut link, &mut eventloop).await;
                    }
                    return End::Shutdown;
                }
                // Requests wait for the ConnAck for the same reason (see below).
                req = self.requests.recv(), if link.connected => match req {
                    Some(req) => self.request(req, Some(&mut link)),
                    None => {
                        if link.connected {
                            self.goodbye(&mut link, &mut eventloop).await;
                        }
                        return End::Shutdown;
                    }
                },
                _ = at(live), if link.approved => self.live_heartbeat(&mut link, false),
                // An app changed state or version: tell the console now, not at the next tick.
                // Only once connected: a branch that wins while rumqttc is still connecting
                // drops its poll mid-handshake, and rumqttc then reconnects with the same
                // client id (and so the same will sequence), which the console must refuse
                // as a replay.
                _ = self.app_watch.changed(), if link.can_send() => self.live_heartbeat(&mut link, false),
                _ = tokio::time::sleep_until(self.inventory.next_scan),
                    if link.can_send() && !self.inventory.running && self.cfg.collector.is_some() => self.start_scan(),
                _ = at(link.enroll_due) => self.request_enrollment(&mut link),
                // Connected but not yet able to send (pinning, enrollment): keep history.
                // Not during the handshake: backoff's `wait_offline` samples around it.
                _ = tokio::time::sleep_until(history), if link.connected && !link.can_send() => self.history_sample(),
                event = eventloop.poll() => match link.note_heard(event) {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != ConnectReturnCode::Success {
                            return End::Lost(format!("the console refused the connection ({:?}): {}", ack.code, self.refusal_hint(&link)));
                        }
                        if let Err(e) = self.connected(&mut link) {
                            return End::Lost(e);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == self.cfg.topics.console_state() {
                            if let Some(end) = self.console_state(&mut link, &p.payload) {
                                disconnect(&link.client, &mut eventloop).await;
                                return end;
                            }
                        } else if p.topic == self.cfg.topics.enroll_reply(&self.id) {
                            if let Some(end) = self.enroll_response(&mut link, &p.payload) {
                                disconnect(&link.client, &mut eventloop).await;
                                return end;
                            }
                        } else if p.topic == self.cfg.topics.agent(&self.id, Channel::Command) {
                            self.command(&mut link, &p.payload);
                        } else {
                            tracing::debug!(topic = %p.topic, "ignoring a message on an unexpected topic");
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => link.delivery.outgoing(pkid),
                    Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => self.acked(&mut link, ack.pkid),
                    Ok(_) => {}
                    Err(e) => {
                        let text = e.to_string();
                        // The embedded broker (rumqttd) refuses a connect by closing the
                        // connection without a CONNACK; Mosquitto answers CONNACK 5.
                        let closed = text.contains("closed by peer") || text.contains("reset by peer");
                        if !link.connected && closed {
                            return End::Lost(format!("the console refused the connection (closed before CONNACK: {text}): {}", self.refusal_hint(&link)));
                        }
                        return End::Lost(text);
                    }
                },
            }
        }
    }

    /// What to tell the operator when the console refuses this agent at connect.
    fn refusal_hint(&self, link: &Link) -> &'static str {
        if link.approved {
            "the console does not accept this agent (revoked, or the clocks are more than 5 min apart)"
        } else if self.cfg.token.is_some() {
            "the enrollment token is unknown to this console, expired, used up, revoked, or its secret is wrong, or this agent was revoked; ask the operator for a new token (`edgefleet tokens create`)"
        } else {
            "this agent is not enrolled: set `token` in the agent config (an operator creates one with `edgefleet tokens create`)"
        }
    }

    /// On every CONNACK: subscribe again (rumqttc does not restore subscriptions), then
    /// retained online status, birth, a keyframe heartbeat and the queue drain.
    fn connected(&mut self, link: &mut Link) -> Result<(), String> {
        link.connected = true;
        self.backoff.reset();
        tracing::info!(bd_seq = link.bd_seq, url = %link.url, pinned = link.mac.is_some(), "connected");
        for filter in self.cfg.topics.agent_filters(&self.id) {
            link.client
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| format!("subscribing: {e}"))?;
        }
        if link.mac.is_some() {
            if link.approved {
                self.announce(link);
                self.heartbeats.connected(Instant::now());
                self.resend_unacknowledged_inventory();
                self.pump_queue(link);
            } else {
                self.request_enrollment(link);
            }
        }
        self.status.send_modify(|s| s.connected = true);
        Ok(())
    }

    /// Stamps, seals and hands a message to the client.
    fn publish(
        &mut self,
        link: &mut Link,
        msg: &mut AgentMessage,
        channel: Channel,
        qos: QoS,
        retain: bool,
        tag: Tag,
    ) -> Sent {
        let Some(mac) = &link.mac else {
            return Sent::NotNow;
        };
        msg.stamp(link.bd_seq, link.seq);
        let payload = seal_agent(msg, &self.id, mac);
        let topic = self.cfg.topics.agent(&self.id, channel);
        // Fixed header, topic length and packet id: well under 16 bytes beyond these.
        if payload.len() + topic.len() + 16 > MAX_PACKET {
            tracing::error!(
                kind = msg.kind().name(),
                bytes = payload.len(),
                "message too large for one packet"
            );
            return Sent::TooLarge;
        }
        match link.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                link.seq += 1;
                link.delivery.requested(tag);
                Sent::Yes
            }
            Err(e) => {
                tracing::warn!(kind = msg.kind().name(), error = %e, "the MQTT client is busy; publish deferred");
                Sent::NotNow
            }
        }
    }

    /// Retained online status, then the birth.
    fn announce(&mut self, link: &mut Link) {
        let mut status = AgentMessage::Status(Status {
            bd_seq: link.bd_seq,
            seq: 0,
            online: true,
            clean: false,
        });
        self.publish(
            link,
            &mut status,
            Channel::Status,
            QoS::AtLeastOnce,
            true,
            Tag::Plain,
        );
        let facts = self.cfg.probe.facts();
        let apps = self.app_states();
        let mut birth = AgentMessage::Birth(Birth {
            bd_seq: link.bd_seq,
            seq: 0,
            hostname: facts.hostname,
            os: facts.os,
            kernel: facts.kernel,
            arch: facts.arch,
            ips: facts.ips,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            boot_time: facts.boot_time,
            apps,
            inventory_digest: self.inventory.sync.acked,
            heartbeat_interval_s: u32::try_from(self.heartbeats.interval().as_secs().max(1))
                .unwrap_or(u32::MAX),
            inventory_interval_s: self
                .cfg
                .collector
                .is_some()
                .then_some(self.cfg.inventory_interval.as_secs()),
            labels: self.cfg.labels.clone(),
        });
        self.publish(
            link,
            &mut birth,
            Channel::Birth,
            QoS::AtLeastOnce,
            false,
            Tag::Plain,
        );
    }

    fn live_heartbeat(&mut self, link: &mut Link, keyframe: bool) {
        let mut vitals = self.cfg.probe.vitals();
        let apps = self.app_watch.states();
        vitals.apps_digest = edgefleet_codec::apps_digest(&apps);
        let mut hb = self.heartbeats.live(&vitals, Instant::now(), keyframe);
        // The app list rides with its digest: on keyframes and whenever it changed.
        if hb.apps_digest.is_some() && !apps.is_empty() {
            hb.apps = Some(apps);
        }
        let acked = self.inventory.sync.acked;
        if acked.is_some() && (hb.apps_digest.is_some() || acked != self.inventory.reported) {
            hb.inventory_digest = acked;
            self.inventory.reported = acked;
        }
        let mut msg = AgentMessage::Heartbeat(hb);
        let now = Instant::now();
        let probe = self.unconfirmed.wants_probe(
            now,
            link.last_heard,
            self.heartbeats.interval(),
            self.cfg.keepalive,
        );
        let (qos, tag) = if probe {
            (QoS::AtLeastOnce, Tag::Probe(self.unconfirmed.next_number()))
        } else {
            (QoS::AtMostOnce, Tag::Plain)
        };
        if self.publish(link, &mut msg, Channel::Heartbeat, qos, false, tag) == Sent::Yes {
            let n = self.unconfirmed.sent(&vitals, now_ms() / 1000);
            if probe {
                self.unconfirmed.probing(n);
            }
            self.status
                .send_modify(|s| s.last_heartbeat = Some(now_ms()));
        }
        if !link.console_down && link.receipts.overdue(Instant::now(), RECEIPT_TIMEOUT) {
            self.resend_unreceipted(link, "no receipt in time");
        }
    }

    /// The connection ended: live heartbeats the broker never acknowledged go into the
    /// queue as history (stamped with when they were sent), so a link that swallowed them
    /// loses nothing. Some may have arrived; the console then holds two samples a second
    /// or so apart.
    fn requeue_unconfirmed(&mut self) {
        let samples = self.unconfirmed.take();
        if samples.is_empty() {
            return;
        }
        tracing::info!(
            heartbeats = samples.len(),
            "queued the heartbeats the broker did not acknowledge before the link ended"
        );
        let n = samples.len() as u64;
        for hb in samples {
            // A failure is logged by push.
            let _ = self.push(AgentMessage::Heartbeat(hb));
        }
        self.status.send_modify(|s| s.requeued_heartbeats += n);
        self.update_queue_status();
    }

    /// One full heartbeat into the queue, stamped with the time, while offline.
    fn history_sample(&mut self) {
        let mut vitals = self.cfg.probe.vitals();
        vitals.apps_digest = edgefleet_codec::apps_digest(&self.app_watch.states());
        let hb = self
            .heartbeats
            .history(&vitals, Instant::now(), now_ms() / 1000);
        // A failure is logged by push; a lost history sample is not worth more.
        let _ = self.push(AgentMessage::Heartbeat(hb));
    }

    /// Sends queued items in order, keeping at most [`QUEUE_WINDOW`] awaiting PUBACK.
    fn pump_queue(&mut self, link: &mut Link) {
        if !link.can_send() {
            return;
        }
        while link.delivery.queued_in_flight() < QUEUE_WINDOW {
            let room = QUEUE_WINDOW - link.delivery.queued_in_flight();
            let items = match self
                .cfg
                .storage
                .queue
                .peek_after(link.delivery.cursor(), room)
            {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    return;
                }
            };
            if items.is_empty() {
                return;
            }
            for (key, mut msg) in items {
                let channel = channel_of(&msg);
                let tag = match &msg {
                    AgentMessage::Event(e) => Tag::Event {
                        key,
                        event_id: e.event_id,
                    },
                    _ => Tag::Queued(key),
                };
                match self.publish(link, &mut msg, channel, QoS::AtLeastOnce, false, tag) {
                    Sent::Yes => {}
                    Sent::NotNow => return,
                    Sent::TooLarge => {
                        // It would block every item behind it forever.
                        tracing::error!(
                            queue.key = key,
                            kind = msg.kind().name(),
                            "dropping a queue item that cannot be sent"
                        );
                        if let Err(e) = self.cfg.storage.queue.remove(key) {
                            tracing::error!(error = %e, "cannot remove a queue item");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn acked(&mut self, link: &mut Link, pkid: u16) {
        let done = match link.delivery.acked(pkid) {
            Some(Tag::Probe(n)) => {
                self.unconfirmed.confirmed(n);
                return;
            }
            Some(Tag::Queued(key)) => Some(key),
            Some(Tag::Event { key, event_id }) => {
                link.receipts.acked(key, event_id, Instant::now())
            }
            _ => return,
        };
        self.forget(done);
        self.pump_queue(link);
        self.update_queue_status_with(link);
    }

    /// Removes delivered queue items.
    fn forget(&self, keys: impl IntoIterator<Item = u64>) {
        for key in keys {
            if let Err(e) = self.cfg.storage.queue.remove(key) {
                tracing::error!(queue.key = key, error = %e, "cannot remove a delivered queue item; it will be sent again");
            }
        }
    }

    /// The console stored these events: they leave the queue.
    fn event_receipt(&mut self, link: &mut Link, receipt: &edgefleet_codec::EventReceipt) {
        let keys = link.receipts.receipted(&receipt.event_ids);
        tracing::debug!(
            receipted = receipt.event_ids.len(),
            removed = keys.len(),
            "event receipt"
        );
        self.forget(keys);
        self.update_queue_status_with(link);
    }

    /// Events acknowledged by the broker but not receipted by the console in
    /// [`RECEIPT_TIMEOUT`]: read the queue from the start again, so they go out once more.
    fn resend_unreceipted(&mut self, link: &mut Link, why: &'static str) {
        if link.receipts.is_empty() {
            return;
        }
        tracing::info!(
            events = link.receipts.len(),
            why,
            "sending events again that the console has not confirmed storing"
        );
        link.receipts.resent(Instant::now());
        link.delivery.rewind();
        self.pump_queue(link);
    }

    /// The queue figures and the unreceipted count, in one update (a reader never sees
    /// one without the other).
    fn update_queue_status_with(&self, link: &Link) {
        let unreceipted = link.receipts.len();
        let queue = &self.cfg.storage.queue;
        self.status.send_modify(|s| {
            s.unreceipted = unreceipted;
            s.queue_depth = queue.len();
            s.queue_bytes = queue.bytes();
        });
    }

    fn update_queue_status(&self) {
        let queue = &self.cfg.storage.queue;
        self.status.send_modify(|s| {
            s.queue_depth = queue.len();
            s.queue_bytes = queue.bytes();
        });
    }

    fn push(&mut self, msg: AgentMessage) -> Result<(), String> {
        let kind = msg.kind().name();
        if let AgentMessage::CommandResult(r) = &msg {
            // Before the queue push, whose flush then covers it too.
            if let Err(e) = self.cfg.storage.remember_result(r) {
                tracing::warn!(command = %hex(&r.command_id), error = %e, "cannot keep a command result for redelivery");
            }
        }
        match self.cfg.storage.queue.push(&msg) {
            Ok(outcome) => {
                if outcome.dropped_heartbeats > 0 {
                    tracing::warn!(
                        dropped = outcome.dropped_heartbeats,
                        "queue full: dropped the oldest heartbeat samples"
                    );
                }
                if outcome.over_cap {
                    tracing::error!(
                        kind,
                        bytes = self.cfg.storage.queue.bytes(),
                        "queue over its cap with events and results alone; keeping them"
                    );
                }
                self.status.send_modify(|s| {
                    s.dropped_heartbeats += outcome.dropped_heartbeats as u64;
                    s.over_cap += u64::from(outcome.over_cap);
                });
                self.update_queue_status();
                Ok(())
            }
            Err(e) => {
                tracing::error!(kind, error = %e, "cannot queue a message");
                Err(e.to_string())
            }
        }
    }

    /// Queues an event with a fresh event id.
    fn push_event(
        &mut self,
        level: edgefleet_codec::EventLevel,
        kind: &str,
        message: &str,
    ) -> Result<u64, String> {
        let event_id = self
            .cfg
            .storage
            .next_event_id()
            .map_err(|e| format!("allocating an event id: {e}"))?;
        self.push(AgentMessage::Event(Event {
            bd_seq: 0,
            seq: 0,
            event_id,
            at_ms: now_ms(),
            level,
            kind: truncate(kind.to_string(), MAX_EVENT_KIND),
            message: truncate(message.to_string(), MAX_EVENT_MESSAGE),
        }))
        .map(|()| event_id)
    }

    /// Handles a request from the handle; events and results go through the queue.
    fn request(&mut self, req: Request, link: Option<&mut Link>) {
        match req {
            Request::Event {
                level,
                kind,
                message,
                reply,
            } => {
                let result = self.push_event(level, &kind, &message);
                let _ = reply.send(result);
            }
            Request::Result {
                command_id,
                outcome,
                message,
                reply,
            } => {
                let result = self.push(AgentMessage::CommandResult(CommandResult {
                    bd_seq: 0,
                    seq: 0,
                    command_id,
                    outcome,
                    message: truncate(message, MAX_EVENT_MESSAGE),
                    at_ms: now_ms(),
                }));
                let _ = reply.send(result);
                // A command may have restarted, reconfigured or replaced an app.
                self.app_watch.refresh();
            }
            Request::Progress {
                command_id,
                step,
                pct,
            } => {
                let _ = self.push(AgentMessage::CommandProgress(
                    edgefleet_codec::CommandProgress {
                        bd_seq: 0,
                        seq: 0,
                        command_id,
                        step,
                        pct,
                        at_ms: now_ms(),
                    },
                ));
            }
            Request::Scanned(result) => {
                self.scanned(result);
                if let Some(link) = link {
                    self.pump_queue(link);
                }
                return;
            }
            Request::HeartbeatNow => {
                if let Some(link) = link {
                    if link.can_send() {
                        self.live_heartbeat(link, true);
                    }
                }
                return;
            }
        }
        if let Some(link) = link {
            self.pump_queue(link);
        }
    }

    /// The apps birth reports: exactly the managed apps this agent acts on, with their last
    /// observed status and version, so the console offers commands for these only.
    fn app_states(&mut self) -> Vec<edgefleet_codec::AppState> {
        self.app_watch.states()
    }

    fn approved(&self) -> bool {
        self.enrollment
            .as_ref()
            .is_some_and(|e| e.state == EnrollState::Approved)
    }

    fn set_enrollment(&mut self, state: EnrollState, reason: Option<String>) {
        if self.enrollment.as_ref().map(|e| (e.state, &e.reason)) == Some((state, &reason)) {
            return;
        }
        let e = Enrollment {
            state,
            reason,
            at: now_ms(),
        };
        if let Err(err) = self.cfg.enrollment.store(&e) {
            tracing::error!(error = %format!("{err:#}"), "cannot store the enrollment state");
        }
        self.enrollment = Some(e);
        self.status.send_modify(|s| s.enrollment = Some(state));
    }

    /// Publishes a signed enrollment request (hostname, IPs, OS, key, token proof) and
    /// schedules the next one: a pending agent asks every [`ENROLL_RETRY`].
    fn request_enrollment(&mut self, link: &mut Link) {
        link.enroll_due = Some(Instant::now() + ENROLL_RETRY);
        if !link.connected {
            return;
        }
        let facts = self.cfg.probe.facts();
        let public_key = self.cfg.identity.public_key();
        let (token_id, proof) = match &self.cfg.token {
            Some(t) => (t.id.clone(), t.proof(&public_key)),
            None => (String::new(), [0; 32]),
        };
        let req = EnrollRequest {
            agent_id: self.id.to_string(),
            public_key: *public_key.as_bytes(),
            hostname: facts.hostname,
            os: facts.os,
            ips: facts.ips,
            token_id,
            proof,
            at: now_ms() / 1000,
        };
        let payload = sign_enroll_request(&req, &self.cfg.identity);
        match link.client.try_publish(
            self.cfg.topics.enroll(&self.id),
            QoS::AtLeastOnce,
            false,
            payload,
        ) {
            Ok(()) => {
                link.delivery.requested(Tag::Plain);
                tracing::info!(hostname = %req.hostname, token = %req.token_id, "sent an enrollment request");
            }
            Err(e) => tracing::warn!(error = %e, "cannot send the enrollment request now"),
        }
    }

    /// Handles a signed enrollment response. Returns how the connection ends, if it must.
    fn enroll_response(&mut self, link: &mut Link, payload: &[u8]) -> Option<End> {
        let pinned = self.pinned?;
        let response = match open_console(payload, Some(&self.id), &pinned) {
            Ok(ConsoleMessage::EnrollResponse(r)) if r.agent_id == self.id.as_str() => r,
            Ok(other) => {
                tracing::warn!(
                    kind = other.kind().name(),
                    "unexpected message on the enrollment reply topic"
                );
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "refusing an enrollment response not signed by the pinned console key");
                return None;
            }
        };
        match response.decision {
            EnrollDecision::Approved => {
                link.enroll_due = None;
                self.set_enrollment(EnrollState::Approved, None);
                if !link.approved {
                    tracing::info!("the console approved this agent; sending telemetry");
                    link.approved = true;
                    self.announce(link);
                    self.heartbeats.connected(Instant::now());
                    self.pump_queue(link);
                }
                None
            }
            EnrollDecision::Pending => {
                if link.approved {
                    tracing::warn!("the console says this agent is pending approval (it was deleted or is new to this console); telemetry stops until an operator approves it");
                    link.approved = false;
                    self.heartbeats.disconnected();
                } else if self.enrollment.as_ref().map(|e| e.state) != Some(EnrollState::Pending) {
                    tracing::info!(retry_s = ENROLL_RETRY.as_secs(), "enrolled; waiting for an operator to approve this agent (`edgefleet agents approve {}`)", self.id);
                }
                self.set_enrollment(EnrollState::Pending, None);
                if link.enroll_due.is_none() {
                    link.enroll_due = Some(Instant::now() + ENROLL_RETRY);
                }
                None
            }
            EnrollDecision::Rejected { reason } => {
                link.approved = false;
                self.set_enrollment(EnrollState::Rejected, Some(reason.clone()));
                Some(End::Rejected(reason))
            }
        }
    }

    /// A signed command: verified with the pinned key, addressed to us, not expired, and
    /// not seen before (ids are remembered in sled), then run and answered with a result.
    fn command(&mut self, link: &mut Link, payload: &[u8]) {
        let Some(pinned) = self.pinned else { return };
        let now = now_ms();
        let cmd: Command = match open_console(payload, Some(&self.id), &pinned) {
            Ok(ConsoleMessage::Command(cmd)) => cmd,
            Ok(ConsoleMessage::InventoryAck(ack)) => {
                self.inventory_ack(link, ack);
                return;
            }
            Ok(ConsoleMessage::EventReceipt(receipt)) => {
                self.event_receipt(link, &receipt);
                return;
            }
            Ok(other) => {
                self.command_rejected(
                    "wrong_kind",
                    &format!("a {} on the command topic", other.kind().name()),
                );
                return;
            }
            Err(e) => {
                self.command_rejected(e.reason(), &e.to_string());
                return;
            }
        };
        if let Err(e) = cmd.check(&self.id, now / 1000) {
            self.command_rejected(e.reason(), &e.to_string());
            return;
        }
        match self.cfg.storage.remember_command(&cmd.id) {
            Ok(true) => {}
            Ok(false) => {
                self.command_rejected(
                    "replay",
                    "a command id seen before (replayed or redelivered)",
                );
                // The console redelivers only commands it has no result for: it lost the
                // one we sent (killed after the broker acknowledged it). Send it again; a
                // console that has the result already ignores the copy.
                if let Ok(Some(result)) = self.cfg.storage.result_of(&cmd.id) {
                    tracing::info!(command = %hex(&cmd.id), "a redelivered command: sending its result again");
                    if self.push(AgentMessage::CommandResult(result)).is_ok() {
                        self.pump_queue(link);
                    }
                }
                return;
            }
            Err(e) => {
                // Without the record a replay could not be told apart: refuse rather than
                // risk running it twice.
                self.command_rejected("storage", &format!("cannot record the command id: {e}"));
                return;
            }
        }
        tracing::info!(command = %hex(&cmd.id), action = ?cmd.action, "running a command");
        let (outcome, message) = match &cmd.action {
            CommandAction::RequestHeartbeat => {
                if link.can_send() {
                    self.live_heartbeat(link, true);
                }
                (CommandOutcome::Succeeded, "heartbeat sent".to_string())
            }
            CommandAction::PushConfig { app, values } => {
                match self.cfg.apps.iter().find(|a| a.id == *app) {
                    Some(managed) if managed.config.is_some() => {
                        tokio::spawn(push_config(
                            self.cfg.services.clone(),
                            self.requests_tx.clone(),
                            cmd.id,
                            managed.clone(),
                            values.clone(),
                        ));
                        return;
                    }
                    Some(_) => (
                        CommandOutcome::Failed,
                        format!("app {app:?} has no config_path in the agent config"),
                    ),
                    None => (
                        CommandOutcome::Failed,
                        format!("no managed app {app:?} on this agent"),
                    ),
                }
            }
            CommandAction::UpdateApp {
                app,
                url,
                version,
                sha256,
            } => match self.cfg.apps.iter().find(|a| a.id == *app) {
                Some(managed) if managed.binary_dir.is_some() => {
                    tokio::spawn(update_app(
                        self.cfg.services.clone(),
                        self.requests_tx.clone(),
                        cmd.id,
                        managed.clone(),
                        UpdateSpec {
                            url: url.clone(),
                            version: version.clone(),
                            sha256: *sha256,
                            downloads: self.cfg.downloads.clone(),
                            limits: self.cfg.update_limits,
                        },
                    ));
                    return;
                }
                Some(_) => (
                    CommandOutcome::Failed,
                    format!("app {app:?} has no binary_dir in the agent config"),
                ),
                None => (
                    CommandOutcome::Failed,
                    format!("no managed app {app:?} on this agent"),
                ),
            },
            CommandAction::RestartApp { app } => {
                match self.cfg.apps.iter().find(|a| a.id == *app) {
                    Some(managed) => {
                        // Restarts take seconds: run them off the session task, which must
                        // keep polling MQTT; the outcome comes back as a request.
                        tokio::spawn(restart_app(
                            self.cfg.services.clone(),
                            self.requests_tx.clone(),
                            cmd.id,
                            app.clone(),
                            managed.unit.clone(),
                        ));
                        return;
                    }
                    None => (
                        CommandOutcome::Failed,
                        format!(
                            "no managed app {app:?} on this agent (configured: {})",
                            self.cfg
                                .apps
                                .iter()
                                .map(|a| a.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            CommandAction::SetHeartbeatInterval { seconds } => self.set_interval(*seconds),
            CommandAction::RollbackApp { app } => match self.cfg.apps.iter().find(|a| a.id == *app)
            {
                Some(managed) if managed.binary_dir.is_some() => {
                    tokio::spawn(rollback_app(
                        self.cfg.services.clone(),
                        self.requests_tx.clone(),
                        cmd.id,
                        managed.clone(),
                    ));
                    return;
                }
                Some(_) => (
                    CommandOutcome::Failed,
                    format!("app {app:?} has no binary_dir in the agent config"),
                ),
                None => (
                    CommandOutcome::Failed,
                    format!("no managed app {app:?} on this agent"),
                ),
            },
            CommandAction::RescanInventory if self.cfg.collector.is_some() => {
                self.inventory.waiting.push(cmd.id);
                self.inventory.next_scan = Instant::now();
                return;
            }
            CommandAction::RescanInventory => (
                CommandOutcome::Failed,
                "this agent collects no inventory".to_string(),
            ),
            CommandAction::RunScript { script } => match self.cfg.scripts.check(script) {
                Ok(()) => {
                    tokio::spawn(run_script(self.requests_tx.clone(), cmd.id, script.clone()));
                    return;
                }
                Err(why) => {
                    tracing::warn!(command = %hex(&cmd.id), reason = %why, "refused a script");
                    (CommandOutcome::Rejected, why)
                }
            },
        };
        let result = AgentMessage::CommandResult(CommandResult {
            bd_seq: 0,
            seq: 0,
            command_id: cmd.id,
            outcome,
            message,
            at_ms: now_ms(),
        });
        if self.push(result).is_ok() {
            self.pump_queue(link);
        }
        // The console times presence out by the interval in the birth: announce the new
        // one (after the result, so the birth's redelivery finds the command finished).
        if matches!(cmd.action, CommandAction::SetHeartbeatInterval { .. })
            && outcome == CommandOutcome::Succeeded
            && link.can_send()
        {
            self.announce(link);
        }
    }

    /// `set-heartbeat-interval`: 0 goes back to the configured interval.
    fn set_interval(&mut self, seconds: u32) -> (CommandOutcome, String) {
        if seconds != 0 && !(MIN_PUSHED_INTERVAL_S..=MAX_PUSHED_INTERVAL_S).contains(&seconds) {
            return (
                CommandOutcome::Rejected,
                format!("heartbeat interval {seconds} s is outside {MIN_PUSHED_INTERVAL_S}-{MAX_PUSHED_INTERVAL_S} s"),
            );
        }
        if let Err(e) = self.cfg.storage.set_interval_override(seconds) {
            return (
                CommandOutcome::Failed,
                format!("cannot store the interval: {e}"),
            );
        }
        let interval = if seconds == 0 {
            self.cfg.heartbeat_interval
        } else {
            Duration::from_secs(seconds.into())
        };
        self.heartbeats.set_interval(interval, Instant::now());
        tracing::info!(
            seconds = interval.as_secs(),
            "heartbeat interval set by the console"
        );
        (
            CommandOutcome::Succeeded,
            format!("heartbeat interval {} s", interval.as_secs()),
        )
    }

    /// Runs the collector off the session task; the result comes back as a request.
    fn start_scan(&mut self) {
        let Some(collector) = self.cfg.collector.clone() else {
            return;
        };
        self.inventory.running = true;
        let requests = self.requests_tx.clone();
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || collector.scan())
                .await
                .unwrap_or_else(|e| Err(format!("the scan panicked: {e}")));
            let _ = requests.send(Request::Scanned(result)).await;
        });
    }

    fn scanned(&mut self, result: Result<crate::inventory::Scan, String>) {
        use crate::inventory::Outgoing;
        self.inventory.running = false;
        self.inventory.next_scan = Instant::now() + self.cfg.inventory_interval;
        let (outcome, message) = match result {
            Ok(scan) => {
                self.inventory.last_error = None;
                let (count, source) = (scan.packages.len(), scan.source.clone());
                let what = match self.inventory.sync.scanned(scan) {
                    Outgoing::Delta(d) if d.base_digest == d.new_digest => {
                        let _ = self.push(AgentMessage::InventoryDelta(d));
                        "unchanged".to_string()
                    }
                    Outgoing::Delta(d) => {
                        let text = format!(
                            "sent a delta: {} added, {} removed, {} changed",
                            d.added.len(),
                            d.removed.len(),
                            d.changed.len()
                        );
                        let _ = self.push(AgentMessage::InventoryDelta(d));
                        text
                    }
                    Outgoing::Snapshot(chunks) => {
                        let n = chunks.len();
                        for c in chunks {
                            let _ = self.push(AgentMessage::InventoryChunk(c));
                        }
                        format!("sent a full snapshot in {n} chunks")
                    }
                };
                self.save_inventory();
                tracing::info!(packages = count, %source, %what, "inventory scanned");
                (
                    CommandOutcome::Succeeded,
                    format!("{count} packages ({source}): {what}"),
                )
            }
            Err(e) => {
                if self.inventory.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "no software inventory");
                    let _ = self.push_event(
                        edgefleet_codec::EventLevel::Warn,
                        "inventory_unavailable",
                        &e,
                    );
                    self.inventory.last_error = Some(e.clone());
                }
                (
                    CommandOutcome::Failed,
                    format!("inventory scan failed: {e}"),
                )
            }
        };
        for id in std::mem::take(&mut self.inventory.waiting) {
            let _ = self.push(AgentMessage::CommandResult(CommandResult {
                bd_seq: 0,
                seq: 0,
                command_id: id,
                outcome,
                message: truncate(message.clone(), MAX_EVENT_MESSAGE),
                at_ms: now_ms(),
            }));
        }
    }

    /// The console's acknowledgement, or its request for a full snapshot.
    fn inventory_ack(&mut self, link: &mut Link, ack: edgefleet_codec::InventoryAck) {
        match ack.digest {
            Some(d) => {
                self.inventory.sync.acked(d);
                self.save_inventory();
            }
            None => {
                let fresh = (now_ms() / 1000).abs_diff(ack.at) < 600;
                let recent = self
                    .inventory
                    .last_resync
                    .is_some_and(|t| t.elapsed() < RESYNC_MIN_GAP);
                if !fresh || recent {
                    tracing::debug!(fresh, recent, "ignoring a request for a full inventory");
                    return;
                }
                self.inventory.last_resync = Some(Instant::now());
                match self.inventory.sync.resync() {
                    Some(chunks) => {
                        tracing::info!(
                            chunks = chunks.len(),
                            "the console asked for the full inventory"
                        );
                        for c in chunks {
                            let _ = self.push(AgentMessage::InventoryChunk(c));
                        }
                        self.save_inventory();
                        self.pump_queue(link);
                    }
                    None => self.inventory.next_scan = Instant::now(),
                }
            }
        }
    }

    /// The console never acknowledged what it was last sent, and nothing is left in the
    /// queue: the broker took it but the console lost it (it crashed before applying it).
    /// Send the whole inventory again rather than wait for the next scheduled scan.
    fn resend_unacknowledged_inventory(&mut self) {
        let sync = &self.inventory.sync;
        let unacked = sync
            .sent
            .as_ref()
            .is_some_and(|s| Some(s.digest) != sync.acked);
        if !unacked || !self.cfg.storage.queue.is_empty() {
            return;
        }
        if self
            .inventory
            .last_resync
            .is_some_and(|t| t.elapsed() < RESYNC_MIN_GAP)
        {
            return;
        }
        self.inventory.last_resync = Some(Instant::now());
        if let Some(chunks) = self.inventory.sync.resync() {
            tracing::info!(
                chunks = chunks.len(),
                "the console never acknowledged the inventory; sending it again"
            );
            for c in chunks {
                let _ = self.push(AgentMessage::InventoryChunk(c));
            }
            self.save_inventory();
        }
    }

    fn save_inventory(&self) {
        if let Err(e) = self.cfg.storage.set_inventory(&self.inventory.sync) {
            tracing::error!(error = %e, "cannot store the inventory sync state");
        }
    }

    fn command_rejected(&mut self, reason: &'static str, detail: &str) {
        tracing::warn!(reason, %detail, "rejected a command");
        self.status.send_modify(|s| {
            *s.commands_rejected.entry(reason.to_string()).or_default() += 1;
        });
    }

    /// Handles a console state. Returns how the connection ends, if it must.
    fn console_state(&mut self, link: &mut Link, payload: &[u8]) -> Option<End> {
        if let Some(pinned) = self.pinned {
            match open_console(payload, None, &pinned) {
                Ok(ConsoleMessage::ConsoleState(state)) => {
                    link.console_down = !state.online;
                    if !state.online {
                        tracing::info!(epoch = state.epoch, "the console is offline");
                    } else {
                        let released = link.receipts.console(state.receipts);
                        if !released.is_empty() {
                            self.forget(released);
                            self.update_queue_status_with(link);
                        }
                        if link.epoch != Some(state.epoch) {
                            if link.epoch.is_some() && link.can_send() {
                                tracing::info!(
                                    epoch = state.epoch,
                                    "the console restarted: publishing status and birth again"
                                );
                                self.announce(link);
                                // It may have died between the broker's PUBACK and its write.
                                self.resend_unreceipted(link, "the console restarted");
                            }
                            link.epoch = Some(state.epoch);
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(
                        kind = other.kind().name(),
                        "unexpected message on the console state topic"
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "refusing a console state not signed by the pinned console key")
                }
            }
            return None;
        }
        let opened = match &self.cfg.token {
            Some(token) => open_console_state_pinning(payload, &token.console_fingerprint),
            None => open_console_state_self_signed(payload),
        };
        let state = match opened {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, token = self.cfg.token.is_some(), "refusing the console state: its key is not the one the enrollment token names, or it is not validly signed");
                return None;
            }
        };
        let key = PublicKey::from_bytes(state.public_key);
        let fingerprint = hex(&key.fingerprint());
        if self.cfg.token.is_none() {
            tracing::warn!(fingerprint = %fingerprint, "no enrollment token: trusting the first console key seen");
        }
        if let Err(e) = self.cfg.pin.store(&key) {
            tracing::error!(error = %format!("{e:#}"), "cannot pin the console key");
            return Some(End::Lost("cannot pin the console key".into()));
        }
        self.pinned = Some(key);
        tracing::info!(fingerprint = %fingerprint, "pinned the console key; reconnecting with a last-will");
        self.status
            .send_modify(|s| s.console_key = Some(fingerprint));
        Some(End::Pinned)
    }

    /// Waits out a backoff delay while still taking events into the queue and keeping a
    /// down-sampled heartbeat history. Returns true on shutdown.
    async fn wait_offline(&mut self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let until = Instant::now() + delay;
        loop {
            let history = self.heartbeats.history_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep_until(until) => return false,
                req = self.requests.recv() => match req {
                    Some(req) => self.request(req, None),
                    None => return true,
                },
                _ = tokio::time::sleep_until(history) => self.history_sample(),
            }
        }
    }

    /// Retained clean offline status, its PUBACK (at most 1 s), then DISCONNECT.
    async fn goodbye(&mut self, link: &mut Link, eventloop: &mut EventLoop) {
        let mut status = AgentMessage::Status(Status {
            bd_seq: link.bd_seq,
            seq: 0,
            online: false,
            clean: true,
        });
        let sent = self.publish(
            link,
            &mut status,
            Channel::Status,
            QoS::AtLeastOnce,
            true,
            Tag::Goodbye,
        );
        if sent == Sent::Yes {
            let acked = tokio::time::timeout(GOODBYE_ACK, async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                            link.delivery.outgoing(pkid)
                        }
                        Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => {
                            match link.delivery.acked(ack.pkid) {
                                Some(Tag::Goodbye) => {
                                    self.unconfirmed.confirm_all();
                                    return true;
                                }
                                Some(Tag::Probe(n)) => self.unconfirmed.confirmed(n),
                                Some(Tag::Queued(key)) => {
                                    let _ = self.cfg.storage.queue.remove(key);
                                }
                                Some(Tag::Event { key, event_id }) => {
                                    // Not `self.forget`: the session is not `Sync`.
                                    if let Some(key) =
                                        link.receipts.acked(key, event_id, Instant::now())
                                    {
                                        let _ = self.cfg.storage.queue.remove(key);
                                    }
                                }
                                _ => {}
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if acked != Ok(true) {
                tracing::warn!("the clean offline status was not acknowledged in time");
            }
        }
        disconnect(&link.client, eventloop).await;
        self.update_queue_status();
        tracing::info!(bd_seq = link.bd_seq, "disconnected cleanly");
    }
}

/// How a command task talks back to the session: progress steps, then one result, both
/// through the session's queue (so they are stored and sent in order).
struct Reporter {
    requests: mpsc::Sender<Request>,
    command_id: [u8; 16],
}

impl Reporter {
    async fn step(&self, step: String) {
        let _ = self
            .requests
            .send(Request::Progress {
                command_id: self.command_id,
                step,
                pct: None,
            })
            .await;
    }

    /// A percentage step from synchronous code (a download callback); dropped if the
    /// session's queue is full, since the next step supersedes it.
    fn percent(&self, step: &str, pct: u8) {
        let _ = self.requests.try_send(Request::Progress {
            command_id: self.command_id,
            step: step.to_string(),
            pct: Some(pct),
        });
    }

    /// Queues the result; `true` once it is in the store-and-forward queue.
    async fn finish(
        self,
        action: &str,
        app: &str,
        outcome: CommandOutcome,
        message: String,
    ) -> bool {
        tracing::info!(command = %hex(&self.command_id), action, app, ?outcome, %message, "command finished");
        let (reply, queued) = oneshot::channel();
        let sent = self
            .requests
            .send(Request::Result {
                command_id: self.command_id,
                outcome,
                message,
                reply,
            })
            .await;
        sent.is_ok() && matches!(queued.await, Ok(Ok(())))
    }
}

/// Restart, settle, then `is-active` and the optional health URL: `Ok` when healthy.
async fn restart_and_check(
    services: &std::sync::Arc<dyn ServiceManager>,
    unit: &str,
    health_url: Option<&str>,
) -> Result<(), String> {
    let restart = {
        let (services, unit) = (services.clone(), unit.to_string());
        tokio::task::spawn_blocking(move || services.restart(&unit)).await
    };
    match restart {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(format!("the restart task failed: {e}")),
    }
    tokio::time::sleep(RESTART_SETTLE).await;
    check(services, unit, health_url).await
}

/// push-config: merge, back up, write atomically, restart, check health; on a failed check
/// restore the backup and restart again.
async fn push_config(
    services: std::sync::Arc<dyn ServiceManager>,
    requests: mpsc::Sender<Request>,
    command_id: [u8; 16],
    app: crate::service::ManagedApp,
    values: std::collections::BTreeMap<String, edgefleet_codec::ConfigValue>,
) {
    let report = Reporter {
        requests,
        command_id,
    };
    let (path, format) = app.config.clone().expect("checked by the caller");
    let outcome = async {
        let old = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let new = crate::appconfig::merge(&old, format, &values)
            .map_err(|e| format!("{e}; {} is untouched", path.display()))?;
        report
            .step(format!(
                "writing {} key(s) to {} ({})",
                values.len(),
                path.display(),
                crate::appconfig::format_name(format)
            ))
            .await;
        let backup = crate::appconfig::backup_path(&path);
        crate::appconfig::write_atomic(&backup, &old)
            .map_err(|e| format!("writing the backup {}: {e}", backup.display()))?;
        crate::appconfig::write_atomic(&path, &new)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        report.step(format!("restarting {}", app.unit)).await;
        match restart_and_check(&services, &app.unit, app.health_url.as_deref()).await {
            Ok(()) => Ok(format!(
                "applied {} key(s) to {}; {} is healthy",
                values.len(),
                path.display(),
                app.unit
            )),
            Err(why) => {
                report.step("restoring the previous config".into()).await;
                let restored = crate::appconfig::write_atomic(&path, &old)
                    .map_err(|e| format!("restoring {}: {e}", path.display()));
                let again =
                    restart_and_check(&services, &app.unit, app.health_url.as_deref()).await;
                Err(match (restored, again) {
                    (Ok(()), Ok(())) => format!(
                        "{why}; the previous config was restored and {} is healthy again",
                        app.unit
                    ),
                    (Ok(()), Err(e)) => format!(
                        "{why}; the previous config was restored, but {} is still unhealthy: {e}",
                        app.unit
                    ),
                    (Err(e), _) => format!("{why}; and {e} (the backup is {})", backup.display()),
                })
            }
        }
    }
    .await;
    let (outcome, message) = match outcome {
        Ok(m) => (CommandOutcome::Succeeded, m),
        Err(m) => (CommandOutcome::Failed, m),
    };
    report
        .finish("push-config", &app.id, outcome, message)
        .await;
}

struct UpdateSpec {
    url: String,
    version: String,
    sha256: [u8; 32],
    downloads: PathBuf,
    limits: crate::update::Limits,
}

/// Runs a blocking service or file step off the async workers.
async fn blocking(f: Box<dyn FnOnce() -> Result<(), String> + Send>) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("task failed: {e}")))
}

/// update-app: download (resumable) and verify, unpack beside the app (still running),
/// stop, swap the directories, start, check; on any failure after the swap, put the
/// previous version back and start it. A marker next to the app directory records each
/// step, so an agent killed half-way finishes or undoes it on restart
/// ([`recover_interrupted_update`]) and still reports the outcome.
async fn update_app(
    services: std::sync::Arc<dyn ServiceManager>,
    requests: mpsc::Sender<Request>,
    command_id: [u8; 16],
    app: crate::service::ManagedApp,
    spec: UpdateSpec,
) {
    let report = Reporter {
        requests,
        command_id,
    };
    let dir = app.binary_dir.clone().expect("checked by the caller");
    let unit = app.unit.clone();
    let mut pending = crate::update::Pending {
        command: hex(&command_id),
        version: spec.version.clone(),
        stage: crate::update::Stage::Staging,
    };
    let result: Result<String, (CommandOutcome, String)> = async {
        report.step(format!("downloading {}", spec.url)).await;
        let archive = crate::update::download(
            &spec.url,
            &spec.downloads,
            &spec.sha256,
            spec.limits.max_download,
            &|p| report.percent("downloading", p),
        )
        .await
        .map_err(|e| (CommandOutcome::Failed, e))?;
        report
            .step(format!("verified sha256 {}", hex(&spec.sha256)))
            .await;
        report.step(format!("unpacking {}", spec.version)).await;
        let failed = |e| (CommandOutcome::Failed, e);
        let (d, p) = (dir.clone(), pending.clone());
        blocking(Box::new(move || crate::update::mark(&d, &p)))
            .await
            .map_err(failed)?;
        let (a, d, limits) = (archive.clone(), dir.clone(), spec.limits);
        blocking(Box::new(move || crate::update::stage(&a, &d, &limits)))
            .await
            .map_err(|e| {
                (
                    CommandOutcome::Failed,
                    format!("{e}; {} left untouched", app.id),
                )
            })?;
        report.step(format!("stopping {unit}")).await;
        let (s, u) = (services.clone(), unit.clone());
        blocking(Box::new(move || s.stop(&u)))
            .await
            .map_err(failed)?;
        report
            .step(format!(
                "installing {} into {}",
                spec.version,
                dir.display()
            ))
            .await;
        pending.stage = crate::update::Stage::Swapping;
        let (d, p) = (dir.clone(), pending.clone());
        let installed = blocking(Box::new(move || {
            crate::update::mark(&d, &p)?;
            crate::update::swap(&d)?;
            crate::update::mark(
                &d,
                &crate::update::Pending {
                    stage: crate::update::Stage::Swapped,
                    ..p
                },
            )
        }))
        .await;
        let started = match installed {
            Ok(()) => start_and_check(&services, &unit, app.health_url.as_deref()).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => Ok(format!("{} updated to {}", app.id, spec.version)),
            Err(why) => {
                report
                    .step("rolling back to the previous version".into())
                    .await;
                let detail = roll_back_and_start(&services, &dir, &unit).await;
                Err((CommandOutcome::RolledBack, format!("{why}; {detail}")))
            }
        }
    }
    .await;
    let (outcome, message) = match result {
        Ok(m) => (CommandOutcome::Succeeded, m),
        Err(e) => e,
    };
    // The marker goes only once the result is queued: a crash in between reports twice
    // (the console keeps the first result), never zero times.
    if report.finish("update-app", &app.id, outcome, message).await {
        let d = dir.clone();
        let _ = blocking(Box::new(move || {
            crate::update::unmark(&d);
            Ok(())
        }))
        .await;
    }
}

/// Start, settle, then `is-active` and the optional health URL.
async fn start_and_check(
    services: &std::sync::Arc<dyn ServiceManager>,
    unit: &str,
    health_url: Option<&str>,
) -> Result<(), String> {
    let (s, u) = (services.clone(), unit.to_string());
    blocking(Box::new(move || s.start(&u))).await?;
    tokio::time::sleep(RESTART_SETTLE).await;
    check(services, unit, health_url).await
}

/// Puts the previous directory back and starts it; says how that went.
async fn roll_back_and_start(
    services: &std::sync::Arc<dyn ServiceManager>,
    dir: &Path,
    unit: &str,
) -> String {
    let d = dir.to_path_buf();
    let back = blocking(Box::new(move || crate::update::rollback(&d))).await;
    let (s, u) = (services.clone(), unit.to_string());
    let restarted = blocking(Box::new(move || s.start(&u))).await;
    match (back, restarted) {
        (Ok(()), Ok(())) => "rolled back to the previous version".to_string(),
        (Ok(()), Err(e)) => format!("rolled back, but the previous version does not start: {e}"),
        (Err(e), _) => format!("the rollback failed too: {e}"),
    }
}

/// After a restart: an update-app the agent was killed in the middle of is finished or
/// undone on disk by [`crate::update::recover`], the app is started, and the outcome is
/// reported under the original command id.
async fn recover_interrupted_update(
    services: std::sync::Arc<dyn ServiceManager>,
    requests: mpsc::Sender<Request>,
    app: crate::service::ManagedApp,
) {
    let Some(dir) = app.binary_dir.clone() else {
        return;
    };
    let d = dir.clone();
    let recovered = tokio::task::spawn_blocking(move || crate::update::recover(&d))
        .await
        .unwrap_or_else(|e| Err(format!("task failed: {e}")));
    let (pending, left) = match recovered {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(app = %app.id, error = %e, "cannot recover an interrupted update-app");
            return;
        }
    };
    let Some(command_id) = parse_command_id(&pending.command) else {
        tracing::error!(app = %app.id, command = %pending.command, "update marker with a bad command id; ignored");
        crate::update::unmark(&dir);
        return;
    };
    tracing::warn!(app = %app.id, version = %pending.version, stage = ?pending.stage, ?left, "finishing an update-app interrupted by an agent restart");
    let report = Reporter {
        requests,
        command_id,
    };
    let (outcome, message) = match left {
        crate::update::Left::Previous => {
            let (s, u) = (services.clone(), app.unit.clone());
            let started = blocking(Box::new(move || s.start(&u))).await;
            (
                CommandOutcome::Failed,
                format!(
                    "the agent restarted during the update ({:?}); {} is still at the previous version{}",
                    pending.stage,
                    app.id,
                    started.err().map(|e| format!(", which does not start: {e}")).unwrap_or_default()
                ),
            )
        }
        crate::update::Left::New => {
            match start_and_check(&services, &app.unit, app.health_url.as_deref()).await {
                Ok(()) => (
                    CommandOutcome::Succeeded,
                    format!(
                        "{} updated to {} (finished after an agent restart)",
                        app.id, pending.version
                    ),
                ),
                Err(why) => {
                    let detail = roll_back_and_start(&services, &dir, &app.unit).await;
                    (CommandOutcome::RolledBack, format!("{why}; {detail}"))
                }
            }
        }
    };
    if report.finish("update-app", &app.id, outcome, message).await {
        crate::update::unmark(&dir);
    }
}

fn parse_command_id(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

/// rollback-app: stop, put the previous directory back, start, check.
async fn rollback_app(
    services: std::sync::Arc<dyn ServiceManager>,
    requests: mpsc::Sender<Request>,
    command_id: [u8; 16],
    app: crate::service::ManagedApp,
) {
    let report = Reporter {
        requests,
        command_id,
    };
    let dir = app.binary_dir.clone().expect("checked by the caller");
    let unit = app.unit.clone();
    let result: Result<String, String> = async {
        report.step(format!("stopping {unit}")).await;
        let (s, u) = (services.clone(), unit.clone());
        blocking(Box::new(move || s.stop(&u))).await?;
        report.step("restoring the previous version".into()).await;
        let d = dir.clone();
        blocking(Box::new(move || crate::update::rollback(&d))).await?;
        report.step(format!("starting {unit}")).await;
        let (s, u) = (services.clone(), unit.clone());
        blocking(Box::new(move || s.start(&u))).await?;
        tokio::time::sleep(RESTART_SETTLE).await;
        check(&services, &unit, app.health_url.as_deref()).await?;
        Ok(format!("{} rolled back to the previous version", app.id))
    }
    .await;
    let (outcome, message) = match result {
        Ok(m) => (CommandOutcome::Succeeded, m),
        Err(m) => (CommandOutcome::Failed, m),
    };
    report
        .finish("rollback-app", &app.id, outcome, message)
        .await;
}

/// `is-active` and the optional health URL.
async fn check(
    services: &std::sync::Arc<dyn ServiceManager>,
    unit: &str,
    health_url: Option<&str>,
) -> Result<(), String> {
    let status = {
        let (services, unit) = (services.clone(), unit.to_string());
        tokio::task::spawn_blocking(move || services.status(&unit))
            .await
            .unwrap_or(edgefleet_codec::AppStatus::Unknown)
    };
    if status != edgefleet_codec::AppStatus::Active {
        return Err(format!("{unit} is {} after the restart", status.as_str()));
    }
    if let Some(url) = health_url {
        crate::service::check_health(url).await?;
    }
    Ok(())
}

/// restart-app: `restart`, a moment to settle, then `is-active` decides.
async fn restart_app(
    services: std::sync::Arc<dyn ServiceManager>,
    requests: mpsc::Sender<Request>,
    command_id: [u8; 16],
    app: String,
    unit: String,
) {
    let report = Reporter {
        requests,
        command_id,
    };
    report.step(format!("restarting {unit}")).await;
    let (outcome, message) = match restart_and_check(&services, &unit, None).await {
        Ok(()) => (
            CommandOutcome::Succeeded,
            format!("{app} ({unit}) restarted and active"),
        ),
        Err(e) => (CommandOutcome::Failed, e),
    };
    report.finish("restart-app", &app, outcome, message).await;
}

/// run-script, already allowed by the policy: runs it and reports the output tail.
async fn run_script(requests: mpsc::Sender<Request>, command_id: [u8; 16], script: String) {
    let report = Reporter {
        requests,
        command_id,
    };
    report.step("running the allow-listed script".into()).await;
    let (outcome, message) = match crate::script::run(&script, crate::script::TIMEOUT).await {
        Ok(out) => (CommandOutcome::Succeeded, out),
        Err(e) => (CommandOutcome::Failed, e),
    };
    report.finish("run-script", "-", outcome, message).await;
}

/// `{agent_id}-{bd_seq}`: the MQTT client id of one connection.
pub fn client_id(id: &AgentId, bd_seq: u64) -> String {
    format!("{id}-{bd_seq}")
}

fn channel_of(msg: &AgentMessage) -> Channel {
    match msg {
        AgentMessage::Event(_) => Channel::Event,
        AgentMessage::CommandResult(_) | AgentMessage::CommandProgress(_) => Channel::Result,
        AgentMessage::Heartbeat(_) => Channel::Heartbeat,
        AgentMessage::InventoryChunk(_) | AgentMessage::InventoryDelta(_) => Channel::Inventory,
        AgentMessage::Birth(_) => Channel::Birth,
        AgentMessage::Status(_) => Channel::Status,
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends DISCONNECT and drives the event loop until it is written (at most 500 ms).
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(GOODBYE_DISCONNECT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }

    #[test]
    fn every_connection_has_its_own_client_id() {
        let id = Identity::generate().agent_id();
        assert_eq!(client_id(&id, 7), format!("{id}-7"));
        assert_ne!(client_id(&id, 7), client_id(&id, 8));
    }
}
