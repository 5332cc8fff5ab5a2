//! Clients we did not write, against the embedded broker of a real console (issue 10,
//! "Independent clients"): Eclipse paho-mqtt (Python, `tests/py/paho_client.py`, installed
//! into `target/py` by `cargo xtask install-deps`) and mosquitto_sub / mosquitto_pub.
//!
//! The broker only admits clients whose CONNECT passes the console's policy, so each
//! client gets real credentials computed here with the codec (a fresh key, client id
//! `{agent_id}-{n}`, a username carrying a claim on the console's enrollment token, and
//! a signed, timestamped password): exactly what a new agent would send. Everything on
//! the wire after that is the foreign client's own MQTT.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_codec::{AgentId, EnrollToken, Identity, Kind, MacKey};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::harness::{wait_for, AgentProc, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(20);

/// `target/py/bin/python` (the venv `cargo xtask install-deps` makes), else `python3`.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/paho_client.py")
}

/// (client id, username, password) for a fresh key with a claim on `token`.
fn credentials(token: &str, n: u32) -> (Identity, [String; 3]) {
    let me = Identity::generate();
    let token: EnrollToken = token.parse().unwrap();
    let creds = [
        format!("{}-{n}", me.agent_id()),
        edgefleet_codec::connect::username(&me, Some(&token)),
        edgefleet_codec::connect::password(&me, crate::mqtt::now_unix()),
    ];
    (me, creds)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A simulated agent's identity, read from its key file.
fn sim_identity(sim_dir: &Path, index: usize) -> Identity {
    let seed = edgefleet_config::keyfile::read_secret(
        &sim_dir.join(format!("data/sim-{index}/agent.key")),
    )
    .unwrap();
    Identity::from_seed(&seed.try_into().unwrap())
}

fn console_key(console: &Console) -> edgefleet_codec::PublicKey {
    let seed =
        edgefleet_config::keyfile::read_secret(&console.dir.join("data/console.key")).unwrap();
    Identity::from_seed(&seed.try_into().unwrap()).public_key()
}

/// Opens a status payload with the agent's own key: `(online, clean)`.
fn status_of(
    payload: &[u8],
    agent: &Identity,
    console: &edgefleet_codec::PublicKey,
) -> (bool, bool) {
    let mac = MacKey::derive_agent(agent, console).unwrap();
    match edgefleet_codec::open_agent(payload, &agent.agent_id(), &mac) {
        Ok(edgefleet_codec::AgentMessage::Status(s)) => (s.online, s.clean),
        other => panic!("not a status that verifies: {other:?}"),
    }
}

async fn metric(console: &Console, line_start: &str) -> u64 {
    let (_, text) = console.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A running `paho_client.py observe`: the messages it printed so far.
struct Observer {
    child: tokio::process::Child,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Observer {
    async fn start(console: &Console, creds: &[String; 3], topics: &[&str]) -> Observer {
        let mut child = tokio::process::Command::new(python())
            .arg(script())
            .args(["observe", "127.0.0.1", &console.mqtt.port().to_string()])
            .args(creds)
            .args(topics)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (cargo xtask install-deps)");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let observer = Observer { child, seen };
        let connected = wait_for(LIMIT, "paho connected", || async {
            observer.seen().iter().find_map(|v| v["connected"].as_i64())
        })
        .await;
        assert_eq!(connected, 0, "paho-mqtt was admitted with real credentials");
        observer
    }

    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// (retain, payload) of every message seen on `topic`.
    fn on(&self, topic: &str) -> Vec<(bool, Vec<u8>)> {
        self.seen()
            .iter()
            .filter(|v| v["topic"] == topic)
            .map(|v| (v["retain"] == true, hex(v["hex"].as_str().unwrap())))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_and_mosquitto_clients_see_retained_statuses_and_wills_and_their_forgeries_are_rejected(
) {
    if crate::harness::external_broker() {
        // The issue asks for the embedded broker; under Mosquitto these clients would be
        // talking to Mosquitto about Mosquitto.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let sim_dir = tmp.path().join("sim");
    let mut sim =
        AgentProc::simulate(&sim_dir, &console.mqtt_url(), &console.token, 2, "2s").unwrap();
    wait_for(LIMIT, "two agents online", || async {
        let agents = console.agents().await;
        (agents.len() == 2 && agents.iter().all(|a| a["status"] == "online")).then_some(())
    })
    .await;
    let agents: Vec<Identity> = (0..2).map(|i| sim_identity(&sim_dir, i)).collect();
    let ids: Vec<AgentId> = agents.iter().map(Identity::agent_id).collect();
    let ckey = console_key(&console);
    let status_topic = |id: &AgentId| format!("ef/a/{id}/s");

    // paho: the retained online statuses and the retained console state.
    let (_obs_key, obs) = credentials(&console.token, 1);
    let paho = Observer::start(&console, &obs, &["ef/a/+/s", "ef/c/state"]).await;
    wait_for(LIMIT, "retained statuses via paho", || async {
        let all = ids
            .iter()
            .all(|id| paho.on(&status_topic(id)).iter().any(|(retain, _)| *retain));
        (all && !paho.on("ef/c/state").is_empty()).then_some(())
    })
    .await;
    for (agent, id) in agents.iter().zip(&ids) {
        let (retain, payload) = paho.on(&status_topic(id))[0].clone();
        assert!(retain);
        assert_eq!(edgefleet_codec::peek_kind(&payload), Ok(Kind::Status));
        assert_eq!(status_of(&payload, agent, &ckey), (true, false), "online");
    }
    let (retain, state) = paho.on("ef/c/state")[0].clone();
    assert!(retain);
    assert_eq!(edgefleet_codec::peek_kind(&state), Ok(Kind::ConsoleState));

    // mosquitto_sub, the same way: one retained status per agent.
    let (_k, m) = credentials(&console.token, 1);
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", &m[0], "-u", &m[1], "-P", &m[2]])
        .args(["-V", "mqttv311", "-t", "ef/a/+/s", "-C", "2", "-W", "10"])
        .args(["-F", "%t %r %x"])
        .output()
        .await
        .expect("mosquitto_sub is installed by cargo xtask install-deps");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let retained: BTreeMap<String, Vec<u8>> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let (topic, retain, payload) = (parts.next()?, parts.next()?, parts.next()?);
            (retain == "1").then(|| (topic.to_string(), hex(payload)))
        })
        .collect();
    for (agent, id) in agents.iter().zip(&ids) {
        let payload = &retained[&status_topic(id)];
        assert_eq!(status_of(payload, agent, &ckey), (true, false), "{text}");
    }

    // kill -9 the agents: paho sees each one's last will, a status that opens with the
    // agent's own key as offline and not clean.
    sim.signal("KILL");
    let _ = sim.child.wait().await;
    wait_for(LIMIT, "both wills via paho", || async {
        agents
            .iter()
            .zip(&ids)
            .all(|(agent, id)| {
                paho.on(&status_topic(id))
                    .iter()
                    .any(|(_, p)| status_of(p, agent, &ckey) == (false, false))
            })
            .then_some(())
    })
    .await;
    // ... and a new mosquitto_sub finds the will as the retained status.
    let (_k, m) = credentials(&console.token, 1);
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args(["-i", &m[0], "-u", &m[1], "-P", &m[2]])
        .args([
            "-V",
            "mqttv311",
            "-t",
            &status_topic(&ids[0]),
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-F", "%r %x"])
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (retain, payload) = line.split_once(' ').expect("one retained message");
    assert_eq!(retain, "1");
    assert_eq!(status_of(&hex(payload), &agents[0], &ckey), (false, false));

    // Forged telemetry from paho: a heartbeat for agent 0 sealed with the forger's own
    // key. The broker delivers it (no topic ACLs); the console rejects it as `bad_tag`.
    let (forger, f) = credentials(&console.token, 2);
    let wrong = MacKey::derive_agent(&forger, &ckey).unwrap();
    let forged = edgefleet_codec::seal_agent(
        &edgefleet_codec::AgentMessage::Heartbeat(edgefleet_codec::Heartbeat {
            bd_seq: 99,
            seq: 1,
            cpu_pct: Some(100),
            ..Default::default()
        }),
        &ids[0],
        &wrong,
    );
    let bad_tag = || {
        metric(
            &console,
            "edgefleet_ingest_rejected_total{reason=\"bad_tag\"}",
        )
    };
    let before = bad_tag().await;
    let out = tokio::process::Command::new(python())
        .arg(script())
        .args(["publish", "127.0.0.1", &console.mqtt.port().to_string()])
        .args(&f)
        .arg(format!("ef/a/{}/hb", ids[0]))
        .arg(to_hex(&forged))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "paho publish: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(LIMIT, "the forged heartbeat rejected", || async {
        (bad_tag().await > before).then_some(())
    })
    .await;
    // And with mosquitto_pub.
    let (_k, m) = credentials(&console.token, 3);
    let status = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &console.mqtt.port().to_string()])
        .args([
            "-i", &m[0], "-u", &m[1], "-P", &m[2], "-V", "mqttv311", "-q", "1",
        ])
        .args(["-t", &format!("ef/a/{}/hb", ids[1])])
        .arg("-s")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut status = status;
        use tokio::io::AsyncWriteExt;
        let mut stdin = status.stdin.take().unwrap();
        stdin.write_all(&forged).await.unwrap();
        drop(stdin);
        assert!(status.wait().await.unwrap().success());
    }
    wait_for(LIMIT, "the mosquitto_pub forgery rejected", || async {
        (bad_tag().await > before + 1).then_some(())
    })
    .await;
    // Neither forgery touched the victims: both are offline (their wills), no cpu 100.
    for id in &ids {
        let doc = console.get(&format!("/api/agents/{id}")).await;
        assert_ne!(doc["cpu"], 100, "{doc}");
    }
    drop(paho.child);
}
