//! Real agents (in this process, through the public library API) against the real
//! embedded broker, with the test playing the console by hand: it signs and publishes the
//! console state, and opens what the agent sends with the console's side of the MAC key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::{AgentHandle, AgentOptions};
use edgefleet_broker::{BrokerConfig, ConsoleLink, EmbeddedBroker, Inbound};
use edgefleet_codec::{
    open_agent, sign_console, AgentMessage, ConsoleMessage, ConsoleState, EnrollToken, EventLevel,
    Identity, MacKey, Topics,
};
use edgefleet_config::{AgentConfig, HumanDuration};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test's stand-in for the console: the broker, the console's key and its link.
struct Console {
    broker: EmbeddedBroker,
    link: ConsoleLink,
    inbound: mpsc::Receiver<Inbound>,
    identity: Identity,
}

impl Console {
    fn start() -> Console {
        // The same check the console's policy makes: the password proves the agent key.
        let policy = Arc::new(|attempt: &edgefleet_broker::ConnectAttempt| {
            edgefleet_codec::connect::parse_username(&attempt.username).is_ok_and(|(id, _)| {
                edgefleet_codec::connect::verify_password(id, &attempt.password, now_unix()).is_ok()
            })
        });
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        };
        let (broker, link, inbound) =
            EmbeddedBroker::start(&config, policy, &Topics::default().console_filters()).unwrap();
        Console {
            broker,
            link,
            inbound,
            identity: Identity::generate(),
        }
    }

    fn url(&self) -> String {
        format!("mqtt://{}", self.broker.mqtt_addr())
    }

    /// A console state from a console that does not send event receipts.
    async fn publish_state(&self, signer: &Identity, epoch: u64) {
        self.publish_state_with(signer, epoch, false).await;
    }

    async fn publish_state_with(&self, signer: &Identity, epoch: u64, receipts: bool) {
        let state = ConsoleMessage::ConsoleState(ConsoleState {
            online: true,
            epoch,
            public_key: *signer.public_key().as_bytes(),
            at: now_unix(),
            receipts,
        });
        self.link
            .publish(
                &Topics::default().console_state(),
                sign_console(&state, None, signer),
                true,
            )
            .await
            .unwrap();
    }

    /// Confirms that the console stored `event_ids` of the agent in `data_dir`.
    async fn receipt(&self, data_dir: &Path, event_ids: Vec<u64>) {
        let seed = edgefleet_config::keyfile::read_secret(&data_dir.join("agent.key")).unwrap();
        let id = Identity::from_seed(&seed.try_into().unwrap()).agent_id();
        let receipt = ConsoleMessage::EventReceipt(edgefleet_codec::EventReceipt {
            at: now_unix(),
            event_ids,
        });
        self.link
            .publish(
                &Topics::default().agent(&id, edgefleet_codec::Channel::Command),
                sign_console(&receipt, Some(&id), &self.identity),
                false,
            )
            .await
            .unwrap();
    }

    /// Plays the console's enrollment decision: every verified enrollment request is
    /// approved, signed, on the agent's reply topic. Returns whether `msg` was one.
    async fn approve_enrollment(&self, msg: &Inbound) -> bool {
        let Some(id) = msg
            .topic
            .strip_prefix("ef/e/")
            .filter(|rest| !rest.contains('/'))
            .and_then(|id| id.parse::<edgefleet_codec::AgentId>().ok())
        else {
            return false;
        };
        let req = edgefleet_codec::open_enroll_request(&msg.payload, &id)
            .expect("the agent's enrollment request verifies");
        assert_eq!(req.agent_id, id.as_str());
        let response = ConsoleMessage::EnrollResponse(edgefleet_codec::EnrollResponse {
            agent_id: id.to_string(),
            decision: edgefleet_codec::EnrollDecision::Approved,
            at: now_unix(),
        });
        self.link
            .publish(
                &Topics::default().enroll_reply(&id),
                sign_console(&response, Some(&id), &self.identity),
                false,
            )
            .await
            .unwrap();
        true
    }

    /// The console's MAC key for the agent whose key is in `data_dir`. The real console
    /// learns the agent key from its CONNECT password; the test reads the key file.
    fn mac_for(&self, data_dir: &Path) -> MacKey {
        let seed = edgefleet_config::keyfile::read_secret(&data_dir.join("agent.key")).unwrap();
        let agent = Identity::from_seed(&seed.try_into().unwrap());
        MacKey::derive_console(&self.identity, &agent.public_key()).unwrap()
    }

    /// The next message from the agent in `data_dir` matching `want`, verified with the
    /// console's MAC key. Messages from other agents and ones that do not match are skipped.
    async fn expect(
        &mut self,
        data_dir: &Path,
        what: &str,
        mut want: impl FnMut(&AgentMessage) -> bool,
    ) -> AgentMessage {
        let seed = edgefleet_config::keyfile::read_secret(&data_dir.join("agent.key")).unwrap();
        let id = Identity::from_seed(&seed.try_into().unwrap()).agent_id();
        let mac = self.mac_for(data_dir);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} from {id} in time"))
                .expect("broker link open");
            // The console's own publishes to the agent (receipts on `cmd`) come back too.
            if self.approve_enrollment(&msg).await
                || !msg.topic.starts_with(&format!("ef/a/{id}/"))
                || msg.topic.ends_with("/cmd")
            {
                continue;
            }
            let opened = open_agent(&msg.payload, &id, &mac)
                .unwrap_or_else(|e| panic!("{} does not verify: {e}", msg.topic));
            if want(&opened) {
                return opened;
            }
        }
    }
}

fn agent_config(url: &str, dir: &Path) -> AgentConfig {
    AgentConfig {
        console_urls: vec![url.to_string()],
        data_dir: dir.to_path_buf(),
        heartbeat_interval: HumanDuration(Duration::from_secs(1)),
        keepalive: HumanDuration(Duration::from_secs(5)),
        ..AgentConfig::default()
    }
}

async fn start_agent(url: &str, dir: &Path, index: usize) -> AgentHandle {
    edgefleet_agent::spawn(AgentOptions::new(
        agent_config(url, dir),
        SimProbe::new(index),
    ))
    .await
    .unwrap()
}

fn status(online: bool, clean: bool) -> impl FnMut(&AgentMessage) -> bool {
    move |m| matches!(m, AgentMessage::Status(s) if s.online == online && s.clean == clean)
}

fn bd_seq(m: &AgentMessage) -> u64 {
    m.sequence().0
}

/// A port on which nothing listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("mqtt://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_pins_the_key_then_status_birth_heartbeats_events_will_and_goodbye() {
    let mut console = Console::start();
    console.publish_state(&console.identity, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let agent = start_agent(&console.url(), &dir, 1).await;

    // First contact: connect without a will, pin, reconnect with one (bd_seq 2).
    let online = console
        .expect(&dir, "online status", status(true, false))
        .await;
    assert_eq!(bd_seq(&online), 2, "the pinning connection was bd_seq 1");
    let pinned = std::fs::read_to_string(dir.join("console.pub")).unwrap();
    let expected: String = console
        .identity
        .public_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(pinned.trim(), expected);
    let birth = console
        .expect(&dir, "birth", |m| matches!(m, AgentMessage::Birth(_)))
        .await;
    let AgentMessage::Birth(b) = &birth else {
        unreachable!()
    };
    assert!(
        b.hostname.starts_with("sim-") && (2..=4).contains(&b.apps.len()),
        "{b:?}"
    );
    assert_eq!(b.heartbeat_interval_s, 1);
    assert!(birth.sequence() > online.sequence());
    let hb = console
        .expect(&dir, "heartbeat", |m| {
            matches!(m, AgentMessage::Heartbeat(_))
        })
        .await;
    let AgentMessage::Heartbeat(h) = &hb else {
        unreachable!()
    };
    assert!(
        h.cpu_pct.is_some() && h.uptime_s.is_some(),
        "the first is a keyframe: {h:?}"
    );
    let snap = agent
        .wait_for(DEADLINE, |s| s.connected && s.last_heartbeat.is_some())
        .await
        .unwrap();
    assert!(snap.pinned() && snap.bd_seq == 2, "{snap:?}");

    // Events and results, interleaved, arrive in order with rising seq.
    let mut ids = Vec::new();
    for i in 0..4u8 {
        ids.push(
            agent
                .emit_event(EventLevel::Info, "test", &format!("event {i}"))
                .await
                .unwrap(),
        );
        agent
            .emit_result([i; 16], edgefleet_codec::CommandOutcome::Succeeded, "ok")
            .await
            .unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut seen = Vec::new();
    let mut last_seq = (0, 0);
    while seen.len() < 8 {
        let m = console
            .expect(&dir, "event or result", |m| {
                matches!(m, AgentMessage::Event(_) | AgentMessage::CommandResult(_))
            })
            .await;
        assert!(m.sequence() > last_seq, "seq rises: {m:?}");
        last_seq = m.sequence();
        seen.push(match m {
            AgentMessage::Event(e) => format!("ev{}", e.event_id),
            AgentMessage::CommandResult(r) => format!("res{}", r.command_id[0]),
            _ => unreachable!(),
        });
    }
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .flat_map(|(i, id)| [format!("ev{id}"), format!("res{i}")])
        .collect();
    assert_eq!(seen, expected);
    agent
        .wait_for(DEADLINE, |s| s.queue_depth == 0)
        .await
        .unwrap();

    // An explicit request gets a keyframe.
    agent.request_heartbeat_now().await.unwrap();
    console
        .expect(&dir, "requested keyframe", |m| {
            matches!(m, AgentMessage::Heartbeat(h) if h.mem_pct.is_some() && h.uptime_s.is_some())
        })
        .await;

    // A console restart (new epoch) brings status and birth again, on the same connection.
    console.publish_state(&console.identity, 2).await;
    let again = console
        .expect(&dir, "status after new epoch", status(true, false))
        .await;
    assert_eq!(bd_seq(&again), 2);
    console
        .expect(&dir, "birth after new epoch", |m| {
            matches!(m, AgentMessage::Birth(_))
        })
        .await;

    // A crash: the broker publishes the sealed will for this bd_seq.
    agent.abort();
    let will = console
        .expect(&dir, "last-will", status(false, false))
        .await;
    assert_eq!(bd_seq(&will), 2);

    // Restarted on the same data dir (the database is released after the abort): no
    // first-contact dance any more, the next bd_seq, and a clean goodbye.
    let agent = start_agent(&console.url(), &dir, 1).await;
    let online = console
        .expect(&dir, "online after restart", status(true, false))
        .await;
    assert_eq!(bd_seq(&online), 3);
    agent.wait_for(DEADLINE, |s| s.connected).await.unwrap();
    let started = std::time::Instant::now();
    agent.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let bye = console
        .expect(&dir, "clean offline status", status(false, true))
        .await;
    assert_eq!(bd_seq(&bye), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_while_the_console_is_unreachable_survive_a_restart_in_order() {
    let mut console = Console::start();
    console.publish_state(&console.identity, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    // Already pinned (an earlier contact), so the events can be sealed when delivered.
    std::fs::create_dir_all(&dir).unwrap();
    let key: String = console
        .identity
        .public_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.join("console.pub"), key).unwrap();

    let offline = start_agent(&dead_url(), &dir, 2).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            offline
                .emit_event(EventLevel::Warn, "offline", &format!("n{i}"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(offline.status().queue_depth, 20);
    assert!(!offline.status().connected);
    offline.shutdown().await;

    let agent = start_agent(&console.url(), &dir, 2).await;
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        if let AgentMessage::Event(e) = console
            .expect(&dir, "queued event", |m| {
                matches!(m, AgentMessage::Event(_))
            })
            .await
        {
            assert_eq!(
                e.bd_seq,
                agent.status().bd_seq,
                "stamped when sent, not when queued"
            );
            seen.push(e.event_id);
        }
    }
    assert_eq!(seen, ids, "all of them, in order");
    agent
        .wait_for(DEADLINE, |s| s.queue_depth == 0)
        .await
        .expect("each item is removed after its PUBACK");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_the_console_key_it_names_is_pinned() {
    let mut console = Console::start();
    let impostor = Identity::generate();
    console.publish_state(&impostor, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let mut config = agent_config(&console.url(), &dir);
    config.token =
        Some(EnrollToken::generate(console.identity.public_key().fingerprint()).to_string());
    let agent = edgefleet_agent::spawn(AgentOptions::new(config, SimProbe::new(3)))
        .await
        .unwrap();
    // Connected, has seen the impostor's retained state, and pinned nothing.
    agent.wait_for(DEADLINE, |s| s.connected).await.unwrap();
    // The real console's state replaces it; only that one is pinned.
    console.publish_state(&console.identity, 7).await;
    console
        .expect(&dir, "online status", status(true, false))
        .await;
    let pinned = std::fs::read_to_string(dir.join("console.pub")).unwrap();
    assert!(pinned.starts_with(&format!(
        "{:02x}",
        console.identity.public_key().as_bytes()[0]
    )));
    assert_eq!(
        agent.status().console_key.as_deref(),
        Some(
            console
                .identity
                .public_key()
                .fingerprint()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .as_str()
        )
    );
    agent.shutdown().await;
}

/// Collects messages until `done` says every agent in `dirs` has sent what it waits for.
async fn collect_from_all(
    console: &mut Console,
    dirs: &[std::path::PathBuf],
    what: &str,
    mut want: impl FnMut(&AgentMessage) -> bool,
) -> Vec<AgentMessage> {
    let agents: Vec<(String, MacKey)> = dirs
        .iter()
        .map(|d| {
            let seed = edgefleet_config::keyfile::read_secret(&d.join("agent.key")).unwrap();
            let id = Identity::from_seed(&seed.try_into().unwrap()).agent_id();
            (id.to_string(), console.mac_for(d))
        })
        .collect();
    let mut found: Vec<Option<AgentMessage>> = vec![None; agents.len()];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while found.iter().any(Option::is_none) {
        let msg = tokio::time::timeout_at(deadline, console.inbound.recv())
            .await
            .unwrap_or_else(|_| panic!("not every agent sent {what}: {found:?}"))
            .expect("broker link open");
        if console.approve_enrollment(&msg).await {
            continue;
        }
        for (i, (id, mac)) in agents.iter().enumerate() {
            if msg.topic.starts_with(&format!("ef/a/{id}/")) {
                let id: edgefleet_codec::AgentId = id.parse().unwrap();
                let opened = open_agent(&msg.payload, &id, mac).unwrap();
                if found[i].is_none() && want(&opened) {
                    found[i] = Some(opened);
                }
            }
        }
    }
    found.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_runs_n_agents_that_keep_their_identities_across_restarts() {
    use edgefleet_agent::simulate::{self, SimulateOptions};
    let mut console = Console::start();
    console.publish_state(&console.identity, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let opts = SimulateOptions {
        count: 3,
        url: edgefleet_config::parse_mqtt_url(&console.url()).unwrap(),
        heartbeat_interval: Duration::from_secs(1),
        data_dir: tmp.path().to_path_buf(),
        token: Some(EnrollToken::generate(
            console.identity.public_key().fingerprint(),
        )),
        first_index: 0,
        connect_rate: simulate::RAMP_PER_SEC,
    };
    let dirs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("sim-{i}")))
        .collect();
    let mut first_bd_seqs = Vec::new();
    for round in 0..2 {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let sim = tokio::spawn(simulate::run(opts.clone(), shutdown.clone()));
        let deadline = std::time::Instant::now() + DEADLINE;
        while !dirs.iter().all(|d| d.join("agent.key").exists()) {
            assert!(std::time::Instant::now() < deadline, "keys not created");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let online =
            collect_from_all(&mut console, &dirs, "online status", status(true, false)).await;
        let bd_seqs: Vec<u64> = online.iter().map(bd_seq).collect();
        if round == 0 {
            first_bd_seqs = bd_seqs;
        } else {
            // Same keys (the messages verified with them), and the counters went on.
            for (a, b) in first_bd_seqs.iter().zip(&bd_seqs) {
                assert!(b > a, "{first_bd_seqs:?} then {bd_seqs:?}");
            }
        }
        collect_from_all(&mut console, &dirs, "a heartbeat", |m| {
            matches!(m, AgentMessage::Heartbeat(_))
        })
        .await;
        let started = std::time::Instant::now();
        shutdown.cancel();
        sim.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        collect_from_all(
            &mut console,
            &dirs,
            "clean offline status",
            status(false, true),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stay_queued_until_the_console_receipts_them_and_go_again_after_a_console_restart() {
    let mut console = Console::start();
    console.publish_state_with(&console.identity, 1, true).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let agent = start_agent(&console.url(), &dir, 3).await;
    console
        .expect(&dir, "birth", |m| matches!(m, AgentMessage::Birth(_)))
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            agent
                .emit_event(EventLevel::Info, "test", &format!("e{i}"))
                .await
                .unwrap(),
        );
    }
    let event_ids = |m: &AgentMessage| match m {
        AgentMessage::Event(e) => Some(e.event_id),
        _ => None,
    };
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = console
            .expect(&dir, "event", |m| matches!(m, AgentMessage::Event(_)))
            .await;
        seen.extend(event_ids(&m));
    }
    assert_eq!(seen, ids);
    // The broker acknowledged all three (PUBACK): they stay queued, waiting for a receipt.
    let s = agent
        .wait_for(DEADLINE, |s| s.unreceipted == 3)
        .await
        .expect("the PUBACKs arrive and the events wait for their receipt");
    assert_eq!(s.queue_depth, 3);

    // One receipt: that event leaves the queue.
    console.receipt(&dir, vec![ids[1]]).await;
    let s = agent
        .wait_for(DEADLINE, |s| s.unreceipted == 2)
        .await
        .unwrap();
    assert_eq!(s.queue_depth, 2);

    // The console restarts (a new epoch on the same connection): it may have lost what it
    // had not receipted, so the other two go out again, in order, with the same ids.
    console.publish_state_with(&console.identity, 2, true).await;
    let mut again = Vec::new();
    while again.len() < 2 {
        let m = console
            .expect(&dir, "event sent again", |m| {
                matches!(m, AgentMessage::Event(_))
            })
            .await;
        again.extend(event_ids(&m));
    }
    assert_eq!(again, [ids[0], ids[2]]);
    console.receipt(&dir, vec![ids[0], ids[2]]).await;
    agent
        .wait_for(DEADLINE, |s| s.queue_depth == 0 && s.unreceipted == 0)
        .await
        .expect("receipted events leave the queue");
    agent.shutdown().await;
}
