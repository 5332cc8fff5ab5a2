//! What message authentication costs on ingest, measured in one run (compare the ratios,
//! not the absolute numbers, on a noisy machine):
//!
//!     cargo bench -p edgefleet-console --bench verify
//!
//! 1. `open_agent` (Mac0 tag check + decode) against decoding the same bytes without the
//!    tag check, per message.
//! 2. `Fleet::ingest` of the same heartbeats in batches of 500 (verify, presence, sled
//!    write): the real ingest rate. The ingest path has no switch to turn verification off,
//!    so the rate without it is estimated by taking the measured verification cost away.

use std::sync::Arc;
use std::time::Instant;

use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::api::TokenCreate;
use edgefleet_codec::{
    open_agent, seal_agent, AgentMessage, Channel, EnrollRequest, Heartbeat, Identity, MacKey,
    Topics,
};
use edgefleet_console::fleet::{now_ms, Fleet};
use edgefleet_console::presence::Timings;
use edgefleet_console::store::Store;

const AGENTS: usize = 200;
const ROUNDS: u64 = 100;

fn main() {
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
    let _outbox = fleet.take_outbox();
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
    let agents: Vec<(Identity, MacKey)> = (0..AGENTS)
        .map(|i| {
            let me = Identity::generate();
            let id = me.agent_id();
            assert!(fleet.accept_connect(&ConnectAttempt {
                client_id: format!("{id}-1"),
                username: edgefleet_codec::connect::username(&me, Some(&token)),
                password: edgefleet_codec::connect::password(&me, now_ms() / 1000),
            }));
            let req = EnrollRequest {
                agent_id: id.to_string(),
                public_key: *me.public_key().as_bytes(),
                hostname: format!("bench-{i}"),
                os: "Debian".into(),
                ips: vec![format!("10.9.{}.{}", i / 256, i % 256)],
                token_id: token.id.clone(),
                proof: token.proof(&me.public_key()),
                at: now_ms() / 1000,
            };
            fleet.ingest(vec![Inbound::new(
                Topics::default().enroll(&id),
                edgefleet_codec::sign_enroll_request(&req, &me),
            )]);
            let mac = MacKey::derive_agent(&me, &console.public_key()).unwrap();
            (me, mac)
        })
        .collect();
    // Every round: one heartbeat per agent, sequence numbers advancing.
    let rounds: Vec<Vec<Inbound>> = (1..=ROUNDS)
        .map(|seq| {
            agents
                .iter()
                .map(|(me, mac)| {
                    let id = me.agent_id();
                    let hb = AgentMessage::Heartbeat(Heartbeat {
                        bd_seq: 1,
                        seq,
                        cpu_pct: Some((seq % 100) as u8),
                        mem_pct: Some(40),
                        disk_pct: Some(12),
                        ..Default::default()
                    });
                    Inbound::new(
                        Topics::default().agent(&id, Channel::Heartbeat),
                        seal_agent(&hb, &id, mac),
                    )
                })
                .collect()
        })
        .collect();
    let n = (AGENTS as u64 * ROUNDS) as f64;
    let ids: Vec<_> = agents.iter().map(|(me, _)| me.agent_id()).collect();
    let console_macs: Vec<MacKey> = agents
        .iter()
        .map(|(me, _)| MacKey::derive_console(&console, &me.public_key()).unwrap())
        .collect();

    let start = Instant::now();
    for round in &rounds {
        for (i, msg) in round.iter().enumerate() {
            std::hint::black_box(open_agent(&msg.payload, &ids[i], &console_macs[i]).unwrap());
        }
    }
    let verify_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for round in &rounds {
        for msg in round {
            std::hint::black_box(
                edgefleet_codec::cose::decode_agent_unverified_for_bench(&msg.payload).unwrap(),
            );
        }
    }
    let decode_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for round in rounds {
        for batch in round.chunks(500) {
            fleet.ingest(batch.to_vec());
        }
    }
    let ingest_s = start.elapsed().as_secs_f64();
    assert_eq!(
        fleet.metrics.rejected_total(),
        0,
        "every heartbeat verifies"
    );

    let mac_us = (verify_s - decode_s) / n * 1e6;
    let with = n / ingest_s;
    let without = n / (ingest_s - (verify_s - decode_s)).max(1e-9);
    println!("messages: {n}");
    println!(
        "open_agent (tag check + decode): {:.2} µs/message",
        verify_s / n * 1e6
    );
    println!(
        "decode without the tag check:     {:.2} µs/message",
        decode_s / n * 1e6
    );
    println!("verification cost:               {mac_us:.2} µs/message");
    println!("ingest with verification:        {with:.0} messages/s");
    println!("ingest without (estimated):      {without:.0} messages/s");
    println!("ratio with / without:            {:.3}", with / without);
}
