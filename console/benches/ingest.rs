//! The console's own ingest ceiling, with no broker and no simulator on the same cores:
//! `Fleet::ingest` fed straight from memory, as the ingest thread is fed by the broker link.
//!
//!     cargo bench -p edgefleet-console --bench ingest -- [AGENTS] [ROUNDS]
//!
//! 1. Enrollment: AGENTS agents enroll one by one (token with auto-approve), each in its own
//!    ingest round, as they arrive during a ramp. Reports enrollments per second.
//! 2. Heartbeats: ROUNDS rounds of one heartbeat per agent, in batches of 500 (the ingest
//!    thread's batch size), into a real sled database on disk. Reports heartbeats per second.
//! 3. Births: every agent reconnects (a new bd_seq birth, a status transition each), in
//!    batches of 500, as after a console or broker restart. Reports births per second.
//!
//! Defaults: 10,000 agents, 10 rounds.

use std::sync::Arc;
use std::time::Instant;

use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::api::TokenCreate;
use edgefleet_codec::{
    seal_agent, AgentMessage, Birth, Channel, EnrollRequest, Heartbeat, Identity, MacKey, Topics,
};
use edgefleet_console::fleet::{now_ms, Fleet};
use edgefleet_console::presence::Timings;
use edgefleet_console::store::Store;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<usize>().expect("arguments: [AGENTS] [ROUNDS]"));
    let agents_n = args.next().unwrap_or(10_000);
    let rounds = args.next().unwrap_or(10) as u64;
    let dir = tempfile::tempdir().unwrap();
    let console = Identity::generate();
    let fleet = Arc::new(
        Fleet::open(
            Store::open(&dir.path().join("db")).unwrap(),
            console.clone(),
            Topics::default(),
            Timings::of(&edgefleet_config::console::PresenceConfig::default()),
        )
        .unwrap(),
    );
    // Drained, as the publisher task does: enrollment answers go out through it.
    let mut outbox = fleet.take_outbox().unwrap();
    std::thread::spawn(move || while outbox.blocking_recv().is_some() {});
    let (token, _) = fleet
        .tokens
        .create(
            &TokenCreate {
                auto_approve: true,
                ..TokenCreate::default()
            },
            "bench",
            console.public_key().fingerprint(),
            now_ms(),
        )
        .unwrap();
    let identities: Vec<Identity> = (0..agents_n).map(|_| Identity::generate()).collect();

    let start = Instant::now();
    for (i, me) in identities.iter().enumerate() {
        let id = me.agent_id();
        assert!(fleet.accept_connect(&ConnectAttempt {
            client_id: format!("{id}-1"),
            username: edgefleet_codec::connect::username(me, Some(&token)),
            password: edgefleet_codec::connect::password(me, now_ms() / 1000),
        }));
        let req = EnrollRequest {
            agent_id: id.to_string(),
            public_key: *me.public_key().as_bytes(),
            hostname: format!("bench-{i}"),
            os: "Debian".into(),
            ips: vec![format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
            token_id: token.id.clone(),
            proof: token.proof(&me.public_key()),
            at: now_ms() / 1000,
        };
        fleet.ingest(vec![Inbound::new(
            Topics::default().enroll(&id),
            edgefleet_codec::sign_enroll_request(&req, me),
        )]);
    }
    let enroll_s = start.elapsed().as_secs_f64();
    assert_eq!(
        fleet.metrics.rejected_total(),
        0,
        "every enrollment is accepted"
    );
    let agents: Vec<(Identity, MacKey)> = identities
        .into_iter()
        .map(|me| {
            let mac = MacKey::derive_agent(&me, &console.public_key()).unwrap();
            (me, mac)
        })
        .collect();

    let message = |me: &Identity, mac: &MacKey, msg: &AgentMessage, channel: Channel| {
        let id = me.agent_id();
        Inbound::new(
            Topics::default().agent(&id, channel),
            seal_agent(msg, &id, mac),
        )
    };
    let births: Vec<Inbound> = agents
        .iter()
        .enumerate()
        .map(|(i, (me, mac))| message(me, mac, &birth(1, i), Channel::Birth))
        .collect();
    let heartbeats: Vec<Vec<Inbound>> = (1..=rounds)
        .map(|seq| {
            agents
                .iter()
                .map(|(me, mac)| {
                    let hb = AgentMessage::Heartbeat(Heartbeat {
                        bd_seq: 1,
                        seq,
                        cpu_pct: Some((seq % 100) as u8),
                        mem_pct: Some(40),
                        disk_pct: Some(12),
                        ..Default::default()
                    });
                    message(me, mac, &hb, Channel::Heartbeat)
                })
                .collect()
        })
        .collect();
    let rebirths: Vec<Inbound> = agents
        .iter()
        .enumerate()
        .map(|(i, (me, mac))| message(me, mac, &birth(2, i), Channel::Birth))
        .collect();

    for batch in births.chunks(500) {
        fleet.ingest(batch.to_vec());
    }
    let start = Instant::now();
    for round in heartbeats {
        for batch in round.chunks(500) {
            fleet.ingest(batch.to_vec());
        }
    }
    let heartbeat_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for batch in rebirths.chunks(500) {
        fleet.ingest(batch.to_vec());
    }
    let rebirth_s = start.elapsed().as_secs_f64();
    assert_eq!(fleet.metrics.rejected_total(), 0, "every message verifies");

    let n = agents_n as f64;
    println!("agents: {agents_n}, heartbeat rounds: {rounds}");
    println!("enrollments:      {:.0} /s", n / enroll_s);
    println!(
        "heartbeats:       {:.0} /s",
        n * rounds as f64 / heartbeat_s
    );
    println!("births (restart): {:.0} /s", n / rebirth_s);
}

fn birth(bd_seq: u64, i: usize) -> AgentMessage {
    AgentMessage::Birth(Birth {
        bd_seq,
        seq: 0,
        hostname: format!("bench-{i}"),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        ips: vec![format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
        agent_version: "0.1.0".into(),
        boot_time: 1_700_000_000,
        apps: Vec::new(),
        inventory_digest: None,
        heartbeat_interval_s: 30,
        inventory_interval_s: None,
        labels: Default::default(),
    })
}
