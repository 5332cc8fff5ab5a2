//! Groups, labels, scoped settings, maintenance and staged rollouts, end to end: a real
//! console, `edgefleet-agent simulate` processes whose devices carry labels and a
//! `sensor-hub` app that update-app really replaces on disk, and failure injection through
//! the simulated service manager's `<unit>.fail` files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{http_request, upload, wait_for, AgentProc, Console, ConsoleOpts};

const APP: &str = "sensor-hub";

/// The simulator's device number from its hostname `sim-00007-<site>`.
fn sim_index(hostname: &str) -> usize {
    hostname
        .split('-')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a simulated hostname: {hostname}"))
}

async fn all_online(console: &Console, n: usize) -> BTreeMap<usize, Value> {
    wait_for(
        Duration::from_secs(60),
        "every simulated agent online",
        || async {
            let agents = console.agents().await;
            (agents.len() == n && agents.iter().all(|a| a["status"] == "online")).then(|| {
                agents
                    .into_iter()
                    .map(|a| (sim_index(a["hostname"].as_str().unwrap()), a))
                    .collect()
            })
        },
    )
    .await
}

/// Makes `sensor-hub` of simulated device `i` fail to start (so an update rolls back).
fn fail_app(sim_dir: &Path, i: usize) {
    let dir = sim_dir.join(format!("data/sim-{i}/apps"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{APP}.service.fail")), "exit code 1").unwrap();
}

/// Uploads a `sensor-hub` archive of `version`: `(url, sha256)`.
async fn artifact(console: &Console, tmp: &Path, version: &str) -> (String, String) {
    let path = tmp.join(format!("{APP}-{version}.tar.gz"));
    crate::harness::archive(&path, version);
    let (code, body) = upload(console, &std::fs::read(&path).unwrap()).await;
    assert_eq!(code, 201, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    (
        format!("http://{}{}", console.http, doc["path"].as_str().unwrap()),
        doc["sha256"].as_str().unwrap().to_string(),
    )
}

/// Runs the `edgefleet` CLI with `--json` against `console`; panics unless it succeeds.
async fn edgefleet_cli(console: &Console, args: &[&str]) -> Value {
    let (addr, key) = (console.http.to_string(), console.api_key.clone());
    let mut all: Vec<String> = ["--console", &addr, "--api-key", &key, "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::cli::Cli::new("edgefleet", Path::new("/nonexistent/edgefleet-test-home"))
            .run(&refs, None)
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "edgefleet {args:?}: {out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("edgefleet {args:?}: not JSON ({e}): {out:?}"))
}

/// Creates a rollout and returns its id.
async fn start_rollout(console: &Console, body: &str) -> String {
    let created = console.send("POST", "/api/rollouts", body).await;
    created["id"].as_str().unwrap().to_string()
}

/// A console with default options and `n` simulated agents, all online.
async fn fleet_of(tmp: &Path, n: usize) -> (Console, AgentProc, BTreeMap<usize, Value>) {
    let console = Console::start(&tmp.join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let sim = AgentProc::simulate(
        &tmp.join("sim"),
        &console.mqtt_url(),
        &console.token,
        n,
        "2s",
    )
    .unwrap();
    let hosts = all_online(&console, n).await;
    (console, sim, hosts)
}

/// Hosts with a firing `agent-offline` alert.
async fn offline_alerts(console: &Console) -> Vec<String> {
    let a = console.get("/api/alerts?state=firing").await;
    a["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["rule"] == "agent-offline")
        .map(|x| x["agent"].as_str().unwrap().to_string())
        .collect()
}

/// A rollout's entry for one host.
fn host_entry<'a>(r: &'a Value, agent: &str) -> &'a Value {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["agent"] == agent)
        .unwrap_or_else(|| panic!("{agent} is not in the rollout: {r}"))
}

async fn rollout(console: &Console, id: &str) -> Value {
    console.get(&format!("/api/rollouts/{id}")).await
}

async fn wait_rollout(console: &Console, id: &str, state: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let r = rollout(console, id).await;
        if r["state"] == state {
            return r;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for rollout {id} {state}; it is {r:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn app_version(console: &Console, agent: &str) -> Option<String> {
    let d = console.get(&format!("/api/agents/{agent}")).await;
    d["apps"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == APP)
        .and_then(|a| a["version"].as_str().map(str::to_string))
}

async fn update_commands(console: &Console, agent: &str) -> usize {
    let list = console.get(&format!("/api/agents/{agent}/commands")).await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "update-app")
        .count()
}

async fn group_members(console: &Console, group: &str) -> Vec<String> {
    let page = console.get(&format!("/api/agents?group={group}")).await;
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn states(r: &Value, key: &str) -> Vec<String> {
    r[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["state"].as_str().unwrap().to_string())
        .collect()
}

fn update_body(url: &str, sha: &str, extra: Value) -> String {
    let mut body = json!({
        "action": "update-app", "app": APP, "version": "2.0", "url": url, "sha256": sha,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_groups_follow_labels_and_scoped_settings_apply_agent_over_group_over_global() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ConsoleOpts {
        extra_toml: "[alerts]\noffline_grace = \"60s\"\n".into(),
        ..ConsoleOpts::default()
    };
    let console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    let mut sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        6,
        "2s",
    )
    .unwrap();
    let hosts = all_online(&console, 6).await;
    let id = |i: usize| hosts[&i]["id"].as_str().unwrap().to_string();
    let pis: Vec<usize> = hosts
        .iter()
        .filter(|(_, a)| a["labels"]["hw"] == "pi4")
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(pis, vec![0, 3], "aarch64 devices report hw=pi4: {hosts:?}");

    console
        .send(
            "POST",
            "/api/groups",
            r#"{"id":"pis","selector":"hw=pi4","settings":{"offline_grace_s":1,"heartbeat_interval_s":7}}"#,
        )
        .await;
    console
        .send(
            "POST",
            "/api/groups",
            r#"{"id":"everyone","selector":"site","priority":20,"settings":{"offline_grace_s":30,"hotspot_threshold":95}}"#,
        )
        .await;
    let mut want = vec![id(0), id(3)];
    want.sort();
    assert_eq!(group_members(&console, "pis").await, want);
    let by_label = console.get("/api/agents?label=hw%3Dpi4").await;
    assert_eq!(by_label["total"], 2, "{by_label}");
    assert_eq!(console.get("/api/groups/pis").await["agents"], 2);

    // Bulk commands take the group, and a group silence covers its members only.
    let bulk = console
        .send(
            "POST",
            "/api/commands/bulk",
            r#"{"action":"request-heartbeat","group":"pis"}"#,
        )
        .await;
    let mut targets: Vec<String> = bulk
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["agent"].as_str().unwrap().to_string())
        .collect();
    targets.sort();
    assert_eq!(targets, want, "{bulk}");

    // The group follows an operator label at once, and forgets it when it is removed.
    console
        .send(
            "PUT",
            &format!("/api/agents/{}/labels", id(1)),
            r#"{"set":{"hw":"pi4"}}"#,
        )
        .await;
    assert_eq!(group_members(&console, "pis").await.len(), 3);
    assert_eq!(console.get("/api/groups/pis/agents").await["total"], 3);
    console
        .send(
            "PUT",
            &format!("/api/agents/{}/labels", id(1)),
            r#"{"remove":["hw"]}"#,
        )
        .await;
    assert_eq!(group_members(&console, "pis").await, want);
    let labels = console.get(&format!("/api/agents/{}", id(1))).await;
    assert_eq!(
        labels["labels"]["hw"], "nuc",
        "the agent's own label is back"
    );

    // Bad selectors and unknown groups are clear 4xx.
    let (code, body) = http_request(
        console.http,
        "GET",
        "/api/agents?label=site%20in%20ferry",
        Some(&console.api_key),
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("at character 9: expected '('"), "{body}");
    let (code, _) = http_request(
        console.http,
        "GET",
        "/api/agents?group=nope",
        Some(&console.api_key),
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 404);

    // Precedence: agent > group (lowest priority number first) > global.
    console
        .send(
            "PUT",
            &format!("/api/agents/{}/settings", id(3)),
            r#"{"offline_grace_s":120}"#,
        )
        .await;
    let eff = |d: &Value, k: &str| {
        (
            d["effective"][k]["value"].as_u64().unwrap(),
            d["effective"][k]["source"].as_str().unwrap().to_string(),
        )
    };
    let d0 = console.get(&format!("/api/agents/{}", id(0))).await;
    assert_eq!(eff(&d0, "offline_grace_s"), (1, "group:pis".into()));
    assert_eq!(eff(&d0, "hotspot_threshold"), (95, "group:everyone".into()));
    assert_eq!(eff(&d0, "hotspot_window_s").1, "global");
    let d3 = console.get(&format!("/api/agents/{}", id(3))).await;
    assert_eq!(eff(&d3, "offline_grace_s"), (120, "agent".into()));
    let d2 = console.get(&format!("/api/agents/{}", id(2))).await;
    assert_eq!(eff(&d2, "offline_grace_s"), (30, "group:everyone".into()));
    assert_eq!(d0["groups"], json!(["pis", "everyone"]));

    // The group's heartbeat interval reaches the pi agents as a signed command.
    for i in [0, 3] {
        wait_for(
            Duration::from_secs(20),
            "the pushed heartbeat interval",
            || async {
                let d = console.get(&format!("/api/agents/{}", id(i))).await;
                (d["heartbeat_interval_s"] == 7).then_some(())
            },
        )
        .await;
    }
    let d2 = console.get(&format!("/api/agents/{}", id(2))).await;
    assert_eq!(d2["heartbeat_interval_s"], 2, "not in the group: untouched");

    // All go offline: only host 0 (group grace 1 s) alerts within seconds; host 3's own
    // 120 s and everyone else's 30 s hold theirs back.
    console
        .send(
            "POST",
            "/api/silences",
            r#"{"group":"pis","rule":"agent-offline","until":"1h"}"#,
        )
        .await;
    sim.child.kill().await.unwrap();
    let firing = wait_for(
        Duration::from_secs(20),
        "the pi's offline alert",
        || async {
            let agents = offline_alerts(&console).await;
            (!agents.is_empty()).then_some(agents)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = offline_alerts(&console).await;
    assert_eq!(firing, vec![id(0)]);
    let silenced = console.get("/api/alerts?state=firing").await;
    assert!(
        silenced["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["silenced"] == true),
        "the group silence covers its member: {silenced}"
    );
    assert_eq!(later, vec![id(0)], "3 s later still only host 0");
    let audit = console.get("/api/audit?action=labels").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_suppresses_the_offline_alert_refuses_commands_and_ends_on_time() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ConsoleOpts {
        extra_toml: "[alerts]\noffline_grace = \"1s\"\n".into(),
        ..ConsoleOpts::default()
    };
    let console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    let mut sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        2,
        "2s",
    )
    .unwrap();
    let hosts = all_online(&console, 2).await;
    let (a, b) = (
        hosts[&0]["id"].as_str().unwrap().to_string(),
        hosts[&1]["id"].as_str().unwrap().to_string(),
    );
    let m = edgefleet_cli(
        &console,
        &[
            "agents",
            "maintenance",
            "on",
            &a,
            "--reason",
            "modem swap",
            "--for",
            "8s",
            "--allow",
            "request-heartbeat",
        ],
    )
    .await;
    let until = m["until"].as_u64().unwrap();
    let listed = console.get("/api/agents?q=sim-00000").await;
    assert_eq!(listed["items"][0]["maintenance"]["reason"], "modem swap");

    let (code, body) = http_request(
        console.http,
        "POST",
        &format!("/api/agents/{a}/restart-app"),
        Some(&console.api_key),
        &format!(r#"{{"app":"{APP}"}}"#),
    )
    .await
    .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("in maintenance")
            && body.contains("modem swap")
            && body.contains("allowed: request-heartbeat"),
        "{body}"
    );
    console
        .send("POST", &format!("/api/agents/{a}/request-heartbeat"), "")
        .await;

    sim.child.kill().await.unwrap();
    wait_for(Duration::from_secs(15), "b's offline alert", || async {
        offline_alerts(&console).await.contains(&b).then_some(())
    })
    .await;
    assert!(
        !offline_alerts(&console).await.contains(&a),
        "a is in maintenance: no alert yet"
    );
    // At the end time maintenance ends by itself, and a's alert fires.
    wait_for(
        Duration::from_secs(20),
        "a's alert after maintenance",
        || async { offline_alerts(&console).await.contains(&a).then_some(()) },
    )
    .await;
    let fired_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        fired_at >= until,
        "fired {} ms before the end",
        until - fired_at
    );
    assert!(
        fired_at < until + 5_000,
        "fired {} ms after the end",
        fired_at - until
    );
    let d = console.get(&format!("/api/agents/{a}")).await;
    assert!(d.get("maintenance").is_none_or(Value::is_null), "{d}");
    let audit = console.get(&format!("/api/audit?agent={a}")).await;
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert!(
        actions
            .iter()
            .any(|(a, d)| *a == "maintenance_on" && d.contains("modem swap")),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|(a, d)| *a == "maintenance_off" && d.contains("end time passed")),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_over_fifty_agents_completes_wave_by_wave_and_every_host_runs_the_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (console, _sim, hosts) = fleet_of(tmp.path(), 50).await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"name": "hub 2.0", "selector": "hw", "canary": 2, "waves": [20, 100],
               "soak": "2s", "max_failure_pct": 5, "min_executed": 2}),
    );
    let created = console.send("POST", "/api/rollouts", &body).await;
    let id = created["id"].as_str().unwrap().to_string();
    let sizes: Vec<u64> = created["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["hosts"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![2, 8, 40]);

    let done = wait_rollout(&console, &id, "completed", Duration::from_secs(120)).await;
    assert_eq!(states(&done, "waves"), vec!["passed"; 3], "{done}");
    assert!(
        states(&done, "hosts").iter().all(|s| s == "succeeded"),
        "{done}"
    );
    for w in done["waves"].as_array().unwrap() {
        assert_eq!(w["gate"]["passed"], true, "{w}");
    }
    // The canary's gate judged the canary alone; the last saw all 50.
    assert_eq!(done["waves"][0]["gate"]["executed"], 2);
    assert_eq!(done["waves"][2]["gate"]["executed"], 50);
    // Waves ran in order: no host of a wave started before the previous gate passed.
    let gate_at: Vec<u64> = done["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["gate"]["at"].as_u64().unwrap())
        .collect();
    for h in done["hosts"].as_array().unwrap() {
        let wave = h["wave"].as_u64().unwrap() as usize;
        if wave > 0 {
            assert!(
                h["started_at"].as_u64().unwrap() >= gate_at[wave - 1],
                "{h}"
            );
        }
    }
    for a in hosts.values() {
        let agent = a["id"].as_str().unwrap();
        wait_for(Duration::from_secs(20), "version 2.0 reported", || async {
            (app_version(&console, agent).await.as_deref() == Some("2.0")).then_some(())
        })
        .await;
        assert_eq!(update_commands(&console, agent).await, 1, "{agent}");
    }
    let audit = console
        .get(&format!("/api/audit?agent=rollout:{id}&per_page=200"))
        .await;
    let details: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    for needle in [
        "created",
        "wave 0 (canary) started",
        "wave 1 (20%) gate passed",
        "completed",
    ] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "{needle}: {details:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_pauses_the_rollout_at_the_first_gate_and_abort_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let sim_dir = tmp.path().join("sim");
    // 30% of the devices cannot start the new version: 1, 4, 7, 11, 14, ...
    for i in (0..50).filter(|i| [1, 4, 7].contains(&(i % 10))) {
        fail_app(&sim_dir, i);
    }
    let _sim =
        AgentProc::simulate(&sim_dir, &console.mqtt_url(), &console.token, 50, "2s").unwrap();
    let hosts = all_online(&console, 50).await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 2, "waves": [20, 100], "soak": "2s",
               "max_failure_pct": 5, "min_executed": 2}),
    );
    let id = start_rollout(&console, &body).await;
    let paused = wait_rollout(&console, &id, "paused", Duration::from_secs(60)).await;
    assert_eq!(
        states(&paused, "waves"),
        vec!["failed", "waiting", "waiting"]
    );
    let gate = &paused["waves"][0]["gate"];
    assert_eq!(
        (&gate["passed"], &gate["executed"], &gate["failed"]),
        (&json!(false), &json!(2), &json!(1)),
        "{gate}"
    );
    assert!(
        paused["reason"].as_str().unwrap().contains("50.0% > 5%"),
        "{paused}"
    );
    let started: Vec<&Value> = paused["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] != "waiting")
        .collect();
    assert_eq!(started.len(), 2, "only the canary started: {started:?}");
    // Give the driver time to (wrongly) go on; nothing else may start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = rollout(&console, &id).await;
    assert_eq!(
        still["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] != "waiting")
            .count(),
        2
    );
    let alerts = console.get("/api/alerts?state=firing").await;
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "rollout-gate" && a["agent"] == format!("rollout:{id}")),
        "{alerts}"
    );

    // Abort: the canary host that took 2.0 goes back to its old version.
    let good = hosts[&0]["id"].as_str().unwrap().to_string();
    let before = "1.0.0";
    wait_for(
        Duration::from_secs(20),
        "2.0 on the good canary",
        || async { (app_version(&console, &good).await.as_deref() == Some("2.0")).then_some(()) },
    )
    .await;
    let status = edgefleet_cli(&console, &["rollouts", "status", &id]).await;
    assert_eq!(status["state"], "paused");
    edgefleet_cli(&console, &["rollouts", "abort", &id]).await;
    let aborted = wait_rollout(&console, &id, "aborted", Duration::from_secs(60)).await;
    assert_eq!(
        host_entry(&aborted, &good)["state"],
        "reverted",
        "{aborted}"
    );
    let bad = hosts[&1]["id"].as_str().unwrap();
    assert_eq!(host_entry(&aborted, bad)["state"], "rolled-back");
    wait_for(Duration::from_secs(20), "the old version back", || async {
        (app_version(&console, &good).await.as_deref() == Some(before)).then_some(())
    })
    .await;
    let alerts = console.get("/api/alerts?state=firing").await;
    assert!(
        !alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "rollout-gate"),
        "the gate alert resolves with the abort: {alerts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_restart_mid_rollout_resumes_without_updating_any_host_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut console, _sim, hosts) = fleet_of(tmp.path(), 20).await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 2, "waves": [50, 100], "soak": "3s"}),
    );
    let id = start_rollout(&console, &body).await;
    wait_for(
        Duration::from_secs(60),
        "the second wave under way",
        || async {
            let r = rollout(&console, &id).await;
            (r["current_wave"] == 1).then_some(())
        },
    )
    .await;
    console.kill_and_restart().await.unwrap();
    let done = wait_rollout(&console, &id, "completed", Duration::from_secs(120)).await;
    assert!(
        states(&done, "hosts").iter().all(|s| s == "succeeded"),
        "{done}"
    );
    for a in hosts.values() {
        let agent = a["id"].as_str().unwrap();
        assert_eq!(update_commands(&console, agent).await, 1, "{agent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_starts_per_minute() {
    let tmp = tempfile::tempdir().unwrap();
    let (console, _sim, _) = fleet_of(tmp.path(), 6).await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 0, "waves": [100], "soak": "1s", "rate_per_minute": 4}),
    );
    let begun = Instant::now();
    let id = start_rollout(&console, &body).await;
    let done = wait_rollout(&console, &id, "completed", Duration::from_secs(120)).await;
    let mut starts: Vec<u64> = done["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["started_at"].as_u64().unwrap())
        .collect();
    starts.sort();
    for (i, t) in starts.iter().enumerate() {
        let in_minute = starts[i..].iter().filter(|s| **s < t + 60_000).count();
        assert!(
            in_minute <= 4,
            "{in_minute} starts within a minute of {t}: {starts:?}"
        );
    }
    let spread = starts[5] - starts[0];
    eprintln!(
        "rate limit 4/min: 6 starts spread over {spread} ms (rollout took {:?})",
        begun.elapsed()
    );
    assert!(spread >= 60_000, "{starts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_host_gets_its_update_when_it_returns_and_counts_as_pending_until_then() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let _sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        5,
        "2s",
    )
    .unwrap();
    let lone_dir = tmp.path().join("lone");
    let mut lone =
        AgentProc::simulate_from(&lone_dir, &console.mqtt_url(), &console.token, 5, 1, "2s")
            .unwrap();
    let hosts = all_online(&console, 6).await;
    let lone_id = hosts[&5]["id"].as_str().unwrap().to_string();
    lone.child.kill().await.unwrap();
    wait_for(Duration::from_secs(20), "the lone host offline", || async {
        let d = console.get(&format!("/api/agents/{lone_id}")).await;
        (d["status"] == "offline").then_some(())
    })
    .await;

    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 1, "waves": [100], "soak": "1s"}),
    );
    let id = start_rollout(&console, &body).await;
    // Both gates pass on the five reachable hosts; the offline one is pending, not failed.
    let waiting = wait_for(Duration::from_secs(60), "both gates passed", || async {
        let r = rollout(&console, &id).await;
        (states(&r, "waves") == ["passed", "passed"]).then_some(r)
    })
    .await;
    assert_eq!(waiting["state"], "running", "{waiting}");
    let gate = &waiting["waves"][1]["gate"];
    assert_eq!((&gate["executed"], &gate["failed"]), (&json!(5), &json!(0)));
    assert_eq!(host_entry(&waiting, &lone_id)["state"], "sent");

    let _lone =
        AgentProc::simulate_from(&lone_dir, &console.mqtt_url(), &console.token, 5, 1, "2s")
            .unwrap();
    let done = wait_rollout(&console, &id, "completed", Duration::from_secs(60)).await;
    assert_eq!(host_entry(&done, &lone_id)["state"], "succeeded");
    wait_for(
        Duration::from_secs(20),
        "2.0 on the returned host",
        || async {
            (app_version(&console, &lone_id).await.as_deref() == Some("2.0")).then_some(())
        },
    )
    .await;
    assert_eq!(update_commands(&console, &lone_id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updated_host_that_goes_down_during_the_soak_fails_the_health_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    // Device 0 (the canary: first by hostname) runs alone, so it can be taken down.
    let mut canary = AgentProc::simulate_from(
        &tmp.path().join("canary"),
        &console.mqtt_url(),
        &console.token,
        0,
        1,
        "2s",
    )
    .unwrap();
    let _rest = AgentProc::simulate_from(
        &tmp.path().join("rest"),
        &console.mqtt_url(),
        &console.token,
        1,
        3,
        "2s",
    )
    .unwrap();
    all_online(&console, 4).await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 1, "waves": [100], "soak": "20s"}),
    );
    let id = start_rollout(&console, &body).await;
    wait_for(Duration::from_secs(30), "the canary soaking", || async {
        let r = rollout(&console, &id).await;
        (r["waves"][0]["state"] == "soaking").then_some(())
    })
    .await;
    canary.child.kill().await.unwrap();
    let paused = wait_rollout(&console, &id, "paused", Duration::from_secs(40)).await;
    let gate = &paused["waves"][0]["gate"];
    assert_eq!(gate["passed"], false, "{paused}");
    assert_eq!((&gate["executed"], &gate["failed"]), (&json!(1), &json!(0)));
    let unhealthy = gate["unhealthy"][0].as_str().unwrap();
    assert!(
        unhealthy.starts_with("sim-00000") && unhealthy.contains("offline during the soak"),
        "{gate}"
    );
    assert_eq!(states(&paused, "waves"), vec!["failed", "waiting"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_in_maintenance_is_skipped_and_the_rollout_still_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (console, _sim, hosts) = fleet_of(tmp.path(), 3).await;
    // The last host by hostname is alone in the last wave.
    let resting = hosts[&2]["id"].as_str().unwrap().to_string();
    console
        .send(
            "POST",
            &format!("/api/agents/{resting}/maintenance"),
            r#"{"reason":"on a ship in dry dock"}"#,
        )
        .await;
    let (url, sha) = artifact(&console, tmp.path(), "2.0").await;
    let body = update_body(
        &url,
        &sha,
        json!({"selector": "hw", "canary": 1, "waves": [50, 100], "soak": "1s", "min_executed": 3}),
    );
    let id = start_rollout(&console, &body).await;
    let done = wait_rollout(&console, &id, "completed", Duration::from_secs(60)).await;
    let entry = host_entry(&done, &resting);
    assert_eq!(entry["state"], "skipped", "{done}");
    assert!(
        entry["message"]
            .as_str()
            .unwrap()
            .contains("on a ship in dry dock"),
        "{entry}"
    );
    assert_eq!(update_commands(&console, &resting).await, 0);
    assert_eq!(done["waves"][2]["gate"]["executed"], 2, "{done}");
}
