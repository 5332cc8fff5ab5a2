//! How the agent acts on managed apps: the [`ServiceManager`] trait, with `systemctl` on a
//! device ([`Systemd`]) and files in a directory for the simulator, the demo and tests
//! ([`Simulated`]). Apps need no changes: the agent only goes through the OS. Units come
//! from the agent's own config (`[[apps]]`), never from a command, and are passed to
//! `systemctl` as arguments, never through a shell.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_codec::{AppState, AppStatus};

/// A managed app as the agent acts on it (from `[[apps]]`, or the simulator's apps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedApp {
    pub id: String,
    pub unit: String,
    /// The config file push-config edits, and its format.
    pub config: Option<(PathBuf, edgefleet_config::ConfigFormat)>,
    /// Checked after a restart that follows a config push or update: a 2xx within 10 s.
    pub health_url: Option<String>,
    /// What update-app replaces.
    pub binary_dir: Option<PathBuf>,
    /// Where the app's version comes from, reported in birth and heartbeats.
    pub version: Option<VersionSource>,
}

/// Where an app's version is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// The first line of a file (`version_file`), e.g. `<binary_dir>/VERSION`.
    File(PathBuf),
    /// The first line of a command's stdout (`version_command`), run by `sh -c` with a
    /// 5 s limit. It comes from the local admin's config, never from the console.
    Command(String),
    /// A fixed version: the simulator's apps.
    Fixed(String),
}

/// Versions longer than this are cut; a version is a label, not a document.
const MAX_VERSION_LEN: usize = 64;

impl VersionSource {
    /// The version, or why it cannot be read (logged by the caller, reported as unknown).
    pub fn read(&self) -> Result<String, String> {
        let text = match self {
            VersionSource::Fixed(v) => v.clone(),
            VersionSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
            VersionSource::Command(cmd) => {
                let out =
                    run_with_timeout(Command::new("sh").args(["-c", cmd]), Duration::from_secs(5))?;
                if !out.status.success() {
                    return Err(format!(
                        "version command {cmd:?} exited with {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        let line = text.lines().map(str::trim).find(|l| !l.is_empty());
        match line {
            Some(l) => Ok(l.chars().take(MAX_VERSION_LEN).collect()),
            None => Err("the version source is empty".into()),
        }
    }
}

/// What the agent reports about one app right now: the service manager's status and the
/// version from its source. Blocking (it may run `systemctl` and the version command).
pub fn observe(services: &dyn ServiceManager, app: &ManagedApp) -> AppState {
    let version = app.version.as_ref().and_then(|src| {
        src.read()
            .inspect_err(|e| tracing::debug!(app = %app.id, error = %e, "no app version"))
            .ok()
    });
    AppState {
        id: app.id.clone(),
        status: services.status(&app.unit),
        version,
    }
}

/// Keeps the managed apps' observed states fresh off the session task: a poll every
/// `every`, and one at once after [`AppWatch::refresh`] (after a command touched an app).
#[derive(Debug, Clone)]
pub struct AppWatch {
    states: tokio::sync::watch::Receiver<Vec<AppState>>,
    poke: std::sync::Arc<tokio::sync::Notify>,
}

impl AppWatch {
    /// Starts the poller; it ends with `shutdown`. Until its first poll completes the apps
    /// are reported with status unknown.
    pub fn spawn(
        services: std::sync::Arc<dyn ServiceManager>,
        apps: Vec<ManagedApp>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> AppWatch {
        let initial = apps
            .iter()
            .map(|a| AppState {
                id: a.id.clone(),
                status: AppStatus::Unknown,
                version: None,
            })
            .collect();
        let (tx, states) = tokio::sync::watch::channel(initial);
        let poke = std::sync::Arc::new(tokio::sync::Notify::new());
        if !apps.is_empty() {
            let poke = poke.clone();
            tokio::spawn(async move {
                let apps = std::sync::Arc::new(apps);
                loop {
                    let (s, a) = (services.clone(), apps.clone());
                    let observed = tokio::task::spawn_blocking(move || {
                        a.iter().map(|app| observe(&*s, app)).collect::<Vec<_>>()
                    })
                    .await;
                    if let Ok(observed) = observed {
                        tx.send_if_modified(|cur| {
                            let changed = *cur != observed;
                            *cur = observed;
                            changed
                        });
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                        _ = poke.notified() => {}
                    }
                }
            });
        }
        AppWatch { states, poke }
    }

    /// The latest observed states, in config order.
    pub fn states(&self) -> Vec<AppState> {
        self.states.borrow().clone()
    }

    /// Resolves when the observed states change (never, for an agent without apps).
    pub async fn changed(&mut self) {
        if self.states.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Asks for a fresh poll now.
    pub fn refresh(&self) {
        self.poke.notify_one();
    }
}

impl ManagedApp {
    pub fn from_config(a: &edgefleet_config::AppConfig) -> ManagedApp {
        ManagedApp {
            id: a.id.clone(),
            unit: a.unit.clone(),
            config: a.config_path.clone().zip(a.format()),
            health_url: a.health_url.clone(),
            binary_dir: a.binary_dir.clone(),
            version: match (&a.version_file, &a.version_command) {
                (Some(f), _) => Some(VersionSource::File(f.clone())),
                (None, Some(c)) => Some(VersionSource::Command(c.clone())),
                (None, None) => None,
            },
        }
    }
}

pub trait ServiceManager: Send + Sync + std::fmt::Debug {
    /// Restarts `unit`; the error says what failed, with the tool's own message.
    fn restart(&self, unit: &str) -> Result<(), String>;
    fn stop(&self, unit: &str) -> Result<(), String>;
    fn start(&self, unit: &str) -> Result<(), String>;
    fn status(&self, unit: &str) -> AppStatus;
}

/// `systemctl` as a subprocess, with a timeout; exit status and stderr are reported.
#[derive(Debug, Clone)]
pub struct Systemd {
    pub timeout: Duration,
}

impl Default for Systemd {
    fn default() -> Self {
        Systemd {
            timeout: Duration::from_secs(90),
        }
    }
}

impl Systemd {
    fn run(&self, args: &[&str]) -> Result<std::process::Output, String> {
        run_with_timeout(Command::new("systemctl").args(args), self.timeout).map_err(|e| {
            if e == "not found" {
                "systemctl not found: this host does not run systemd".to_string()
            } else {
                format!("systemctl {}: {e}", args.join(" "))
            }
        })
    }
}

/// Runs `cmd` with no stdin, capturing stdout and stderr, killed after `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => format!("cannot start: {e}"),
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading its output: {e}"))
}

impl Systemd {
    fn verb(&self, verb: &str, unit: &str) -> Result<(), String> {
        let out = self.run(&[verb, "--", unit])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "systemctl {verb} {unit} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl ServiceManager for Systemd {
    fn restart(&self, unit: &str) -> Result<(), String> {
        self.verb("restart", unit)
    }

    fn stop(&self, unit: &str) -> Result<(), String> {
        self.verb("stop", unit)
    }

    fn start(&self, unit: &str) -> Result<(), String> {
        self.verb("start", unit)
    }

    fn status(&self, unit: &str) -> AppStatus {
        match self.run(&["is-active", "--", unit]) {
            Ok(out) => parse_is_active(&String::from_utf8_lossy(&out.stdout)),
            Err(_) => AppStatus::Unknown,
        }
    }
}

/// GET `url` (plain `http://` only), healthy on a 2xx within 10 s.
pub async fn check_health(url: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("health_url {url:?}: only http:// is supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("health check {url}: {e}"))?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("health check {url}: {e}"))?;
        let mut head = [0u8; 64];
        let n = stream
            .read(&mut head)
            .await
            .map_err(|e| format!("health check {url}: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]).to_string();
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("health check {url}: not an HTTP answer"))?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("health check {url} answered {code}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), check)
        .await
        .map_err(|_| format!("health check {url} timed out after 10 s"))?
}

/// `systemctl is-active` prints one word.
pub fn parse_is_active(stdout: &str) -> AppStatus {
    match stdout.trim() {
        "active" | "reloading" => AppStatus::Active,
        "inactive" | "deactivating" => AppStatus::Inactive,
        "failed" => AppStatus::Failed,
        "activating" => AppStatus::Activating,
        _ => AppStatus::Unknown,
    }
}

/// Apps as files in a directory: `<unit>.state` holds active/inactive/failed (absent means
/// active), `<unit>.restarts` counts restarts, and a `<unit>.fail` file makes the next
/// restarts fail with its content as the error (failure injection for tests and demos).
#[derive(Debug, Clone)]
pub struct Simulated {
    dir: PathBuf,
}

impl Simulated {
    pub fn new(dir: PathBuf) -> Simulated {
        Simulated { dir }
    }

    fn file(&self, unit: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{unit}.{ext}"))
    }

    /// How often `unit` was restarted successfully.
    pub fn restarts(&self, unit: &str) -> u64 {
        std::fs::read_to_string(self.file(unit, "restarts"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Makes restarts of `unit` fail with `reason` (or succeed again with `None`).
    pub fn inject_failure(&self, unit: &str, reason: Option<&str>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        match reason {
            Some(r) => std::fs::write(self.file(unit, "fail"), r),
            None => match std::fs::remove_file(self.file(unit, "fail")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

impl ServiceManager for Simulated {
    fn restart(&self, unit: &str) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        // A real restart takes a moment.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(reason) = std::fs::read_to_string(self.file(unit, "fail")) {
            let _ = std::fs::write(self.file(unit, "state"), "failed");
            return Err(format!(
                "Job for {unit} failed (simulated): {}",
                reason.trim()
            ));
        }
        std::fs::write(self.file(unit, "state"), "active").map_err(|e| e.to_string())?;
        let n = self.restarts(unit) + 1;
        std::fs::write(self.file(unit, "restarts"), n.to_string()).map_err(|e| e.to_string())
    }

    fn stop(&self, unit: &str) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        std::fs::write(self.file(unit, "state"), "inactive").map_err(|e| e.to_string())
    }

    fn start(&self, unit: &str) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        if let Ok(reason) = std::fs::read_to_string(self.file(unit, "fail")) {
            let _ = std::fs::write(self.file(unit, "state"), "failed");
            return Err(format!(
                "Job for {unit} failed (simulated): {}",
                reason.trim()
            ));
        }
        std::fs::write(self.file(unit, "state"), "active").map_err(|e| e.to_string())
    }

    fn status(&self, unit: &str) -> AppStatus {
        match std::fs::read_to_string(self.file(unit, "state")) {
            Ok(s) => parse_is_active(&s),
            Err(_) => AppStatus::Active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_restarts_count_and_injected_failures_fail() {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulated::new(dir.path().join("apps"));
        assert_eq!(sim.status("web.service"), AppStatus::Active);
        sim.restart("web.service").unwrap();
        assert_eq!(sim.restarts("web.service"), 1);
        sim.inject_failure("web.service", Some("port 80 in use"))
            .unwrap();
        let err = sim.restart("web.service").unwrap_err();
        assert!(err.contains("port 80 in use"), "{err}");
        assert_eq!(sim.status("web.service"), AppStatus::Failed);
        assert_eq!(sim.restarts("web.service"), 1);
        sim.inject_failure("web.service", None).unwrap();
        sim.restart("web.service").unwrap();
        assert_eq!(sim.status("web.service"), AppStatus::Active);
    }

    #[test]
    fn versions_come_from_a_file_a_command_or_are_fixed_and_failures_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("VERSION");
        std::fs::write(&file, "\n  2.4.1-rc1  \nignored\n").unwrap();
        assert_eq!(
            VersionSource::File(file.clone()).read().unwrap(),
            "2.4.1-rc1"
        );
        assert_eq!(
            VersionSource::Command("echo 7.0; echo junk".into())
                .read()
                .unwrap(),
            "7.0"
        );
        assert_eq!(VersionSource::Fixed("1.2".into()).read().unwrap(), "1.2");
        std::fs::write(&file, "x".repeat(500)).unwrap();
        assert_eq!(VersionSource::File(file).read().unwrap().len(), 64);
        let err = VersionSource::File(dir.path().join("missing"))
            .read()
            .unwrap_err();
        assert!(err.contains("missing"), "{err}");
        let err = VersionSource::Command("echo nope >&2; exit 3".into())
            .read()
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
        assert!(VersionSource::Command("true".into()).read().is_err());
    }

    #[tokio::test]
    async fn the_app_watch_reports_status_and_version_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let sim = std::sync::Arc::new(Simulated::new(dir.path().join("apps")));
        let version = dir.path().join("VERSION");
        std::fs::write(&version, "1.0\n").unwrap();
        let app = ManagedApp {
            id: "web".into(),
            unit: "web.service".into(),
            config: None,
            health_url: None,
            binary_dir: None,
            version: Some(VersionSource::File(version.clone())),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let mut watch = AppWatch::spawn(
            sim.clone(),
            vec![app],
            Duration::from_secs(3600),
            stop.clone(),
        );
        assert_eq!(watch.states()[0].status, AppStatus::Unknown);
        watch.changed().await;
        assert_eq!(
            watch.states(),
            vec![AppState {
                id: "web".into(),
                status: AppStatus::Active,
                version: Some("1.0".into())
            }]
        );
        std::fs::write(&version, "1.1\n").unwrap();
        sim.stop("web.service").unwrap();
        watch.refresh();
        watch.changed().await;
        assert_eq!(watch.states()[0].status, AppStatus::Inactive);
        assert_eq!(watch.states()[0].version.as_deref(), Some("1.1"));
        stop.cancel();
    }

    #[test]
    fn is_active_words_map_to_statuses() {
        assert_eq!(parse_is_active("active\n"), AppStatus::Active);
        assert_eq!(parse_is_active("failed"), AppStatus::Failed);
        assert_eq!(parse_is_active("inactive"), AppStatus::Inactive);
        assert_eq!(parse_is_active("activating"), AppStatus::Activating);
        assert_eq!(parse_is_active("bogus"), AppStatus::Unknown);
    }

    #[test]
    fn systemd_errors_name_the_unit_or_the_missing_tool() {
        let systemd = Systemd {
            timeout: Duration::from_secs(10),
        };
        // On a machine without systemd (like CI's container) the error says so; with
        // systemd, restarting a unit that does not exist fails with systemctl's message.
        let err = systemd
            .restart("edgefleet-no-such-unit-0a7c.service")
            .unwrap_err();
        assert!(
            err.contains("systemctl not found")
                || err.contains("edgefleet-no-such-unit-0a7c.service"),
            "{err}"
        );
        assert_ne!(
            systemd.status("edgefleet-no-such-unit-0a7c.service"),
            AppStatus::Active
        );
    }
}
