//! Remote-operation acceptance figures on loopback (the spec's user stories): restart
//! acknowledged, config push to 3 agents, a 10 MB update with swap and health check, and the
//! median command round trip. A real console process, in-process agents with simulated apps.
//!
//!     cargo build --release -p edgefleet-console -p edgefleet-agent
//!     cargo bench -p edgefleet-tests --bench command_latency

#[path = "../it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::service::Simulated;
use edgefleet_agent::AgentOptions;
use harness::{wait_for, Console, ConsoleOpts};
use serde_json::Value;

async fn finished(console: &Console, id: &str) -> Value {
    wait_for(
        Duration::from_secs(120),
        "the command to finish",
        || async {
            let c = console.get(&format!("/api/commands/{id}")).await;
            (c["state"] == "succeeded").then_some(c)
        },
    )
    .await
}

fn archive(bytes: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut data = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut data);
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, "pump.bin", &data[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    out
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("a{i}"));
        std::fs::create_dir_all(dir.join("opt")).unwrap();
        std::fs::write(dir.join("pump.toml"), "[log]\nlevel = \"info\"\n").unwrap();
        let config = edgefleet_config::AgentConfig {
            console_urls: vec![console.mqtt_url()],
            data_dir: dir.clone(),
            token: Some(console.token.clone()),
            apps: vec![edgefleet_config::AppConfig {
                id: "pump".into(),
                unit: "pump.service".into(),
                config_path: Some(dir.join("pump.toml")),
                config_format: None,
                binary_dir: Some(dir.join("opt/pump")),
                version_file: None,
                version_command: None,
                health_url: None,
            }],
            ..Default::default()
        };
        let mut opts = AgentOptions::new(config, SimProbe::new(300 + i));
        opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
        agents.push(edgefleet_agent::spawn(opts).await.unwrap());
    }
    let ids: Vec<String> = agents.iter().map(|a| a.agent_id().to_string()).collect();
    wait_for(Duration::from_secs(30), "3 agents online", || async {
        let all = console.agents().await;
        (all.len() == 3 && all.iter().all(|a| a["status"] == "online")).then_some(())
    })
    .await;

    // Round trip of the lightest command, and restart acknowledgement.
    let mut rtt = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let c = console
            .send(
                "POST",
                &format!("/api/agents/{}/request-heartbeat", ids[0]),
                "",
            )
            .await;
        finished(&console, c["id"].as_str().unwrap()).await;
        rtt.push(start.elapsed());
    }
    rtt.sort();
    let mut restart = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let c = console
            .send(
                "POST",
                &format!("/api/agents/{}/restart-app", ids[0]),
                r#"{"app":"pump"}"#,
            )
            .await;
        finished(&console, c["id"].as_str().unwrap()).await;
        restart.push(start.elapsed());
    }
    restart.sort();
    let start = Instant::now();
    let items = console
        .send(
            "POST",
            "/api/commands/bulk",
            r#"{"action":"push-config","app":"pump","values":{"log.level":"debug"}}"#,
        )
        .await;
    for item in items.as_array().unwrap() {
        finished(&console, item["command"]["id"].as_str().unwrap()).await;
    }
    let push = start.elapsed();

    let bytes = archive(10 << 20);
    let start = Instant::now();
    let (code, body) = harness::upload(&console, &bytes).await;
    assert_eq!(code, 201, "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    let c = console
        .send(
            "POST",
            &format!("/api/agents/{}/update-app", ids[0]),
            &format!(
                r#"{{"app":"pump","version":"2.0","url":"http://{}{}","sha256":"{}"}}"#,
                console.http,
                stored["path"].as_str().unwrap(),
                stored["sha256"].as_str().unwrap()
            ),
        )
        .await;
    finished(&console, c["id"].as_str().unwrap()).await;
    let update = start.elapsed();

    println!(
        "request-heartbeat round trip: median {:.1} ms, p90 {:.1} ms (30 runs)",
        rtt[rtt.len() / 2].as_secs_f64() * 1e3,
        rtt[rtt.len() * 9 / 10].as_secs_f64() * 1e3
    );
    println!(
        "restart-app acknowledged (succeeded): median {:.0} ms, max {:.0} ms (10 runs; includes the 0.5 s settle)",
        restart[restart.len() / 2].as_secs_f64() * 1e3,
        restart.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "push-config to 3 agents, all succeeded: {:.0} ms",
        push.as_secs_f64() * 1e3
    );
    println!(
        "update-app, {} MB archive: upload + download + verify + swap + start + check: {:.0} ms",
        bytes.len() >> 20,
        update.as_secs_f64() * 1e3
    );
    for a in agents {
        a.shutdown().await;
    }
}
