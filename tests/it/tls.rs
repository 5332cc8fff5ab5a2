//! MQTT over TLS end to end: `edgefleet-console init-tls` makes a CA and a server
//! certificate, the embedded broker serves them, an agent that trusts that CA connects, and
//! one that trusts another CA is refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{self, bin, free_port, wait_for, AgentProc, Console, ConsoleOpts};

/// `edgefleet-console init-tls`: a CA and a server certificate for `localhost` in `dir`.
fn init_tls(dir: &Path) {
    let out = Command::new(bin("edgefleet-console"))
        .args([
            "init-tls",
            "--name",
            "localhost",
            "--name",
            "127.0.0.1",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init-tls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("give this to agents as ca_file"), "{text}");
    for f in ["ca.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // A second run refuses to overwrite.
    let again = Command::new(bin("edgefleet-console"))
        .args(["init-tls", "--name", "x", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already exists")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_over_mqtts_and_a_wrong_ca_fails_clearly() {
    if harness::external_broker() {
        return; // the embedded broker's TLS listener
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    init_tls(&pki);
    init_tls(&tmp.path().join("other"));
    let tls_port = free_port();
    let opts = ConsoleOpts {
        extra_toml: format!(
            "[mqtt]\ntls_bind = \"127.0.0.1:{tls_port}\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            pki.join("server.pem"),
            pki.join("server.key")
        ),
        ..ConsoleOpts::default()
    };
    let console = Console::start(&tmp.path().join("console"), opts)
        .await
        .unwrap();
    let url = format!("mqtts://localhost:{tls_port}");

    let _good = AgentProc::run(
        &tmp.path().join("good"),
        &url,
        &console.token,
        &format!("ca_file = {:?}", pki.join("ca.pem")),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(15),
        "the agent online over mqtts",
        || async {
            let agents = console.agents().await;
            (agents.len() == 1 && agents[0]["status"] == "online").then_some(())
        },
    )
    .await;

    let bad = AgentProc::run(
        &tmp.path().join("bad"),
        &url,
        &console.token,
        &format!("ca_file = {:?}", tmp.path().join("other/ca.pem")),
    )
    .unwrap();
    let log = wait_for(
        Duration::from_secs(15),
        "a clear TLS error in the agent log",
        || async {
            let log = bad.log();
            (log.contains("no connection to the console")
                && log.to_lowercase().contains("certificate"))
            .then_some(log)
        },
    )
    .await;
    assert!(
        log.contains("UnknownIssuer")
            || log.contains("unknown issuer")
            || log.contains("invalid peer certificate"),
        "{log}"
    );
    assert_eq!(
        console.agents().await.len(),
        1,
        "the agent with the wrong CA never got in"
    );
}
