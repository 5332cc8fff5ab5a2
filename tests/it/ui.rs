//! The dashboard in a real headless Chromium (playwright-core, `tests/ui/*.mjs`) against a
//! real console with simulated agents. Needs the built UI (`cargo xtask ui`) and
//! `npm ci` in `tests/ui`; `cargo xtask ci` does both first, and this test fails loudly
//! without them rather than skipping.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::AgentOptions;
use serde_json::Value;

use crate::harness::{wait_for, AgentProc, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(60);
/// Over 25 hosts, so a page size of 25 shows a second page.
const FLEET: usize = 30;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Fails with instructions when the UI or the browser tooling is missing.
fn preflight() {
    let root = workspace();
    assert!(
        root.join("web-ui/dist/index.html").is_file(),
        "web-ui/dist is not built: run `cargo xtask ui` (cargo xtask ci does it before the tests)"
    );
    assert!(
        root.join("tests/ui/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in tests/ui (cargo xtask install-deps does it)"
    );
    assert!(
        Path::new(&chromium()).is_file(),
        "{} is missing: install the Debian package `chromium` (cargo xtask install-deps does it)",
        chromium()
    );
}

fn chromium() -> String {
    std::env::var("EDGEFLEET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Runs `node tests/ui/<spec> <url> <api key> <facts json>`; its output is printed, and a
/// failure names the screenshot it saved.
async fn run_spec(spec: &str, url: &str, key: &str, facts: &Value) {
    let root = workspace();
    let shots = root.join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .current_dir(root.join("tests/ui"))
        .arg(spec)
        .arg(url)
        .arg(key)
        .arg(facts.to_string())
        .env("EDGEFLEET_CHROMIUM", chromium())
        .env("EDGEFLEET_SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node is installed (cargo xtask install-deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{spec} failed ({}); screenshots in {}\n{stdout}\n{stderr}",
        out.status,
        shots.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    preflight();
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(
        &tmp.path().join("console"),
        ConsoleOpts {
            heartbeat_interval: "1s",
            grace: "1s",
            ..ConsoleOpts::default()
        },
    )
    .await
    .unwrap();
    let _fleet = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        FLEET,
        // Heartbeats every 2 s: a quick chart, without loading the 2 cores the other
        // tests share.
        "2s",
    )
    .unwrap();
    // A real agent process (this machine's hostname) that the browser test kills.
    let victim = AgentProc::run(
        &tmp.path().join("victim"),
        &console.mqtt_url(),
        &console.token,
        "",
    )
    .unwrap();
    // A pending agent: a token without auto-approve.
    let manual = console
        .send(
            "POST",
            "/api/tokens",
            r#"{"auto_approve": false, "expires": "1h"}"#,
        )
        .await;
    let pending = edgefleet_agent::spawn(AgentOptions::new(
        edgefleet_config::AgentConfig {
            console_urls: vec![console.mqtt_url()],
            data_dir: tmp.path().join("pending"),
            token: manual["token"].as_str().map(String::from),
            ..Default::default()
        },
        SimProbe::new(500),
    ))
    .await
    .unwrap();
    let pending_id = pending.agent_id().to_string();

    let hosts = wait_for(
        LIMIT,
        "the fleet online with vitals, one pending",
        || async {
            let all = console.agents().await;
            let online = all
                .iter()
                .filter(|a| a["status"] == "online" && !a["cpu"].is_null())
                .count();
            let waiting = all.iter().any(|a| a["status"] == "pending");
            (online == FLEET + 1 && waiting).then_some(all)
        },
    )
    .await;
    let victim_id = hosts
        .iter()
        .find(|a| {
            !a["hostname"].as_str().unwrap_or("").starts_with("sim-") && a["status"] == "online"
        })
        .and_then(|a| a["id"].as_str())
        .expect("the real agent is listed")
        .to_string();
    // Metrics need a few samples for a chart with points.
    let sim_id = hosts
        .iter()
        .find(|a| a["hostname"].as_str().unwrap_or("").starts_with("sim-"))
        .and_then(|a| a["id"].as_str())
        .unwrap()
        .to_string();
    wait_for(LIMIT, "metric samples", || async {
        let m = console
            .get(&format!("/api/agents/{sim_id}/metrics?range=1h"))
            .await;
        (m["points"].as_array().map_or(0, Vec::len) >= 2).then_some(())
    })
    .await;
    let other_id = hosts
        .iter()
        .filter(|a| a["hostname"].as_str().unwrap_or("").starts_with("sim-"))
        .filter_map(|a| a["id"].as_str())
        .find(|id| *id != sim_id)
        .unwrap()
        .to_string();
    for id in [&sim_id, &other_id] {
        wait_for(LIMIT, "the simulated inventory", || async {
            let inv = console.get(&format!("/api/agents/{id}/inventory")).await;
            (inv["total"].as_u64().unwrap_or(0) > 0).then_some(())
        })
        .await;
    }
    let detail = console.get(&format!("/api/agents/{sim_id}")).await;
    assert!(
        !detail["apps"].as_array().unwrap().is_empty(),
        "simulated hosts have apps: {detail}"
    );

    let facts = serde_json::json!({
        "pending": pending_id,
        "victim": victim_id,
        "victim_pid": victim.pid(),
        "app_host": sim_id,
        "other_host": other_id,
    });
    let url = format!("http://{}", console.http);
    run_spec("dashboard.mjs", &url, &console.api_key, &facts).await;

    // What the browser did is in the console too.
    let audit = console
        .get(&format!("/api/audit?agent={sim_id}&action=command_result"))
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains("restart-app")),
        "the UI's restart is audited: {audit}"
    );
    let approved = console.get(&format!("/api/agents/{pending_id}")).await;
    assert_ne!(approved["status"], "pending", "{approved}");
    pending.abort();
}
