//! `edgefleet`: the operator CLI, talking to the console's REST API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgefleet_codec::api::{AgentDetail, AgentPage, ApiErrorBody, FleetSummary};

#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, about = "EdgeFleet operator CLI")]
struct Args {
    /// Console address (host:port of its HTTP API).
    #[arg(long, default_value = "127.0.0.1:8080", env = "EDGEFLEET_CONSOLE")]
    console: String,
    /// API key (the console writes the first admin key to <data_dir>/admin.key).
    #[arg(long, env = "EDGEFLEET_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agents: list or show.
    Agents {
        #[command(subcommand)]
        command: AgentsCmd,
    },
    /// Fleet summary.
    Fleet,
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

/// A plain HTTP/1.1 GET; the API is JSON over loopback or a trusted network.
fn get<T: serde::de::DeserializeOwned>(args: &Args, path: &str) -> Result<T> {
    let console = args.console.as_str();
    let Some(key) = args.api_key.as_deref() else {
        bail!("no API key: pass --api-key or set EDGEFLEET_API_KEY (the console wrote its first admin key to <data_dir>/admin.key)");
    };
    let mut stream = TcpStream::connect(console)
        .with_context(|| format!("connecting to the console at {console}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {console}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .context("reading the console's answer")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status")?;
    if status != 200 {
        let msg = serde_json::from_str::<ApiErrorBody>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.to_string());
        bail!("console answered {status}: {msg}");
    }
    serde_json::from_str(body).with_context(|| format!("unexpected answer from {path}"))
}
