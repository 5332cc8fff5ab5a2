//! How the agent acts on managed apps: the [`ServiceManager`] trait, with `systemctl` on a
//! device ([`Systemd`]) and files in a directory for the simulator, the demo and tests
//! ([`Simulated`]). Apps need no changes: the agent only goes through the OS. Units come
//! from the agent's own config (`[[apps]]`), never from a command, and are passed to
//! `systemctl` as arguments, never through a shell.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_codec::AppStatus;

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
}

impl ManagedApp {
    pub fn from_config(a: &edgefleet_config::AppConfig) -> ManagedApp {
        ManagedApp {
            id: a.id.clone(),
            unit: a.unit.clone(),
            config: a.config_path.clone().zip(a.format()),
            health_url: a.health_url.clone(),
            binary_dir: a.binary_dir.clone(),
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
        let mut child = Command::new("systemctl")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "systemctl not found: this host does not run systemd".to_string()
                }
                _ => format!("cannot run systemctl: {e}"),
            })?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "systemctl {} timed out after {} s",
                        args.join(" "),
                        self.timeout.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for systemctl: {e}")),
            }
        }
        child
            .wait_with_output()
            .map_err(|e| format!("reading systemctl output: {e}"))
    }
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
