//! `edgefleet`: the operator CLI, talking to the console's REST API over HTTP or HTTPS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgefleet_codec::api::{
    AgentDetail, AgentPage, AgentSummary, ApiErrorBody, ApiKeyCreate, ApiKeyCreated, ApiKeyView,
    AuditPage, AuditVerify, FleetSummary, TokenCreate, TokenCreated, TokenView,
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
    /// The audit log, newest first.
    Audit {
        /// Only entries about this agent.
        #[arg(long)]
        agent: Option<String>,
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
        Cmd::Audit {
            agent,
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
    let Some(key) = args.api_key.as_deref() else {
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
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut raw = Vec::new();
    if tls {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        let conn = rustls::ClientConnection::new(Arc::new(client_tls(args)?), name)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream
            .write_all(head.as_bytes())
            .context("TLS handshake or request")?;
        read_all(&mut stream, &mut raw)?;
    } else {
        let mut stream = tcp;
        stream.write_all(head.as_bytes())?;
        read_all(&mut stream, &mut raw)?;
    }
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
