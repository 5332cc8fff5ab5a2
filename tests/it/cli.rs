//! The operator CLI (`edgefleet`) and the agent's local `status`, run as real processes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{bin, wait_for, AgentProc, Console, ConsoleOpts};

/// Runs a binary with no login profile (HOME points nowhere), so a developer's own
/// `edgefleet login` cannot leak into a test. Returns success and stdout + stderr.
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Cli::new(cmd, Path::new("/nonexistent/edgefleet-test-home")).run(args, None);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

/// One CLI run's exit code and output.
#[derive(Debug)]
pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a binary with `HOME` set to a test directory (for `edgefleet login`'s profile) and no
/// `EDGEFLEET_*` variables from the environment.
#[derive(Debug, Clone)]
pub struct Cli {
    bin: PathBuf,
    home: PathBuf,
}

impl Cli {
    pub fn new(cmd: &str, home: &Path) -> Cli {
        Cli {
            bin: bin(cmd),
            home: home.to_path_buf(),
        }
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CliOut {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("EDGEFLEET_API_KEY")
            .env_remove("EDGEFLEET_CONSOLE")
            .env_remove("EDGEFLEET_CA_FILE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        CliOut {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `run` on a blocking thread, for async tests.
    pub async fn run_async(&self, args: &[&str], stdin: Option<&str>) -> CliOut {
        let (cli, args, stdin) = (
            self.clone(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            stdin.map(str::to_string),
        );
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, stdin.as_deref())
        })
        .await
        .unwrap()
    }
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
    assert!(ok && out.contains("status         online since"), "{out}");

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
    assert!(
        !ok && out.contains("Agent 'nosuchagent' not found"),
        "{out}"
    );

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
        !ok && out.contains("Authentication failed") && out.contains("unknown API key"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_json_output_and_every_error_path_have_the_specified_wording_and_exit_code() {
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
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cli = Cli::new("edgefleet", &home);
    let url = format!("http://{}", console.http);
    let fails_with = |out: &CliOut, text: &str| {
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(text), "expected {text:?} in {out:?}");
    };

    // Not logged in.
    let out = cli.run_async(&["agents", "list"], None).await;
    fails_with(&out, "Run 'edgefleet login' first");
    // Unreachable console (a port nothing listens on).
    let out = cli
        .run_async(
            &["--console", "http://127.0.0.1:1", "--api-key", "k", "fleet"],
            None,
        )
        .await;
    fails_with(&out, "Cannot reach http://127.0.0.1:1");
    // A wrong key at login: an error, and no profile written.
    let out = cli
        .run_async(&["login", "--url", &url], Some("efk_wrong\n"))
        .await;
    fails_with(&out, "Authentication failed");
    let profile = home.join(".config/edgefleet/config.json");
    assert!(!profile.exists());

    // The right key on stdin: saved with mode 0600, and used from then on.
    let out = cli
        .run_async(
            &["login", "--url", &url],
            Some(&format!("{}\n", console.api_key)),
        )
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("logged in"), "{out:?}");
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let json = |out: CliOut| -> Value {
        assert_eq!(out.code, Some(0), "{out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let fleet = json(cli.run_async(&["fleet", "--json"], None).await);
    assert_eq!(fleet["total"], 1);
    assert_eq!(fleet["online"], 1);
    let list = json(
        cli.run_async(&["agents", "list", "--online-only", "--json"], None)
            .await,
    );
    assert_eq!(list["items"][0]["id"], id.as_str());
    let list = json(
        cli.run_async(&["agents", "list", "--status", "pending", "--json"], None)
            .await,
    );
    assert_eq!(list["total"], 0);
    let detail = json(
        cli.run_async(&["agents", "status", &id, "--json"], None)
            .await,
    );
    assert_eq!(detail["id"], id.as_str());
    let audit = json(
        cli.run_async(&["audit", "--last", "5", "--json"], None)
            .await,
    );
    assert!(!audit["items"].as_array().unwrap().is_empty(), "{audit}");
    let verify = json(cli.run_async(&["audit", "--verify", "--json"], None).await);
    assert_eq!(verify["broken_at"], Value::Null);
    let tokens = json(cli.run_async(&["tokens", "list", "--json"], None).await);
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let commands = json(
        cli.run_async(&["commands", "list", &id, "--json"], None)
            .await,
    );
    assert_eq!(commands, serde_json::json!([]));

    // 404 on an agent, and 403 for a viewer key trying an admin action.
    let out = cli
        .run_async(&["agents", "status", "nosuchagent"], None)
        .await;
    fails_with(&out, "Agent 'nosuchagent' not found");
    let out = cli
        .run_async(&["apps", "restart", "nosuchagent", "app"], None)
        .await;
    fails_with(&out, "Agent 'nosuchagent' not found");
    let viewer = json(
        cli.run_async(
            &["keys", "create", "watcher", "--role", "viewer", "--json"],
            None,
        )
        .await,
    );
    let out = cli
        .run_async(
            &[
                "--api-key",
                viewer["secret"].as_str().unwrap(),
                "agents",
                "revoke",
                &id,
            ],
            None,
        )
        .await;
    fails_with(&out, "Authentication failed");

    let out = cli.run_async(&["completions", "bash"], None).await;
    assert!(
        out.code == Some(0) && out.stdout.contains("_edgefleet"),
        "{out:?}"
    );
    let out = cli.run_async(&["logout"], None).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = cli.run_async(&["fleet"], None).await;
    fails_with(&out, "Run 'edgefleet login' first");
    drop(agent);
}
