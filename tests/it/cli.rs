//! The operator CLI (`edgefleet`) and the agent's local `status`, run as real processes.

use std::time::Duration;

use crate::harness::{bin, wait_for, AgentProc, Console, ConsoleOpts};

pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin(cmd))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_summarises_and_agent_status_reads_local_state() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let agent = AgentProc::run(
        &tmp.path().join("agent"),
        &console.mqtt_url(),
        &console.token,
        "",
    )
    .unwrap();
    let id = wait_for(Duration::from_secs(10), "agent online", || async {
        let agents = console.agents().await;
        agents
            .iter()
            .find(|a| a["status"] == "online")
            .map(|a| a["id"].as_str().unwrap().to_string())
    })
    .await;
    let addr = console.http.to_string();
    let key = console.api_key.clone();

    let (ok, out) = tokio::task::spawn_blocking({
        let (addr, key) = (addr.clone(), key.clone());
        move || {
            run(
                "edgefleet",
                &["--console", &addr, "--api-key", &key, "agents", "list"],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("online"), "{row}");
    assert!(out.contains("1 of 1 agents"), "{out}");

    let (ok, out) = tokio::task::spawn_blocking({
        let (addr, id, key) = (addr.clone(), id.clone(), key.clone());
        move || {
            run(
                "edgefleet",
                &["--console", &addr, "--api-key", &key, "agents", "show", &id],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok && out.contains("\"status_history\""), "{out}");

    let (ok, out) = tokio::task::spawn_blocking({
        let (addr, key) = (addr.clone(), key.clone());
        move || {
            run(
                "edgefleet",
                &["--console", &addr, "--api-key", &key, "fleet"],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok && out.starts_with("1 agents: 1 online (100%)"), "{out}");

    let (ok, out) = tokio::task::spawn_blocking({
        let (addr, key) = (addr.clone(), key.clone());
        move || {
            run(
                "edgefleet",
                &[
                    "--console",
                    &addr,
                    "--api-key",
                    &key,
                    "agents",
                    "show",
                    "nosuchagent",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("console answered 404"), "{out}");

    let (ok, out) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            run(
                "edgefleet",
                &["--console", &addr, "--api-key", "efk_wrong", "fleet"],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        !ok && out.contains("console answered 401: unknown API key"),
        "{out}"
    );

    let data = agent.dir.join("data");
    let out = wait_for(
        Duration::from_secs(10),
        "agent status shows connected",
        || {
            let data = data.clone();
            async move {
                let (ok, out) = run(
                    "edgefleet-agent",
                    &["status", "--data-dir", data.to_str().unwrap()],
                );
                (ok && out.contains("connected:     true")).then_some(out)
            }
        },
    )
    .await;
    assert!(out.contains(&format!("agent id:      {id}")), "{out}");
    assert!(out.contains("queue depth:   0"), "{out}");
}

#[test]
fn config_show_redacts_and_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "token = \"ef1.super.secret.value\"\nheartbeat_interval = \"10s\"\n",
    )
    .unwrap();
    let (ok, out) = run(
        "edgefleet-agent",
        &["config", "show", "--config", path.to_str().unwrap()],
    );
    assert!(
        ok && out.contains("token = \"<redacted>\"") && !out.contains("super.secret"),
        "{out}"
    );
    std::fs::write(&path, "heartbeat_interval = \"0s\"\n").unwrap();
    let (ok, out) = run(
        "edgefleet-agent",
        &["config", "show", "--config", path.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "heartbeat_interval: must be between 1s and 1h (got \"0s\") in {}",
            path.display()
        )),
        "{out}"
    );
}
