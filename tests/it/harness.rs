//! Starting real console and agent processes, and waiting on conditions with deadlines.
//!
//! The embedded broker cannot be stopped inside a process (rumqttd has no shutdown), so
//! every test runs the console as a child process with its own data dir and ports, and a
//! console restart is a real process restart on the same ports and data dir.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Path of a workspace binary next to the test executable (`target/<profile>/NAME`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo xtask ci`), \
         which builds the binaries first",
        path.display()
    );
    path
}

/// The whole end-to-end suite runs twice in CI: against the console's embedded broker,
/// and with `EDGEFLEET_TEST_BROKER=mosquitto` against a real Mosquitto the harness starts.
/// Tests about the embedded broker itself (its connect policy, client-id checks), and the
/// long fault scenarios that say nothing new about the broker, run on the first pass only.
pub fn external_broker() -> bool {
    std::env::var("EDGEFLEET_TEST_BROKER").is_ok_and(|v| v == "mosquitto")
}

/// A real Mosquitto (the Debian package) on a free loopback port, with a generated config
/// and persistence in its own directory, as an operator would run it.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
    starts: u32,
    listeners: String,
}

impl Mosquitto {
    /// `listeners` replaces the plain loopback listener when it is not empty (e.g. a TLS
    /// listener); `addr` is then the first `listener` line's port on 127.0.0.1.
    pub async fn start(dir: &Path, listeners: &str) -> Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = match listeners
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
        {
            Some(port) => port.parse().context("the listener line's port")?,
            None => free_port(),
        };
        let mut broker = Mosquitto {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            starts: 0,
            listeners: match listeners {
                "" => format!("listener {port} 127.0.0.1\n"),
                custom => custom.to_string(),
            },
        };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> Result<()> {
        let config = self.dir.join("mosquitto.conf");
        // `user root`: run as root (the tests do), it must not drop to a `mosquitto` user
        // that cannot write this directory. Agents present signed credentials that only
        // the console can check, so this broker admits anyone, like a broker whose
        // authentication is left to TLS client certificates or a plugin.
        std::fs::write(
            &config,
            format!(
                "user root\n{listeners}allow_anonymous true\n\
                 persistence true\npersistence_location {dir}/\nautosave_interval 1\n\
                 max_queued_messages 100000\nset_tcp_nodelay true\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n",
                listeners = self.listeners,
                dir = self.dir.display(),
            ),
        )?;
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("mosquitto-{}.log", self.starts)))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting mosquitto (apt install mosquitto; `cargo xtask install-deps`)")?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("mosquitto did not listen on {} within 10 s", self.addr)
    }

    /// The broker's process id while it runs (the scale bench samples its CPU).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("mosquitto-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// Kills Mosquitto with SIGKILL: no wills, like a crashed broker host.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and persistence.
    pub async fn restart(&mut self) -> Result<()> {
        self.spawn().await
    }
}

/// A free loopback port below Linux's ephemeral range (32768-60999). Hundreds of simulated
/// agents use ephemeral ports as client source ports, so a port taken from that range could
/// be grabbed by an outgoing connection between this check and the console's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1_000) as u16 * 12;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// Polls `check` until it returns `Some`, or fails the test after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presence timings for a test console.
#[derive(Debug, Clone)]
pub struct ConsoleOpts {
    pub heartbeat_interval: &'static str,
    pub restart_grace: &'static str,
    pub grace: &'static str,
    /// Extra TOML appended to the config file (whole tables, e.g. `[mqtt]`).
    pub extra_toml: String,
    /// The API is served over HTTPS (`extra_toml` sets the certificate): the harness then
    /// waits for the port and `admin.key` instead of `/healthz`, and makes no token.
    pub https: bool,
    /// Use a Mosquitto started by the harness even on the embedded pass (tests about the
    /// external-broker mode itself), with these listener lines ("" for plain loopback).
    /// When `extra_toml` has its own `[mqtt]` table, the harness writes none.
    pub mosquitto: Option<String>,
}

impl Default for ConsoleOpts {
    fn default() -> Self {
        ConsoleOpts {
            heartbeat_interval: "30s",
            restart_grace: "60s",
            grace: "2s",
            extra_toml: String::new(),
            https: false,
            mosquitto: None,
        }
    }
}

/// A console child process with its own data dir and ports.
#[derive(Debug)]
pub struct Console {
    child: Option<Child>,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub dir: PathBuf,
    opts: ConsoleOpts,
    starts: u32,
    /// The admin API key the console wrote on its first start.
    pub api_key: String,
    /// An auto-approve, unlimited enrollment token made on the first start.
    pub token: String,
    /// On the Mosquitto pass: the external broker this console (and its agents) use.
    pub broker: Option<Mosquitto>,
}

impl Console {
    pub async fn start(dir: &Path, opts: ConsoleOpts) -> Result<Console> {
        let broker = match (&opts.mosquitto, external_broker()) {
            (Some(listeners), _) => {
                Some(Mosquitto::start(&dir.join("mosquitto"), listeners).await?)
            }
            (None, true) => Some(Mosquitto::start(&dir.join("mosquitto"), "").await?),
            (None, false) => None,
        };
        let mut console = Console {
            child: None,
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            mqtt: match &broker {
                Some(b) => b.addr,
                None => SocketAddr::from(([127, 0, 0, 1], free_port())),
            },
            dir: dir.to_path_buf(),
            opts,
            starts: 0,
            api_key: String::new(),
            token: String::new(),
            broker,
        };
        console.spawn().await?;
        if console.opts.https {
            return Ok(console);
        }
        let created = console
            .send(
                "POST",
                "/api/tokens",
                r#"{"auto_approve": true, "expires": "never"}"#,
            )
            .await;
        console.token = created["token"].as_str().context("a token")?.to_string();
        Ok(console)
    }

    pub fn mqtt_url(&self) -> String {
        format!("mqtt://{}", self.mqtt)
    }

    async fn spawn(&mut self) -> Result<()> {
        let config = self.dir.join("console.toml");
        std::fs::create_dir_all(&self.dir)?;
        let external = match &self.broker {
            _ if self.opts.extra_toml.contains("[mqtt]") => String::new(),
            Some(b) => format!("[mqtt]\nexternal = \"mqtt://{}\"\n", b.addr),
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n\n[presence]\nheartbeat_interval = {hb:?}\ngrace = {grace:?}\nrestart_grace = {rg:?}\n\n{external}{extra}\n",
                data = self.dir.join("data"),
                hb = self.opts.heartbeat_interval,
                grace = self.opts.grace,
                rg = self.opts.restart_grace,
                extra = self.opts.extra_toml,
            ),
        )?;
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("console-{}.log", self.starts)))?;
        let mut command = Command::new(bin("edgefleet-console"));
        command
            .arg("--config")
            .arg(&config)
            .arg("--http")
            .arg(self.http.to_string());
        if self.broker.is_none() {
            command.arg("--mqtt").arg(self.mqtt.to_string());
        }
        let child = command
            .env("RUST_LOG", "info")
            // Keep the error itself at the end of the log, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting edgefleet-console")?;
        self.child = Some(child);
        let http = self.http;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let up = if self.opts.https {
                tokio::net::TcpStream::connect(http).await.is_ok()
                    && self.dir.join("data/admin.key").exists()
            } else {
                matches!(http_get(http, "/healthz", None).await, Ok((200, _)))
            };
            if up {
                let key = std::fs::read_to_string(self.dir.join("data/admin.key"))
                    .context("the console writes data/admin.key on first start")?;
                self.api_key = key.trim().to_string();
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "console exited early with {status}; log: {}",
                        self.log_tail()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "console did not answer /healthz within 20 s; log: {}",
            self.log_tail()
        )
    }

    /// Kills the console with SIGKILL (no goodbye) and starts it again on the same ports and
    /// data dir.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.kill().await;
        self.spawn().await
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.spawn().await
    }

    pub fn log_tail(&self) -> String {
        let path = self.dir.join(format!("console-{}.log", self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        text[text.floor_char_boundary(start)..].to_string()
    }

    /// GET a JSON document from the REST API; panics with the body on a non-200 answer.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = http_get(self.http, path, Some(&self.api_key))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {body}"))
    }

    /// A request with a JSON body; panics with the body on a non-2xx answer.
    pub async fn send(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, text) = http_request(self.http, method, path, Some(&self.api_key), body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {text}"
        );
        if text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: bad JSON {e}: {text}"))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        http_get(self.http, path, Some(&self.api_key))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// All agents, following the pages.
    pub async fn agents(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let doc = self
                .get(&format!("/api/agents?per_page=200&page={page}"))
                .await;
            let items = doc["items"].as_array().cloned().unwrap_or_default();
            let done = items.len() < 200;
            all.extend(items);
            if done {
                break;
            }
        }
        all
    }
}

/// A minimal HTTP/1.1 GET, enough for our own JSON API (`Connection: close`, body read to
/// the end). It keeps the test crate free of an HTTP client dependency.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    api_key: Option<&str>,
) -> Result<(u16, String)> {
    http_request(addr, "GET", path, api_key, "").await
}

/// A minimal HTTP/1.1 request with an optional JSON body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
    let auth = api_key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("response timed out")??;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()
        .context("bad status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// `POST /api/artifacts` with a binary body: (status, body).
pub async fn upload(console: &Console, bytes: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(console.http).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/artifacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                console.api_key,
                bytes.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk trailer")?;
    }
}

/// An agent child process (`edgefleet-agent run` or `simulate`).
#[derive(Debug)]
pub struct AgentProc {
    pub child: Child,
    pub dir: PathBuf,
}

impl AgentProc {
    /// `edgefleet-agent run` with its own data dir, enrolling with `token`, and a config
    /// file with the given extra TOML lines.
    pub fn run(dir: &Path, console_url: &str, token: &str, extra_toml: &str) -> Result<AgentProc> {
        AgentProc::run_bin(&bin("edgefleet-agent"), dir, console_url, token, extra_toml)
    }

    /// [`AgentProc::run`] with a given agent binary (the footprint bench measures the
    /// shipped `release-agent` build).
    pub fn run_bin(
        bin: &Path,
        dir: &Path,
        console_url: &str,
        token: &str,
        extra_toml: &str,
    ) -> Result<AgentProc> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "console_urls = [{console_url:?}]\ndata_dir = {data:?}\ntoken = {token:?}\n{extra_toml}\n",
                data = dir.join("data")
            ),
        )?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting edgefleet-agent run")?;
        Ok(AgentProc {
            child,
            dir: dir.to_path_buf(),
        })
    }

    /// `edgefleet-agent simulate --count N`.
    pub fn simulate(
        dir: &Path,
        console_url: &str,
        token: &str,
        count: usize,
        interval: &str,
    ) -> Result<AgentProc> {
        AgentProc::simulate_from(dir, console_url, token, 0, count, interval)
    }

    /// `edgefleet-agent simulate --first-index F --count N`: devices F to F+N-1.
    pub fn simulate_from(
        dir: &Path,
        console_url: &str,
        token: &str,
        first: usize,
        count: usize,
        interval: &str,
    ) -> Result<AgentProc> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("simulate.log"))?;
        let child = Command::new(bin("edgefleet-agent"))
            .args([
                "simulate",
                "--count",
                &count.to_string(),
                "--console",
                console_url,
            ])
            .args(["--interval", interval])
            .args(["--first-index", &first.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("EDGEFLEET_AGENT_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting edgefleet-agent simulate")?;
        Ok(AgentProc {
            child,
            dir: dir.to_path_buf(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("child still running") as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill(1) exists");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn log(&self) -> String {
        ["agent.log", "simulate.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect()
    }
}

/// Writes an app archive (`.tar.gz`) holding one `VERSION` file with `version`.
pub fn archive(path: &Path, version: &str) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let data = format!("{version}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "VERSION", data.as_bytes())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

// Helpers for the fault scenarios and the soak (tests/it/faults.rs).

impl Console {
    /// The console process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Every console log so far (one file per start), concatenated.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .filter_map(|n| std::fs::read_to_string(self.dir.join(format!("console-{n}.log"))).ok())
            .collect()
    }
}

/// Resident set size of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The sum of every series of the Prometheus metric `name` in `text` (labels ignored).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
