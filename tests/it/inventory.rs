//! Software inventory end to end: real console, in-process agents with a simulated (mutable)
//! package set, snapshots and deltas over the real broker, the REST API and the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_agent::inventory::SimInventory;
use edgefleet_agent::probe::SimProbe;
use edgefleet_agent::service::Simulated;
use edgefleet_agent::{AgentHandle, AgentOptions};
use edgefleet_codec::Package;
use serde_json::Value;

use crate::harness::{self, wait_for, AgentProc, Console, ConsoleOpts};

const LIMIT: Duration = Duration::from_secs(20);

async fn spawn(dir: &Path, console: &Console, index: usize, inv: &SimInventory) -> AgentHandle {
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: dir.to_path_buf(),
        token: Some(console.token.clone()),
        ..Default::default()
    };
    let mut opts = AgentOptions::new(config, SimProbe::new(index));
    opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
    opts.collector = Some(Arc::new(inv.clone()));
    edgefleet_agent::spawn(opts).await.unwrap()
}

async fn metric(console: &Console, line: &str) -> u64 {
    let (_, text) = console.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const CHUNKS: &str = "edgefleet_ingest_messages_total{kind=\"inventory_chunk\"}";
const DELTAS: &str = "edgefleet_ingest_messages_total{kind=\"inventory_delta\"}";

/// Every package row of a host (all pages), by name.
async fn rows(console: &Console, id: &str, removed: bool) -> (Value, BTreeMap<String, Value>) {
    try_rows(console, id, removed)
        .await
        .unwrap_or_else(|| panic!("no inventory for {id}"))
}

/// [`rows`], or `None` while the console does not know the agent yet.
async fn try_rows(
    console: &Console,
    id: &str,
    removed: bool,
) -> Option<(Value, BTreeMap<String, Value>)> {
    let mut all = BTreeMap::new();
    let mut first = Value::Null;
    for page in 1.. {
        let (code, body) = console
            .get_text(&format!(
                "/api/agents/{id}/inventory?per_page=500&page={page}&include_removed={removed}"
            ))
            .await;
        if code != 200 {
            return None;
        }
        let p: Value = serde_json::from_str(&body).ok()?;
        let items = p["items"].as_array().unwrap().clone();
        for it in &items {
            all.insert(
                format!(
                    "{} {}",
                    it["name"].as_str().unwrap(),
                    it["version"].as_str().unwrap()
                ),
                it.clone(),
            );
        }
        if page == 1 {
            first = p;
        }
        if items.len() < 500 {
            break;
        }
    }
    Some((first, all))
}

/// Waits until the console holds exactly the agent's current package set.
async fn synced(console: &Console, id: &str, inv: &SimInventory) -> Value {
    let want: BTreeSet<String> = inv
        .packages()
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    wait_for(LIMIT, "console inventory matches the agent's", || async {
        let (page, got) = try_rows(console, id, false).await?;
        let got: BTreeSet<String> = got.into_keys().collect();
        (got == want).then_some(page)
    })
    .await
}

async fn rescan(console: &Console, id: &str) -> Value {
    let c = console
        .send("POST", &format!("/api/agents/{id}/rescan"), "")
        .await;
    let cid = c["id"].as_str().unwrap().to_string();
    wait_for(LIMIT, "rescan done", || async {
        let v = console.get(&format!("/api/commands/{cid}")).await;
        (v["state"] == "succeeded").then_some(v)
    })
    .await
}

fn pkg(name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        source: "dpkg".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_small_deltas_track_adds_removes_upgrades_and_survive_a_console_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let inv = SimInventory::generated(7, 1200);
    let agent = spawn(&tmp.path().join("a"), &console, 7, &inv).await;
    let id = agent.agent_id().to_string();

    // First sync: a full snapshot in chunks of at most 500.
    let page = synced(&console, &id, &inv).await;
    assert_eq!(page["installed"], 1200);
    assert_eq!(page["source"], "dpkg");
    assert_eq!(page["stale_scan"], false);
    assert_eq!(page["interval_s"], 6 * 3600);
    assert_eq!(metric(&console, CHUNKS).await, 3);
    let (_, before) = rows(&console, &id, false).await;

    // Add, remove, upgrade: each a delta, never a snapshot.
    inv.add(pkg("htop", "3.2.2-2"));
    let done = rescan(&console, &id).await;
    assert!(
        done["message"].as_str().unwrap().contains("1 added"),
        "{done}"
    );
    synced(&console, &id, &inv).await;
    inv.remove("curl");
    rescan(&console, &id).await;
    synced(&console, &id, &inv).await;
    inv.upgrade("openssl", "3.0.99-1");
    let done = rescan(&console, &id).await;
    assert!(
        done["message"].as_str().unwrap().contains("1 changed"),
        "{done}"
    );
    synced(&console, &id, &inv).await;
    assert_eq!(
        metric(&console, CHUNKS).await,
        3,
        "no snapshot after the first"
    );
    assert_eq!(metric(&console, DELTAS).await, 3);
    // A scan that finds nothing new is a tiny empty delta: the console learns the scan
    // happened (last_scan moves), so a quiet host is not flagged stale.
    let last = console
        .get(&format!("/api/agents/{id}/inventory?per_page=1"))
        .await["last_scan"]
        .as_u64()
        .unwrap();
    let done = rescan(&console, &id).await;
    assert!(
        done["message"].as_str().unwrap().contains("unchanged"),
        "{done}"
    );
    wait_for(LIMIT, "last_scan moves", || async {
        let p = console
            .get(&format!("/api/agents/{id}/inventory?per_page=1"))
            .await;
        (p["last_scan"].as_u64().unwrap() > last).then_some(())
    })
    .await;

    // curl is removed, with its first_seen unchanged; openssl's old version too.
    let (_, with_removed) = rows(&console, &id, true).await;
    let curl = with_removed
        .iter()
        .find(|(k, _)| k.starts_with("curl "))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(curl["removed"], true, "{curl}");
    let old_curl = &before[&format!("curl {}", curl["version"].as_str().unwrap())];
    assert_eq!(curl["first_seen"], old_curl["first_seen"]);
    assert!(curl["removed_at"].as_u64().unwrap() >= curl["last_seen"].as_u64().unwrap());
    assert!(with_removed
        .keys()
        .any(|k| k.starts_with("openssl ") && with_removed[k]["removed"] == true));

    // Re-adding clears `removed` and keeps the original first_seen.
    inv.add(pkg("curl", curl["version"].as_str().unwrap()));
    rescan(&console, &id).await;
    synced(&console, &id, &inv).await;
    let (_, now) = rows(&console, &id, true).await;
    let back = &now[&format!("curl {}", curl["version"].as_str().unwrap())];
    assert_eq!(back["removed"], false);
    assert_eq!(back["first_seen"], old_curl["first_seen"]);

    // A console restart keeps the inventory and its digest: the next change is a delta.
    let bd_seq = agent.status().bd_seq;
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    console.kill_and_restart().await.unwrap();
    inv.add(pkg("tmux", "3.3a-3"));
    if harness::external_broker() {
        // Behind an external broker the agent keeps its connection through a console
        // restart, and announces itself again on the console's new epoch.
        wait_for(Duration::from_secs(40), "agent heard again", || async {
            let d = console.get(&format!("/api/agents/{id}")).await;
            d["last_seen"]
                .as_u64()
                .is_some_and(|t| t > restarted)
                .then_some(())
        })
        .await;
    } else {
        wait_for(Duration::from_secs(40), "agent reconnected", || async {
            let s = agent.status();
            (s.connected && s.bd_seq > bd_seq).then_some(())
        })
        .await;
    }
    rescan(&console, &id).await;
    synced(&console, &id, &inv).await;
    assert_eq!(
        metric(&console, CHUNKS).await,
        0,
        "restarted console: counters start at 0"
    );
    assert_eq!(metric(&console, DELTAS).await, 1);

    // Query, sort, bad parameters.
    let p = console
        .get(&format!("/api/agents/{id}/inventory?q=OPENSSL&sort=-name"))
        .await;
    assert_eq!(p["total"], 1, "{p}");
    for bad in [
        "sort=size",
        "per_page=0",
        "include_removed=maybe",
        "colour=red",
    ] {
        let (code, body) = console
            .get_text(&format!("/api/agents/{id}/inventory?{bad}"))
            .await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = console.get_text("/api/agents/nosuchagent/inventory").await;
    assert_eq!(code, 404);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_round_trips_through_a_csv_parser_with_commas_and_quotes() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let inv = SimInventory::new([
        pkg("odd", "1.0,beta \"quoted\""),
        pkg("plain", "2.0"),
        pkg("formula", "=1+1"),
    ]);
    let agent = spawn(&tmp.path().join("a"), &console, 9, &inv).await;
    let id = agent.agent_id().to_string();
    synced(&console, &id, &inv).await;
    let (code, text) = console
        .get_text(&format!("/api/agents/{id}/inventory.csv"))
        .await;
    assert_eq!(code, 200);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "name");
    let rows: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].to_string())
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("formula".to_string(), "'=1+1".to_string()),
            ("odd".to_string(), "1.0,beta \"quoted\"".to_string()),
            ("plain".to_string(), "2.0".to_string()),
        ]
    );

    // The CLI prints the same CSV, and a table with --json as JSON.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cli = crate::cli::Cli::new("edgefleet", &home);
    let url = format!("http://{}", console.http);
    let out = cli
        .run_async(
            &[
                "--console",
                &url,
                "--api-key",
                &console.api_key,
                "inventory",
                &id,
                "--csv",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.replace("\r\n", "\n"), text.replace("\r\n", "\n"));
    let out = cli
        .run_async(
            &[
                "--console",
                &url,
                "--api-key",
                &console.api_key,
                "inventory",
                &id,
                "--json",
            ],
            None,
        )
        .await;
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(doc["installed"], 3);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_fleet_wide_search_match_brute_force_over_200_simulated_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let sim = AgentProc::simulate(
        &tmp.path().join("sim"),
        &console.mqtt_url(),
        &console.token,
        200,
        "5s",
    )
    .unwrap();
    let ids: Vec<String> = wait_for(
        Duration::from_secs(90),
        "200 inventories synced",
        || async {
            let page = console.get("/api/agents?per_page=200").await;
            let ids: Vec<String> = page["items"]
                .as_array()?
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect();
            if ids.len() < 200 {
                return None;
            }
            for id in &ids {
                let p = console
                    .get(&format!("/api/agents/{id}/inventory?per_page=1"))
                    .await;
                if p["installed"] != 150 {
                    return None;
                }
            }
            Some(ids)
        },
    )
    .await;

    // Brute force: every host's full list from the per-host API.
    let mut lists: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for id in &ids {
        lists.insert(id.clone(), rows(&console, id, false).await.1);
    }
    for name in ["openssl", "curl", "lib-sim0001", "no-such-package"] {
        let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, rows) in &lists {
            for v in rows.values().filter(|v| v["name"] == name) {
                want.entry(v["version"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(id.clone());
            }
        }
        let got = console.get(&format!("/api/packages?name={name}")).await;
        let got_map: BTreeMap<String, BTreeSet<String>> = got["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let hosts: BTreeSet<String> = v["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(v["count"], hosts.len());
                (v["version"].as_str().unwrap().to_string(), hosts)
            })
            .collect();
        assert_eq!(got_map, want, "{name}");
        let distinct: BTreeSet<&String> = want.values().flatten().collect();
        assert_eq!(got["hosts"], distinct.len());
    }
    let openssl = console.get("/api/packages?name=openssl").await;
    assert_eq!(
        openssl["versions"].as_array().unwrap().len(),
        3,
        "{openssl}"
    );

    for (a, b) in [(&ids[0], &ids[1]), (&ids[2], &ids[5]), (&ids[7], &ids[7])] {
        let got = console
            .get(&format!("/api/inventory/compare?a={a}&b={b}"))
            .await;
        let by_name = |rows: &BTreeMap<String, Value>| -> BTreeMap<String, String> {
            rows.values()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        v["version"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let (la, lb) = (by_name(&lists[a]), by_name(&lists[b]));
        let only_a: Vec<&String> = la.keys().filter(|k| !lb.contains_key(*k)).collect();
        let only_b: Vec<&String> = lb.keys().filter(|k| !la.contains_key(*k)).collect();
        let differs: Vec<&String> = la
            .iter()
            .filter(|(k, v)| lb.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k)
            .collect();
        let names = |key: &str| -> Vec<String> {
            got[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names("only_a").iter().collect::<Vec<_>>(),
            only_a,
            "{a} {b}"
        );
        assert_eq!(
            names("only_b").iter().collect::<Vec<_>>(),
            only_b,
            "{a} {b}"
        );
        assert_eq!(
            names("differs").iter().collect::<Vec<_>>(),
            differs,
            "{a} {b}"
        );
        if a == b {
            assert_eq!(got["same"], 150);
        }
    }
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_restart_in_the_middle_of_a_snapshot_resyncs_cleanly() {
    use edgefleet_tests::proxy::{FaultProxy, Shaping};
    let tmp = tempfile::tempdir().unwrap();
    let mut console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    // A slow link (2 KB/s) stretches a 4-chunk snapshot over several seconds.
    let proxy = FaultProxy::start(console.mqtt).await.unwrap();
    let inv = SimInventory::generated(11, 2000);
    let dir = tmp.path().join("a");
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![format!("mqtt://{}", proxy.addr())],
        data_dir: dir.clone(),
        token: Some(console.token.clone()),
        ..Default::default()
    };
    let mut opts = AgentOptions::new(config, SimProbe::new(11));
    opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
    opts.collector = Some(Arc::new(inv.clone()));
    proxy.set_shaping(Shaping {
        rate: Some(2_000),
        ..Default::default()
    });
    let agent = edgefleet_agent::spawn(opts).await.unwrap();
    let id = agent.agent_id().to_string();

    // Restart the console after the first chunk is in and before the last.
    wait_for(Duration::from_secs(60), "first chunk ingested", || async {
        (metric(&console, CHUNKS).await >= 1).then_some(())
    })
    .await;
    let (page, _) = try_rows(&console, &id, false).await.unwrap_or_default();
    assert_ne!(
        page["installed"], 2000,
        "the snapshot must still be incomplete when the console restarts"
    );
    console.kill_and_restart().await.unwrap();
    proxy.set_shaping(Shaping::default());

    // The rest of the old snapshot has no start on the new console: it asks for all of
    // it again, and the stored inventory ends complete and exact, never partial.
    let page = wait_for(Duration::from_secs(60), "complete inventory", || async {
        let (page, rows) = try_rows(&console, &id, false).await?;
        (rows.len() == 2000).then_some(page)
    })
    .await;
    assert_eq!(page["installed"], 2000);
    synced(&console, &id, &inv).await;
    assert!(
        metric(&console, CHUNKS).await >= 4,
        "the restarted console got a whole snapshot again"
    );
    agent.shutdown().await;
}

/// A host without a supported package manager.
#[derive(Debug)]
struct NoPackageManager;

impl edgefleet_agent::inventory::Collector for NoPackageManager {
    fn scan(&self) -> Result<edgefleet_agent::inventory::Scan, String> {
        Err("no supported package manager found (dpkg, rpm, pacman, apk)".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_package_manager_is_reported_not_an_empty_inventory_and_the_cli_searches() {
    let tmp = tempfile::tempdir().unwrap();
    let console = Console::start(&tmp.path().join("console"), ConsoleOpts::default())
        .await
        .unwrap();
    let dir = tmp.path().join("bare");
    let config = edgefleet_config::AgentConfig {
        console_urls: vec![console.mqtt_url()],
        data_dir: dir.clone(),
        token: Some(console.token.clone()),
        ..Default::default()
    };
    let mut opts = AgentOptions::new(config, SimProbe::new(21));
    opts.services = Some(Arc::new(Simulated::new(dir.join("apps"))));
    opts.collector = Some(Arc::new(NoPackageManager));
    let bare = edgefleet_agent::spawn(opts).await.unwrap();
    let bare_id = bare.agent_id().to_string();
    let page = wait_for(LIMIT, "the console knows why", || async {
        let (page, _) = try_rows(&console, &bare_id, false).await?;
        page["error"].is_string().then_some(page)
    })
    .await;
    assert!(
        page["error"]
            .as_str()
            .unwrap()
            .contains("no supported package manager"),
        "{page}"
    );
    assert_eq!(page["last_scan"], Value::Null, "{page}");
    // The rescan command fails with the reason.
    let c = console
        .send("POST", &format!("/api/agents/{bare_id}/rescan"), "")
        .await;
    let cid = c["id"].as_str().unwrap().to_string();
    let failed = wait_for(LIMIT, "rescan fails", || async {
        let v = console.get(&format!("/api/commands/{cid}")).await;
        (v["state"] == "failed").then_some(v)
    })
    .await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("package manager"),
        "{failed}"
    );

    // Two hosts with inventories: compare and search through the CLI.
    let (inv_a, inv_b) = (
        SimInventory::generated(0, 40),
        SimInventory::generated(1, 40),
    );
    let a = spawn(&tmp.path().join("a"), &console, 22, &inv_a).await;
    let b = spawn(&tmp.path().join("b"), &console, 23, &inv_b).await;
    let (ida, idb) = (a.agent_id().to_string(), b.agent_id().to_string());
    synced(&console, &ida, &inv_a).await;
    synced(&console, &idb, &inv_b).await;
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cli = crate::cli::Cli::new("edgefleet", &home);
    let url = format!("http://{}", console.http);
    let base = [
        "--console",
        url.as_str(),
        "--api-key",
        console.api_key.as_str(),
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let cli = cli.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run_async(&args, None).await
        }
    };
    let out = run(&["packages", "openssl", "--json"]).await;
    let found: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(found["hosts"], 2, "{found}");
    assert_eq!(found["versions"].as_array().unwrap().len(), 2, "{found}");
    let out = run(&["inventory", "compare", &ida, &idb]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("~ openssl"), "{out:?}");
    let out = run(&["inventory", "compare", &ida, "nosuchagent"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("Agent 'nosuchagent' not found"),
        "{out:?}"
    );
    for h in [bare, a, b] {
        h.shutdown().await;
    }
}
