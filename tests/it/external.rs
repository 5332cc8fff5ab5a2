//! The console behind an external broker (issue 9): a real Mosquitto started by the harness.
//!
//! The whole suite also runs against Mosquitto on a second pass (`harness::external_broker`).
//! These tests are about the external mode itself, so they start their own Mosquitto on the
//! first pass and are not repeated on the second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, bin, free_port, wait_for, AgentProc, Console, ConsoleOpts};

async fn all_online(console: &Console, n: usize) -> bool {
    let agents = console.agents().await;
    agents.len() == n && agents.iter().all(|a| a["status"] == "online")
}

async fn broker_connected(console: &Console) -> Option<u64> {
    let (_, text) = console.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("edgefleet_broker_connected "))
        .and_then(|v| v.trim().parse().ok())
}

async fn offline_transitions(console: &Console) -> BTreeMap<String, Vec<Value>> {
    let mut found = BTreeMap::new();
    for agent in console.agents().await {
        let id = agent["id"].as_str().unwrap().to_string();
        let d = console.get(&format!("/api/agents/{id}")).await;
        let offline: Vec<Value> = d["status_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["status"] == "offline")
            .cloned()
            .collect();
        if !offline.is_empty() {
            found.insert(id, offline);
        }
    }
    found
}

/// Mosquitto dies (SIGKILL, no wills) for longer than the agents' timeout, and comes back
/// on the same port. The console holds presence timeouts while it is cut off, reconnects
/// with backoff, and announces a new epoch; agents reconnect on their own. Nobody is marked
/// offline: the outage was the broker's, not the devices'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_restart_reconnects_everyone_without_a_false_offline() {
    if harness::external_broker() {
        return; // starts its own Mosquitto on the first pass
    }
    // BENCHMARKS.md reports the spread for 1,000 (EDGEFLEET_RECONNECT_AGENTS=1000).
    let count: usize = std::env::var("EDGEFLEET_RECONNECT_AGENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().unwrap();
    // Agents retry with full jitter up to a 60 s cap, so after a broker outage the last
    // one may take that long to come back: the grace must cover it (the default is 60 s).
    let opts = ConsoleOpts {
        heartbeat_interval: "2s",
        restart_grace: "70s",
        grace: "2s",
        mosquitto: Some(String::new()),
        ..ConsoleOpts::default()
    };
    let mut console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    let _sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        count,
        "2s",
    )
    .unwrap();
    wait_for(Duration::from_secs(60), "all agents online", || async {
        all_online(&console, count).await.then_some(())
    })
    .await;
    assert_eq!(broker_connected(&console).await, Some(1));

    let broker = console.broker.as_mut().unwrap();
    broker.kill().await;
    // Longer than 2 missed intervals + grace (6 s): without the hold, everyone times out.
    let outage = Duration::from_secs(10);
    tokio::time::sleep(outage).await;
    let back = Instant::now();
    broker.restart().await.unwrap();
    wait_for(
        Duration::from_secs(20),
        "the console back on Mosquitto",
        || async { (broker_connected(&console).await == Some(1)).then_some(()) },
    )
    .await;
    // Every agent reconnects (the log names each client that connects after the restart).
    let log = wait_for(
        Duration::from_secs(90),
        "all agents reconnected",
        || async {
            let log = console.broker.as_ref().unwrap().log();
            let agents = log
                .lines()
                .filter(|l| l.contains("New client connected") && !l.contains("edgefleet-console"))
                .count();
            (agents >= count).then_some(log)
        },
    )
    .await;
    let seconds: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("New client connected") && !l.contains("edgefleet-console"))
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect();
    let spread = seconds.iter().max().unwrap() - seconds.iter().min().unwrap();
    let mut per_second = BTreeMap::new();
    for s in &seconds {
        *per_second.entry(*s).or_insert(0u32) += 1;
    }
    let peak = per_second.values().max().unwrap();
    eprintln!(
        "after a {outage:?} Mosquitto outage, {count} agents reconnected over {spread} s, \
         at most {peak} in one second (whole-second log timestamps); the last {:?} after the broker was back",
        back.elapsed()
    );
    wait_for(
        Duration::from_secs(30),
        "all agents online again",
        || async { all_online(&console, count).await.then_some(()) },
    )
    .await;
    // Stay past two heartbeat intervals plus grace, where a false timeout would show.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(all_online(&console, count).await);
    let offline = offline_transitions(&console).await;
    assert!(offline.is_empty(), "false offline transitions: {offline:?}");
}

/// While the broker is unreachable the console still starts and serves its API; it says so
/// on /metrics, and connects as soon as the broker appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_starts_without_its_broker_and_connects_when_it_appears() {
    if harness::external_broker() {
        return; // starts its own Mosquitto on the first pass
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let opts = ConsoleOpts {
        extra_toml: format!("[mqtt]\nexternal = \"mqtt://127.0.0.1:{port}\"\n"),
        ..ConsoleOpts::default()
    };
    let console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    assert_eq!(broker_connected(&console).await, Some(0));
    wait_for(
        Duration::from_secs(10),
        "the connection error logged",
        || async {
            let log = console.log_tail();
            log.contains("no connection to the external broker")
                .then_some(())
        },
    )
    .await;
    let listener = format!("listener {port} 127.0.0.1\n");
    let _broker = harness::Mosquitto::start(&tmp.path().join("mosquitto"), &listener)
        .await
        .unwrap();
    // Backoff is capped at 30 s (plus jitter); the console has failed only a few times.
    wait_for(Duration::from_secs(20), "the console connected", || async {
        (broker_connected(&console).await == Some(1)).then_some(())
    })
    .await;
    let _agent = AgentProc::run(
        &tmp.path().join("agent"),
        &format!("mqtt://127.0.0.1:{port}"),
        &console.token,
        "",
    )
    .unwrap();
    wait_for(Duration::from_secs(20), "the agent online", || async {
        all_online(&console, 1).await.then_some(())
    })
    .await;
}

/// `mqtts://` to Mosquitto with `mqtt.ca_file`: the console and an agent both trust the CA
/// from `edgefleet-console init-tls`; a console given another CA stays out, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reaches_mosquitto_over_tls_and_refuses_an_unknown_ca() {
    if harness::external_broker() {
        return; // starts its own Mosquitto on the first pass
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let other = tmp.path().join("other");
    for dir in [&pki, &other] {
        let out = std::process::Command::new(bin("edgefleet-console"))
            .args(["init-tls", "--name", "localhost", "--out"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port();
    let listener = format!(
        "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display()
    );
    let url = format!("mqtts://localhost:{port}");
    let opts = ConsoleOpts {
        mosquitto: Some(listener),
        extra_toml: format!(
            "[mqtt]\nexternal = {url:?}\nca_file = {:?}\n",
            pki.join("ca.pem")
        ),
        ..ConsoleOpts::default()
    };
    let console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "the console connected over TLS",
        || async { (broker_connected(&console).await == Some(1)).then_some(()) },
    )
    .await;
    let _agent = AgentProc::run(
        &tmp.path().join("agent"),
        &url,
        &console.token,
        &format!("ca_file = {:?}", pki.join("ca.pem")),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the agent online over TLS",
        || async { all_online(&console, 1).await.then_some(()) },
    )
    .await;

    // Another console that trusts another CA: it starts, stays disconnected, and logs the
    // certificate error.
    let wrong = ConsoleOpts {
        extra_toml: format!(
            "[mqtt]\nexternal = {url:?}\nca_file = {:?}\n",
            other.join("ca.pem")
        ),
        ..ConsoleOpts::default()
    };
    let stranger = Console::start(&tmp.path().join("stranger"), wrong)
        .await
        .unwrap();
    let log = wait_for(Duration::from_secs(15), "a certificate error", || async {
        let log = stranger.log_tail();
        log.contains("no connection to the external broker")
            .then_some(log)
    })
    .await;
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    assert_eq!(broker_connected(&stranger).await, Some(0));
}
