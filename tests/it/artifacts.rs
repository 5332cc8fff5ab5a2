//! Hostile update-app artifacts end to end (issue 10, "Artifacts"), and an agent killed
//! with SIGKILL in the middle of an update (scenario 3): a real console hosts the archive,
//! a real agent downloads, verifies, unpacks and swaps, and reports back over MQTT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::service::Simulated;
use edgefleet_agent::{AgentHandle, AgentOptions};
use serde_json::Value;

use crate::harness::{upload, wait_for, AgentProc, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(30);

/// One archive entry with a raw name, so that names `tar::Builder` refuses to write
/// (`../x`, `/etc/x`) can be built.
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
    }
}

fn tar_gz(entries: &[Raw<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for e in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, e.data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Uploads `bytes` to the console and sends update-app for `app` with the artifact's
/// real SHA-256: returns the command id.
async fn update(console: &Console, id: &str, app: &str, version: &str, bytes: &[u8]) -> String {
    let (code, body) = upload(console, bytes).await;
    assert_eq!(code, 201, "{body}");
    let uploaded: Value = serde_json::from_str(&body).unwrap();
    let c = console
        .send(
            "POST",
            &format!("/api/agents/{id}/update-app"),
            &format!(
                r#"{{"app":"{app}","version":"{version}","url":"http://{}{}","sha256":"{}"}}"#,
                console.http,
                uploaded["path"].as_str().unwrap(),
                uploaded["sha256"].as_str().unwrap()
            ),
        )
        .await;
    c["id"].as_str().unwrap().to_string()
}

/// Waits for a final state of command `id`; returns the command.
async fn finished(console: &Console, id: &str) -> Value {
    wait_for(LIMIT, &format!("command {id} finished"), || async {
        let c = console.get(&format!("/api/commands/{id}")).await;
        let done = !matches!(
            c["state"].as_str(),
            Some("queued" | "delivered" | "running")
        );
        done.then_some(c)
    })
    .await
}

/// The app dir holds exactly the files of version 1.0 and nothing escaped it.
fn assert_still_v1(root: &Path, bin_dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "1.0\n"
    );
    let names: Vec<_> = std::fs::read_dir(bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["VERSION"], "nothing added to the app dir");
    for leaked in ["outside", "etc", "pwned", "opt/pump.edgefleet-staging"] {
        assert!(!root.join(leaked).exists(), "{leaked} was written");
    }
}

async fn agent_with_pump(root: &Path, console: &Console, bin_dir: &Path) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: root.to_path_buf(),
        token: Some(console.token.clone()),
        // Small caps, so that the bombs below stay small.
        artifact_max_mb: 1,
        artifact_unpacked_max_mb: 2,
        apps: vec![edgefleet_config::AppConfig {
            id: "pump".into(),
            unit: "pump.service".into(),
            config_path: None,
            config_format: None,
            binary_dir: Some(bin_dir.to_path_buf()),
            version_file: Some(bin_dir.join("VERSION")),
            version_command: None,
            health_url: None,
        }],
        ..Default::default()
    };
    let mut opts = AgentOptions::new(config, SimProbe::new(7));
    opts.services = Some(Arc::new(Simulated::new(root.join("apps"))));
    edgefleet_agent::spawn(opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_whole_and_the_app_stays_at_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let root = tmp.path().join("a");
    let bin_dir = root.join("opt/pump");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("VERSION"), "1.0\n").unwrap();
    let a = agent_with_pump(&root, &console, &bin_dir).await;
    let id = a.agent_id().to_string();
    wait_for(LIMIT, "pump 1.0 reported", || async {
        let (_, body) = console.get_text(&format!("/api/agents/{id}")).await;
        let doc: Value = serde_json::from_str(&body).ok()?;
        (doc["status"] == "online" && doc["apps"][0]["version"] == "1.0").then_some(())
    })
    .await;

    let v2 = b"2.0\n";
    let zeros = vec![0u8; 3 << 20];
    let noise: Vec<u8> = {
        // Incompressible: a xorshift stream, 1.5 MB, over the 1 MB download cap.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..1_500_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let good = tar_gz(&[file("VERSION", v2), file("bin/pump", b"#!/bin/sh\n")]);
    let symlink = |name, target| Raw {
        name,
        kind: tar::EntryType::Symlink,
        link: target,
        data: b"",
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            tar_gz(&[file("VERSION", v2), file("../../outside", b"x")]),
            "has a `..` component",
        ),
        (
            "absolute",
            tar_gz(&[file("VERSION", v2), file("/etc/pwned", b"x")]),
            "is an absolute path",
        ),
        (
            "symlink",
            tar_gz(&[file("VERSION", v2), symlink("etc", "../../../etc")]),
            "leaves the app directory",
        ),
        (
            "device",
            tar_gz(&[Raw {
                name: "tty",
                kind: tar::EntryType::Char,
                link: "",
                data: b"",
            }]),
            "is a device file",
        ),
        (
            "bomb",
            tar_gz(&[file("VERSION", v2), file("zeros", &zeros)]),
            "unpacks to more than 2 MB (artifact_unpacked_max_mb)",
        ),
        (
            "too big",
            tar_gz(&[file("VERSION", v2), file("noise", &noise)]),
            "over the agent's download cap",
        ),
        (
            "truncated",
            good[..good.len() - 12].to_vec(),
            "extracting the archive",
        ),
    ];
    for (what, bytes, why) in cases {
        let c = update(&console, &id, "pump", "2.0", &bytes).await;
        let done = finished(&console, &c).await;
        assert_eq!(done["state"], "failed", "{what}: {done}");
        let message = done["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{what}: {message}");
        assert_still_v1(&root, &bin_dir);
    }
    // Never stopped for a refused archive: the app is still up, at 1.0.
    let doc = console.get(&format!("/api/agents/{id}")).await;
    assert_eq!(doc["apps"][0]["status"], "active", "{doc}");
    assert_eq!(doc["apps"][0]["version"], "1.0", "{doc}");

    // A URL the agent would not fetch is refused by the console before any command exists.
    for url in [
        "file:///etc/passwd",
        "https://example.com/a.tar.gz",
        "ftp://x/a",
    ] {
        let (code, body) = crate::harness::http_request(
            console.http,
            "POST",
            &format!("/api/agents/{id}/update-app"),
            Some(&console.api_key),
            &format!(
                r#"{{"app":"pump","version":"2.0","url":"{url}","sha256":"{}"}}"#,
                "00".repeat(32)
            ),
        )
        .await
        .unwrap();
        assert_eq!(code, 400, "{url}: {body}");
        assert!(body.contains("http://"), "{url}: {body}");
    }

    // The same agent takes a sound archive.
    let c = update(&console, &id, "pump", "2.0", &good).await;
    let done = finished(&console, &c).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "2.0\n"
    );
    a.shutdown().await;
}

/// The file that says how far an update got (`edgefleet_agent::update::marker_path`).
fn marker(bin_dir: &Path) -> PathBuf {
    edgefleet_agent::update::marker_path(bin_dir)
}

/// An archive of `files` files big enough that unpacking it takes a while (every file is
/// fsynced before the swap), so a SIGKILL can land in the middle of it.
fn big_archive(version: &str, files: usize) -> Vec<u8> {
    let names: Vec<String> = (0..files).map(|i| format!("lib/part-{i:05}")).collect();
    let body = vec![b'x'; 2048];
    let mut entries = vec![file("VERSION", version.as_bytes())];
    entries.extend(names.iter().map(|n| file(n, &body)));
    tar_gz(&entries)
}

/// Kills the simulator with SIGKILL as soon as `ready` holds, polling every millisecond.
async fn kill_when(sim: &mut AgentProc, what: &str, ready: impl Fn() -> bool) {
    wait_for(LIMIT, what, || async {
        if ready() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        None
    })
    .await;
    sim.signal("KILL");
    let _ = sim.child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_during_update_app_leaves_one_whole_version_and_reports_after_restart() {
    if crate::harness::external_broker() {
        // A crash of the agent process; nothing in it depends on the broker.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let sim_dir = tmp.path().join("sim");
    let start =
        || AgentProc::simulate(&sim_dir, &console.mqtt_url(), &console.token, 1, "2s").unwrap();
    let mut sim = start();
    let host = wait_for(LIMIT, "the simulated agent online", || async {
        let agents = console.agents().await;
        agents.first().filter(|a| a["status"] == "online").cloned()
    })
    .await;
    let id = host["id"].as_str().unwrap().to_string();
    let app = edgefleet_agent::simulate::SIM_COMMON_APP;
    let bin_dir = sim_dir.join("data/sim-0/opt").join(app);
    let v1 = std::fs::read_to_string(bin_dir.join("VERSION")).unwrap();
    let staging = edgefleet_agent::update::staging_dir(&bin_dir);

    // 1. Killed while unpacking: the previous version stays, complete.
    let c = update(&console, &id, app, "2.0", &big_archive("2.0\n", 3000)).await;
    kill_when(&mut sim, "unpacking started", || {
        staging.join("lib").exists()
    })
    .await;
    assert!(staging.exists(), "killed half-way through unpacking");
    sim = start();
    let done = finished(&console, &c).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("still at the previous version"),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        v1
    );
    assert_eq!(
        std::fs::read_dir(&bin_dir).unwrap().count(),
        1,
        "no stray files"
    );
    assert!(!staging.exists() && !marker(&bin_dir).exists());

    // 2. Killed after the swap, while the new version is started and checked: the new
    // version stays, complete, and is checked and reported after the restart.
    let c = update(&console, &id, app, "3.0", &big_archive("3.0\n", 500)).await;
    let m = marker(&bin_dir);
    kill_when(&mut sim, "the swap done", || {
        std::fs::read_to_string(&m).is_ok_and(|t| t.contains("\"swapped\""))
    })
    .await;
    sim = start();
    let done = finished(&console, &c).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("finished after an agent restart"),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(bin_dir.join("VERSION")).unwrap(),
        "3.0\n"
    );
    assert_eq!(std::fs::read_dir(bin_dir.join("lib")).unwrap().count(), 500);
    assert!(!staging.exists() && !m.exists());
    wait_for(LIMIT, "3.0 reported", || async {
        let doc = console.get(&format!("/api/agents/{id}")).await;
        doc["apps"]
            .as_array()?
            .iter()
            .any(|a| a["id"] == app && a["version"] == "3.0")
            .then_some(())
    })
    .await;
    sim.signal("TERM");
}
