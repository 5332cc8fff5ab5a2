//! Offline alerts, webhooks and the live event stream, against a real console process, real
//! agents, and a real HTTP webhook receiver on loopback that the test can take down.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::{AgentHandle, AgentOptions};
use edgefleet_tests::webhook::{Delivery, Receiver};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::{free_port, wait_for, AgentProc, Console, ConsoleOpts};

const SECRET: &str = "receiver-secret";

fn alerts_toml(grace: &str, receiver: &Receiver) -> String {
    format!(
        "[alerts]\noffline_grace = {grace:?}\n\n[[alerts.webhooks]]\nurl = {:?}\nsecret = {SECRET:?}\n",
        receiver.url()
    )
}

async fn console_with(dir: &std::path::Path, toml: String) -> Console {
    Console::start(
        &dir.join("console"),
        ConsoleOpts {
            extra_toml: toml,
            ..ConsoleOpts::default()
        },
    )
    .await
    .unwrap()
}

async fn agent(dir: &std::path::Path, console: &Console, index: usize) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: dir.to_path_buf(),
        token: Some(console.token.clone()),
        ..Default::default()
    };
    edgefleet_agent::spawn(AgentOptions::new(config, SimProbe::new(index)))
        .await
        .unwrap()
}

async fn status_of(console: &Console, id: &str) -> Option<String> {
    let (code, body) = console.get_text(&format!("/api/agents/{id}")).await;
    let doc: Value = serde_json::from_str(&body).ok()?;
    (code == 200).then(|| doc["status"].as_str().unwrap_or_default().to_string())
}

async fn wait_status(console: &Console, id: &str, status: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("{id} {status}"),
        || async { (status_of(console, id).await.as_deref() == Some(status)).then_some(()) },
    )
    .await;
}

async fn all_online(console: &Console, n: usize) -> Option<()> {
    let agents = console.agents().await;
    (agents.len() == n && agents.iter().all(|a| a["status"] == "online")).then_some(())
}

fn verify_signature(d: &Delivery) {
    // Computed here independently of the console's code.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&d.raw);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = format!("sha256={hex}");
    assert_eq!(d.signature.as_deref(), Some(expected.as_str()), "signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_death_gives_one_signed_webhook_and_the_return_one_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    let console = console_with(tmp.path(), alerts_toml("3s", &receiver)).await;
    let dir = tmp.path().join("agent");
    let agent = AgentProc::run(&dir, &console.mqtt_url(), &console.token, "").unwrap();
    let id = wait_for(Duration::from_secs(15), "agent online", || async {
        console
            .agents()
            .await
            .into_iter()
            .find(|a| a["status"] == "online")
            .map(|a| a["id"].as_str().unwrap().to_string())
    })
    .await;
    agent.signal("KILL");
    let killed = Instant::now();
    wait_for(
        Duration::from_secs(3 + 2),
        "the offline webhook",
        || async { (!receiver.deliveries().is_empty()).then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "offline_grace + 2 s, took {took:?}"
    );
    let d = &receiver.deliveries()[0];
    verify_signature(d);
    assert!(d.delivery.is_some());
    assert_eq!(
        receiver.events(),
        [(
            "alert.fired".to_string(),
            "agent-offline".to_string(),
            id.clone()
        )]
    );
    assert_eq!(d.body["host"]["id"], id.as_str());
    assert!(
        d.body["alert"]["cause"].as_str().unwrap().contains("will"),
        "{}",
        d.body
    );

    let _back = AgentProc::run(&dir, &console.mqtt_url(), &console.token, "").unwrap();
    wait_for(Duration::from_secs(15), "the resolved webhook", || async {
        (receiver.deliveries().len() >= 2).then_some(())
    })
    .await;
    let events = receiver.events();
    assert_eq!(
        events[1],
        (
            "alert.resolved".to_string(),
            "agent-offline".to_string(),
            id.clone()
        )
    );
    verify_signature(&receiver.deliveries()[1]);
    let summary = console.get("/api/fleet/summary").await;
    assert_eq!(summary["firing_alerts"], 0);
    let alerts = console.get(&format!("/api/alerts?agent={id}")).await;
    assert_eq!(alerts["items"][0]["state"], "resolved", "{alerts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_grace_and_ten_flaps_give_no_offline_webhook_and_one_flapping_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    let console = console_with(tmp.path(), alerts_toml("10s", &receiver)).await;
    let dir = tmp.path().join("agent");
    let mut a = agent(&dir, &console, 61).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    // Ten abrupt drops, each followed by a reconnect within the grace.
    for flap in 0..10 {
        a.abort();
        wait_status(&console, &id, "offline").await;
        a = agent(&dir, &console, 61).await;
        wait_status(&console, &id, "online").await;
        if flap == 0 {
            assert!(receiver.deliveries().is_empty());
        }
    }
    wait_for(Duration::from_secs(10), "the flapping webhook", || async {
        (!receiver.deliveries().is_empty()).then_some(())
    })
    .await;
    // Past the grace of the last drop: a per-transition offline alert would show by now.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        receiver.events(),
        [(
            "alert.fired".to_string(),
            "agent-flapping".to_string(),
            id.clone()
        )],
        "one flapping alert, no offline alerts"
    );
    let firing = console.get("/api/alerts?state=firing").await;
    assert_eq!(firing["total"], 1, "{firing}");
    // The host list and the host itself carry the count.
    let list = console.get("/api/agents").await;
    assert_eq!(list["items"][0]["alerts"], 1, "{list}");
    assert_eq!(console.get(&format!("/api/agents/{id}")).await["alerts"], 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_restart_with_fifty_agents_raises_no_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    let mut console = console_with(tmp.path(), alerts_toml("2s", &receiver)).await;
    let _sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        50,
        "2s",
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "50 agents online", || {
        all_online(&console, 50)
    })
    .await;
    console.kill_and_restart().await.unwrap();
    wait_for(Duration::from_secs(30), "50 agents online again", || {
        all_online(&console, 50)
    })
    .await;
    // Past the alert grace and two heartbeat intervals, where false alerts would show.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(receiver.deliveries().is_empty(), "{:?}", receiver.events());
    assert_eq!(console.get("/api/alerts").await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_a_down_receiver_and_a_console_restart_in_order_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    receiver.stop();
    let down_since = Instant::now();
    let mut console = console_with(tmp.path(), alerts_toml("1s", &receiver)).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("a{i}"));
        let a = agent(&dir, &console, 70 + i).await;
        let id = a.agent_id().to_string();
        wait_status(&console, &id, "online").await;
        a.abort();
        wait_status(&console, &id, "offline").await;
        wait_for(Duration::from_secs(10), "the alert fired", || async {
            let alerts = console
                .get(&format!("/api/alerts?agent={id}&state=firing"))
                .await;
            (alerts["total"] == 1).then_some(())
        })
        .await;
        let back = agent(&dir, &console, 70 + i).await;
        wait_status(&console, &id, "online").await;
        back.shutdown().await;
        // The clean stop must be stored before the crash below: a console killed before it
        // ingests the stop would rightly time the host out after the restart, and alert.
        wait_status(&console, &id, "offline").await;
        ids.push(id);
    }
    // The console crashes while the receiver is still down; the outbox is on disk.
    console.kill_and_restart().await.unwrap();
    let down_for = Duration::from_secs(60).saturating_sub(down_since.elapsed());
    tokio::time::sleep(down_for).await;
    receiver.start().await;
    wait_for(
        Duration::from_secs(60),
        "every notification delivered",
        || async { (receiver.deliveries().len() >= 4).then_some(()) },
    )
    .await;
    // Grace for a stray duplicate to arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deliveries = receiver.deliveries();
    let mut delivery_ids: Vec<&str> = deliveries
        .iter()
        .map(|d| d.delivery.as_deref().unwrap())
        .collect();
    delivery_ids.sort();
    delivery_ids.dedup();
    assert_eq!(delivery_ids.len(), deliveries.len(), "no duplicates");
    for id in &ids {
        let per_host: Vec<(String, String, String)> = receiver
            .events()
            .into_iter()
            .filter(|(_, _, agent)| agent == id)
            .collect();
        assert_eq!(
            per_host,
            [
                (
                    "alert.fired".to_string(),
                    "agent-offline".to_string(),
                    id.clone()
                ),
                (
                    "alert.resolved".to_string(),
                    "agent-offline".to_string(),
                    id.clone()
                ),
            ],
            "in order per host"
        );
    }
    for d in &deliveries {
        verify_signature(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_suppresses_notifications_and_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(SocketAddr::from(([127, 0, 0, 1], free_port()))).await;
    let console = console_with(tmp.path(), alerts_toml("1s", &receiver)).await;
    let a = agent(&tmp.path().join("a"), &console, 81).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let silence = console
        .send(
            "POST",
            "/api/silences",
            &format!(r#"{{"agent":"{id}","rule":"agent-offline","until":"1h","reason":"site maintenance"}}"#),
        )
        .await;
    assert_eq!(silence["agent"], id.as_str());
    a.abort();
    let alert = wait_for(Duration::from_secs(10), "the silenced alert", || async {
        let alerts = console.get(&format!("/api/alerts?agent={id}")).await;
        (alerts["total"] == 1).then(|| alerts["items"][0].clone())
    })
    .await;
    assert_eq!(alert["silenced"], true, "{alert}");
    // A notification would be queued before the alert shows in the API.
    assert!(receiver.deliveries().is_empty());
    let (_, metrics) = console.get_text("/metrics").await;
    assert!(metrics.contains("edgefleet_webhook_backlog 0"), "{metrics}");
    let audit = console.get(&format!("/api/audit?agent={id}")).await;
    let entry = &audit["items"][0];
    assert_eq!(
        (entry["action"].as_str(), entry["actor"].as_str()),
        (Some("silence"), Some("admin"))
    );
    assert!(entry["detail"]
        .as_str()
        .unwrap()
        .contains("site maintenance"));
}

/// Reads SSE events from a raw HTTP connection: (id, event, data).
struct EventStream {
    reader: BufReader<tokio::net::TcpStream>,
}

impl EventStream {
    async fn open(console: &Console, last_id: Option<u64>) -> EventStream {
        let mut stream = tokio::net::TcpStream::connect(console.http).await.unwrap();
        let resume = last_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(
                format!(
                    "GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{resume}\r\n",
                    console.api_key
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        assert!(line.contains(" 200 "), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if line.trim().is_empty() {
                break;
            }
        }
        EventStream { reader }
    }

    /// The next event, skipping chunk-size lines and keep-alive comments.
    async fn next(&mut self) -> (u64, String, Value) {
        let (mut id, mut event, mut data) = (0, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line))
                .await
                .expect("an event within 20 s")
                .unwrap();
            assert!(n > 0, "the stream ended");
            let l = line.trim_end();
            if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if l.is_empty() && !data.is_empty() {
                return (id, event, serde_json::from_str(&data).unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_a_will_within_a_second_and_resumes_after_last_event_id() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let a = agent(&tmp.path().join("a"), &console, 91).await;
    let id = a.agent_id().to_string();
    wait_status(&console, &id, "online").await;
    let mut events = EventStream::open(&console, None).await;
    a.abort();
    let killed = Instant::now();
    let (offline_id, _) = loop {
        let (eid, event, data) = events.next().await;
        if event == "status" && data["agent"] == id.as_str() && data["status"] == "offline" {
            break (eid, data);
        }
    };
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "offline event after {took:?}"
    );

    // Three more events happen while no client listens; a resumed stream gets exactly them.
    let b = agent(&tmp.path().join("a"), &console, 91).await;
    wait_status(&console, &id, "online").await;
    drop(events);
    let created = console
        .send("POST", "/api/keys", r#"{"name":"k1","role":"viewer"}"#)
        .await;
    assert!(created["secret"].is_string());
    let mut resumed = EventStream::open(&console, Some(offline_id)).await;
    let mut seen = Vec::new();
    loop {
        let (eid, event, data) = resumed.next().await;
        assert!(eid > offline_id, "only events after Last-Event-ID");
        seen.push((event.clone(), data));
        if event == "audit" {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|(e, d)| e == "status" && d["status"] == "online" && d["agent"] == id.as_str()),
        "{seen:?}"
    );
    let mut stale = EventStream::open(&console, Some(1)).await;
    let (_, event, _) = stale.next().await;
    assert_eq!(
        event, "reset",
        "an id from before the window asks the client to reload"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_the_event_stream_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(crate::harness::bin("edgefleet"))
        .args([
            "--console",
            &console.http.to_string(),
            "--api-key",
            &console.api_key,
        ])
        .args(["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The stream is open once the console has a subscriber; keep creating keys until the
    // CLI prints the audit event for one of them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let line = loop {
        assert!(
            Instant::now() < deadline,
            "no audit event from the CLI in 15 s"
        );
        n += 1;
        console
            .send(
                "POST",
                "/api/keys",
                &format!(r#"{{"name":"cli-{n}","role":"viewer"}}"#),
            )
            .await;
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            break line;
        }
    };
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "audit", "{event}");
    assert_eq!(event["entry"]["action"], "key_create");
    assert!(event["id"].as_u64().unwrap() > 0);
    child.kill().await.unwrap();
}
