//! Software inventory: collectors, and what to send the console.
//!
//! - Collectors: dpkg (Debian/Ubuntu), rpm (RHEL/Fedora), pacman (Arch), apk (Alpine). The
//!   first one whose tool exists wins, and its name is the packages' `source`. Parsers are
//!   pure functions over the tools' output, tested against captured output. A scan runs
//!   under `nice -n 19` with a time limit, off the session task.
//! - [`SimInventory`]: a mutable package set for the simulator and tests.
//! - [`SyncState`]: the agent's side of the sync protocol (docs/wire.md, "Inventory"): what the
//!   console was last sent and acknowledged, persisted in the agent's sled, and whether a
//!   scan becomes a delta, a full snapshot, or nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefleet_codec::{inventory_digest, InventoryChunk, InventoryDelta, Package};
use serde::{Deserialize, Serialize};

/// A scan that takes longer is killed and reported as failed.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// One scan's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub source: String,
    pub packages: Vec<Package>,
}

/// Where the inventory comes from.
pub trait Collector: Send + Sync + std::fmt::Debug {
    /// Blocking. `Err` says why there is no inventory (no package manager is not an empty
    /// inventory).
    fn scan(&self) -> Result<Scan, String>;
}

/// The host's package manager.
#[derive(Debug, Clone, Default)]
pub struct SystemCollector;

impl Collector for SystemCollector {
    fn scan(&self) -> Result<Scan, String> {
        if Path::new("/var/lib/dpkg/status").exists() && on_path("dpkg-query") {
            let out = run_nice(
                "dpkg-query",
                &[
                    "-W",
                    "-f",
                    "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n",
                ],
            )?;
            return Ok(Scan {
                source: "dpkg".into(),
                packages: parse_dpkg(&out),
            });
        }
        if on_path("rpm") {
            let out = run_nice(
                "rpm",
                &[
                    "-qa",
                    "--queryformat",
                    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
                ],
            )?;
            return Ok(Scan {
                source: "rpm".into(),
                packages: parse_rpm(&out),
            });
        }
        if on_path("pacman") {
            let out = run_nice("pacman", &["-Q"])?;
            return Ok(Scan {
                source: "pacman".into(),
                packages: parse_pacman(&out),
            });
        }
        let apk_db = Path::new("/lib/apk/db/installed");
        if apk_db.exists() {
            let text = std::fs::read_to_string(apk_db)
                .map_err(|e| format!("reading {}: {e}", apk_db.display()))?;
            return Ok(Scan {
                source: "apk".into(),
                packages: parse_apk_installed(&text),
            });
        }
        Err("no supported package manager found (dpkg, rpm, pacman, apk)".into())
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs `tool` at the lowest CPU priority with [`SCAN_TIMEOUT`]; stdout on success.
fn run_nice(tool: &str, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("nice")
        .args(["-n", "19", tool])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    // Read stdout while waiting: the output is larger than a pipe buffer.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= SCAN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{tool} timed out after {} s",
                    SCAN_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {tool}: {e}")),
        }
    };
    let out = reader
        .join()
        .map_err(|_| format!("reading {tool}'s output failed"))?
        .map_err(|e| format!("reading {tool}'s output: {e}"))?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!("{tool} exited with {status}: {}", err.trim()));
    }
    Ok(out)
}

/// `dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n'`.
/// Packages whose current state is not-installed (`n`) or config-files only (`c`) are left
/// out; half-installed, half-configured, unpacked and trigger-pending ones are kept, since
/// their files are on disk.
pub fn parse_dpkg(out: &str) -> Vec<Package> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            let status = f.next().unwrap_or("ii ");
            let state = status.chars().nth(1).unwrap_or('i');
            if name.is_empty() || version.is_empty() || matches!(state, 'n' | 'c') {
                return None;
            }
            Some(pkg(name, version, arch, "dpkg"))
        })
        .collect()
}

/// `rpm -qa --queryformat '%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}\n'`.
/// `gpg-pubkey` entries are imported signing keys, not packages, and are left out.
pub fn parse_rpm(out: &str) -> Vec<Package> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, version, arch) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            if name.is_empty() || version.is_empty() || name == "gpg-pubkey" {
                return None;
            }
            Some(pkg(name, version, arch, "rpm"))
        })
        .collect()
}

/// `pacman -Q`: `name version` per line (no architecture).
pub fn parse_pacman(out: &str) -> Vec<Package> {
    out.lines()
        .filter_map(|line| {
            let (name, version) = line.trim().split_once(' ')?;
            (!name.is_empty() && !version.trim().is_empty())
                .then(|| pkg(name, version.trim(), "", "pacman"))
        })
        .collect()
}

/// Alpine's `/lib/apk/db/installed`: records separated by blank lines, `P:` name, `V:`
/// version, `A:` architecture.
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let (mut name, mut version, mut arch): (Option<&str>, Option<&str>, Option<&str>) =
        (None, None, None);
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            // A record ends here whole: nothing of it may leak into the next one.
            let (n, v, a) = (name.take(), version.take(), arch.take());
            if let (Some(n), Some(v)) = (n, v) {
                if !n.is_empty() && !v.is_empty() {
                    out.push(pkg(n, v, a.unwrap_or(""), "apk"));
                }
            }
            continue;
        }
        match line.split_once(':') {
            Some(("P", v)) => name = Some(v),
            Some(("V", v)) => version = Some(v),
            Some(("A", v)) => arch = Some(v),
            _ => {}
        }
    }
    out
}

fn pkg(name: &str, version: &str, arch: &str, source: &str) -> Package {
    Package {
        name: name.to_string(),
        version: version.to_string(),
        arch: arch.to_string(),
        source: source.to_string(),
    }
}

/// A package set that tests and the simulator change at will.
#[derive(Debug, Clone, Default)]
pub struct SimInventory {
    packages: Arc<Mutex<BTreeSet<Package>>>,
}

impl SimInventory {
    pub fn new(packages: impl IntoIterator<Item = Package>) -> SimInventory {
        SimInventory {
            packages: Arc::new(Mutex::new(packages.into_iter().collect())),
        }
    }

    /// A plausible Debian-like inventory of `count` packages for simulated device `index`:
    /// the same index gives the same set; a few well-known packages differ in version
    /// across the fleet, so fleet-wide search has something to find.
    pub fn generated(index: usize, count: usize) -> SimInventory {
        const KNOWN: [(&str, [&str; 3]); 6] = [
            (
                "openssl",
                ["3.0.2-0ubuntu1.15", "3.0.11-1~deb12u2", "3.0.13-0ubuntu3"],
            ),
            (
                "curl",
                ["7.81.0-1ubuntu1.16", "7.88.1-10+deb12u5", "8.5.0-2ubuntu10"],
            ),
            ("bash", ["5.1-6ubuntu1", "5.2.15-2+b7", "5.2.21-2ubuntu4"]),
            (
                "systemd",
                ["249.11-0ubuntu3", "252.22-1~deb12u1", "255.4-1ubuntu8"],
            ),
            (
                "openssh-server",
                [
                    "1:8.9p1-3ubuntu0.6",
                    "1:9.2p1-2+deb12u2",
                    "1:9.6p1-3ubuntu13",
                ],
            ),
            (
                "libc6",
                ["2.35-0ubuntu3.6", "2.36-9+deb12u4", "2.39-0ubuntu8"],
            ),
        ];
        let mut set: BTreeSet<Package> = KNOWN
            .iter()
            .map(|(name, versions)| pkg(name, versions[index % 3], "amd64", "dpkg"))
            .collect();
        let mut i = 0usize;
        while set.len() < count {
            set.insert(pkg(
                &format!("lib-sim{i:04}"),
                &format!("1.{}.{}", (i * 7) % 13, (i + index % 2) % 5),
                if i.is_multiple_of(4) { "all" } else { "amd64" },
                "dpkg",
            ));
            i += 1;
        }
        SimInventory {
            packages: Arc::new(Mutex::new(set)),
        }
    }

    pub fn add(&self, p: Package) {
        self.packages.lock().expect("sim inventory lock").insert(p);
    }

    pub fn remove(&self, name: &str) {
        self.packages
            .lock()
            .expect("sim inventory lock")
            .retain(|p| p.name != name);
    }

    /// Sets the version of every package called `name`.
    pub fn upgrade(&self, name: &str, version: &str) {
        let mut set = self.packages.lock().expect("sim inventory lock");
        let matching: Vec<Package> = set.iter().filter(|p| p.name == name).cloned().collect();
        for mut p in matching {
            set.remove(&p);
            p.version = version.to_string();
            set.insert(p);
        }
    }

    pub fn packages(&self) -> Vec<Package> {
        self.packages
            .lock()
            .expect("sim inventory lock")
            .iter()
            .cloned()
            .collect()
    }
}

impl Collector for SimInventory {
    fn scan(&self) -> Result<Scan, String> {
        Ok(Scan {
            source: "dpkg".into(),
            packages: self.packages(),
        })
    }
}

/// The agent's sync state, persisted after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The inventory the console was last sent (in order, exactly once, through the queue),
    /// which the next delta builds on.
    pub sent: Option<Sent>,
    /// The digest the console last acknowledged.
    pub acked: Option<[u8; 8]>,
    /// Increases with every full snapshot, so chunks of two snapshots never mix.
    pub scan_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub digest: [u8; 8],
    pub source: String,
    pub packages: Vec<Package>,
}

/// What a scan or a console answer asks the agent to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Delta(InventoryDelta),
    Snapshot(Vec<InventoryChunk>),
}

impl SyncState {
    /// A fresh scan: an empty delta if nothing changed (so the console knows the scan
    /// happened), a delta against what it was last sent, or a full snapshot when nothing
    /// was sent yet (or the source changed).
    pub fn scanned(&mut self, scan: Scan) -> Outgoing {
        let mut packages = scan.packages;
        packages.sort();
        packages.dedup();
        let digest = inventory_digest(&packages);
        let out = match &self.sent {
            Some(sent) if sent.digest == digest => {
                return Outgoing::Delta(InventoryDelta {
                    bd_seq: 0,
                    seq: 0,
                    base_digest: digest,
                    new_digest: digest,
                    added: Vec::new(),
                    removed: Vec::new(),
                    changed: Vec::new(),
                    source: scan.source,
                })
            }
            Some(sent) if sent.source == scan.source => {
                let d = InventoryDelta::between(&sent.packages, &packages, &scan.source)
                    .expect("the digests differ, so the sets do");
                Outgoing::Delta(d)
            }
            _ => {
                self.scan_id = self.scan_id.wrapping_add(1);
                Outgoing::Snapshot(InventoryChunk::split(self.scan_id, &scan.source, &packages))
            }
        };
        self.sent = Some(Sent {
            digest,
            source: scan.source,
            packages,
        });
        out
    }

    /// The console holds `digest` now.
    pub fn acked(&mut self, digest: [u8; 8]) {
        self.acked = Some(digest);
    }

    /// The console asks for everything: a full snapshot of what it was last sent (`None`
    /// when nothing was scanned yet; the next scan sends one).
    pub fn resync(&mut self) -> Option<Vec<InventoryChunk>> {
        let sent = self.sent.as_ref()?;
        self.scan_id = self.scan_id.wrapping_add(1);
        Some(InventoryChunk::split(
            self.scan_id,
            &sent.source,
            &sent.packages,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG: &str = include_str!("../tests/fixtures/dpkg-query.txt");

    #[test]
    fn dpkg_output_of_this_machine_parses_with_epochs_tildes_and_multiarch() {
        let pkgs = parse_dpkg(DPKG);
        assert_eq!(pkgs.len(), DPKG.lines().count());
        let bsdutils = pkgs.iter().find(|p| p.name == "bsdutils").unwrap();
        assert_eq!(bsdutils.version, "1:2.38.1-5+deb12u3", "epoch kept");
        assert!(pkgs.iter().any(|p| p.version.contains('~')));
        assert!(pkgs
            .iter()
            .all(|p| p.source == "dpkg" && !p.arch.is_empty()));
        // Odd states: half-installed and unpacked stay, config-files and not-installed go;
        // the same name on two architectures is two packages.
        let odd = "libfoo\t1.0-1\tamd64\tiH \nlibbar\t2.0\tamd64\tiU \nold\t0.9\tamd64\trc \n\
                   gone\t1.0\tamd64\tun \nlibc6\t2.36-9\tamd64\tii \nlibc6\t2.36-9\ti386\tii \n\
                   broken-line-without-tabs\n";
        let names: Vec<(String, String)> = parse_dpkg(odd)
            .into_iter()
            .map(|p| (p.name, p.arch))
            .collect();
        assert_eq!(
            names,
            [
                ("libfoo".into(), "amd64".into()),
                ("libbar".into(), "amd64".into()),
                ("libc6".into(), "amd64".into()),
                ("libc6".into(), "i386".into())
            ]
        );
    }

    #[test]
    fn rpm_pacman_and_apk_outputs_parse() {
        let rpm = "bash\t5.1.8-9.el9\tx86_64\nopenssl-libs\t1:3.0.7-27.el9\tx86_64\n\
                   gpg-pubkey\tfd431d51-4ae0493b\t(none)\ntzdata\t2024a-1.el9\tnoarch\n\
                   kernel\t5.14.0-427.el9\tx86_64\nkernel\t5.14.0-362.el9\tx86_64\n";
        let p = parse_rpm(rpm);
        assert_eq!(p.len(), 5, "{p:?}");
        assert_eq!(p[1].version, "1:3.0.7-27.el9");
        assert_eq!(p[2].arch, "noarch");
        assert_eq!(
            p[3].version, "5.14.0-427.el9",
            "two installed kernels are two packages"
        );
        assert!(p.iter().all(|p| p.source == "rpm"));

        let pacman = "acl 2.3.2-1\nbash 5.2.026-2\nlinux 6.8.9.arch1-1\npython-pip 24.0-2\n\n";
        let p = parse_pacman(pacman);
        assert_eq!(p.len(), 4);
        assert_eq!(
            (p[2].name.as_str(), p[2].version.as_str()),
            ("linux", "6.8.9.arch1-1")
        );

        let apk = "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:383152\nT:the musl c library\n\n\
                   P:busybox\nV:1.36.1-r15\nA:x86_64\n\nP:ca-certificates-bundle\nV:20240226-r0\nA:x86_64";
        let p = parse_apk_installed(apk);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].version, "1.2.4_git20230717-r4");
        assert_eq!(
            p[2].name, "ca-certificates-bundle",
            "the last record has no blank line"
        );
        // A record without a version does not lend its name to the next record, and
        // empty fields make no package (both found by the inventory fuzz body).
        let broken = "P:orphan\n\nV:9.9\nA:x86_64\n\nP:\nV:\n\nP:ok\nV:1\n";
        let p = parse_apk_installed(broken);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].name.as_str(), p[0].version.as_str()), ("ok", "1"));
    }

    #[test]
    fn first_scan_is_a_snapshot_then_deltas_then_nothing() {
        let inv = SimInventory::generated(3, 1200);
        let mut sync = SyncState::default();
        let Outgoing::Snapshot(chunks) = sync.scanned(inv.scan().unwrap()) else {
            panic!("first scan must be a snapshot");
        };
        assert_eq!(chunks.len(), 3);
        let Outgoing::Delta(same) = sync.scanned(inv.scan().unwrap()) else {
            panic!("an unchanged scan is an empty delta");
        };
        assert_eq!(same.base_digest, same.new_digest);
        assert!(same.added.is_empty() && same.removed.is_empty() && same.changed.is_empty());
        inv.upgrade("openssl", "3.0.99");
        let Outgoing::Delta(d) = sync.scanned(inv.scan().unwrap()) else {
            panic!("a change is a delta");
        };
        assert_eq!(d.changed.len(), 1);
        assert_eq!(sync.sent.as_ref().unwrap().digest, d.new_digest);
        let again = sync.resync().unwrap();
        assert_eq!(again.last().unwrap().digest, Some(d.new_digest));
        assert!(again[0].scan_id > chunks[0].scan_id);
    }

    #[test]
    fn the_real_dpkg_collector_matches_dpkg_query() {
        if !on_path("dpkg-query") {
            // CI and the build machine are Debian; elsewhere there is nothing to compare.
            eprintln!("no dpkg-query here: skipping the real-collector comparison");
            return;
        }
        let scan = SystemCollector.scan().unwrap();
        assert_eq!(scan.source, "dpkg");
        let raw = Command::new("dpkg-query")
            .args(["-W", "-f", "${db:Status-Abbrev}\\n"])
            .output()
            .unwrap();
        let installed = String::from_utf8_lossy(&raw.stdout)
            .lines()
            .filter(|s| !matches!(s.chars().nth(1), Some('n' | 'c')))
            .count();
        assert_eq!(scan.packages.len(), installed);
        assert!(installed > 100, "{installed}");
    }
}
