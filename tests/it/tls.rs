//! MQTT over TLS end to end: the embedded broker's TLS listener with a certificate from a CA
//! made here with openssl, an agent that trusts that CA, and one that trusts another CA.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, wait_for, AgentProc, Console, ConsoleOpts};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for `localhost`, signed by it.
fn make_ca_and_server(dir: &Path, ca: &str) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_over_mqtts_and_a_wrong_ca_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_ca_and_server(&pki, "EdgeFleet test CA");
    make_ca_and_server(&tmp.path().join("other"), "Some other CA");
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
        &format!("ca_file = {:?}", tmp.path().join("other/ca.pem")),
    )
    .unwrap();
    let log = wait_for(
        Duration::from_secs(15),
        "a clear TLS error in the agent log",
        || async {
            let log = bad.log();
            (log.contains("disconnected; reconnecting")
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
