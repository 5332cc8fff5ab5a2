//! Latency from an agent's death to the offline webhook arriving, with a real console, real
//! agents and a real webhook receiver on loopback.
//!
//!     cargo build --release -p edgefleet-console -p edgefleet-agent
//!     cargo bench -p edgefleet-tests --bench alert_latency -- [abrupt-trials] [silent-trials]
//!
//! Abrupt death: the agent's connection closes (the broker publishes its will), with
//! `offline_grace` 0 and the default 10 s. Silent loss: a fault proxy between agent and
//! broker swallows everything (no FIN, no RST), so only the broker's keepalive timeout
//! (1.5 x keepalive) notices, at keepalive 10 s and 30 s, `offline_grace` 0.

#[path = "../it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::{AgentHandle, AgentOptions};
use edgefleet_config::HumanDuration;
use edgefleet_tests::proxy::{Fault, FaultProxy};
use edgefleet_tests::webhook::Receiver;
use harness::{free_port, wait_for, Console, ConsoleOpts};

/// A fresh agent per trial (own key, hostname and IP): the same host dying over and over
/// would be flapping, which replaces offline alerts by design.
async fn agent(
    console: &Console,
    url: &str,
    dir: &std::path::Path,
    keepalive: u64,
    index: usize,
) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![url.to_string()],
        data_dir: dir.to_path_buf(),
        token: Some(console.token.clone()),
        keepalive: HumanDuration(Duration::from_secs(keepalive)),
        ..Default::default()
    };
    edgefleet_agent::spawn(AgentOptions::new(config, SimProbe::new(index)))
        .await
        .unwrap()
}

async fn online(console: &Console, id: &str) {
    wait_for(Duration::from_secs(30), "agent online", || async {
        let (code, body) = console.get_text(&format!("/api/agents/{id}")).await;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && doc["status"] == "online").then_some(())
    })
    .await;
}

fn fired(receiver: &Receiver) -> Vec<Instant> {
    receiver
        .deliveries()
        .iter()
        .filter(|d| d.body["event"] == "alert.fired" && d.body["alert"]["rule"] == "agent-offline")
        .map(|d| d.at)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn scenario(name: &str, grace: &str, keepalive: Option<u64>, trials: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    let console = Console::start(
        &tmp.path().join("console"),
        ConsoleOpts {
            extra_toml: format!(
                "[alerts]\noffline_grace = {grace:?}\n\n[[alerts.webhooks]]\nurl = {:?}\n",
                receiver.url()
            ),
            ..ConsoleOpts::default()
        },
    )
    .await
    .unwrap();
    let proxy = FaultProxy::start(console.mqtt).await.unwrap();
    let url = match keepalive {
        Some(_) => format!("mqtt://{}", proxy.addr()),
        None => console.mqtt_url(),
    };
    let mut samples = Vec::with_capacity(trials);
    for trial in 0..trials {
        proxy.set_fault(Fault::None);
        let dir = tmp.path().join(format!("agent-{trial}"));
        let a = agent(&console, &url, &dir, keepalive.unwrap_or(30), trial).await;
        let id = a.agent_id().to_string();
        online(&console, &id).await;
        let before = fired(&receiver).len();
        let start = Instant::now();
        let a = match keepalive {
            None => {
                a.abort();
                None
            }
            Some(_) => {
                proxy.set_fault(Fault::Blackhole);
                Some(a)
            }
        };
        let limit = Duration::from_secs(120);
        let deadline = Instant::now() + limit;
        let at = loop {
            if let Some(at) = fired(&receiver).get(before).copied() {
                break at;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: no offline webhook {limit:?} after trial {}; console log:\n{}",
                    samples.len() + 1,
                    console.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        samples.push(at.duration_since(start));
        if let Some(a) = a {
            a.abort();
        }
    }
    samples.sort();
    println!(
        "{name:<44} trials {trials:>3}  p50 {:>8.3} s  p99 {:>8.3} s  max {:>8.3} s",
        percentile(&samples, 0.5).as_secs_f64(),
        percentile(&samples, 0.99).as_secs_f64(),
        samples.last().unwrap().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let abrupt = args.first().copied().unwrap_or(100);
    let silent = args.get(1).copied().unwrap_or(5);
    scenario("abrupt death, offline_grace 0", "0s", None, abrupt).await;
    scenario(
        "abrupt death, offline_grace 10s (default)",
        "10s",
        None,
        silent.max(1) * 2,
    )
    .await;
    scenario(
        "silent link, keepalive 10s, offline_grace 0",
        "0s",
        Some(10),
        silent,
    )
    .await;
    scenario(
        "silent link, keepalive 30s, offline_grace 0",
        "0s",
        Some(30),
        silent,
    )
    .await;
}
