//! `edgefleet`: the operator CLI, talking to the console's REST API over HTTP or HTTPS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgefleet_codec::api::{
    AgentDetail, AgentPage, AgentSummary, AlertPage, ApiErrorBody, ApiKeyCreate, ApiKeyCreated,
    ApiKeyView, ArtifactView, AuditPage, AuditVerify, CommandRequest, CommandView, ConfigScalar,
    FleetSummary, LiveBody, LiveEvent, SilenceCreate, SilenceUntil, SilenceView, TokenCreate,
    TokenCreated, TokenView,
};

#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, about = "EdgeFleet operator CLI")]
struct Args {
    /// Console API: `host:port` (plain HTTP), `http://host:port` or `https://host:port`.
    #[arg(long, default_value = "127.0.0.1:8080", env = "EDGEFLEET_CONSOLE")]
    console: String,
    /// API key (the console writes the first admin key to <data_dir>/admin.key).
    #[arg(long, env = "EDGEFLEET_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA that signs the console's HTTPS certificate (default: the system CA bundle).
    #[arg(long, env = "EDGEFLEET_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agents: list, show, approve, revoke, delete.
    Agents {
        #[command(subcommand)]
        command: AgentsCmd,
    },
    /// Fleet summary.
    Fleet,
    /// Enrollment tokens (admin).
    Tokens {
        #[command(subcommand)]
        command: TokensCmd,
    },
    /// API keys (admin).
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
    /// Managed apps on an agent (operator).
    Apps {
        #[command(subcommand)]
        command: AppsCmd,
    },
    /// Remote commands.
    Commands {
        #[command(subcommand)]
        command: CommandsCmd,
    },
    /// Alerts, newest first.
    Alerts {
        /// firing or resolved.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Silence notifications for an agent and/or a rule (operator).
    Silence {
        #[arg(long)]
        agent: Option<String>,
        /// agent-offline, agent-flapping, stale, hotspot-cpu, hotspot-mem, hotspot-disk.
        #[arg(long)]
        rule: Option<String>,
        /// How long, e.g. 2h.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Follow the live event stream (status, vitals, alerts, audit) until interrupted.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The audit log, newest first.
    Audit {
        /// Only entries about this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only the newest N entries.
        #[arg(long)]
        last: Option<usize>,
        /// Only this action (approve, command, command_result, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only entries since a time: unix ms, or a duration back such as 24h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        /// Walk the hash chain and report whether it verifies.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsCmd {
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        q: Option<String>,
    },
    Show {
        id: String,
    },
    /// Approve a pending agent (admin).
    Approve {
        id: String,
    },
    /// Revoke an agent: it is refused at connect from now on (admin).
    Revoke {
        id: String,
    },
    /// Soft-delete a host: hidden, record kept for audit (admin).
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppsCmd {
    /// Restart a managed app (systemctl restart, then is-active).
    Restart {
        agent: String,
        app: String,
        /// Follow the command until it finishes; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// How long the command may wait for an offline agent (default 1h).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Update an app: the agent downloads the archive (resuming cut downloads), checks its
    /// SHA-256, swaps the app's binary_dir, starts it, and rolls back if it is unhealthy.
    Update {
        agent: String,
        app: String,
        #[arg(long)]
        version: String,
        /// An http:// URL, or a local .tar.gz file that is uploaded to the console first.
        #[arg(long)]
        artifact: String,
        /// Hex SHA-256 of the archive (computed for a local file).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        expires: Option<String>,
    },
    /// Push config values (dotted keys) into an app's config file; the app is restarted and
    /// the previous file restored if it does not come back healthy.
    Config {
        agent: String,
        app: String,
        /// key=value, repeatable, e.g. --set log.level=debug --set port=9090.
        #[arg(long = "set", required = true, value_parser = parse_setting)]
        set: Vec<(String, ConfigScalar)>,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        expires: Option<String>,
    },
}

/// `key=value` for `apps config --set`: true/false, integers and numbers keep their type,
/// anything else is a string (quotes are stripped).
fn parse_setting(text: &str) -> Result<(String, ConfigScalar), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected key=value"))?;
    let v = v.trim();
    let value = if v == "true" || v == "false" {
        ConfigScalar::Bool(v == "true")
    } else if let Ok(n) = v.parse::<i64>() {
        ConfigScalar::Int(n)
    } else if let Ok(f) = v.parse::<f64>() {
        ConfigScalar::Float(f)
    } else {
        ConfigScalar::Str(v.trim_matches('"').to_string())
    };
    Ok((k.trim().to_string(), value))
}

#[derive(Debug, Subcommand)]
enum CommandsCmd {
    /// A command's state, progress and result.
    Status {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// An agent's commands, newest first.
    List { agent: String },
}

#[derive(Debug, Subcommand)]
enum TokensCmd {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// Agents enrolling with it become active without approval.
        #[arg(long)]
        auto_approve: bool,
        /// Lifetime such as 7d or 12h, or `never` (default 7d).
        #[arg(long)]
        expires: Option<String>,
        /// How many agents may enroll with it (default unlimited).
        #[arg(long)]
        uses: Option<u32>,
    },
    List,
    /// Revoke a token by id (the second part of the token).
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create an API key and print its secret (the only time it is shown).
    Create {
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    List,
    Delete {
        name: String,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match &args.command {
        Cmd::Fleet => {
            let s: FleetSummary = get(&args, "/api/fleet/summary")?;
            println!(
                "{} agents: {} online ({}%), {} offline, {} stale, {} pending",
                s.total, s.online, s.percent_online, s.offline, s.stale, s.pending
            );
            println!(
                "hotspots: cpu {} mem {} disk {}",
                s.hotspots.cpu, s.hotspots.mem, s.hotspots.disk
            );
            for os in s.os {
                println!("  {:>5}  {}", os.count, os.os);
            }
        }
        Cmd::Agents {
            command: AgentsCmd::List { status, q },
        } => {
            let mut path = "/api/agents?per_page=200".to_string();
            if let Some(s) = status {
                path.push_str(&format!("&status={}", encode(s)));
            }
            if let Some(q) = q {
                path.push_str(&format!("&q={}", encode(q)));
            }
            let page: AgentPage = get(&args, &path)?;
            println!(
                "{:<16}  {:<8}  {:<24}  {:>4} {:>4} {:>4}  OS",
                "ID", "STATUS", "HOSTNAME", "CPU", "MEM", "DISK"
            );
            for a in &page.items {
                let pct = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<16}  {:<8}  {:<24}  {:>4} {:>4} {:>4}  {}",
                    a.id,
                    a.status.as_str(),
                    a.hostname.as_deref().unwrap_or("-"),
                    pct(a.cpu),
                    pct(a.mem),
                    pct(a.disk),
                    a.os.as_deref().unwrap_or("-")
                );
            }
            println!("{} of {} agents", page.items.len(), page.total);
        }
        Cmd::Agents {
            command: AgentsCmd::Show { id },
        } => {
            let d: AgentDetail = get(&args, &format!("/api/agents/{}", encode(id)))?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        Cmd::Agents {
            command: AgentsCmd::Approve { id },
        } => {
            let a: AgentSummary = send(
                &args,
                "POST",
                &format!("/api/agents/{}/approve", encode(id)),
                None,
            )?;
            println!(
                "approved {} ({}): now {}",
                a.id,
                a.hostname.as_deref().unwrap_or("-"),
                a.status.as_str()
            );
        }
        Cmd::Agents {
            command: AgentsCmd::Revoke { id },
        } => {
            let a: AgentSummary = send(
                &args,
                "POST",
                &format!("/api/agents/{}/revoke", encode(id)),
                None,
            )?;
            println!(
                "revoked {} ({})",
                a.id,
                a.hostname.as_deref().unwrap_or("-")
            );
        }
        Cmd::Agents {
            command: AgentsCmd::Delete { id },
        } => {
            request(
                &args,
                "DELETE",
                &format!("/api/agents/{}", encode(id)),
                None,
            )?;
            println!("deleted {id} (the record is kept for audit)");
        }
        Cmd::Tokens {
            command:
                TokensCmd::Create {
                    auto_approve,
                    expires,
                    uses,
                },
        } => {
            let body = serde_json::to_string(&TokenCreate {
                auto_approve: *auto_approve,
                expires: expires.clone(),
                uses: *uses,
            })?;
            let t: TokenCreated = send(&args, "POST", "/api/tokens", Some(&body))?;
            println!("{}", t.token);
            eprintln!(
                "token {}: {}, expires {}, uses {}. It is shown only now; put it in the agent config as `token`.",
                t.view.id,
                if t.view.auto_approve { "auto-approve" } else { "agents wait for approval" },
                t.view.expires_at.map(format_ms).unwrap_or_else(|| "never".into()),
                t.view.max_uses.map(|u| u.to_string()).unwrap_or_else(|| "unlimited".into()),
            );
        }
        Cmd::Tokens {
            command: TokensCmd::List,
        } => {
            let tokens: Vec<TokenView> = get(&args, "/api/tokens")?;
            println!(
                "{:<8}  {:<8}  {:<12}  {:>9}  {:<20}  CREATED BY",
                "ID", "STATE", "APPROVAL", "USES", "EXPIRES"
            );
            for t in tokens {
                println!(
                    "{:<8}  {:<8}  {:<12}  {:>9}  {:<20}  {}",
                    t.id,
                    t.state,
                    if t.auto_approve { "auto" } else { "manual" },
                    format!(
                        "{}/{}",
                        t.uses,
                        t.max_uses
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into())
                    ),
                    t.expires_at
                        .map(format_ms)
                        .unwrap_or_else(|| "never".into()),
                    t.created_by
                );
            }
        }
        Cmd::Tokens {
            command: TokensCmd::Revoke { id },
        } => {
            let t: TokenView = send(
                &args,
                "DELETE",
                &format!("/api/tokens/{}", encode(id)),
                None,
            )?;
            println!("token {} is {}", t.id, t.state);
        }
        Cmd::Keys {
            command: KeysCmd::Create { name, role },
        } => {
            let body = serde_json::to_string(&ApiKeyCreate {
                name: name.clone(),
                role: role.clone(),
            })?;
            let k: ApiKeyCreated = send(&args, "POST", "/api/keys", Some(&body))?;
            println!("{}", k.secret);
            eprintln!(
                "API key {:?} ({}). It is shown only now.",
                k.view.name, k.view.role
            );
        }
        Cmd::Keys {
            command: KeysCmd::List,
        } => {
            let keys: Vec<ApiKeyView> = get(&args, "/api/keys")?;
            for k in keys {
                println!("{:<24}  {:<8}  {}", k.name, k.role, format_ms(k.created_at));
            }
        }
        Cmd::Keys {
            command: KeysCmd::Delete { name },
        } => {
            request(
                &args,
                "DELETE",
                &format!("/api/keys/{}", encode(name)),
                None,
            )?;
            println!("deleted API key {name:?}");
        }
        Cmd::Apps {
            command:
                AppsCmd::Restart {
                    agent,
                    app,
                    wait,
                    expires,
                },
        } => {
            let body = serde_json::to_string(&CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                ..Default::default()
            })?;
            send_app_command(&args, agent, "restart-app", &body, *wait)?;
        }
        Cmd::Apps {
            command:
                AppsCmd::Config {
                    agent,
                    app,
                    set,
                    wait,
                    expires,
                },
        } => {
            let body = serde_json::to_string(&CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                values: set.iter().cloned().collect(),
                ..Default::default()
            })?;
            send_app_command(&args, agent, "push-config", &body, *wait)?;
        }
        Cmd::Apps {
            command:
                AppsCmd::Update {
                    agent,
                    app,
                    version,
                    artifact,
                    sha256,
                    wait,
                    expires,
                },
        } => {
            let (url, sha) = if artifact.starts_with("http://") {
                let Some(sha) = sha256.clone() else {
                    bail!("--sha256 is required with an artifact URL");
                };
                (artifact.clone(), sha)
            } else {
                let bytes = std::fs::read(artifact)
                    .with_context(|| format!("reading the artifact {artifact}"))?;
                let answer = request_bytes(&args, "POST", "/api/artifacts", &bytes)?;
                let stored: ArtifactView = serde_json::from_str(&answer)?;
                if let Some(expected) = sha256 {
                    if !expected.eq_ignore_ascii_case(&stored.sha256) {
                        bail!("{artifact} has sha256 {}, not {expected}", stored.sha256);
                    }
                }
                let base = if args.console.contains("://") {
                    args.console.trim_end_matches('/').to_string()
                } else {
                    format!("http://{}", args.console)
                };
                println!(
                    "uploaded {artifact}: {} bytes, sha256 {}",
                    stored.size, stored.sha256
                );
                (format!("{base}{}", stored.path), stored.sha256)
            };
            let body = serde_json::to_string(&CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                url: Some(url),
                version: Some(version.clone()),
                sha256: Some(sha),
                ..Default::default()
            })?;
            send_app_command(&args, agent, "update-app", &body, *wait)?;
        }
        Cmd::Commands {
            command: CommandsCmd::Status { id, wait },
        } => {
            if *wait {
                follow_command(&args, id)?;
            } else {
                let c: CommandView = get(&args, &format!("/api/commands/{}", encode(id)))?;
                println!("{}", serde_json::to_string_pretty(&c)?);
            }
        }
        Cmd::Commands {
            command: CommandsCmd::List { agent },
        } => {
            let list: Vec<CommandView> =
                get(&args, &format!("/api/agents/{}/commands", encode(agent)))?;
            for c in list {
                println!(
                    "{}  {:<18}  {:<12}  {:<10}  {}  {}",
                    c.id,
                    c.action,
                    c.app.as_deref().unwrap_or("-"),
                    c.state,
                    format_ms(c.issued_at),
                    c.message.as_deref().unwrap_or("")
                );
            }
        }
        Cmd::Alerts { state, agent } => {
            let mut path = "/api/alerts?per_page=50".to_string();
            if let Some(s) = state {
                path.push_str(&format!("&state={}", encode(s)));
            }
            if let Some(a) = agent {
                path.push_str(&format!("&agent={}", encode(a)));
            }
            let p: AlertPage = get(&args, &path)?;
            for a in &p.items {
                println!(
                    "{:>5}  {:<8}  {:<14}  {:<16}  {:<20}  {}{}",
                    a.id,
                    format!("{:?}", a.state).to_lowercase(),
                    a.rule,
                    a.agent,
                    format_ms(a.started_at),
                    a.cause,
                    if a.silenced { " (silenced)" } else { "" }
                );
            }
            println!("{} of {} alerts", p.items.len(), p.total);
        }
        Cmd::Silence {
            agent,
            rule,
            duration,
            reason,
        } => {
            let body = serde_json::to_string(&SilenceCreate {
                agent: agent.clone(),
                rule: rule.clone(),
                until: SilenceUntil::For(duration.clone()),
                reason: reason.clone(),
            })?;
            let s: SilenceView = send(&args, "POST", "/api/silences", Some(&body))?;
            println!(
                "silence {} until {} (agent {}, rule {})",
                s.id,
                format_ms(s.until),
                s.agent.as_deref().unwrap_or("all"),
                s.rule.as_deref().unwrap_or("all")
            );
        }
        Cmd::Events { json } => follow_events(&args, *json)?,
        Cmd::Audit {
            agent,
            last,
            action,
            since,
            page,
            verify,
        } => {
            if *verify {
                let v: AuditVerify = get(&args, "/api/audit/verify")?;
                match v.broken_at {
                    None => println!("audit chain verifies: {} entries", v.entries),
                    Some(seq) => bail!(
                        "audit chain is broken at entry {seq} ({} entries verify before it)",
                        v.entries
                    ),
                }
                return Ok(());
            }
            let mut path = format!("/api/audit?per_page=50&page={page}");
            if let Some(a) = agent {
                path.push_str(&format!("&agent={}", encode(a)));
            }
            if let Some(n) = last {
                path.push_str(&format!("&last={n}"));
            }
            if let Some(a) = action {
                path.push_str(&format!("&action={}", encode(a)));
            }
            if let Some(s) = since {
                path.push_str(&format!("&since={}", encode(s)));
            }
            let p: AuditPage = get(&args, &path)?;
            for e in &p.items {
                println!(
                    "{:>6}  {}  {:<12}  {:<14}  {:<16}  {}",
                    e.seq,
                    format_ms(e.at),
                    e.actor,
                    e.action,
                    e.target.as_deref().unwrap_or("-"),
                    e.detail
                );
            }
            println!("{} of {} entries (page {})", p.items.len(), p.total, p.page);
        }
    }
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn get<T: serde::de::DeserializeOwned>(args: &Args, path: &str) -> Result<T> {
    send(args, "GET", path, None)
}

/// A request whose answer is JSON of type `T`.
fn send<T: serde::de::DeserializeOwned>(
    args: &Args,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<T> {
    let answer = request(args, method, path, body)?;
    serde_json::from_str(&answer).with_context(|| format!("unexpected answer from {path}"))
}

/// One HTTP/1.1 request over plain TCP or TLS (rustls), `Connection: close`. A non-2xx
/// answer becomes an error carrying the console's message.
fn request(args: &Args, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    request_bytes(args, method, path, body.unwrap_or("").as_bytes())
}

fn request_bytes(args: &Args, method: &str, path: &str, body: &[u8]) -> Result<String> {
    let (mut stream, authority, key) = open(args, Some(Duration::from_secs(120)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .context("sending the request (TLS handshake included)")?;
    let mut raw = Vec::new();
    read_all(&mut stream, &mut raw)?;
    let raw = String::from_utf8(raw).context("the console's answer is not UTF-8")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<ApiErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        bail!("console answered {status}: {msg}");
    }
    Ok(body)
}

/// Sends one app command, prints its id and state, and follows it with `--wait`.
fn send_app_command(args: &Args, agent: &str, action: &str, body: &str, wait: bool) -> Result<()> {
    let c: CommandView = send(
        args,
        "POST",
        &format!("/api/agents/{}/{action}", encode(agent)),
        Some(body),
    )?;
    println!("command {} {}", c.id, c.state);
    if wait {
        follow_command(args, &c.id)?;
    }
    Ok(())
}

/// Polls a command until it finishes, printing each new progress step; an error unless it
/// succeeded.
fn follow_command(args: &Args, id: &str) -> Result<()> {
    let mut shown = 0;
    let mut last_state = String::new();
    loop {
        let c: CommandView = get(args, &format!("/api/commands/{}", encode(id)))?;
        for step in c.progress.iter().skip(shown) {
            println!("  {}  {}", format_ms(step.at), step.step);
        }
        shown = c.progress.len();
        if c.state != last_state {
            println!("  state: {}", c.state);
            last_state = c.state.clone();
        }
        match c.state.as_str() {
            "succeeded" => {
                println!("{}", c.message.unwrap_or_default());
                return Ok(());
            }
            "failed" | "rolled_back" | "rejected" | "expired" => bail!(
                "command {} {}: {}",
                c.id,
                c.state,
                c.message.unwrap_or_default()
            ),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A connection to the console, plain or TLS.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Connects to `--console` (TLS for `https://`); returns the stream, the authority for the
/// Host header, and the API key.
fn open(args: &Args, read_timeout: Option<Duration>) -> Result<(Box<dyn Conn>, String, String)> {
    let Some(key) = args.api_key.clone() else {
        bail!("no API key: pass --api-key or set EDGEFLEET_API_KEY (the console wrote its first admin key to <data_dir>/admin.key)");
    };
    let (tls, authority) = match args.console.split_once("://") {
        Some(("https", rest)) => (true, rest.trim_end_matches('/')),
        Some(("http", rest)) => (false, rest.trim_end_matches('/')),
        Some((scheme, _)) => bail!("--console: unsupported scheme {scheme:?} (use http or https)"),
        None => (false, args.console.as_str()),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let tcp = TcpStream::connect(&addr)
        .with_context(|| format!("connecting to the console at {addr}"))?;
    tcp.set_read_timeout(read_timeout)?;
    if !tls {
        return Ok((Box::new(tcp), authority.to_string(), key));
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
    let conn = rustls::ClientConnection::new(Arc::new(client_tls(args)?), name)?;
    Ok((
        Box::new(rustls::StreamOwned::new(conn, tcp)),
        authority.to_string(),
        key,
    ))
}

/// Follows `GET /api/events` until the console ends the stream. Prints one line per event:
/// the JSON with `--json`, else a short human line.
fn follow_events(args: &Args, json: bool) -> Result<()> {
    use std::io::BufRead;
    let (mut stream, authority, key) = open(args, None)?;
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status")?;
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        chunked |= line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    if status != 200 {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        let body = if chunked {
            dechunk(&body).unwrap_or(body)
        } else {
            body
        };
        let msg = serde_json::from_str::<ApiErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        bail!("console answered {status}: {msg}");
    }
    // Undo the chunked framing as it arrives, then split SSE events on blank lines.
    let mut pending = String::new();
    let mut data = String::new();
    loop {
        let text = if chunked {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
            if size == 0 {
                return Ok(());
            }
            let mut buf = vec![0u8; size + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(size);
            String::from_utf8(buf).context("event stream is not UTF-8")?
        } else {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            line.clone()
        };
        pending.push_str(&text);
        while let Some(end) = pending.find('\n') {
            let l: String = pending.drain(..=end).collect();
            let l = l.trim_end_matches(['\r', '\n']);
            if let Some(d) = l.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if l.is_empty() && !data.is_empty() {
                print_event(&data, json);
                data.clear();
            }
        }
    }
}

fn print_event(data: &str, json: bool) {
    if json {
        println!("{data}");
        return;
    }
    let Ok(e) = serde_json::from_str::<LiveEvent>(data) else {
        println!("{data}");
        return;
    };
    let what = match &e.body {
        LiveBody::Status {
            agent,
            status,
            cause,
        } => {
            format!("status  {agent} {} ({cause:?})", status.as_str())
        }
        LiveBody::Vitals {
            agent,
            cpu,
            mem,
            disk,
        } => {
            format!("vitals  {agent} cpu {cpu}% mem {mem}% disk {disk}%")
        }
        LiveBody::Alert { alert } => format!(
            "alert   {} {:?} {} {}: {}",
            alert.id, alert.state, alert.rule, alert.agent, alert.cause
        ),
        LiveBody::Audit { entry } => format!(
            "audit   {} {} {} {}",
            entry.actor,
            entry.action,
            entry.target.as_deref().unwrap_or("-"),
            entry.detail
        ),
        LiveBody::Command { command } => format!(
            "command {} {} {} {}{}",
            command.id,
            command.agent,
            command.action,
            command.state,
            command
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        LiveBody::Reset => "reset   (missed events; reload from the API)".to_string(),
    };
    println!("{}  {what}", format_ms(e.at));
}

/// Reads to the end; a TLS peer that closes without close_notify still gave a full answer
/// under `Connection: close`.
fn read_all(stream: &mut impl Read, raw: &mut Vec<u8>) -> Result<()> {
    match stream.read_to_end(raw) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        Err(e) => Err(e).context("reading the console's answer"),
    }
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

/// Trusts `--ca-file`, or else the system CA bundle.
fn client_tls(args: &Args) -> Result<rustls::ClientConfig> {
    let path = args
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let file = std::fs::File::open(&path).with_context(|| {
        format!("opening the CA file {} (pass --ca-file with the CA that signs the console's certificate)", path.display())
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
        let cert = cert.with_context(|| format!("reading {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not usable", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
