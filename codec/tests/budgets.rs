//! Byte budgets of the wire format, printed and asserted. Run with `--nocapture` to see the
//! numbers recorded in BENCHMARKS.md.

use edgefleet_codec::{
    apps_digest, seal_agent, sign_console, AgentMessage, AppState, AppStatus, Channel, Command,
    CommandAction, ConsoleMessage, Deadband, Heartbeat, HeartbeatReporter, Identity, MacKey,
    Topics, Vitals,
};

/// Length of an MQTT 3.1.1 PUBLISH packet at QoS 0 by the header formula: fixed header byte,
/// remaining-length varint, 2-byte topic length, topic, payload.
fn publish_packet_len(topic: &str, payload_len: usize) -> usize {
    let remaining = 2 + topic.len() + payload_len;
    let varint = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + varint + remaining
}

fn realistic_vitals() -> Vitals {
    let apps = ["modbus-bridge", "camera", "edge-db", "vpn"].map(|id| AppState {
        id: id.to_string(),
        status: AppStatus::Active,
        version: Some("1.4.2".to_string()),
    });
    Vitals {
        cpu_pct: 37,
        mem_pct: 61,
        disk_pct: 42,
        load_centi: 85,
        uptime_s: 3 * 86_400,
        rx_bps: 1530,
        tx_bps: 820,
        apps_digest: apps_digest(&apps),
    }
}

struct Setup {
    agent: Identity,
    key: MacKey,
    topic: String,
}

fn setup() -> Setup {
    let agent = Identity::from_seed(&[3; 32]);
    let console = Identity::from_seed(&[4; 32]);
    let key = MacKey::derive_agent(&agent, &console.public_key()).expect("contributory keys");
    let topic = Topics::default().agent(&agent.agent_id(), Channel::Heartbeat);
    Setup { agent, key, topic }
}

fn sealed_len(s: &Setup, mut hb: Heartbeat) -> usize {
    hb.bd_seq = 5;
    hb.seq = 120;
    seal_agent(&AgentMessage::Heartbeat(hb), &s.agent.agent_id(), &s.key).len()
}

#[test]
fn full_heartbeat_fits_in_80_bytes_on_the_wire() {
    let s = setup();
    let payload = sealed_len(&s, realistic_vitals().keyframe());
    let packet = publish_packet_len(&s.topic, payload);
    println!("BUDGET heartbeat_full payload={payload} B packet={packet} B (limit 80)");
    assert!(packet <= 80, "full heartbeat PUBLISH is {packet} bytes");
}

#[test]
fn steady_state_heartbeat_fits_in_64_bytes_on_the_wire() {
    let s = setup();
    let mut reporter = HeartbeatReporter::new(Deadband::default());
    let mut v = realistic_vitals();
    reporter.next(&v);
    v.cpu_pct += 9; // only the cpu moved beyond its deadband
    v.mem_pct += 1;
    v.uptime_s += 30;
    let hb = reporter.next(&v);
    assert_eq!(hb.cpu_pct, Some(46));
    assert_eq!(hb.mem_pct, None);
    let payload = sealed_len(&s, hb);
    let packet = publish_packet_len(&s.topic, payload);
    println!("BUDGET heartbeat_steady payload={payload} B packet={packet} B (limit 64)");
    assert!(
        packet <= 64,
        "steady-state heartbeat PUBLISH is {packet} bytes"
    );
}

#[test]
fn json_comparison_for_the_same_heartbeat() {
    let s = setup();
    let v = realistic_vitals();
    let cbor_packet = publish_packet_len(&s.topic, sealed_len(&s, v.keyframe()));
    // The obvious JSON a hand-rolled agent would send, with the same ids and numbers, and
    // no authentication at all.
    let json = serde_json::json!({
        "agent_id": s.agent.agent_id().to_string(),
        "bd_seq": 5, "seq": 120,
        "cpu_pct": 37.0, "mem_pct": 61.0, "disk_pct": 42.0, "load1": 0.85,
        "uptime_s": v.uptime_s, "rx_bytes_per_s": 1530, "tx_bytes_per_s": 820,
        "apps": {"modbus-bridge": "active", "camera": "active", "edge-db": "active", "vpn": "active"},
    })
    .to_string();
    let json_packet = publish_packet_len(&s.topic, json.len());
    let ratio = json_packet as f64 / cbor_packet as f64;
    println!(
        "BUDGET heartbeat_json packet={json_packet} B vs cbor+cose {cbor_packet} B: {ratio:.1}x"
    );
    assert!(
        ratio > 2.0,
        "CBOR+COSE should be far smaller than JSON, ratio {ratio}"
    );
}

#[test]
fn mac0_envelope_overhead_is_small_and_fixed() {
    let s = setup();
    let hb = realistic_vitals().keyframe();
    let body = AgentMessage::Heartbeat(Heartbeat {
        bd_seq: 5,
        seq: 120,
        ..hb.clone()
    })
    .to_stored()
    .len();
    let sealed = sealed_len(&s, hb);
    let overhead = sealed - body;
    println!("BUDGET mac0_overhead={overhead} B (header byte + COSE_Mac0 + 8-byte tag)");
    assert!(overhead <= 16, "Mac0 adds {overhead} bytes");
}

#[test]
fn restart_app_command_is_under_200_bytes() {
    let console = Identity::from_seed(&[4; 32]);
    let agent = Identity::from_seed(&[3; 32]).agent_id();
    let cmd = Command {
        id: [0xa5; 16],
        target: agent.to_string(),
        issued_at: 1_790_000_000,
        expires_at: 1_790_000_300,
        action: CommandAction::RestartApp {
            app: "modbus-bridge".to_string(),
        },
    };
    let len = sign_console(&ConsoleMessage::Command(cmd), Some(&agent), &console).len();
    println!("BUDGET command_restart_app payload={len} B (limit 200)");
    assert!(len < 200, "restart-app command is {len} bytes");
}

/// 2,000 packages: the 828 real ones of this project's build machine (the agent's dpkg
/// fixture) plus 1,172 with pseudo-random names and versions, which compress worse than
/// real ones do, so the figure is on the safe side.
fn inventory_2000() -> Vec<edgefleet_codec::Package> {
    let real = include_str!("../../edge-agent/tests/fixtures/dpkg-query.txt");
    let mut pkgs: Vec<edgefleet_codec::Package> = real
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(edgefleet_codec::Package {
                name: f.next()?.to_string(),
                version: f.next()?.to_string(),
                arch: f.next()?.to_string(),
                source: "dpkg".to_string(),
            })
        })
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while pkgs.len() < 2000 {
        let len = 5 + (next() % 12) as usize;
        let name: String = (0..len)
            .map(|_| (b'a' + (next() % 26) as u8) as char)
            .collect();
        let version = format!(
            "{}.{}.{}-{}",
            next() % 10,
            next() % 30,
            next() % 100,
            next() % 5
        );
        let arch = ["amd64", "all"][(next() % 2) as usize].to_string();
        pkgs.push(edgefleet_codec::Package {
            name: format!("lib{name}"),
            version,
            arch,
            source: "dpkg".to_string(),
        });
    }
    pkgs
}

#[test]
fn inventory_one_package_delta_and_full_snapshot_fit_their_budgets() {
    use edgefleet_codec::{InventoryChunk, InventoryDelta};
    let s = setup();
    let id = s.agent.agent_id();
    let topics = Topics::default();
    let inv_topic = topics.agent(&id, Channel::Inventory);
    let old = inventory_2000();
    let mut new = old.clone();
    let i = new.iter().position(|p| p.name == "curl").unwrap_or(0);
    new[i].version.push_str("+deb12u9");

    let mut delta = InventoryDelta::between(&old, &new, "dpkg").unwrap();
    delta.bd_seq = 5;
    delta.seq = 300;
    let sealed = seal_agent(&AgentMessage::InventoryDelta(delta.clone()), &id, &s.key).len();
    let json = serde_json::to_vec(&serde_json::json!({
        "bd_seq": 5, "seq": 300, "base_digest": hex(&delta.base_digest),
        "new_digest": hex(&delta.new_digest), "added": [], "removed": [],
        "changed": [{"name": new[i].name, "version": new[i].version, "arch": new[i].arch, "source": "dpkg"}],
        "source": "dpkg"
    }))
    .unwrap()
    .len();
    println!(
        "inventory delta, 1 of 2000 packages changed: {sealed} B sealed payload, {} B MQTT packet (JSON body alone: {json} B)",
        publish_packet_len(&inv_topic, sealed)
    );
    assert!(sealed <= 200, "{sealed}");

    let chunks = InventoryChunk::split(1, "dpkg", &new);
    let total: usize = chunks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.bd_seq = 5;
            c.seq = 301;
            seal_agent(&AgentMessage::InventoryChunk(c), &id, &s.key).len()
        })
        .sum();
    let json: usize = serde_json::to_vec(
        &new.iter()
            .map(|p| serde_json::json!({"name": p.name, "version": p.version, "arch": p.arch, "source": p.source}))
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .len();
    println!(
        "inventory full snapshot, 2000 packages: {total} B sealed in {} chunks (JSON: {json} B)",
        chunks.len()
    );
    assert_eq!(chunks.len(), 4);
    assert!(total <= 40 * 1024, "{total}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}
