//! The MQTT session: connect, pin the console key, birth and status, heartbeats, queue
//! drain, reconnect with backoff, and the graceful goodbye. See docs/wire.md, "Session
//! protocol".

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_codec::{
    open_console, open_console_state_pinning, open_console_state_self_signed, seal_agent, AgentId,
    AgentMessage, Birth, Channel, CommandOutcome, CommandResult, ConsoleMessage, Deadband,
    EnrollToken, Event, EventLevel, Heartbeat, HeartbeatReporter, Identity, MacKey, PublicKey,
    Status, Topics,
};
use edgefleet_config::MqttUrl;
use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::probe::Probe;
use crate::state::Storage;

/// How many queued items may await their PUBACK at once.
const QUEUE_WINDOW: usize = 16;
/// While disconnected, one heartbeat sample is kept for history this often.
const HISTORY_EVERY: Duration = Duration::from_secs(300);
/// Largest MQTT packet in either direction.
const MAX_PACKET: usize = 64 * 1024;

/// Everything a session needs.
pub struct SessionConfig {
    pub identity: Identity,
    pub urls: Vec<MqttUrl>,
    pub ca_file: Option<PathBuf>,
    pub token: Option<EnrollToken>,
    pub heartbeat_interval: Duration,
    pub keepalive: Duration,
    pub topics: Topics,
    pub storage: Storage,
    pub probe: Box<dyn Probe>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("agent", &self.identity.agent_id())
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// Requests from the handle to the running session.
#[derive(Debug)]
pub enum Request {
    Event {
        level: EventLevel,
        kind: String,
        message: String,
    },
    Result {
        command_id: [u8; 16],
        outcome: CommandOutcome,
        message: String,
    },
    HeartbeatNow,
}

/// What the session reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub agent_id: String,
    pub console_url: String,
    pub connected: bool,
    pub bd_seq: u64,
    pub queue_depth: usize,
    /// Unix ms of the last heartbeat sent.
    pub last_heartbeat: Option<u64>,
    /// Hex SHA-256 of the pinned console key.
    pub console_key: Option<String>,
}

enum End {
    Shutdown,
    /// The console key was just pinned: reconnect at once, now with a sealed last-will.
    Pinned,
    Lost(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the session until `shutdown`, reconnecting forever.
pub async fn run(
    mut cfg: SessionConfig,
    mut requests: mpsc::Receiver<Request>,
    status: watch::Sender<Snapshot>,
    shutdown: CancellationToken,
) {
    let id = cfg.identity.agent_id();
    let mut backoff = Backoff::default();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut attempt_url = 0usize;
    let mut reporter = HeartbeatReporter::new(Deadband::default());
    let mut next_history = tokio::time::Instant::now() + HISTORY_EVERY;
    status.send_modify(|s| {
        s.agent_id = id.to_string();
        s.console_key = cfg.storage.console_key().map(|k| hex(&k.fingerprint()));
        s.queue_depth = cfg.storage.queue.len();
    });
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let url = cfg.urls[attempt_url % cfg.urls.len()].clone();
        let bd_seq = match cfg.storage.next_bd_seq() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(agent.id = %id, error = %e, "cannot persist bd_seq; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        status.send_modify(|s| {
            s.console_url = format!(
                "{}://{}:{}",
                if url.tls { "mqtts" } else { "mqtt" },
                url.host,
                url.port
            );
            s.bd_seq = bd_seq;
        });
        let end = match connect(&cfg, &url, bd_seq) {
            Ok((client, eventloop, mac)) => {
                let mut conn = Connection {
                    cfg: &mut cfg,
                    id: &id,
                    client,
                    mac,
                    bd_seq,
                    // The last-will is sealed with seq 0 at connect time; everything the
                    // connection publishes comes after it.
                    seq: 1,
                    inflight: VecDeque::new(),
                    pkid_to_key: HashMap::new(),
                    queue_inflight: 0,
                    last_queued_sent: None,
                    epoch: None,
                    reporter: &mut reporter,
                    status: &status,
                    backoff: &mut backoff,
                };
                conn.run(eventloop, &mut requests, &shutdown).await
            }
            Err(e) => End::Lost(e),
        };
        status.send_modify(|s| s.connected = false);
        match end {
            End::Shutdown => return,
            End::Pinned => continue,
            End::Lost(error) => {
                let delay = backoff.next_delay(&mut rng);
                tracing::warn!(agent.id = %id, attempt = backoff.attempt(), delay_ms = delay.as_millis() as u64, url = %format!("{}:{}", url.host, url.port), %error, "disconnected; reconnecting");
                attempt_url += 1;
                if wait_offline(
                    &mut cfg,
                    delay,
                    &mut next_history,
                    &mut requests,
                    &status,
                    &shutdown,
                )
                .await
                {
                    return;
                }
            }
        }
    }
}

use rand::SeedableRng;

fn connect(
    cfg: &SessionConfig,
    url: &MqttUrl,
    bd_seq: u64,
) -> Result<(AsyncClient, EventLoop, Option<MacKey>), String> {
    let id = cfg.identity.agent_id();
    // A fresh client id per connection: rumqttd looks wills up by client id, so a takeover
    // by the same id can publish the *new* connection's will when the old one dies.
    let mut opts = MqttOptions::new(client_id(&id, bd_seq), url.host.clone(), url.port);
    opts.set_keep_alive(cfg.keepalive);
    opts.set_clean_session(true);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let now = now_ms() / 1000;
    opts.set_credentials(
        id.as_str(),
        edgefleet_codec::connect::password(&cfg.identity, now),
    );
    if url.tls {
        let ca = match &cfg.ca_file {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("reading CA file {}: {e}", path.display()))?,
            None => return Err("mqtts:// needs ca_file (system roots are not wired up yet)".into()),
        };
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }
    let mac = match cfg.storage.console_key() {
        Some(key) => Some(
            MacKey::derive_agent(&cfg.identity, &key)
                .map_err(|e| format!("pinned console key unusable: {e}"))?,
        ),
        None => None,
    };
    if let Some(mac) = &mac {
        let will = AgentMessage::Status(Status {
            bd_seq,
            seq: 0,
            online: false,
            clean: false,
        });
        let payload = seal_agent(&will, &id, mac);
        opts.set_last_will(LastWill::new(
            cfg.topics.agent(&id, Channel::Status),
            payload,
            QoS::AtLeastOnce,
            true,
        ));
    }
    let (client, eventloop) = AsyncClient::new(opts, 256);
    Ok((client, eventloop, mac))
}

/// `{agent_id}-{bd_seq}`: the MQTT client id of one connection.
pub fn client_id(id: &AgentId, bd_seq: u64) -> String {
    format!("{id}-{bd_seq}")
}

/// Waits out a backoff delay while still accepting events into the queue and keeping a
/// down-sampled heartbeat history. Returns true on shutdown.
async fn wait_offline(
    cfg: &mut SessionConfig,
    delay: Duration,
    next_history: &mut tokio::time::Instant,
    requests: &mut mpsc::Receiver<Request>,
    status: &watch::Sender<Snapshot>,
    shutdown: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return true,
            _ = tokio::time::sleep_until(until) => return false,
            req = requests.recv() => match req {
                Some(req) => {
                    enqueue_request(cfg, req);
                    status.send_modify(|s| s.queue_depth = cfg.storage.queue.len());
                }
                None => return true,
            },
            _ = tokio::time::sleep_until(*next_history) => {
                *next_history += HISTORY_EVERY;
                let mut hb = cfg.probe.vitals().keyframe();
                hb.at = Some(now_ms() / 1000);
                push(cfg, AgentMessage::Heartbeat(hb));
            }
        }
    }
}

fn push(cfg: &SessionConfig, msg: AgentMessage) {
    match cfg.storage.queue.push(&msg) {
        Ok((_, outcome)) => {
            if outcome.dropped_heartbeats > 0 {
                tracing::warn!(
                    dropped = outcome.dropped_heartbeats,
                    "queue full: dropped the oldest heartbeat samples"
                );
            }
            if outcome.over_cap {
                tracing::error!("queue is over its cap with events and results only; keeping them");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, kind = msg.kind().name(), "cannot queue a message; it is lost")
        }
    }
}

fn enqueue_request(cfg: &SessionConfig, req: Request) -> bool {
    match req {
        Request::Event {
            level,
            kind,
            message,
        } => {
            let event_id = match cfg.storage.next_event_id() {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(error = %e, "cannot allocate an event id; event lost");
                    return true;
                }
            };
            push(
                cfg,
                AgentMessage::Event(Event {
                    bd_seq: 0,
                    seq: 0,
                    event_id,
                    at_ms: now_ms(),
                    level,
                    kind,
                    message,
                }),
            );
            true
        }
        Request::Result {
            command_id,
            outcome,
            message,
        } => {
            push(
                cfg,
                AgentMessage::CommandResult(CommandResult {
                    bd_seq: 0,
                    seq: 0,
                    command_id,
                    outcome,
                    message,
                    at_ms: now_ms(),
                }),
            );
            true
        }
        Request::HeartbeatNow => false,
    }
}

struct Connection<'a> {
    cfg: &'a mut SessionConfig,
    id: &'a AgentId,
    client: AsyncClient,
    mac: Option<MacKey>,
    bd_seq: u64,
    seq: u64,
    /// One entry per publish request, in order: the queue key it carries, if any.
    inflight: VecDeque<Option<u64>>,
    pkid_to_key: HashMap<u16, u64>,
    queue_inflight: usize,
    last_queued_sent: Option<u64>,
    epoch: Option<u64>,
    reporter: &'a mut HeartbeatReporter,
    status: &'a watch::Sender<Snapshot>,
    backoff: &'a mut Backoff,
}

impl Connection<'_> {
    async fn run(
        &mut self,
        mut eventloop: EventLoop,
        requests: &mut mpsc::Receiver<Request>,
        shutdown: &CancellationToken,
    ) -> End {
        let mut connected = false;
        let mut ticker = tokio::time::interval(self.cfg.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if connected {
                        self.goodbye(&mut eventloop).await;
                    }
                    return End::Shutdown;
                }
                req = requests.recv() => match req {
                    Some(req) => {
                        if !enqueue_request(self.cfg, req) && connected {
                            self.heartbeat(true);
                        }
                        if connected {
                            self.pump_queue();
                        }
                        self.status.send_modify(|s| s.queue_depth = self.cfg.storage.queue.len());
                    }
                    None => return End::Shutdown,
                },
                _ = ticker.tick(), if connected && self.mac.is_some() => self.heartbeat(false),
                event = eventloop.poll() => match event {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            return End::Lost(format!("console refused the connection: {:?}", ack.code));
                        }
                        connected = true;
                        self.backoff.reset();
                        tracing::info!(agent.id = %self.id, bd_seq = self.bd_seq, pinned = self.mac.is_some(), "connected");
                        for filter in self.cfg.topics.agent_filters(self.id) {
                            if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                                return End::Lost(format!("subscribe: {e}"));
                            }
                        }
                        if self.mac.is_some() {
                            self.announce();
                            self.reporter.reset();
                            ticker.reset();
                            self.heartbeat(false);
                            self.pump_queue();
                        }
                        self.status.send_modify(|s| s.connected = true);
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == self.cfg.topics.console_state() {
                            if let Some(end) = self.console_state(&p.payload) {
                                // Disconnect properly before reconnecting: a client-id takeover
                                // in rumqttd can fire or lose wills.
                                disconnect(&self.client, &mut eventloop).await;
                                return end;
                            }
                        } else {
                            tracing::debug!(topic = %p.topic, "ignoring a message: command handling comes with remote operations");
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(key)) = self.inflight.pop_front() {
                            self.pkid_to_key.insert(pkid, key);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(key) = self.pkid_to_key.remove(&ack.pkid) {
                            if let Err(e) = self.cfg.storage.queue.remove(key) {
                                tracing::error!(error = %e, "cannot remove a delivered queue item; it will be sent again");
                            }
                            self.queue_inflight = self.queue_inflight.saturating_sub(1);
                            self.pump_queue();
                            self.status.send_modify(|s| s.queue_depth = self.cfg.storage.queue.len());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return End::Lost(e.to_string()),
                },
            }
        }
    }

    fn publish(
        &mut self,
        msg: &mut AgentMessage,
        channel: Channel,
        qos: QoS,
        retain: bool,
        key: Option<u64>,
    ) -> bool {
        let Some(mac) = &self.mac else { return false };
        msg.stamp(self.bd_seq, self.seq);
        self.seq += 1;
        let payload = seal_agent(msg, self.id, mac);
        match self.client.try_publish(
            self.cfg.topics.agent(self.id, channel),
            qos,
            retain,
            payload,
        ) {
            Ok(()) => {
                self.inflight.push_back(key);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = msg.kind().name(), "publish queue full");
                false
            }
        }
    }

    /// Retained online status, then the birth.
    fn announce(&mut self) {
        let mut status = AgentMessage::Status(Status {
            bd_seq: self.bd_seq,
            seq: 0,
            online: true,
            clean: false,
        });
        self.publish(&mut status, Channel::Status, QoS::AtLeastOnce, true, None);
        let facts = self.cfg.probe.facts();
        let apps = self.cfg.probe.apps();
        let mut birth = AgentMessage::Birth(Birth {
            bd_seq: self.bd_seq,
            seq: 0,
            hostname: facts.hostname,
            os: facts.os,
            kernel: facts.kernel,
            arch: facts.arch,
            ips: facts.ips,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            boot_time: facts.boot_time,
            apps,
            inventory_digest: None,
            heartbeat_interval_s: self
                .cfg
                .heartbeat_interval
                .as_secs()
                .clamp(1, u64::from(u32::MAX)) as u32,
        });
        self.publish(&mut birth, Channel::Birth, QoS::AtLeastOnce, false, None);
    }

    fn heartbeat(&mut self, full: bool) {
        let vitals = self.cfg.probe.vitals();
        if full {
            self.reporter.reset();
        }
        let hb: Heartbeat = self.reporter.next(&vitals);
        let mut msg = AgentMessage::Heartbeat(hb);
        if self.publish(&mut msg, Channel::Heartbeat, QoS::AtMostOnce, false, None) {
            self.status
                .send_modify(|s| s.last_heartbeat = Some(now_ms()));
        }
    }

    /// Sends queued items in order, keeping at most [`QUEUE_WINDOW`] awaiting PUBACK.
    fn pump_queue(&mut self) {
        if self.mac.is_none() {
            return;
        }
        while self.queue_inflight < QUEUE_WINDOW {
            let next = match self.cfg.storage.queue.peek_after(self.last_queued_sent, 1) {
                Ok(mut items) => items.pop(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    return;
                }
            };
            let Some((key, mut msg)) = next else { return };
            let channel = match &msg {
                AgentMessage::Event(_) => Channel::Event,
                AgentMessage::CommandResult(_) | AgentMessage::CommandProgress(_) => {
                    Channel::Result
                }
                AgentMessage::Heartbeat(_) => Channel::Heartbeat,
                AgentMessage::InventoryChunk(_) | AgentMessage::InventoryDelta(_) => {
                    Channel::Inventory
                }
                AgentMessage::Birth(_) => Channel::Birth,
                AgentMessage::Status(_) => Channel::Status,
            };
            if !self.publish(&mut msg, channel, QoS::AtLeastOnce, false, Some(key)) {
                return;
            }
            self.last_queued_sent = Some(key);
            self.queue_inflight += 1;
        }
    }

    /// Handles a console state. Returns how the connection ends, if it must.
    fn console_state(&mut self, payload: &[u8]) -> Option<End> {
        match self.cfg.storage.console_key() {
            Some(pinned) => match open_console(payload, None, &pinned) {
                Ok(ConsoleMessage::ConsoleState(state)) => {
                    if state.online && self.epoch != Some(state.epoch) {
                        if self.epoch.is_some() && self.mac.is_some() {
                            tracing::info!(
                                epoch = state.epoch,
                                "console restarted: publishing status and birth again"
                            );
                            self.announce();
                        }
                        self.epoch = Some(state.epoch);
                    }
                    None
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(error = %e, "refusing a console state not signed by the pinned console key");
                    None
                }
            },
            None => {
                let opened = match &self.cfg.token {
                    Some(token) => open_console_state_pinning(payload, &token.console_fingerprint),
                    None => open_console_state_self_signed(payload),
                };
                match opened {
                    Ok(state) => {
                        let key = PublicKey::from_bytes(state.public_key);
                        if self.cfg.token.is_none() {
                            tracing::warn!(fingerprint = %hex(&key.fingerprint()), "no enrollment token: trusting the first console key seen");
                        }
                        if let Err(e) = self.cfg.storage.pin_console_key(&key) {
                            tracing::error!(error = %e, "cannot persist the console key");
                            return Some(End::Lost("cannot persist the console key".into()));
                        }
                        tracing::info!(fingerprint = %hex(&key.fingerprint()), "pinned the console key; reconnecting with a last-will");
                        self.status
                            .send_modify(|s| s.console_key = Some(hex(&key.fingerprint())));
                        Some(End::Pinned)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "refusing the console: its key does not match the enrollment token");
                        None
                    }
                }
            }
        }
    }

    /// Clean offline status (waits for its PUBACK, at most 1 s), then DISCONNECT.
    async fn goodbye(&mut self, eventloop: &mut EventLoop) {
        let mut status = AgentMessage::Status(Status {
            bd_seq: self.bd_seq,
            seq: 0,
            online: false,
            clean: true,
        });
        if self.mac.is_some()
            && self.publish(&mut status, Channel::Status, QoS::AtLeastOnce, true, None)
        {
            let mut goodbye_pkid = None;
            // The goodbye is the last publish requested; count the ones before it.
            let mut ahead = self.inflight.len() - 1;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if ahead == 0 && goodbye_pkid.is_none() {
                                goodbye_pkid = Some(pkid);
                            }
                            ahead = ahead.saturating_sub(1);
                        }
                        Ok(rumqttc::Event::Incoming(Packet::PubAck(ack)))
                            if Some(ack.pkid) == goodbye_pkid =>
                        {
                            return
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
            .await;
        }
        disconnect(&self.client, eventloop).await;
        tracing::info!(agent.id = %self.id, "disconnected cleanly");
    }
}

/// Sends DISCONNECT and drives the event loop until it is written (at most 500 ms).
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
