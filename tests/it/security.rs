//! Enrollment and end-to-end security against a real console process: tokens, pending and
//! approval, revocation, duplicate hosts, forged and replayed traffic, connect-time identity
//! checks, HTTPS and API roles (the security issue's test list).

use std::path::Path;
use std::time::Duration;

use edgefleet_agent::enrollment::EnrollState;
use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::{AgentHandle, AgentOptions};
use edgefleet_codec::{EnrollToken, Identity};
use serde_json::Value;

use crate::cli::run;
use crate::harness::{self, http_request, wait_for, AgentProc, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(15);

async fn console(dir: &Path) -> Console {
    Console::start(&dir.join("console"), ConsoleOpts::default())
        .await
        .unwrap()
}

/// An in-process agent (simulated probe `index`: its own hostname and IP) with `token`.
async fn agent(dir: &Path, console: &Console, token: &str, index: usize) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: dir.to_path_buf(),
        token: Some(token.to_string()),
        ..Default::default()
    };
    edgefleet_agent::spawn(AgentOptions::new(config, SimProbe::new(index)))
        .await
        .unwrap()
}

async fn host(console: &Console, id: &str) -> Value {
    console.get(&format!("/api/agents/{id}")).await
}

async fn wait_status(console: &Console, id: &str, status: &str) -> Value {
    wait_for(LIMIT, &format!("agent {id} {status}"), || async {
        let (code, body) = console.get_text(&format!("/api/agents/{id}")).await;
        let doc: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && doc["status"] == status).then_some(doc)
    })
    .await
}

async fn metric(console: &Console, line_start: &str) -> u64 {
    let (_, text) = console.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn cli(console: &Console, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "--console".to_string(),
        console.http.to_string(),
        "--api-key".to_string(),
        console.api_key.clone(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run("edgefleet", &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_approve_token_enrolls_an_agent_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let agent = AgentProc::run(
        &tmp.path().join("agent"),
        &console.mqtt_url(),
        &console.token,
        "",
    )
    .unwrap();
    let id = wait_for(LIMIT, "the agent online", || async {
        console
            .agents()
            .await
            .into_iter()
            .find(|a| a["status"] == "online")
            .map(|a| a["id"].as_str().unwrap().to_string())
    })
    .await;
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.join("data/enrollment.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["state"], "approved");
    let audit = console.get(&format!("/api/audit?agent={id}")).await;
    assert_eq!(audit["items"][0]["action"], "enroll", "{audit}");
    assert_eq!(audit["items"][0]["actor"], "console");
    assert!(audit["items"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("auto-approved"));
    let tokens = console.send("GET", "/api/tokens", "").await;
    assert_eq!(tokens[0]["uses"], 1, "{tokens}");

    // Deleting only the enrollment state re-enrolls the same key: same id, same record,
    // no second use of the token.
    let mut agent = agent;
    agent.signal("TERM");
    agent.child.wait().await.unwrap();
    std::fs::remove_file(agent.dir.join("data/enrollment.json")).unwrap();
    wait_status(&console, &id, "offline").await;
    let again = AgentProc::run(
        &tmp.path().join("agent"),
        &console.mqtt_url(),
        &console.token,
        "",
    )
    .unwrap();
    wait_status(&console, &id, "online").await;
    assert!(again.dir.join("data/enrollment.json").exists());
    assert_eq!(console.agents().await.len(), 1);
    let tokens = console.send("GET", "/api/tokens", "").await;
    assert_eq!(
        tokens[0]["uses"], 1,
        "re-enrolling a known key takes no token use: {tokens}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_agent_sends_no_telemetry_until_an_operator_approves_it_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let (ok, out) = cli(
        &console,
        &["tokens", "create", "--expires", "1h", "--uses", "5"],
    )
    .await;
    assert!(ok, "{out}");
    let token = out.lines().next().unwrap().trim().to_string();
    assert!(token.starts_with("ef1."), "{out}");
    let a = agent(&tmp.path().join("a"), &console, &token, 11).await;
    let id = a.agent_id().to_string();
    a.wait_for(LIMIT, |s| s.enrollment == Some(EnrollState::Pending))
        .await
        .unwrap();
    let doc = wait_status(&console, &id, "pending").await;
    assert_eq!(
        doc["hostname"], "sim-00011-ship",
        "the request carried the facts: {doc}"
    );
    let fleet = console.get("/api/fleet/summary").await;
    assert_eq!(
        (fleet["pending"].as_u64(), fleet["online"].as_u64()),
        (Some(1), Some(0))
    );
    // Pending: no birth and no heartbeats were accepted.
    assert_eq!(doc["last_seen"], Value::Null, "{doc}");
    assert_eq!(
        metric(
            &console,
            "edgefleet_ingest_messages_total{kind=\"heartbeat\"}"
        )
        .await,
        0
    );

    let (ok, out) = cli(&console, &["agents", "approve", &id]).await;
    assert!(ok, "{out}");
    wait_status(&console, &id, "online").await;
    a.wait_for(LIMIT, |s| {
        s.enrollment == Some(EnrollState::Approved) && s.last_heartbeat.is_some()
    })
    .await
    .unwrap();
    let (ok, out) = cli(&console, &["audit", "--agent", &id]).await;
    assert!(
        ok && out.contains("approve") && out.contains("admin"),
        "the key name is recorded: {out}"
    );
    let (ok, out) = cli(&console, &["audit", "--verify"]).await;
    assert!(ok && out.contains("verifies"), "{out}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_disconnects_the_agent_and_blocks_its_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let dir = tmp.path().join("a");
    let a = agent(&dir, &console, &console.token, 12).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let (ok, out) = cli(&console, &["agents", "revoke", &id]).await;
    assert!(ok, "{out}");
    a.wait_for(LIMIT, |s| {
        s.enrollment == Some(EnrollState::Rejected) && !s.connected
    })
    .await
    .unwrap();
    assert_eq!(host(&console, &id).await["status"], "revoked");
    a.shutdown().await;
    // A restarted agent (same key) is refused at connect, token or not. An external broker
    // lets it connect; the console then ignores its telemetry and tells it, signed, that
    // it is revoked, so it disconnects itself.
    let refused = || async {
        if harness::external_broker() {
            // Its enrollment request, or its telemetry if it sends that first.
            metric(
                &console,
                "edgefleet_ingest_rejected_total{reason=\"revoked\"}",
            )
            .await
                + metric(
                    &console,
                    "edgefleet_ingest_rejected_total{reason=\"not_approved\"}",
                )
                .await
        } else {
            metric(
                &console,
                "edgefleet_connect_refused_total{reason=\"revoked\"}",
            )
            .await
        }
    };
    let before = refused().await;
    let again = agent(&dir, &console, &console.token, 12).await;
    wait_for(LIMIT, "a refused reconnect", || async {
        (refused().await > before).then_some(())
    })
    .await;
    again
        .wait_for(LIMIT, |s| {
            s.enrollment == Some(EnrollState::Rejected) && !s.connected
        })
        .await
        .unwrap();
    assert_eq!(host(&console, &id).await["status"], "revoked");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_used_up_revoked_and_wrong_secret_tokens_are_refused_with_a_clear_agent_log() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let create = |body: &'static str| {
        let console = &console;
        async move {
            console.send("POST", "/api/tokens", body).await["token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let expired = create(r#"{"expires":"1s"}"#).await;
    let used_up = create(r#"{"uses":1,"auto_approve":true}"#).await;
    let revoked = create("{}").await;
    let mut wrong: EnrollToken = create("{}").await.parse().unwrap();
    wrong.secret[0] ^= 1;
    let revoked_id = revoked.split('.').nth(1).unwrap().to_string();
    console
        .send("DELETE", &format!("/api/tokens/{revoked_id}"), "")
        .await;
    // Use up the one-use token with another agent.
    let first = agent(&tmp.path().join("first"), &console, &used_up, 13).await;
    first
        .wait_for(LIMIT, |s| s.enrollment == Some(EnrollState::Approved))
        .await
        .unwrap();
    wait_for(LIMIT, "the short token to expire", || async {
        let tokens = console.send("GET", "/api/tokens", "").await;
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "expired")
            .then_some(())
    })
    .await;
    let cases = [
        ("expired", expired, "token_expired"),
        ("used-up", used_up, "token_used_up"),
        ("revoked", revoked, "token_revoked"),
        ("wrong-secret", wrong.to_string(), "token_bad_proof"),
    ];
    let mut procs = Vec::new();
    for (name, token, _) in &cases {
        procs.push(AgentProc::run(&tmp.path().join(name), &console.mqtt_url(), token, "").unwrap());
    }
    // The embedded broker refuses the CONNECT; behind an external broker the console
    // answers the enrollment request with the same refusal, signed.
    let (said, counter) = if harness::external_broker() {
        (
            "the console rejected this agent",
            "edgefleet_ingest_rejected_total",
        )
    } else {
        (
            "the console refused the connection",
            "edgefleet_connect_refused_total",
        )
    };
    for ((name, _, reason), proc) in cases.iter().zip(&procs) {
        wait_for(LIMIT, &format!("the {name} agent's log"), || async {
            let log = proc.log();
            (log.contains(said) && log.contains("enrollment token")).then_some(())
        })
        .await;
        let refused = metric(&console, &format!("{counter}{{reason=\"{reason}\"}}")).await;
        assert!(refused >= 1, "{name}: no {reason} refusal counted");
    }
    assert_eq!(
        console.agents().await.len(),
        1,
        "only the first agent got in"
    );
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_another_console_key_makes_the_agent_refuse_this_console() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    // Valid id and secret for this console, but the fingerprint of some other console key:
    // the console lets the claim in, and the agent must refuse the console it meets.
    let mut token: EnrollToken = console.token.parse().unwrap();
    token.console_fingerprint = Identity::generate().public_key().fingerprint();
    let proc = AgentProc::run(
        &tmp.path().join("agent"),
        &console.mqtt_url(),
        &token.to_string(),
        "",
    )
    .unwrap();
    let log = wait_for(LIMIT, "the refusal in the agent log", || async {
        let log = proc.log();
        log.contains("refusing the console state").then_some(log)
    })
    .await;
    assert!(
        log.contains("not the one the enrollment token names"),
        "{log}"
    );
    assert!(
        !proc.dir.join("data/console.pub").exists(),
        "nothing was pinned"
    );
    assert!(console.agents().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_host_is_rejected_while_online_and_adopted_while_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    // Same simulated probe index: same hostname and IP, different keys.
    let first = agent(&tmp.path().join("first"), &console, &console.token, 21).await;
    let host_id = first.agent_id().to_string();
    wait_status(&console, &host_id, "online").await;
    let twin = agent(&tmp.path().join("twin"), &console, &console.token, 21).await;
    twin.wait_for(LIMIT, |s| s.enrollment == Some(EnrollState::Rejected))
        .await
        .unwrap();
    let state = std::fs::read_to_string(tmp.path().join("twin/enrollment.json")).unwrap();
    assert!(
        state.contains("already exists") && state.contains(&host_id),
        "{state}"
    );
    twin.shutdown().await;
    assert_eq!(console.agents().await.len(), 1);

    first.shutdown().await;
    wait_status(&console, &host_id, "offline").await;
    let replacement = agent(
        &tmp.path().join("replacement"),
        &console,
        &console.token,
        21,
    )
    .await;
    replacement
        .wait_for(LIMIT, |s| s.enrollment == Some(EnrollState::Approved))
        .await
        .unwrap();
    let doc = wait_status(&console, &host_id, "online").await;
    let causes: Vec<&str> = doc["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert!(
        causes.contains(&"adopted") && causes.contains(&"clean"),
        "history kept: {causes:?}"
    );
    assert_eq!(console.agents().await.len(), 1, "the same host record");
    let audit = console.get(&format!("/api/audit?agent={host_id}")).await;
    assert!(
        audit.to_string().contains("took over this host record"),
        "{audit}"
    );
    replacement.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_from_another_agent_or_mosquitto_pub_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let victim = agent(&tmp.path().join("victim"), &console, &console.token, 31).await;
    let victim_id = victim.agent_id().clone();
    let other = agent(&tmp.path().join("other"), &console, &console.token, 32).await;
    wait_status(&console, victim_id.as_str(), "online").await;
    wait_status(&console, other.agent_id().as_str(), "online").await;
    let bad_tag = || {
        metric(
            &console,
            "edgefleet_ingest_rejected_total{reason=\"bad_tag\"}",
        )
    };
    let before = bad_tag().await;

    // Agent B's key material, sealing a heartbeat for A.
    let seed = edgefleet_config::keyfile::read_secret(&tmp.path().join("other/agent.key")).unwrap();
    let b = Identity::from_seed(&seed.try_into().unwrap());
    let console_key = Identity::from_seed(
        &edgefleet_config::keyfile::read_secret(&console.dir.join("data/console.key"))
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .public_key();
    let b_mac = edgefleet_codec::MacKey::derive_agent(&b, &console_key).unwrap();
    let forged = edgefleet_codec::seal_agent(
        &edgefleet_codec::AgentMessage::Heartbeat(edgefleet_codec::Heartbeat {
            bd_seq: 1_000,
            seq: 1,
            cpu_pct: Some(100),
            ..Default::default()
        }),
        &victim_id,
        &b_mac,
    );
    let topic = format!("ef/a/{victim_id}/hb");
    let token: EnrollToken = console.token.parse().unwrap();
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", &format!("{}-77", b.agent_id())])
        .args(["-u", &edgefleet_codec::connect::username(&b, Some(&token))])
        .args([
            "-P",
            &edgefleet_codec::connect::password(&b, crate::mqtt::now_unix()),
        ])
        .args(["-t", &topic, "-q", "1", "-s"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&forged)?;
            child.wait_with_output()
        });
    let out = out.expect("mosquitto_pub is installed by `cargo xtask ci`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(LIMIT, "the forged heartbeat rejected", || async {
        (bad_tag().await > before).then_some(())
    })
    .await;
    // A raw client without credentials does not even get in (rumqttd refuses a CONNECT
    // without login before asking the console's policy). The test's Mosquitto admits
    // anyone, as one with its own authentication would admit a stolen login: the console
    // still drops what it sends.
    let rejected = || async {
        let (_, text) = console.get_text("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("edgefleet_ingest_rejected_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = rejected().await;
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", "intruder-1", "-t", &topic, "-m", "x"])
        .output()
        .unwrap();
    if harness::external_broker() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(LIMIT, "the intruder's payload rejected", || async {
            (rejected().await > before).then_some(())
        })
        .await;
    } else {
        assert!(
            !out.status.success(),
            "an anonymous publish must be refused"
        );
    }
    assert_ne!(host(&console, victim_id.as_str()).await["cpu"], 100);
    victim.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_command_runs_once_and_is_counted_by_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let a = agent(&tmp.path().join("a"), &console, &console.token, 41).await;
    let id = a.agent_id().clone();
    wait_status(&console, id.as_str(), "online").await;
    // Until remote operations exist, the test signs the command with the console's key,
    // exactly as the console will, and publishes it twice: a replay on a hostile broker.
    let console_id = Identity::from_seed(
        &edgefleet_config::keyfile::read_secret(&console.dir.join("data/console.key"))
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let now = crate::mqtt::now_unix();
    let command = edgefleet_codec::ConsoleMessage::Command(edgefleet_codec::Command {
        id: [7; 16],
        target: id.to_string(),
        issued_at: now,
        expires_at: now + 300,
        action: edgefleet_codec::CommandAction::RequestHeartbeat,
    });
    let signed = edgefleet_codec::sign_console(&command, Some(&id), &console_id);
    let attacker = crate::mqtt::Attacker::connect(console.mqtt, &console.token).await;
    // A hostile subscriber records the heartbeat the command triggers (no topic ACLs).
    let spy = Identity::generate();
    let token: EnrollToken = console.token.parse().unwrap();
    let capture = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", &format!("{}-5", spy.agent_id())])
        .args([
            "-u",
            &edgefleet_codec::connect::username(&spy, Some(&token)),
        ])
        .args([
            "-P",
            &edgefleet_codec::connect::password(&spy, crate::mqtt::now_unix()),
        ])
        .args([
            "-t",
            &format!("ef/a/{id}/hb"),
            "-C",
            "1",
            "-W",
            "15",
            "-F",
            "%x",
        ])
        .output();
    let capture = tokio::spawn(capture);
    let topic = format!("ef/a/{id}/cmd");
    attacker.publish(&topic, signed.clone()).await;
    wait_for(LIMIT, "the command result", || async {
        let results = console.get(&format!("/api/agents/{id}/results")).await;
        (results.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    attacker.publish(&topic, signed).await;
    a.wait_for(LIMIT, |s| s.commands_rejected.get("replay") == Some(&1))
        .await
        .unwrap();
    // The spy may have subscribed after that heartbeat: ask for more until it has one.
    wait_for(LIMIT, "the spy to capture a heartbeat", || async {
        a.request_heartbeat_now().await.unwrap();
        capture.is_finished().then_some(())
    })
    .await;
    // The captured heartbeat, published again, is a replay for the console.
    let out = capture
        .await
        .unwrap()
        .expect("mosquitto_sub is installed by `cargo xtask ci`");
    let hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !hex.is_empty(),
        "captured: {hex:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let heartbeat: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let replays = || {
        metric(
            &console,
            "edgefleet_ingest_rejected_total{reason=\"replay\"}",
        )
    };
    let before = replays().await;
    attacker.publish(&format!("ef/a/{id}/hb"), heartbeat).await;
    wait_for(LIMIT, "the replayed heartbeat rejected", || async {
        (replays().await > before).then_some(())
    })
    .await;
    // An expired one and one for another agent are refused too.
    let expired = edgefleet_codec::ConsoleMessage::Command(edgefleet_codec::Command {
        id: [8; 16],
        target: id.to_string(),
        issued_at: now - 600,
        expires_at: now - 300,
        action: edgefleet_codec::CommandAction::RequestHeartbeat,
    });
    attacker
        .publish(
            &topic,
            edgefleet_codec::sign_console(&expired, Some(&id), &console_id),
        )
        .await;
    a.wait_for(LIMIT, |s| s.commands_rejected.get("expired") == Some(&1))
        .await
        .unwrap();
    // One signed to become valid an hour from now (beyond the 300 s clock skew) is refused
    // rather than run on arrival.
    let future = edgefleet_codec::ConsoleMessage::Command(edgefleet_codec::Command {
        id: [9; 16],
        target: id.to_string(),
        issued_at: now + 3600,
        expires_at: now + 3900,
        action: edgefleet_codec::CommandAction::RequestHeartbeat,
    });
    attacker
        .publish(
            &topic,
            edgefleet_codec::sign_console(&future, Some(&id), &console_id),
        )
        .await;
    a.wait_for(LIMIT, |s| {
        s.commands_rejected.get("not_yet_valid") == Some(&1)
    })
    .await
    .unwrap();
    let results = console.get(&format!("/api/agents/{id}/results")).await;
    assert_eq!(
        results.as_array().unwrap().len(),
        1,
        "ran exactly once: {results}"
    );
    assert_eq!(results[0]["outcome"], "succeeded");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_that_does_not_match_its_key_is_refused_at_connect() {
    if harness::external_broker() {
        return; // the embedded broker's connect policy; an external broker has its own
    }
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let me = Identity::generate();
    let victim = Identity::generate().agent_id();
    let token: EnrollToken = console.token.parse().unwrap();
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", &format!("{victim}-1")])
        .args([
            "-u",
            &edgefleet_codec::connect::username(&me, Some(&token)).replacen(
                me.agent_id().as_str(),
                victim.as_str(),
                1,
            ),
        ])
        .args([
            "-P",
            &edgefleet_codec::connect::password(&me, crate::mqtt::now_unix()),
        ])
        .args(["-t", "ef/#", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    // rumqttd closes a refused connection without a CONNACK.
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mosquitto_sub tries more than once; every attempt is refused and counted.
    assert!(
        metric(
            &console,
            "edgefleet_connect_refused_total{reason=\"wrong_id\"}"
        )
        .await
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_key_and_a_viewer_cannot_approve() {
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let (code, body) = http_request(console.http, "GET", "/api/agents", None, "")
        .await
        .unwrap();
    assert_eq!(code, 401, "{body}");
    let created = console
        .send(
            "POST",
            "/api/keys",
            r#"{"name":"wall-screen","role":"viewer"}"#,
        )
        .await;
    let viewer = created["secret"].as_str().unwrap();
    let a = agent(&tmp.path().join("a"), &console, &console.token, 51).await;
    let id = a.agent_id().to_string();
    let (code, body) = http_request(
        console.http,
        "POST",
        &format!("/api/agents/{id}/approve"),
        Some(viewer),
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("admin"), "{body}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_an_init_tls_certificate_and_the_cli_checks_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    let other = tmp.path().join("other");
    for (dir, name) in [(&tls, "localhost"), (&other, "localhost")] {
        let (ok, out) = run(
            "edgefleet-console",
            &["init-tls", "--out", dir.to_str().unwrap(), "--name", name],
        );
        assert!(ok, "{out}");
    }
    let console = Console::start(
        &tmp.path().join("console"),
        ConsoleOpts {
            extra_toml: format!(
                "[http]\ntls_cert = {:?}\ntls_key = {:?}\n",
                tls.join("server.pem"),
                tls.join("server.key")
            ),
            https: true,
            ..ConsoleOpts::default()
        },
    )
    .await
    .unwrap();
    let url = format!("https://localhost:{}", console.http.port());
    let fleet = |ca: std::path::PathBuf| {
        let (url, key) = (url.clone(), console.api_key.clone());
        tokio::task::spawn_blocking(move || {
            run(
                "edgefleet",
                &[
                    "--console",
                    &url,
                    "--api-key",
                    &key,
                    "--ca-file",
                    ca.to_str().unwrap(),
                    "fleet",
                ],
            )
        })
    };
    let (ok, out) = fleet(tls.join("ca.pem")).await.unwrap();
    assert!(ok && out.contains("0 agents"), "{out}");
    let (ok, out) = fleet(other.join("ca.pem")).await.unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.to_lowercase().contains("certificate"),
        "a clear TLS error: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_topics_and_bad_client_ids_are_harmless_end_to_end() {
    if crate::harness::external_broker() {
        // These are the embedded broker's reactions (Mosquitto's differ and are its own).
        return;
    }
    use edgefleet_tests::rawmqtt;
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let console = console(tmp.path()).await;
    let token: EnrollToken = console.token.parse().unwrap();
    let me = Identity::generate();
    let id = me.agent_id();
    let user = edgefleet_codec::connect::username(&me, Some(&token));
    let password = || edgefleet_codec::connect::password(&me, crate::mqtt::now_unix());

    // Empty, 10 KB and wildcard client ids with otherwise valid credentials: closed
    // without a CONNACK.
    let long = format!("{id}-{}", "1".repeat(10 * 1024));
    for bad in [String::new(), long, format!("{id}-#"), format!("{id}/1")] {
        let (_s, code) =
            rawmqtt::try_connect(console.mqtt, bad.as_bytes(), &user, &password()).await;
        assert_eq!(code, None, "client id of {} bytes admitted", bad.len());
    }

    let (mut s, code) = rawmqtt::try_connect(
        console.mqtt,
        format!("{id}-1").as_bytes(),
        &user,
        &password(),
    )
    .await;
    assert_eq!(
        code,
        Some(0),
        "the same credentials with a sane client id get in"
    );
    // A wildcard subscription is granted and reads the retained console state: there are
    // no topic ACLs, so an admitted client can read (not forge) all traffic.
    s.write_all(&rawmqtt::subscribe("#")).await.unwrap();
    let state_topic = "ef/c/state";
    let state = tokio::time::timeout(LIMIT, async {
        loop {
            let (kind, body) = rawmqtt::read(&mut s).await.expect("still connected");
            let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            if kind & 0xf0 == 0x30 && &body[2..2 + len] == state_topic.as_bytes() {
                return kind;
            }
        }
    })
    .await
    .expect("the retained console state arrives via `#`");
    assert_eq!(state & 0x01, 0x01, "delivered as retained");

    // Wildcards in PUBLISH topics (forbidden by MQTT-3.3.2-2, not checked by rumqttd 0.20):
    // a `+` is routed as a literal level, reaches the console and is refused as a bad
    // topic; a `#` level matches no subscription of the console and is dropped.
    let bad_topics = || {
        metric(
            &console,
            "edgefleet_ingest_rejected_total{reason=\"bad_topic\"}",
        )
    };
    let before = bad_topics().await;
    for topic in [
        "ef/a/+/hb".to_string(),
        "ef/a/#/hb".to_string(),
        format!("ef/a/{id}/+"),
    ] {
        s.write_all(&rawmqtt::publish(&topic, b"junk"))
            .await
            .unwrap();
    }
    let counted = tokio::time::timeout(LIMIT, async {
        while bad_topics().await < before + 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (_, text) = console.get_text("/metrics").await;
    assert!(
        counted.is_ok(),
        "{}",
        text.lines()
            .filter(|l| l.contains("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Nothing else arrives (the `#` one is not counted late).
    s.write_all(&rawmqtt::publish("ef/a/+/inv", b"junk"))
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, async {
        while bad_topics().await < before + 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a fourth wildcard topic counted");
    assert_eq!(bad_topics().await, before + 3);
    let (code, _) = crate::harness::http_get(console.http, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "the console keeps serving");
    assert!(
        console.agents().await.is_empty(),
        "no host was created by any of it"
    );
}
