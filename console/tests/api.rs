//! The console without sockets: `app(fleet)` through `tower::ServiceExt::oneshot`, and the
//! ingest path fed with sealed, forged, replayed and garbage payloads, on a temporary sled.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use edgefleet_broker::{ConnectAttempt, Inbound};
use edgefleet_codec::api::TokenCreate;
use edgefleet_codec::{
    seal_agent, AgentMessage, Birth, Channel, ConsoleMessage, EnrollDecision, EnrollRequest,
    EnrollToken, Heartbeat, Identity, MacKey, Status, Topics,
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
    /// A viewer key.
    key: String,
    admin: String,
    outbox: std::sync::Mutex<tokio::sync::mpsc::Receiver<edgefleet_console::fleet::Outgoing>>,
    /// An auto-approve token.
    token: EnrollToken,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    // The guard is never sampled here (no run loop): tests flip it with `apply`.
    let guard = edgefleet_console::space::Guard::new(dir.path(), 64 << 20);
    let store = Store::open_with(&dir.path().join("db"), guard).unwrap();
    let console = Identity::generate();
    let fleet = Arc::new(Fleet::open(store, console.clone(), Topics::default(), TIMINGS).unwrap());
    let key = fleet
        .api_keys
        .create("test", edgefleet_console::auth::Role::Viewer, 0)
        .unwrap();
    let admin = fleet
        .api_keys
        .create("boss", edgefleet_console::auth::Role::Admin, 0)
        .unwrap();
    let outbox = std::sync::Mutex::new(fleet.take_outbox().unwrap());
    let (token, _) = fleet
        .tokens
        .create(
            &TokenCreate {
                auto_approve: true,
                ..TokenCreate::default()
            },
            "test",
            console.public_key().fingerprint(),
            now_ms(),
        )
        .unwrap();
    Env {
        _dir: dir,
        fleet,
        console,
        key,
        admin,
        outbox,
        token,
    }
}

fn now_ms() -> u64 {
    edgefleet_console::fleet::now_ms()
}

fn connect(env: &Env, identity: &Identity, token: Option<&EnrollToken>) -> bool {
    let id = identity.agent_id();
    env.fleet.accept_connect(&ConnectAttempt {
        client_id: format!("{id}-1"),
        username: edgefleet_codec::connect::username(identity, token),
        password: edgefleet_codec::connect::password(identity, now_ms() / 1000),
    })
}

/// Sends a signed enrollment request through ingest and returns the console's signed
/// answer, verified with the console key.
fn request_enrollment(
    env: &Env,
    identity: &Identity,
    token: &EnrollToken,
    hostname: &str,
    ip: &str,
) -> EnrollDecision {
    let id = identity.agent_id();
    let req = EnrollRequest {
        agent_id: id.to_string(),
        public_key: *identity.public_key().as_bytes(),
        hostname: hostname.into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        ips: vec![ip.into(), "127.0.0.1".into()],
        token_id: token.id.clone(),
        proof: token.proof(&identity.public_key()),
        at: now_ms() / 1000,
    };
    env.fleet.ingest(vec![Inbound::new(
        Topics::default().enroll(&id),
        edgefleet_codec::sign_enroll_request(&req, identity),
    )]);
    last_decision(env, &id).expect("an enrollment request is always answered")
}

/// The newest enrollment response queued for `id`, if any.
fn last_decision(env: &Env, id: &edgefleet_codec::AgentId) -> Option<EnrollDecision> {
    let mut outbox = env.outbox.lock().unwrap();
    let mut last = None;
    while let Ok(out) = outbox.try_recv() {
        if out.topic == Topics::default().enroll_reply(id) {
            match edgefleet_codec::open_console(&out.payload, Some(id), &env.console.public_key())
                .unwrap()
            {
                ConsoleMessage::EnrollResponse(r) => last = Some(r.decision),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    last
}

struct Agent {
    identity: Identity,
    mac: MacKey,
}

fn enroll(env: &Env) -> Agent {
    let identity = Identity::generate();
    let id = identity.agent_id();
    assert!(
        connect(env, &identity, Some(&env.token)),
        "a valid token claim is accepted"
    );
    // Distinct hostnames and IPs: two agents alike in either would be duplicates.
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        request_enrollment(
            env,
            &identity,
            &env.token,
            &format!("host-{id}"),
            &format!("10.1.2.{n}")
        ),
        EnrollDecision::Approved
    );
    assert!(
        connect(env, &identity, None),
        "an enrolled agent connects without a claim"
    );
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
        inventory_interval_s: None,
        labels: Default::default(),
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
            broker_queue_dropped_other: 0,
            broker_connects_refused_per_ip: 0,
            broker_connected: true,
            store_free_bytes: None,
            store_reserve_bytes: 0,
            store_writes_refused: false,
            store_backlog: 0,
        })
}

async fn get(env: &Env, uri: &str) -> (StatusCode, serde_json::Value) {
    get_with(env, uri, Some(&format!("Bearer {}", env.key))).await
}

async fn get_with(env: &Env, uri: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
    call(env, "GET", uri, auth, "").await
}

/// An admin request.
async fn admin(env: &Env, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
    call(
        env,
        method,
        uri,
        Some(&format!("Bearer {}", env.admin)),
        body,
    )
    .await
}

async fn call(
    env: &Env,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let app = edgefleet_console::http::app(env.fleet.clone());
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = app
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
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
        metrics.contains("edgefleet_ingest_latency_seconds_count 3"),
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
        (
            "/api/agents?page=-1",
            "`page` must be a whole number from 1",
        ),
        (
            "/api/agents?page=99999999999999999999999",
            "`page` must be a whole number from 1",
        ),
        (
            "/api/agents?per_page=1000000000",
            "`per_page` must be one of 25, 50, 100, 200, got \"1000000000\"",
        ),
        (
            "/api/agents?per_page=-25",
            "`per_page` must be one of 25, 50, 100, 200",
        ),
        (
            "/api/agents?sort=hostname;DROP%20TABLE",
            "`sort` must be one of hostname, os, cpu, mem, disk, last_seen, status",
        ),
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

#[tokio::test]
async fn groups_labels_maintenance_and_rollouts_answer_bad_input_with_a_precise_4xx() {
    let env = env();
    let a = enroll(&env);
    let id = a.identity.agent_id().to_string();
    let cases: Vec<(&str, String, &str, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x","selector":"a","members":[]}"#,
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x"}"#,
            StatusCode::BAD_REQUEST,
            "give members",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"X Y","selector":"a"}"#,
            StatusCode::BAD_REQUEST,
            "id must be 1-64 characters",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x","selector":"site in ("}"#,
            StatusCode::BAD_REQUEST,
            "selector: at character 10",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x","members":["nobody"]}"#,
            StatusCode::BAD_REQUEST,
            "members: no agent \"nobody\"",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x","selector":"a","settings":{"hotspot_threshold":101}}"#,
            StatusCode::BAD_REQUEST,
            "hotspot_threshold must be 1 to 100",
        ),
        (
            "POST",
            "/api/groups".into(),
            r#"{"id":"x","selector":"a","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "GET",
            "/api/groups/nope".into(),
            "",
            StatusCode::NOT_FOUND,
            "no group \"nope\"",
        ),
        (
            "GET",
            "/api/agents?group=nope".into(),
            "",
            StatusCode::NOT_FOUND,
            "no group \"nope\"",
        ),
        (
            "GET",
            "/api/fleet/summary?label=a%3D".into(),
            "",
            StatusCode::BAD_REQUEST,
            "label: at character 3: expected a value",
        ),
        (
            "PUT",
            format!("/api/agents/{id}/labels"),
            r#"{"set":{"bad key":"v"}}"#,
            StatusCode::BAD_REQUEST,
            "label key \"bad key\"",
        ),
        (
            "PUT",
            format!("/api/agents/{id}/labels"),
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            "give labels to `set` or to `remove`",
        ),
        (
            "PUT",
            format!("/api/agents/{id}/settings"),
            r#"{"heartbeat_interval_s":2}"#,
            StatusCode::BAD_REQUEST,
            "heartbeat_interval_s must be 5 to 3600",
        ),
        (
            "POST",
            format!("/api/agents/{id}/maintenance"),
            r#"{"reason":""}"#,
            StatusCode::BAD_REQUEST,
            "reason: give 1 to 500 characters",
        ),
        (
            "POST",
            format!("/api/agents/{id}/maintenance"),
            r#"{"reason":"x","until":"soon"}"#,
            StatusCode::BAD_REQUEST,
            "until:",
        ),
        (
            "POST",
            format!("/api/agents/{id}/maintenance"),
            r#"{"reason":"x","allow":["reboot"]}"#,
            StatusCode::BAD_REQUEST,
            "allow: \"reboot\" is not a command action",
        ),
        (
            "DELETE",
            format!("/api/agents/{id}/maintenance"),
            "",
            StatusCode::CONFLICT,
            "is not in maintenance",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"restart-app","app":"a","group":"g"}"#,
            StatusCode::BAD_REQUEST,
            "action must be update-app or push-config",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"push-config","app":"a","values":{"k":1},"waves":[50]}"#,
            StatusCode::BAD_REQUEST,
            "end at 100",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"push-config","app":"a","values":{"k":1}}"#,
            StatusCode::BAD_REQUEST,
            "exactly one target",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"push-config","app":"a","values":{"k":1},"selector":"nothing"}"#,
            StatusCode::BAD_REQUEST,
            "the target has no active hosts",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"push-config","app":"a","values":{"k":1},"agents":["abcdefghijklmnop"]}"#,
            StatusCode::NOT_FOUND,
            "no agent abcdefghijklmnop",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"update-app","app":"a","version":"2","url":"ftp://x","sha256":"00","selector":"a"}"#,
            StatusCode::BAD_REQUEST,
            "url: agents fetch artifacts over http://",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            r#"{"action":"push-config","app":"a","values":{"k":1},"selector":"a","canry":2}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `canry`",
        ),
        (
            "GET",
            "/api/rollouts/ro-nope".into(),
            "",
            StatusCode::NOT_FOUND,
            "no rollout \"ro-nope\"",
        ),
        (
            "POST",
            "/api/rollouts/ro-nope/abort".into(),
            "",
            StatusCode::NOT_FOUND,
            "no rollout \"ro-nope\"",
        ),
    ];
    for (method, uri, body, want, needle) in cases {
        let (status, doc) = admin(&env, method, &uri, body).await;
        assert_eq!(status, want, "{method} {uri} {body}: {doc}");
        assert!(
            doc["error"].as_str().unwrap_or_default().contains(needle),
            "{method} {uri} {body}: {doc} (wanted {needle:?})"
        );
    }
    // A viewer reads but does not change.
    let (status, _) = call(
        &env,
        "POST",
        "/api/groups",
        Some(&format!("Bearer {}", env.key)),
        r#"{"id":"x","selector":"a"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&env, "/api/groups").await;
    assert_eq!(status, StatusCode::OK);
    // A second create of the same id is a conflict; PUT replaces.
    let (status, _) = admin(&env, "POST", "/api/groups", r#"{"id":"g","selector":"a"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, doc) = admin(&env, "POST", "/api/groups", r#"{"id":"g","selector":"a"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");
    let (status, doc) = admin(&env, "PUT", "/api/groups/g", r#"{"id":"h","selector":"a"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    let (status, doc) = admin(
        &env,
        "PUT",
        "/api/groups/g",
        r#"{"selector":"b","name":"Bees"}"#,
    )
    .await;
    assert_eq!(
        (status, doc["name"].as_str()),
        (StatusCode::OK, Some("Bees"))
    );
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
    let command = env
        .fleet
        .issue_command(
            a.identity.agent_id().as_str(),
            edgefleet_codec::CommandAction::RequestHeartbeat,
            std::time::Duration::from_secs(60),
            "test",
        )
        .unwrap();
    let (status, body) = admin(
        &env,
        "POST",
        "/api/groups",
        r#"{"id":"every-host","selector":"!nothing"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (method, path, _) in edgefleet_console::http::ROUTES {
        if *method != "GET" || *path == "/api/events" || path.starts_with("/artifacts/") {
            continue; // decisions, the endless event stream and artifacts have their own tests
        }
        let id = a.identity.agent_id();
        let uri = if path.starts_with("/api/commands/") {
            path.replace(":id", &command.view().id)
        } else if *path == "/api/inventory/compare" {
            format!("{path}?a={id}&b={id}")
        } else if *path == "/api/packages" {
            format!("{path}?name=openssl")
        } else if path.starts_with("/api/rollouts/") {
            continue; // tests/it/rollouts.rs reads rollouts made by real agents
        } else if path.starts_with("/api/groups/") {
            path.replace(":id", "every-host")
        } else {
            path.replace(":id", id.as_str())
        };
        let (status, body) = admin(&env, "GET", &uri, "").await;
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

#[tokio::test]
async fn unknown_keys_need_a_live_token_and_refusals_are_counted_by_reason() {
    let env = env();
    let me = Identity::generate();
    assert!(!connect(&env, &me, None), "no claim, unknown key");
    let wrong_secret = EnrollToken {
        secret: [0; 16],
        ..env.token.clone()
    };
    assert!(!connect(&env, &me, Some(&wrong_secret)));
    let unknown = EnrollToken::generate(env.console.public_key().fingerprint());
    assert!(!connect(&env, &me, Some(&unknown)));
    let (used_up, _) = env
        .fleet
        .tokens
        .create(
            &TokenCreate {
                uses: Some(1),
                ..TokenCreate::default()
            },
            "t",
            [0; 32],
            now_ms(),
        )
        .unwrap();
    let first = Identity::generate();
    assert!(connect(&env, &first, Some(&used_up)));
    assert_eq!(
        request_enrollment(&env, &first, &used_up, "first", "10.9.0.1"),
        EnrollDecision::Pending
    );
    assert!(!connect(&env, &me, Some(&used_up)), "its one use is gone");
    let text = metrics_text(&env);
    for reason in [
        "not_enrolled",
        "token_bad_proof",
        "token_unknown",
        "token_used_up",
    ] {
        assert!(
            text.contains(&format!(
                "edgefleet_connect_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
}

#[tokio::test]
async fn pending_agents_are_ignored_until_approved_and_a_viewer_cannot_approve() {
    let env = env();
    let (token, _) = env
        .fleet
        .tokens
        .create(&TokenCreate::default(), "t", [0; 32], now_ms())
        .unwrap();
    let identity = Identity::generate();
    let id = identity.agent_id();
    assert!(connect(&env, &identity, Some(&token)));
    assert_eq!(
        request_enrollment(&env, &identity, &token, "pump-7", "10.7.0.7"),
        EnrollDecision::Pending
    );
    let agent = Agent {
        mac: MacKey::derive_agent(&identity, &env.console.public_key()).unwrap(),
        identity,
    };
    env.fleet
        .ingest(vec![sealed(&agent, birth(1, 1, "pump-7"), Channel::Birth)]);
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["status"], "pending", "{doc}");
    assert!(metrics_text(&env).contains("reason=\"not_approved\"} 1"));
    assert_eq!(
        last_decision(&env, &id),
        Some(EnrollDecision::Pending),
        "ignored telemetry is answered with the state"
    );

    let (status, doc) = call(
        &env,
        "POST",
        &format!("/api/agents/{id}/approve"),
        Some(&format!("Bearer {}", env.key)),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("admin role"),
        "{doc}"
    );

    let (status, doc) = admin(&env, "POST", &format!("/api/agents/{id}/approve"), "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(last_decision(&env, &id), Some(EnrollDecision::Approved));
    env.fleet
        .ingest(vec![sealed(&agent, birth(2, 1, "pump-7"), Channel::Birth)]);
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["status"], "online", "{doc}");
    let causes: Vec<&str> = doc["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["birth", "approved", "enrolled"], "newest first");
    let (status, _) = admin(&env, "POST", &format!("/api/agents/{id}/approve"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "approving twice");

    let (_, audit) = get(&env, &format!("/api/audit?agent={id}")).await;
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("boss", "approve"), ("console", "enroll")]);
    let (_, v) = get(&env, "/api/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn revoked_agents_are_refused_at_connect_and_their_telemetry_is_ignored() {
    let env = env();
    let agent = enroll(&env);
    let id = agent.identity.agent_id();
    env.fleet
        .ingest(vec![sealed(&agent, birth(1, 1, "a"), Channel::Birth)]);
    let (status, doc) = admin(&env, "POST", &format!("/api/agents/{id}/revoke"), "").await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    assert!(matches!(
        last_decision(&env, &id),
        Some(EnrollDecision::Rejected { reason }) if reason.contains("revoked")
    ));
    assert!(!connect(&env, &agent.identity, None));
    assert!(
        !connect(&env, &agent.identity, Some(&env.token)),
        "a token does not undo a revoke"
    );
    env.fleet
        .ingest(vec![sealed(&agent, birth(2, 1, "a"), Channel::Birth)]);
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["status"], "revoked");
    assert!(metrics_text(&env).contains("edgefleet_connect_refused_total{reason=\"revoked\"} 2"));
}

#[tokio::test]
async fn duplicates_are_rejected_while_online_and_adopted_while_offline() {
    let env = env();
    let first = enroll(&env);
    let first_id = first.identity.agent_id();
    // The birth set hostname "x" and IP 10.0.0.9.
    env.fleet
        .ingest(vec![sealed(&first, birth(1, 1, "x"), Channel::Birth)]);
    let dup = Identity::generate();
    assert!(connect(&env, &dup, Some(&env.token)));
    let decision = request_enrollment(&env, &dup, &env.token, "x", "10.200.0.1");
    assert!(
        matches!(&decision, EnrollDecision::Rejected { reason } if reason.contains("already exists") && reason.contains(first_id.as_str())),
        "{decision:?}"
    );
    // The first host goes offline by its will; now the same machine is adopted.
    let (_, detail) = get(&env, &format!("/api/agents/{first_id}")).await;
    let ip_of_birth = detail["ips"][0].as_str().unwrap().to_string();
    env.fleet.ingest(vec![sealed(
        &first,
        AgentMessage::Status(Status {
            bd_seq: 1,
            seq: 0,
            online: false,
            clean: false,
        }),
        Channel::Status,
    )]);
    let decision = request_enrollment(&env, &dup, &env.token, "other-name", &ip_of_birth);
    assert_eq!(decision, EnrollDecision::Approved, "approval state is kept");
    let (_, doc) = get(&env, &format!("/api/agents/{first_id}")).await;
    assert_eq!(doc["id"], first_id.as_str(), "the host id stays");
    assert_eq!(doc["status_history"][0]["cause"], "adopted", "{doc}");
    assert_eq!(
        doc["key_fingerprint"],
        dup.public_key()
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // The new key's telemetry lands on the adopted record; the old key is refused.
    let new_agent = Agent {
        mac: MacKey::derive_agent(&dup, &env.console.public_key()).unwrap(),
        identity: dup,
    };
    env.fleet
        .ingest(vec![sealed(&new_agent, birth(1, 1, "x"), Channel::Birth)]);
    let (_, doc) = get(&env, &format!("/api/agents/{first_id}")).await;
    assert_eq!(doc["status"], "online", "{doc}");
    assert!(
        !connect(&env, &first.identity, None),
        "the replaced key is unknown now"
    );
    let (_, page) = get(&env, "/api/agents").await;
    assert_eq!(page["total"], 1, "adoption makes no second host: {page}");
}

#[tokio::test]
async fn soft_deleted_hosts_are_hidden_and_come_back_pending() {
    let env = env();
    let agent = enroll(&env);
    let id = agent.identity.agent_id();
    let (status, _) = admin(&env, "DELETE", &format!("/api/agents/{id}"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&env, &format!("/api/agents/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&env, "/api/agents").await.1["total"], 0);
    assert!(
        connect(&env, &agent.identity, None),
        "its key still proves itself"
    );
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["status"], "pending", "treated as new: {doc}");
    let (_, audit) = get(&env, &format!("/api/audit?agent={id}")).await;
    assert_eq!(audit["items"][0]["action"], "returned");
    assert_eq!(audit["items"][1]["action"], "delete");
}

#[tokio::test]
async fn tokens_and_keys_are_managed_through_the_api_by_admins_only() {
    let env = env();
    let (status, doc) = admin(
        &env,
        "POST",
        "/api/tokens",
        r#"{"auto_approve":true,"expires":"2h","uses":3}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let token: EnrollToken = doc["token"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        token.console_fingerprint,
        env.console.public_key().fingerprint()
    );
    assert_eq!(
        (doc["max_uses"].as_u64(), doc["state"].as_str()),
        (Some(3), Some("active"))
    );
    let (status, list) = admin(&env, "GET", "/api/tokens", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !list
            .to_string()
            .contains(&data_encoding::BASE32_NOPAD.encode(&token.secret)),
        "secrets are never listed"
    );
    let (status, doc) = admin(&env, "DELETE", &format!("/api/tokens/{}", token.id), "").await;
    assert_eq!(
        (status, doc["state"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    for (body, needle) in [
        (r#"{"expires":"soon"}"#, "expires"),
        (r#"{"uses":0}"#, "uses"),
        ("{", "invalid JSON"),
    ] {
        let (status, doc) = admin(&env, "POST", "/api/tokens", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(doc["error"].as_str().unwrap().contains(needle), "{doc}");
    }
    assert_eq!(
        get(&env, "/api/tokens").await.0,
        StatusCode::FORBIDDEN,
        "viewers cannot list tokens"
    );

    let (status, doc) = admin(
        &env,
        "POST",
        "/api/keys",
        r#"{"name":"ops","role":"operator"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let secret = doc["secret"].as_str().unwrap().to_string();
    let (status, _) = call(
        &env,
        "GET",
        "/api/agents",
        Some(&format!("Bearer {secret}")),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        admin(
            &env,
            "POST",
            "/api/keys",
            r#"{"name":"ops","role":"viewer"}"#
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        admin(&env, "POST", "/api/keys", r#"{"name":"x","role":"root"}"#)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin(&env, "DELETE", "/api/keys/boss", "").await.0,
        StatusCode::CONFLICT,
        "the last admin key stays"
    );
    assert_eq!(
        admin(&env, "DELETE", "/api/keys/ops", "").await.0,
        StatusCode::NO_CONTENT
    );
    let (status, _) = call(
        &env,
        "GET",
        "/api/agents",
        Some(&format!("Bearer {secret}")),
        "",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted key stops working"
    );
    let (_, audit) = get(&env, "/api/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key_delete", "key_create", "token_revoke", "token_create"]
    );
}

#[tokio::test]
async fn repeated_connect_failures_for_one_id_are_rate_limited() {
    let env = env();
    let me = Identity::generate();
    let id = me.agent_id();
    let stale = edgefleet_codec::connect::password(&me, now_ms() / 1000 - 3_600);
    for _ in 0..edgefleet_console::fleet::MAX_CONNECT_FAILURES {
        assert!(!env.fleet.accept_connect(&ConnectAttempt {
            client_id: format!("{id}-1"),
            username: edgefleet_codec::connect::username(&me, Some(&env.token)),
            password: stale.clone(),
        }));
    }
    assert!(
        !connect(&env, &me, Some(&env.token)),
        "even a valid attempt waits out the limit"
    );
    let text = metrics_text(&env);
    assert!(text.contains("reason=\"clock_skew\"} 5"), "{text}");
    assert!(text.contains("reason=\"rate_limited\"} 1"), "{text}");
    assert!(
        connect(&env, &Identity::generate(), Some(&env.token)),
        "other ids are not affected"
    );
}

#[tokio::test]
async fn approval_rechecks_duplicates_conflicting_while_online_and_adopting_once_offline() {
    let env = env();
    let (manual, _) = env
        .fleet
        .tokens
        .create(&TokenCreate::default(), "t", [0; 32], now_ms())
        .unwrap();
    let pending = Identity::generate();
    let pending_id = pending.agent_id();
    assert!(connect(&env, &pending, Some(&manual)));
    assert_eq!(
        request_enrollment(&env, &pending, &manual, "kiosk-3", "10.3.3.3"),
        EnrollDecision::Pending
    );
    // Meanwhile the same machine's old record shows up online under another key.
    let old = enroll(&env);
    let old_id = old.identity.agent_id();
    let mut b = birth(1, 1, "kiosk-3");
    if let AgentMessage::Birth(birth) = &mut b {
        birth.ips = vec!["10.3.3.3".into()];
    }
    env.fleet.ingest(vec![sealed(&old, b, Channel::Birth)]);
    let (status, doc) = admin(
        &env,
        "POST",
        &format!("/api/agents/{pending_id}/approve"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains(old_id.as_str()),
        "{doc}"
    );
    let (_, row) = get(&env, &format!("/api/agents/{pending_id}")).await;
    assert!(
        row["conflict"].as_str().unwrap().contains("already exists"),
        "the conflict is shown: {row}"
    );

    env.fleet.ingest(vec![sealed(
        &old,
        AgentMessage::Status(Status {
            bd_seq: 1,
            seq: 0,
            online: false,
            clean: true,
        }),
        Channel::Status,
    )]);
    let (status, doc) = admin(
        &env,
        "POST",
        &format!("/api/agents/{pending_id}/approve"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(
        doc["id"],
        old_id.as_str(),
        "the pending key took over the old record"
    );
    assert_eq!(
        last_decision(&env, &pending_id),
        Some(EnrollDecision::Approved)
    );
    let (code, _) = get(&env, &format!("/api/agents/{pending_id}")).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "the pending record was folded in"
    );
    let agent = Agent {
        mac: MacKey::derive_agent(&pending, &env.console.public_key()).unwrap(),
        identity: pending,
    };
    env.fleet
        .ingest(vec![sealed(&agent, birth(1, 1, "kiosk-3"), Channel::Birth)]);
    let (_, doc) = get(&env, &format!("/api/agents/{old_id}")).await;
    assert_eq!(doc["status"], "online", "{doc}");
    assert_eq!(get(&env, "/api/agents").await.1["total"], 1);
}

#[tokio::test]
async fn huge_bodies_get_a_json_413_that_names_the_limit() {
    let env = env();
    let _ = env
        .fleet
        .artifacts_dir
        .set(env._dir.path().join("artifacts"));
    // Just over the JSON limit (read by the handler) and far over it (refused by the body
    // limit before it is buffered): the same JSON 413.
    for size in [64 * 1024 + 1, 100 * 1024, 3 << 20] {
        let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(size));
        for uri in ["/api/tokens", "/api/keys", "/api/groups", "/api/silences"] {
            let (status, doc) = admin(&env, "POST", uri, &body).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri} {size}: {doc}");
            assert_eq!(
                doc["error"], "request body over 64 KiB (the limit for JSON requests)",
                "{uri} {size}"
            );
        }
    }
    // A body under the limit reaches the handler.
    let (status, doc) = admin(
        &env,
        "POST",
        "/api/tokens",
        &format!(r#"{{"note":"{}"}}"#, "x".repeat(1000)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    // Artifact uploads keep their own, larger limit: 1 MiB is well inside it.
    let (status, doc) = admin(&env, "POST", "/api/artifacts", &"a".repeat(1 << 20)).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
}

#[tokio::test]
async fn unicode_and_sql_like_searches_are_literal_substrings() {
    let env = env();
    let a = enroll(&env);
    let b = enroll(&env);
    env.fleet.ingest(vec![
        sealed(&a, birth(1, 1, "pumpe-ä-7"), Channel::Birth),
        sealed(&b, birth(1, 1, "o'brien-1=1"), Channel::Birth),
    ]);
    let hosts = |doc: &serde_json::Value| -> Vec<String> {
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["hostname"].as_str().unwrap().to_string())
            .collect()
    };
    for (q, want) in [
        // ä, upper-case Ä (case-insensitive), and the NFC bytes percent-encoded.
        ("%C3%A4", vec!["pumpe-ä-7"]),
        ("%C3%84", vec!["pumpe-ä-7"]),
        ("PUMPE", vec!["pumpe-ä-7"]),
        // SQL-ish strings are text like any other.
        ("%27%20OR%201%3D1%20--", vec![]),
        ("%27%20OR%20%271%27%3D%271", vec![]),
        ("o%27brien", vec!["o'brien-1=1"]),
        ("1%3D1", vec!["o'brien-1=1"]),
        // Wildcards of other query languages match only themselves.
        ("%25", vec![]),
        ("*", vec![]),
        (".%2A", vec![]),
        ("_", vec![]),
        // Control characters and a 4-byte character.
        ("%00", vec![]),
        ("%F0%9F%92%A3", vec![]),
    ] {
        let (status, doc) = get(&env, &format!("/api/agents?q={q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {doc}");
        assert_eq!(hosts(&doc), want, "q={q}");
    }
    // Invalid UTF-8 in the query is decoded lossily (U+FFFD), matches nothing, and is
    // not a panic.
    let (status, doc) = get(&env, "/api/agents?q=%FF%FE").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(hosts(&doc), Vec::<String>::new());
}

#[tokio::test]
async fn host_names_sort_case_insensitively_with_nulls_last_on_every_page() {
    // Mixed case, non-ASCII and a host with no name yet, over several pages, so the list's
    // partial selection of a page and its per-request sort keys are both exercised.
    let env = env();
    let mut names: Vec<Option<String>> = Vec::new();
    for i in 0..57 {
        let agent = enroll(&env);
        let name = match i % 4 {
            0 => Some(format!("Host-{:02}", i % 19)),
            1 => Some(format!("host-{:02}", i % 19)),
            2 => Some(format!("Ärger-{i}")),
            // Enrolled and never born: no host name (sorted last in both orders).
            _ => None,
        };
        if let Some(n) = &name {
            env.fleet
                .ingest(vec![sealed(&agent, birth(1, 1, n), Channel::Birth)]);
        }
        names.push(name);
    }
    let (_, all) = get(&env, "/api/agents?per_page=200").await;
    let mut expected: Vec<(Option<String>, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = a["hostname"].as_str().map(str::to_lowercase);
            (name, a["id"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(expected.len(), 57);
    for order in ["asc", "desc"] {
        expected.sort_by(|a, b| {
            let by_name = match (&a.0, &b.0) {
                (Some(x), Some(y)) if order == "asc" => x.cmp(y),
                (Some(x), Some(y)) => y.cmp(x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_name.then_with(|| a.1.cmp(&b.1))
        });
        let mut got = Vec::new();
        for page in 1..=3 {
            let (status, doc) = get(
                &env,
                &format!("/api/agents?sort=hostname&order={order}&per_page=25&page={page}"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{doc}");
            assert_eq!(doc["total"], 57);
            got.extend(
                doc["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["id"].as_str().unwrap().to_string()),
            );
        }
        let want: Vec<String> = expected.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(got, want, "order={order}");
    }
    // A page past the end is empty, with the total still right.
    let (_, doc) = get(&env, "/api/agents?per_page=25&page=4").await;
    assert_eq!(
        (
            doc["total"].as_u64(),
            doc["items"].as_array().unwrap().len()
        ),
        (Some(57), 0)
    );
    // Upper-case search terms find lower-case names and the other way round.
    let (_, doc) = get(&env, "/api/agents?q=HOST-0&per_page=200").await;
    let want = names
        .iter()
        .flatten()
        .filter(|n| n.to_lowercase().contains("host-0"))
        .count();
    assert_eq!(doc["total"].as_u64(), Some(want as u64));
    assert!(want > 10, "the test's names must hit both cases");
}

#[tokio::test]
async fn path_traversal_in_artifact_and_asset_names_is_a_404() {
    let env = env();
    let _ = env
        .fleet
        .artifacts_dir
        .set(env._dir.path().join("artifacts"));
    let (status, up) = admin(&env, "POST", "/api/artifacts", "artifact body").await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    for uri in [
        "/artifacts/..%2F..%2F..%2Fetc%2Fpasswd",
        "/artifacts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/artifacts/..",
        "/artifacts/%2Fetc%2Fpasswd",
        "/artifacts/..%5C..%5Cwindows",
        "/assets/..%2F..%2Fetc%2Fpasswd",
        "/assets/..",
        "/assets/.env",
        "/assets/../../../etc/passwd",
    ] {
        let (status, doc) = get_with(&env, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {doc}");
        assert!(!doc.to_string().contains("root:"), "{uri}: {doc}");
    }
    // Raw `..` segments (clients normally resolve them before sending) match no file
    // route: the browser UI's page shell answers, as for any unknown page path.
    for uri in ["/artifacts/../../etc/passwd", "/../../etc/passwd"] {
        let (_, doc) = get_with(&env, uri, None).await;
        let text = doc.to_string();
        assert!(
            text.contains("EdgeFleet") && !text.contains("root:"),
            "{uri}: {doc}"
        );
    }
    let (status, doc) = get_with(&env, "/artifacts/..%2F..%2Fetc%2Fpasswd", None).await;
    assert_eq!(
        (status, doc["error"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("artifacts are named by 64 hex digits")
        ),
        "{doc}"
    );
    // The uploaded artifact itself is served by its hash.
    let app = edgefleet_console::http::app(env.fleet.clone());
    let resp = app
        .oneshot(
            Request::get(up["path"].as_str().unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    assert_eq!(&bytes[..], b"artifact body");
}

#[tokio::test]
async fn history_samples_from_the_future_are_not_stored_and_absurd_times_do_not_panic() {
    let env = env();
    let a = enroll(&env);
    let id = a.identity.agent_id().to_string();
    let now_s = now_ms() / 1000;
    let sample = |seq, at, cpu| {
        AgentMessage::Heartbeat(Heartbeat {
            bd_seq: 1,
            seq,
            cpu_pct: Some(cpu),
            mem_pct: Some(1),
            disk_pct: Some(1),
            at: Some(at),
            ..Default::default()
        })
    };
    env.fleet.ingest(vec![
        sealed(&a, birth(1, 1, "pump-7"), Channel::Birth),
        // Store-and-forward history: ten minutes ago (kept), a day ahead and the end of
        // time (not stored), and 1970 (stored, then swept by retention).
        sealed(&a, sample(2, now_s - 600, 11), Channel::Heartbeat),
        sealed(&a, sample(3, now_s + 86_400, 99), Channel::Heartbeat),
        sealed(&a, sample(4, u64::MAX, 98), Channel::Heartbeat),
        sealed(&a, sample(5, 1, 12), Channel::Heartbeat),
    ]);
    let metrics = metrics_text(&env);
    assert!(
        metrics.contains("edgefleet_ingest_rejected_total{reason=\"future_sample\"} 2"),
        "{metrics}"
    );
    let (status, series) = get(&env, &format!("/api/agents/{id}/metrics?range=1h")).await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let points = series["points"].as_array().unwrap();
    let cpus: Vec<f64> = points.iter().filter_map(|p| p["cpu"].as_f64()).collect();
    assert!(
        cpus.contains(&11.0),
        "the recent sample is stored: {series}"
    );
    assert!(
        !cpus.contains(&99.0) && !cpus.contains(&98.0),
        "no future sample: {series}"
    );
    let latest = points
        .iter()
        .filter_map(|p| p["at"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(latest <= now_ms() + 300_000, "{series}");
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["status"], "online", "the agent itself is fine: {doc}");
}

#[tokio::test]
async fn an_enrollment_request_outside_the_clock_skew_is_refused() {
    let env = env();
    for skew in [-301i64, 301, 86_400] {
        let identity = Identity::generate();
        let id = identity.agent_id();
        let req = EnrollRequest {
            agent_id: id.to_string(),
            public_key: *identity.public_key().as_bytes(),
            hostname: format!("skewed-{skew}"),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            ips: vec!["10.9.9.9".into()],
            token_id: env.token.id.clone(),
            proof: env.token.proof(&identity.public_key()),
            at: (now_ms() / 1000).saturating_add_signed(skew),
        };
        env.fleet.ingest(vec![Inbound::new(
            Topics::default().enroll(&id),
            edgefleet_codec::sign_enroll_request(&req, &identity),
        )]);
        assert_eq!(last_decision(&env, &id), None, "skew {skew}: no answer");
    }
    let metrics = metrics_text(&env);
    assert!(
        metrics.contains("edgefleet_ingest_rejected_total{reason=\"clock_skew\"} 3"),
        "{metrics}"
    );
    let (_, doc) = get(&env, "/api/agents").await;
    assert_eq!(doc["total"], 0, "no host was created: {doc}");
    // Within the skew it is answered.
    let identity = Identity::generate();
    assert_eq!(
        request_enrollment(&env, &identity, &env.token, "on-time", "10.9.9.10"),
        EnrollDecision::Approved
    );
}

/// Drains the console's outbox and counts the messages published on `id`'s command topic.
/// The kinds of what the console published to `id` since the last call.
fn published_to(env: &Env, id: &edgefleet_codec::AgentId) -> Vec<edgefleet_codec::Kind> {
    let mut outbox = env.outbox.lock().unwrap();
    let topic = Topics::default().agent(id, Channel::Command);
    let mut kinds = Vec::new();
    while let Ok(out) = outbox.try_recv() {
        if out.topic == topic {
            kinds.push(edgefleet_codec::Kind::from_header(out.payload[0]).unwrap());
        }
    }
    kinds
}

fn commands_published(env: &Env, id: &edgefleet_codec::AgentId) -> usize {
    published_to(env, id)
        .into_iter()
        .filter(|k| *k == edgefleet_codec::Kind::Command)
        .count()
}

/// The free-space guard, driven by hand: below the reserve, API changes get a JSON 507 and
/// change nothing, reads go on, `/healthz` says why; ingest keeps presence in memory, holds
/// events and status changes back, and leaves the command result unstored. Once space is
/// back, the backlog is written, and a birth redelivers the command so the agent's kept
/// result arrives: nothing an agent sent is lost.
#[tokio::test]
async fn low_disk_space_refuses_writes_with_507_holds_events_back_and_loses_nothing_after_recovery()
{
    let env = env();
    let a = enroll(&env);
    let id = a.identity.agent_id();
    env.fleet
        .ingest(vec![sealed(&a, birth(1, 1, "pump-3"), Channel::Birth)]);
    let (status, cmd) = admin(
        &env,
        "POST",
        &format!("/api/agents/{id}/request-heartbeat"),
        "",
    )
    .await;
    assert!(status.is_success(), "{status} {cmd}");
    let command_hex = cmd["id"].as_str().unwrap().to_string();
    let command_id: [u8; 16] = data_encoding::HEXLOWER
        .decode(command_hex.as_bytes())
        .unwrap()
        .try_into()
        .unwrap();
    let guard = env.fleet.store.guard();
    let mib = 1u64 << 20;
    assert_eq!(
        guard.apply(10 * mib, now_ms()),
        Some(edgefleet_console::space::Change::Refused { free: 10 * mib })
    );

    // The API: every change is refused with a JSON 507 that says why; reads work.
    let tokens_before = env.fleet.tokens.list().unwrap().len();
    for (method, uri, body) in [
        ("POST", "/api/tokens".to_string(), "{}"),
        ("POST", format!("/api/agents/{id}/request-heartbeat"), ""),
        (
            "PUT",
            format!("/api/agents/{id}/labels"),
            r#"{"set":{"site":"x"}}"#,
        ),
        ("DELETE", format!("/api/agents/{id}"), ""),
    ] {
        let (status, body) = admin(&env, method, &uri, body).await;
        assert_eq!(
            status,
            StatusCode::INSUFFICIENT_STORAGE,
            "{method} {uri}: {body}"
        );
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("low disk space") && error.contains("store.min_free_mb"),
            "{error}"
        );
    }
    assert_eq!(env.fleet.tokens.list().unwrap().len(), tokens_before);
    // Without a key it is still a 401: the key check comes first.
    let (status, _) = call(&env, "POST", "/api/tokens", None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (StatusCode::OK, Some("online"))
    );
    let (status, health) = get(&env, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["store"]["reason"], "low_space");
    assert_eq!(health["store"]["free_bytes"], 10 * mib);
    assert_eq!(health["store"]["reserve_bytes"], 64 * mib);

    // Ingest: presence moves on in memory; the event and the status change wait.
    env.fleet.ingest(vec![
        sealed(
            &a,
            AgentMessage::Heartbeat(Heartbeat {
                bd_seq: 1,
                seq: 2,
                cpu_pct: Some(55),
                ..Default::default()
            }),
            Channel::Heartbeat,
        ),
        sealed(
            &a,
            AgentMessage::Event(edgefleet_codec::Event {
                bd_seq: 1,
                seq: 3,
                event_id: 7,
                at_ms: now_ms(),
                level: edgefleet_codec::EventLevel::Warn,
                kind: "door".into(),
                message: "opened while the disk was full".into(),
            }),
            Channel::Event,
        ),
        sealed(
            &a,
            AgentMessage::CommandResult(edgefleet_codec::CommandResult {
                bd_seq: 1,
                seq: 4,
                command_id,
                outcome: edgefleet_codec::CommandOutcome::Succeeded,
                message: "heartbeat sent".into(),
                at_ms: now_ms(),
            }),
            Channel::Result,
        ),
        sealed(&a, birth(2, 1, "pump-3"), Channel::Birth),
    ]);
    let (_, doc) = get(&env, &format!("/api/agents/{id}")).await;
    assert_eq!(doc["cpu"], 55, "presence is current in memory: {doc}");
    assert!(env
        .fleet
        .store
        .events(&id.to_string(), 0, 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        env.fleet.backlog_len(),
        1,
        "the event (the birth changed no status)"
    );
    let (_, c) = get(&env, &format!("/api/commands/{command_hex}")).await;
    assert_ne!(c["state"], "succeeded", "the result is not stored: {c}");
    assert_eq!(
        published_to(&env, &id),
        [edgefleet_codec::Kind::Command],
        "only the first delivery: no redelivery while writes are refused, and no receipt \
         for the event held in memory"
    );
    let text = metrics_text(&env);
    assert!(
        text.contains("edgefleet_store_refused_samples_total 1"),
        "{text}"
    );

    // Space is freed: not enough within the hysteresis, then enough.
    assert_eq!(guard.apply(70 * mib, now_ms()), None);
    assert!(env.fleet.store.is_refusing());
    assert!(guard.apply(90 * mib, now_ms()).is_some());
    env.fleet.write_backlog();
    assert_eq!(env.fleet.backlog_len(), 0);
    assert_eq!(
        published_to(&env, &id),
        [edgefleet_codec::Kind::EventReceipt],
        "the event is receipted once it is stored"
    );
    let events = env.fleet.store.events(&id.to_string(), 0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "opened while the disk was full");
    let (status, _) = get(&env, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = admin(&env, "POST", "/api/tokens", "{}").await;
    assert!(status.is_success(), "{status} {body}");
    // The run loop's new epoch makes the agent re-birth: the command goes out again and
    // the agent answers with the result it kept.
    env.fleet
        .ingest(vec![sealed(&a, birth(3, 1, "pump-3"), Channel::Birth)]);
    assert_eq!(commands_published(&env, &id), 1, "redelivered once");
    env.fleet.ingest(vec![sealed(
        &a,
        AgentMessage::CommandResult(edgefleet_codec::CommandResult {
            bd_seq: 3,
            seq: 2,
            command_id,
            outcome: edgefleet_codec::CommandOutcome::Succeeded,
            message: "heartbeat sent".into(),
            at_ms: now_ms(),
        }),
        Channel::Result,
    )]);
    let (_, c) = get(&env, &format!("/api/commands/{command_hex}")).await;
    assert_eq!(c["state"], "succeeded", "{c}");
}
