//! Remote commands end to end: a real console process, real agents with simulated apps
//! (files on disk), signed commands over the real broker, results back into the API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_agent::probe::{Probe, SimProbe};
use edgefleet_agent::service::Simulated;
use edgefleet_agent::{AgentHandle, AgentOptions};
use serde_json::Value;

use crate::cli::run;
use crate::harness::{wait_for, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(20);
const INDEX: usize = 101;

/// The first simulated app of probe `INDEX`, and its unit.
fn first_app() -> (String, String) {
    let app = SimProbe::new(INDEX).apps()[0].id.clone();
    let unit = format!("{app}.service");
    (app, unit)
}

async fn agent(dir: &Path, console: &Console) -> AgentHandle {
    spawn_agent(dir, console, INDEX, Vec::new()).await
}

/// An in-process agent with simulated probe `index`, simulated apps in `dir/apps`, and the
/// given `[[apps]]` (none: the probe's own apps).
async fn spawn_agent(
    dir: &Path,
    console: &Console,
    index: usize,
    apps: Vec<edgefleet_config::AppConfig>,
) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: dir.to_path_buf(),
        token: Some(console.token.clone()),
        apps,
        ..Default::default()
    };
    let mut opts = AgentOptions::new(config, SimProbe::new(index));
    opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
    edgefleet_agent::spawn(opts).await.unwrap()
}

/// The app `pump` (unit `pump.service`) with an optional config file and binary dir.
fn pump(config_path: Option<&Path>, binary_dir: Option<&Path>) -> edgefleet_config::AppConfig {
    edgefleet_config::AppConfig {
        id: "pump".into(),
        unit: "pump.service".into(),
        config_path: config_path.map(Path::to_path_buf),
        config_format: None,
        binary_dir: binary_dir.map(Path::to_path_buf),
        version_file: None,
        version_command: None,
        health_url: None,
    }
}

/// Waits until the console reports `app` on agent `id` with this version (and status).
async fn wait_app(
    console: &Console,
    id: &str,
    app: &str,
    version: &str,
    status: Option<&str>,
) -> Value {
    wait_for(LIMIT, &format!("{app} {version} {status:?}"), || async {
        let doc = console.get(&format!("/api/agents/{id}")).await;
        doc["apps"]
            .as_array()?
            .iter()
            .find(|a| {
                a["id"] == app && a["version"] == version && status.is_none_or(|s| a["status"] == s)
            })
            .cloned()
    })
    .await
}

async fn wait_status(console: &Console, id: &str, status: &str) {
    wait_for(LIMIT, &format!("{id} {status}"), || async {
        let (code, body) = console.get_text(&format!("/api/agents/{id}")).await;
        let doc: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && doc["status"] == status).then_some(())
    })
    .await;
}

async fn wait_command(console: &Console, id: &str, state: &str) -> Value {
    wait_for(LIMIT, &format!("command {id} {state}"), || async {
        let c = console.get(&format!("/api/commands/{id}")).await;
        (c["state"] == state).then_some(c)
    })
    .await
}

async fn restart(console: &Console, agent: &str, body: &str) -> Value {
    console
        .send("POST", &format!("/api/agents/{agent}/restart-app"), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_succeeds_a_failing_one_fails_and_both_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("a");
    let a = agent(&dir, &console).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let (app, unit) = first_app();
    let sim = Simulated::new(dir.join("apps"));

    let c = restart(&console, &id, &format!(r#"{{"app":"{app}"}}"#)).await;
    assert_eq!(c["state"], "delivered", "{c}");
    let done = wait_command(&console, c["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(
        done["progress"][0]["step"],
        format!("restarting {unit}"),
        "{done}"
    );
    assert!(
        done["message"].as_str().unwrap().contains("active"),
        "{done}"
    );
    assert_eq!(sim.restarts(&unit), 1);

    sim.inject_failure(&unit, Some("address already in use"))
        .unwrap();
    let c = restart(&console, &id, &format!(r#"{{"app":"{app}"}}"#)).await;
    let failed = wait_command(&console, c["id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("address already in use"),
        "{failed}"
    );

    let audit = console.get(&format!("/api/audit?agent={id}")).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        &actions[..4],
        ["command_result", "command", "command_result", "command"],
        "{audit}"
    );
    let listed = console.get(&format!("/api/agents/{id}/commands")).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Bad requests: no app, an app the agent does not have (for every app command), a
    // nonsense expiry.
    let sha = "00".repeat(32);
    for (action, body, code) in [
        ("restart-app", "{}".to_string(), 400),
        ("restart-app", r#"{"app":"no-such-app"}"#.to_string(), 404),
        (
            "push-config",
            r#"{"app":"no-such-app","values":{"a":1}}"#.to_string(),
            404,
        ),
        (
            "update-app",
            format!(r#"{{"app":"no-such-app","url":"http://x/a","version":"2","sha256":"{sha}"}}"#),
            404,
        ),
        (
            "restart-app",
            format!(r#"{{"app":"{app}","expires":"soon"}}"#),
            400,
        ),
    ] {
        let (status, text) = crate::harness::http_request(
            console.http,
            "POST",
            &format!("/api/agents/{id}/{action}"),
            Some(&console.api_key),
            &body,
        )
        .await
        .unwrap();
        assert_eq!(status, code, "{action} {body}: {text}");
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_an_offline_agent_runs_once_after_its_return_across_a_console_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("a");
    let a = agent(&dir, &console).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    a.shutdown().await;
    wait_status(&console, &id, "offline").await;
    let (app, unit) = first_app();
    let queued = restart(&console, &id, &format!(r#"{{"app":"{app}"}}"#)).await;
    assert_eq!(queued["state"], "queued");
    let expiring = restart(
        &console,
        &id,
        &format!(r#"{{"app":"{app}","expires":"1s"}}"#),
    )
    .await;
    wait_command(&console, expiring["id"].as_str().unwrap(), "expired").await;

    console.kill_and_restart().await.unwrap();
    let a = agent(&dir, &console).await;
    let done = wait_command(&console, queued["id"].as_str().unwrap(), "succeeded").await;
    assert!(done["delivered_at"].as_u64().is_some());
    let sim = Simulated::new(dir.join("apps"));
    assert_eq!(
        sim.restarts(&unit),
        1,
        "the queued restart ran once, the expired one not"
    );
    // Another reconnect (a new birth) redelivers nothing that is finished.
    a.shutdown().await;
    let a = agent(&dir, &console).await;
    wait_status(&console, &id, "online").await;
    a.request_heartbeat_now().await.unwrap();
    let c = console
        .send("POST", &format!("/api/agents/{id}/request-heartbeat"), "")
        .await;
    wait_command(&console, c["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(sim.restarts(&unit), 1);
    assert_eq!(
        console
            .get(&format!(
                "/api/commands/{}",
                expiring["id"].as_str().unwrap()
            ))
            .await["state"],
        "expired"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_restarts_an_app_and_waits_for_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("a");
    let a = agent(&dir, &console).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let (app, unit) = first_app();
    let cli = |extra: Vec<String>| {
        let (addr, key) = (console.http.to_string(), console.api_key.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--console".to_string(), addr, "--api-key".to_string(), key];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("edgefleet", &args)
        })
    };
    let (ok, out) = cli(vec![
        "apps".into(),
        "restart".into(),
        id.clone(),
        app.clone(),
        "--wait".into(),
    ])
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("succeeded") && out.contains("restarting"),
        "{out}"
    );
    Simulated::new(dir.join("apps"))
        .inject_failure(&unit, Some("disk full"))
        .unwrap();
    let (ok, out) = cli(vec![
        "apps".into(),
        "restart".into(),
        id.clone(),
        app,
        "--wait".into(),
    ])
    .await
    .unwrap();
    assert!(!ok, "a failed restart exits non-zero: {out}");
    assert!(out.contains("failed") && out.contains("disk full"), "{out}");
    a.shutdown().await;
}

/// An agent whose one app has a TOML config file in `dir` (for push-config).
async fn agent_with_config(dir: &Path, console: &Console) -> (AgentHandle, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("pump.toml");
    std::fs::write(
        &path,
        "# pump settings\nport = 8080 # where it listens\n\n[log]\n# how loud\nlevel = \"info\"\n",
    )
    .unwrap();
    let agent = spawn_agent(dir, console, INDEX, vec![pump(Some(&path), None)]).await;
    (agent, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_config_merges_keeps_comments_and_rolls_back_when_the_app_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("a");
    let (a, path) = agent_with_config(&dir, &console).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let detail = console.get(&format!("/api/agents/{id}")).await;
    let apps: Vec<&str> = detail["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        apps,
        ["pump"],
        "birth reports the configured apps, not the probe's"
    );
    let original = std::fs::read_to_string(&path).unwrap();
    let push = |body: &'static str| {
        let console = &console;
        let id = id.clone();
        async move {
            console
                .send("POST", &format!("/api/agents/{id}/push-config"), body)
                .await
        }
    };

    let c = push(r#"{"app":"pump","values":{"log.level":"debug","port":9090}}"#).await;
    let done = wait_command(&console, c["id"].as_str().unwrap(), "succeeded").await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "# pump settings\nport = 9090 # where it listens\n\n[log]\n# how loud\nlevel = \"debug\"\n",
        "{done}"
    );
    let sim = Simulated::new(dir.join("apps"));
    assert_eq!(sim.restarts("pump.service"), 1);
    let backup = dir.join("pump.toml.edgefleet-backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    // A type mismatch is refused and the file is untouched.
    let c = push(r#"{"app":"pump","values":{"port":"eighty"}}"#).await;
    let failed = wait_command(&console, c["id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["message"].as_str().unwrap().contains("untouched"),
        "{failed}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // The app fails after the push: the previous file comes back.
    sim.inject_failure("pump.service", Some("bad config"))
        .unwrap();
    let c = push(r#"{"app":"pump","values":{"log.level":"trace"}}"#).await;
    let failed = wait_command(&console, c["id"].as_str().unwrap(), "failed").await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("bad config") && message.contains("restored"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "rolled back");
    let steps: Vec<&str> = failed["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"restoring the previous config"),
        "{steps:?}"
    );
    a.shutdown().await;
}

/// A `.tar.gz` with one file, `VERSION`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_app_from_a_console_hosted_artifact_succeeds_and_a_failing_one_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("a");
    let bin_dir = dir.join("opt/pump");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("VERSION"), "1.0\n").unwrap();
    let sim = Simulated::new(dir.join("apps"));
    let mut app = pump(None, Some(&bin_dir));
    app.version_file = Some(bin_dir.join("VERSION"));
    let a = spawn_agent(&dir, &console, INDEX, vec![app]).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    wait_app(&console, &id, "pump", "1.0", Some("active")).await;

    // The CLI uploads a local archive to the console and waits for the update.
    let v2 = tmp.path().join("pump-2.0.tar.gz");
    crate::harness::archive(&v2, "2.0");
    let (addr, key) = (console.http.to_string(), console.api_key.clone());
    let (ok, out) = tokio::task::spawn_blocking({
        let (id, v2) = (id.clone(), v2.clone());
        move || {
            run(
                "edgefleet",
                &[
                    "--console",
                    &addr,
                    "--api-key",
                    &key,
                    "apps",
                    "update",
                    &id,
                    "pump",
                    "--version",
                    "2.0",
                    "--artifact",
                    v2.to_str().unwrap(),
                    "--wait",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("uploaded") && out.contains("pump updated to 2.0"),
        "{out}"
    );
    // The new version reaches the console with the next heartbeat (sent at once on change).
    wait_app(&console, &id, "pump", "2.0", Some("active")).await;
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "2.0\n"
    );

    // The artifact is served with Range support.
    let sha = out
        .lines()
        .find_map(|l| l.split("sha256 ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let size = std::fs::metadata(&v2).unwrap().len();
    let raw = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(console.http).await.unwrap();
        stream
            .write_all(
                format!("GET /artifacts/{sha} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 10-{}/{size}", size - 1)),
        "{head}"
    );
    assert_eq!(&raw[head_end + 4..], &std::fs::read(&v2).unwrap()[10..]);

    // Version 3.0 does not start: 2.0 comes back.
    let v3 = tmp.path().join("pump-3.0.tar.gz");
    crate::harness::archive(&v3, "3.0");
    let uploaded = {
        let (code, body) = crate::harness::upload(&console, &std::fs::read(&v3).unwrap()).await;
        assert_eq!(code, 201, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    sim.inject_failure("pump.service", Some("segfault on start"))
        .unwrap();
    let c = console
        .send(
            "POST",
            &format!("/api/agents/{id}/update-app"),
            &format!(
                r#"{{"app":"pump","version":"3.0","url":"http://{}{}","sha256":"{}"}}"#,
                console.http,
                uploaded["path"].as_str().unwrap(),
                uploaded["sha256"].as_str().unwrap()
            ),
        )
        .await;
    let done = wait_command(&console, c["id"].as_str().unwrap(), "rolled_back").await;
    assert!(
        done["message"].as_str().unwrap().contains("segfault"),
        "{done}"
    );
    sim.inject_failure("pump.service", None).unwrap();
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "2.0\n",
        "the previous version is back"
    );
    // ... and reported. The simulated unit still has its injected start failure from the
    // rollback, so its status is whatever the service manager says; the version is 2.0.
    let reported = wait_app(&console, &id, "pump", "2.0", None).await;
    assert_eq!(reported["version"], "2.0", "{reported}");
    // A wrong checksum never touches the app.
    let c = console
        .send(
            "POST",
            &format!("/api/agents/{id}/update-app"),
            &format!(
                r#"{{"app":"pump","version":"3.0","url":"http://{}{}","sha256":"{}"}}"#,
                console.http,
                uploaded["path"].as_str().unwrap(),
                "00".repeat(32)
            ),
        )
        .await;
    let failed = wait_command(&console, c["id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{failed}"
    );
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "2.0\n"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_config_push_reaches_twenty_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let mut agents = Vec::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let dir = tmp.path().join(format!("a{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pump.toml");
        std::fs::write(&path, "[log]\nlevel = \"info\"\n").unwrap();
        agents.push(spawn_agent(&dir, &console, 200 + i, vec![pump(Some(&path), None)]).await);
        files.push(path);
    }
    wait_for(LIMIT, "20 agents online", || async {
        let all = console.agents().await;
        (all.len() == 20 && all.iter().all(|a| a["status"] == "online")).then_some(())
    })
    .await;
    let items = console
        .send(
            "POST",
            "/api/commands/bulk",
            r#"{"action":"push-config","app":"pump","values":{"log.level":"debug"},"status":"online"}"#,
        )
        .await;
    let ids: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["command"]["id"]
                .as_str()
                .expect("every target got a command")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 20);
    for id in &ids {
        wait_command(&console, id, "succeeded").await;
    }
    for f in &files {
        assert_eq!(
            std::fs::read_to_string(f).unwrap(),
            "[log]\nlevel = \"debug\"\n"
        );
    }
    // Unknown targets are reported, not fatal.
    let items = console
        .send(
            "POST",
            "/api/commands/bulk",
            r#"{"action":"request-heartbeat","agents":["aaaaaaaaaaaaaaaa"]}"#,
        )
        .await;
    assert!(
        items[0]["error"].as_str().unwrap().contains("no agent"),
        "{items}"
    );
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_runs_only_where_the_local_admin_allow_listed_its_hash() {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let vetted = "echo disk check; echo ok-from-script\n";
    let sha: String = sha2::Sha256::digest(vetted.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let allow = tmp.path().join("allowlist");
    std::fs::write(&allow, format!("# vetted by ops\n{sha}\n")).unwrap();
    std::fs::set_permissions(&allow, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Agent a allows scripts with that list; agent b keeps the default (off).
    let spawn = |dir: std::path::PathBuf, index: usize, scripts: bool| {
        let config = edgefleet_config::AgentConfig {
            console_urls: vec![console.mqtt_url()],
            data_dir: dir.clone(),
            token: Some(console.token.clone()),
            allow_scripts: scripts,
            script_allowlist: scripts.then(|| allow.clone()),
            ..Default::default()
        };
        let mut opts = AgentOptions::new(config, SimProbe::new(index));
        opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
        edgefleet_agent::spawn(opts)
    };
    let a = spawn(tmp.path().join("a"), 301, true).await.unwrap();
    let b = spawn(tmp.path().join("b"), 302, false).await.unwrap();
    let (ida, idb) = (a.agent_id().to_string(), b.agent_id().to_string());
    wait_status(&console, &ida, "online").await;
    wait_status(&console, &idb, "online").await;
    let console = &console;
    let script = |id: &str, text: &str| {
        let body = serde_json::json!({ "script": text }).to_string();
        let path = format!("/api/agents/{id}/run-script");
        async move { console.send("POST", &path, &body).await }
    };

    let c = script(&ida, vetted).await;
    let done = wait_command(console, c["id"].as_str().unwrap(), "succeeded").await;
    assert!(
        done["message"].as_str().unwrap().contains("ok-from-script"),
        "{done}"
    );
    // One changed byte is another script: refused, never run.
    let c = script(&ida, &vetted.replace("ok", "0k")).await;
    let refused = wait_command(console, c["id"].as_str().unwrap(), "rejected").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not on this agent's allow-list"),
        "{refused}"
    );
    let c = script(&idb, vetted).await;
    let refused = wait_command(console, c["id"].as_str().unwrap(), "rejected").await;
    assert!(
        refused["message"].as_str().unwrap().contains("disabled"),
        "{refused}"
    );
    // The audit names the script by hash; an operator key may not send scripts.
    let audit = console.get("/api/audit?action=command").await;
    assert!(
        audit.to_string().contains(&format!("script sha256 {sha}")),
        "{audit}"
    );
    let op = console
        .send("POST", "/api/keys", r#"{"name":"ops","role":"operator"}"#)
        .await;
    let (status, text) = crate::harness::http_request(
        console.http,
        "POST",
        &format!("/api/agents/{ida}/run-script"),
        Some(op["secret"].as_str().unwrap()),
        &serde_json::json!({ "script": vetted }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{text}");
    let (status, text) = crate::harness::http_request(
        console.http,
        "POST",
        &format!("/api/agents/{ida}/run-script"),
        Some(&console.api_key),
        &serde_json::json!({ "script": "x".repeat(20_000) }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{text}");
    a.shutdown().await;
    b.shutdown().await;
}
