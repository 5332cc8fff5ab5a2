//! The console without sockets: `app(fleet)` through `tower::ServiceExt::oneshot`, and the
//! ingest path fed with sealed, forged, replayed and garbage payloads, on a temporary sled.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::{
    seal_agent, AgentMessage, Birth, Channel, Heartbeat, Identity, MacKey, Status, Topics,
};
use edgefleet_console::fleet::Fleet;
use edgefleet_console::presence::Timings;
use edgefleet_console::store::Store;
use tower::ServiceExt;

const TIMINGS: Timings = Timings {
    default_interval_ms: 30_000,
    missed_intervals: 2,
    grace_ms: 5_000,
    restart_grace_ms: 60_000,
    stale_after_ms: 900_000,
};

struct Env {
    _dir: tempfile::TempDir,
    fleet: Arc<Fleet>,
    console: Identity,
    key: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let console = Identity::generate();
    let fleet = Arc::new(Fleet::open(store, console.clone(), Topics::default(), TIMINGS).unwrap());
    let key = fleet
        .api_keys
        .create("test", edgefleet_console::auth::Role::Viewer, 0)
        .unwrap();
    Env {
        _dir: dir,
        fleet,
        console,
        key,
    }
}

struct Agent {
    identity: Identity,
    mac: MacKey,
}

fn enroll(env: &Env) -> Agent {
    let identity = Identity::generate();
    let id = identity.agent_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = env.fleet.accept_connect(&ConnectAttempt {
        client_id: format!("{id}-1"),
        username: id.to_string(),
        password: edgefleet_codec::connect::password(&identity, now),
    });
    assert!(ok, "a valid connect proof is accepted");
    let mac = MacKey::derive_agent(&identity, &env.console.public_key()).unwrap();
    Agent { identity, mac }
}

fn sealed(agent: &Agent, msg: AgentMessage, channel: Channel) -> Inbound {
    let id = agent.identity.agent_id();
    Inbound::new(
        Topics::default().agent(&id, channel),
        seal_agent(&msg, &id, &agent.mac),
    )
}

fn birth(bd_seq: u64, seq: u64, hostname: &str) -> AgentMessage {
    AgentMessage::Birth(Birth {
        bd_seq,
        seq,
        hostname: hostname.into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1".into(),
        arch: "x86_64".into(),
        ips: vec!["10.0.0.9".into()],
        agent_version: "0.1.0".into(),
        boot_time: 1_790_000_000,
        apps: vec![],
        inventory_digest: None,
        heartbeat_interval_s: 30,
    })
}

fn metrics_text(env: &Env) -> String {
    env.fleet
        .metrics
        .render(edgefleet_console::metrics::Gauges {
            agents_online: 0,
            agents_total: 0,
            sled_bytes: 0,
            broker_queue_dropped: 0,
        })
}

async fn get(env: &Env, uri: &str) -> (StatusCode, serde_json::Value) {
    get_with(env, uri, Some(&format!("Bearer {}", env.key))).await
}

async fn get_with(env: &Env, uri: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
    let app = edgefleet_console::http::app(env.fleet.clone());
    let mut req = Request::get(uri);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, json)
}

#[tokio::test]
async fn sealed_telemetry_makes_an_agent_online_with_vitals() {
    let env = env();
    let a = enroll(&env);
    let id = a.identity.agent_id().to_string();
    env.fleet.ingest(vec![
        sealed(&a, birth(1, 1, "pump-7"), Channel::Birth),
        sealed(
            &a,
            AgentMessage::Heartbeat(Heartbeat {
                bd_seq: 1,
                seq: 2,
                cpu_pct: Some(91),
                mem_pct: Some(40),
                disk_pct: Some(12),
                ..Default::default()
            }),
            Channel::Heartbeat,
        ),
    ]);
    let metrics = metrics_text(&env);
    assert!(
        metrics.contains("edgefleet_ingest_latency_seconds_count 2"),
        "{metrics}"
    );
    let (status, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "online");
    assert_eq!(doc["hostname"], "pump-7");
    assert_eq!(doc["cpu"], 91);
    assert_eq!(doc["status_history"][0]["cause"], "birth");
    let (_, summary) = get(&env, "/api/fleet/summary").await;
    assert_eq!(summary["online"], 1);
    assert_eq!(summary["hotspots"]["cpu"], 1);
    assert_eq!(summary["os"][0]["os"], "Debian GNU/Linux 12 (bookworm)");
    let (_, series) = get(&env, &format!("/api/agents/{id}/metrics?range=1h")).await;
    assert_eq!(series["points"].as_array().unwrap().len(), 1, "{series}");
}

#[tokio::test]
async fn forged_replayed_and_garbage_payloads_are_rejected_and_counted() {
    let env = env();
    let a = enroll(&env);
    let b = enroll(&env);
    let a_id = a.identity.agent_id();
    let good = sealed(&a, birth(1, 1, "a"), Channel::Birth);
    env.fleet.ingest(vec![good.clone()]);
    let topic = Topics::default().agent(&a_id, Channel::Heartbeat);
    // B seals a heartbeat with its own key and publishes it on A's topic.
    let forged = seal_agent(
        &AgentMessage::Heartbeat(Heartbeat {
            bd_seq: 1,
            seq: 9,
            ..Default::default()
        }),
        &a_id,
        &b.mac,
    );
    let stranger = Identity::generate().agent_id();
    env.fleet.ingest(vec![
        good,                                          // replay
        Inbound::new(topic.clone(), forged),           // bad tag
        Inbound::new(topic.clone(), vec![0xff, 1]),    // bad version
        Inbound::new(topic.clone(), Vec::<u8>::new()), // empty
        Inbound::new("ef/a/nope/hb", vec![1]),
        Inbound::new(
            Topics::default().agent(&stranger, Channel::Heartbeat),
            vec![0x12],
        ),
    ]);
    let text = metrics_text(&env);
    for line in [
        "edgefleet_ingest_rejected_total{reason=\"replay\"} 1",
        "edgefleet_ingest_rejected_total{reason=\"bad_tag\"} 1",
        "edgefleet_ingest_rejected_total{reason=\"unsupported_version\"} 1",
        "edgefleet_ingest_rejected_total{reason=\"malformed\"} 1",
        "edgefleet_ingest_rejected_total{reason=\"bad_topic\"} 1",
        "edgefleet_ingest_rejected_total{reason=\"unknown_agent\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn a_will_is_accepted_once_and_a_stale_will_is_ignored() {
    let env = env();
    let a = enroll(&env);
    let id = a.identity.agent_id().to_string();
    let will = |bd_seq| {
        AgentMessage::Status(Status {
            bd_seq,
            seq: 0,
            online: false,
            clean: false,
        })
    };
    env.fleet.ingest(vec![
        sealed(&a, birth(1, 1, "a"), Channel::Birth),
        sealed(&a, will(1), Channel::Status),
    ]);
    assert_eq!(env.fleet.host(&id).unwrap().status.as_str(), "offline");
    env.fleet.ingest(vec![
        sealed(&a, birth(2, 1, "a"), Channel::Birth),
        sealed(&a, will(1), Channel::Status),
    ]);
    assert_eq!(
        env.fleet.host(&id).unwrap().status.as_str(),
        "online",
        "stale will ignored"
    );
}

#[tokio::test]
async fn connect_proofs_for_someone_elses_id_are_refused() {
    let env = env();
    let me = Identity::generate();
    let victim = Identity::generate().agent_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pw = edgefleet_codec::connect::password(&me, now);
    for (client_id, username) in [
        (format!("{victim}-1"), victim.to_string()),
        (me.agent_id().to_string(), me.agent_id().to_string()),
        (format!("{}-x", me.agent_id()), me.agent_id().to_string()),
        (format!("{}-1", me.agent_id()), victim.to_string()),
    ] {
        assert!(
            !env.fleet.accept_connect(&ConnectAttempt {
                client_id: client_id.clone(),
                username,
                password: pw.clone()
            }),
            "{client_id}"
        );
    }
}

#[tokio::test]
async fn bad_queries_get_400_with_a_precise_message_and_unknown_agents_404() {
    let env = env();
    for (uri, needle) in [
        (
            "/api/agents?per_page=30",
            "`per_page` must be one of 25, 50, 100, 200, got \"30\"",
        ),
        ("/api/agents?page=0", "`page` must be a whole number from 1"),
        (
            "/api/agents?sort=ram",
            "`sort` must be one of hostname, os, cpu, mem, disk, last_seen, status, got \"ram\"",
        ),
        ("/api/agents?order=up", "`order` must be asc or desc"),
        (
            "/api/agents?status=dead",
            "`status` must be one of online, offline, pending, revoked, unknown",
        ),
        ("/api/agents?colour=red", "unknown query parameter `colour`"),
    ] {
        let (status, doc) = get(&env, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            doc["error"].as_str().unwrap().contains(needle),
            "{uri}: {doc}"
        );
    }
    let a = enroll(&env);
    let (status, doc) = get(
        &env,
        &format!("/api/agents/{}/metrics?range=2h", a.identity.agent_id()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("`range` must be one of 1h, 6h, 24h, 7d, 30d"),
        "{doc}"
    );
    let (status, doc) = get(&env, "/api/agents/abcdefghijklmnop").await;
    assert_eq!(
        (status, doc["error"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "no agent abcdefghijklmnop")
    );
    let (status, _) = get(&env, "/api/agents/..%2F..%2Fetc").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&env, "/api/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn docs_api_md_lists_every_route() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for (method, path, _) in edgefleet_console::http::ROUTES {
        let heading = format!("### `{method} {path}`");
        assert!(doc.contains(&heading), "docs/api.md lacks {heading}");
    }
    let documented = doc.lines().filter(|l| l.starts_with("### `")).count();
    assert_eq!(
        documented,
        edgefleet_console::http::ROUTES.len(),
        "docs/api.md documents routes that do not exist"
    );
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let env = env();
    let a = enroll(&env);
    for (_, path, _) in edgefleet_console::http::ROUTES {
        let uri = path.replace(":id", a.identity.agent_id().as_str());
        let (status, body) = get(&env, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
}

#[tokio::test]
async fn api_routes_need_a_key_and_repeated_failures_are_locked_out() {
    let env = env();
    let (status, doc) = get_with(&env, "/api/agents", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        doc["error"],
        "missing `Authorization: Bearer <api key>` header"
    );
    let (status, doc) = get_with(&env, "/api/agents", Some("Bearer efk_nope")).await;
    assert_eq!(
        (status, doc["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown API key"))
    );
    // Open routes stay open.
    for uri in ["/", "/healthz", "/metrics"] {
        assert_eq!(get_with(&env, uri, None).await.0, StatusCode::OK, "{uri}");
    }
    for _ in 0..edgefleet_console::auth::MAX_FAILURES {
        get_with(&env, "/api/agents", Some("Bearer efk_nope")).await;
    }
    let (status, doc) = get(&env, "/api/agents").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even a good key waits out the lockout: {doc}"
    );
}
