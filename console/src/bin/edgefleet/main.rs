//! `edgefleet`: the operator CLI, talking to the console's REST API over HTTP or HTTPS.
//!
//! - `client`: HTTP/1.1 (plain or rustls) requests and the operator-facing error messages.
//! - `profile`: the `edgefleet login` profile (`~/.config/edgefleet/config.json`, 0600).
//!
//! Every command prints a table or a short line for humans, and the API's JSON with
//! `--json`. Any failure prints `error: <message>` on stderr and exits 1.

mod client;
mod profile;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use edgefleet_codec::api::{
    AgentDetail, AgentPage, AgentSummary, AlertPage, ApiKeyCreate, ApiKeyCreated, ApiKeyView,
    ArtifactView, AuditPage, AuditVerify, CommandRequest, CommandView, ConfigScalar, FleetSummary,
    InventoryCompare, InventoryPage, LiveBody, LiveEvent, PackageSearch, SilenceCreate,
    SilenceUntil, SilenceView, TokenCreate, TokenCreated, TokenView,
};
use serde::Serialize;

use client::{encode, Client};

#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, about = "EdgeFleet operator CLI")]
struct Args {
    /// Console API: `http://host:port`, `https://host:port` or `host:port` (plain HTTP).
    /// Default: the login profile's URL, else 127.0.0.1:8080.
    #[arg(long, env = "EDGEFLEET_CONSOLE", global = true)]
    console: Option<String>,
    /// API key (default: the login profile's). The console writes its first admin key to
    /// <data_dir>/admin.key.
    #[arg(long, env = "EDGEFLEET_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// PEM CA that signs the console's HTTPS certificate (default: the system CA bundle).
    #[arg(long, env = "EDGEFLEET_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (one JSON document, or one per line for
    /// `events`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check an API key against a console and save both in the login profile
    /// (~/.config/edgefleet/config.json, mode 0600). Prompts for the key if none is given.
    Login {
        /// The console, e.g. http://10.0.0.5:8080 or https://console.example.com.
        #[arg(long)]
        url: Option<String>,
    },
    /// Forget the saved login profile.
    Logout,
    /// Print a shell completion script, e.g. `edgefleet completions bash >
    /// /etc/bash_completion.d/edgefleet`.
    Completions { shell: clap_complete::Shell },
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
    /// Run a shell script on an agent (admin). It runs only if the agent's local admin set
    /// `allow_scripts = true` and put the script's SHA-256 (printed here) on the agent's
    /// `script_allowlist`; otherwise the command ends `rejected`.
    Script {
        agent: String,
        /// The script file (at most 16 KiB), run with `sh`.
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        expires: Option<String>,
    },
    /// A host's software inventory (table, --json or --csv), or `compare A B`, or
    /// `rescan AGENT`.
    #[command(args_conflicts_with_subcommands = true)]
    Inventory {
        #[command(subcommand)]
        command: Option<InventoryCmd>,
        agent: Option<String>,
        /// RFC 4180 CSV of every matching package.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Also packages removed since an earlier scan.
        #[arg(long)]
        include_removed: bool,
        /// Only packages whose name or version contains this.
        #[arg(short, long)]
        q: Option<String>,
    },
    /// Fleet-wide: every host with this package, grouped by version.
    Packages { name: String },
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
        /// Only the members of this group.
        #[arg(long)]
        group: Option<String>,
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
    Events,
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
    /// The host list, sorted by hostname.
    List {
        /// Only online agents (same as --status online).
        #[arg(long, conflicts_with = "status")]
        online_only: bool,
        /// online, offline, pending, revoked.
        #[arg(long)]
        status: Option<String>,
        /// Only this operating system (exact name as listed).
        #[arg(long)]
        os: Option<String>,
        /// Free text over hostname, display name and IPs.
        #[arg(short, long)]
        q: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        /// Rows per page, up to 200.
        #[arg(long, default_value_t = 200)]
        per_page: usize,
    },
    /// One agent: identity, vitals, apps and recent status changes.
    #[command(visible_alias = "show")]
    Status { id: String },
    /// Approve a pending agent (admin).
    Approve { id: String },
    /// Revoke an agent: it is refused at connect from now on (admin).
    Revoke { id: String },
    /// Soft-delete a host: hidden, record kept for audit (admin).
    Delete { id: String },
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
enum InventoryCmd {
    /// Installed packages only on A, only on B, and with differing versions.
    Compare { a: String, b: String },
    /// Ask the agent to scan now.
    Rescan {
        agent: String,
        #[arg(long)]
        wait: bool,
    },
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every command needs: the console client and the output mode.
#[derive(Debug)]
struct Ctx {
    client: Client,
    json: bool,
}

impl Ctx {
    /// Resolves the console and key: flags and environment first, then the login profile.
    fn new(args: &Args) -> Result<Ctx> {
        // Flags and environment alone need no profile (a broken one must not get in the way).
        let saved = if args.api_key.is_some() && args.console.is_some() {
            None
        } else {
            profile::load()?
        };
        let Some(key) = args
            .api_key
            .clone()
            .or_else(|| saved.as_ref().map(|p| p.api_key.clone()))
        else {
            bail!("Run 'edgefleet login' first (or pass --api-key / set EDGEFLEET_API_KEY)");
        };
        let console = args
            .console
            .clone()
            .or_else(|| saved.as_ref().map(|p| p.url.clone()))
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let ca = args
            .ca_file
            .clone()
            .or_else(|| saved.and_then(|p| p.ca_file));
        Ok(Ctx {
            client: Client::new(&console, &key, ca.as_deref())?,
            json: args.json,
        })
    }

    /// Prints `value` as JSON with `--json`, else with `human`.
    fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce(&T)) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human(value);
        }
        Ok(())
    }
}

fn run(args: &Args) -> Result<()> {
    match &args.command {
        Cmd::Login { url } => return login(args, url.as_deref()),
        Cmd::Logout => {
            match profile::path() {
                Some(p) if p.exists() => {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("removing {}", p.display()))?;
                    println!("removed {}", p.display());
                }
                _ => println!("not logged in"),
            }
            return Ok(());
        }
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Args::command(), "edgefleet", &mut script);
            return std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("writing the completion script");
        }
        _ => {}
    }
    let ctx = Ctx::new(args)?;
    let c = &ctx.client;
    match &args.command {
        Cmd::Login { .. } | Cmd::Logout | Cmd::Completions { .. } => unreachable!("handled above"),
        Cmd::Fleet => {
            let s: FleetSummary = c.get("/api/fleet/summary")?;
            ctx.emit(&s, |s| {
                println!(
                    "{} agents: {} online ({}%), {} offline, {} stale, {} pending, {} with firing alerts",
                    s.total, s.online, s.percent_online, s.offline, s.stale, s.pending, s.firing_alerts
                );
                println!(
                    "hotspots: cpu {} mem {} disk {}",
                    s.hotspots.cpu, s.hotspots.mem, s.hotspots.disk
                );
                for os in &s.os {
                    println!("  {:>5}  {}", os.count, os.os);
                }
            })?;
        }
        Cmd::Agents {
            command:
                AgentsCmd::List {
                    online_only,
                    status,
                    os,
                    q,
                    page,
                    per_page,
                },
        } => {
            let mut path = format!("/api/agents?page={page}&per_page={per_page}");
            let status = if *online_only {
                Some("online")
            } else {
                status.as_deref()
            };
            for (k, v) in [
                ("status", status),
                ("os", os.as_deref()),
                ("q", q.as_deref()),
            ] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", encode(v)));
                }
            }
            let page: AgentPage = c.get(&path)?;
            ctx.emit(&page, print_agents)?;
        }
        Cmd::Agents {
            command: AgentsCmd::Status { id },
        } => {
            let d: AgentDetail = c.get(&format!("/api/agents/{}", encode(id)))?;
            ctx.emit(&d, print_agent)?;
        }
        Cmd::Agents {
            command: AgentsCmd::Approve { id },
        } => {
            let a: AgentSummary =
                c.send(&format!("/api/agents/{}/approve", encode(id)), "POST", None)?;
            ctx.emit(&a, |a| {
                println!(
                    "approved {} ({}): now {}",
                    a.id,
                    a.hostname.as_deref().unwrap_or("-"),
                    a.status.as_str()
                )
            })?;
        }
        Cmd::Agents {
            command: AgentsCmd::Revoke { id },
        } => {
            let a: AgentSummary =
                c.send(&format!("/api/agents/{}/revoke", encode(id)), "POST", None)?;
            ctx.emit(&a, |a| {
                println!(
                    "revoked {} ({})",
                    a.id,
                    a.hostname.as_deref().unwrap_or("-")
                )
            })?;
        }
        Cmd::Agents {
            command: AgentsCmd::Delete { id },
        } => {
            c.request("DELETE", &format!("/api/agents/{}", encode(id)), b"")?;
            ctx.emit(&serde_json::json!({ "deleted": id }), |_| {
                println!("deleted {id} (the record is kept for audit)")
            })?;
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
            let t: TokenCreated = c.send("/api/tokens", "POST", Some(&body))?;
            ctx.emit(&t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "token {}: {}, expires {}, uses {}. It is shown only now; put it in the agent config as `token`.",
                    t.view.id,
                    if t.view.auto_approve { "auto-approve" } else { "agents wait for approval" },
                    t.view.expires_at.map(format_ms).unwrap_or_else(|| "never".into()),
                    t.view.max_uses.map(|u| u.to_string()).unwrap_or_else(|| "unlimited".into()),
                );
            })?;
        }
        Cmd::Tokens {
            command: TokensCmd::List,
        } => {
            let tokens: Vec<TokenView> = c.get("/api/tokens")?;
            ctx.emit(&tokens, |tokens| print_tokens(tokens))?;
        }
        Cmd::Tokens {
            command: TokensCmd::Revoke { id },
        } => {
            let t: TokenView = c.send(&format!("/api/tokens/{}", encode(id)), "DELETE", None)?;
            ctx.emit(&t, |t| println!("token {} is {}", t.id, t.state))?;
        }
        Cmd::Keys {
            command: KeysCmd::Create { name, role },
        } => {
            let body = serde_json::to_string(&ApiKeyCreate {
                name: name.clone(),
                role: role.clone(),
            })?;
            let k: ApiKeyCreated = c.send("/api/keys", "POST", Some(&body))?;
            ctx.emit(&k, |k| {
                println!("{}", k.secret);
                eprintln!(
                    "API key {:?} ({}). It is shown only now.",
                    k.view.name, k.view.role
                );
            })?;
        }
        Cmd::Keys {
            command: KeysCmd::List,
        } => {
            let keys: Vec<ApiKeyView> = c.get("/api/keys")?;
            ctx.emit(&keys, |keys| {
                for k in keys {
                    println!("{:<24}  {:<8}  {}", k.name, k.role, format_ms(k.created_at));
                }
            })?;
        }
        Cmd::Keys {
            command: KeysCmd::Delete { name },
        } => {
            c.request("DELETE", &format!("/api/keys/{}", encode(name)), b"")?;
            ctx.emit(&serde_json::json!({ "deleted": name }), |_| {
                println!("deleted API key {name:?}")
            })?;
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
            let body = CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                ..Default::default()
            };
            app_command(&ctx, agent, "restart-app", &body, *wait)?;
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
            let body = CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                values: set.iter().cloned().collect(),
                ..Default::default()
            };
            app_command(&ctx, agent, "push-config", &body, *wait)?;
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
            let (url, sha) = artifact_source(&ctx, artifact, sha256.as_deref())?;
            let body = CommandRequest {
                app: Some(app.clone()),
                expires: expires.clone(),
                url: Some(url),
                version: Some(version.clone()),
                sha256: Some(sha),
                ..Default::default()
            };
            app_command(&ctx, agent, "update-app", &body, *wait)?;
        }
        Cmd::Script {
            agent,
            file,
            wait,
            expires,
        } => {
            let script = std::fs::read_to_string(file)
                .with_context(|| format!("reading the script {}", file.display()))?;
            let sha = <sha2::Sha256 as sha2::Digest>::digest(script.as_bytes());
            if !ctx.json {
                eprintln!(
                    "script sha256 {} (agents run it only if this hash is on their script_allowlist)",
                    sha.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
            }
            let body = CommandRequest {
                script: Some(script),
                expires: expires.clone(),
                ..Default::default()
            };
            app_command(&ctx, agent, "run-script", &body, *wait)?;
        }
        Cmd::Inventory {
            command: Some(InventoryCmd::Compare { a, b }),
            ..
        } => {
            let cmp: InventoryCompare = c.get(&format!(
                "/api/inventory/compare?a={}&b={}",
                encode(a),
                encode(b)
            ))?;
            ctx.emit(&cmp, print_compare)?;
        }
        Cmd::Inventory {
            command: Some(InventoryCmd::Rescan { agent, wait }),
            ..
        } => {
            app_command(&ctx, agent, "rescan", &CommandRequest::default(), *wait)?;
        }
        Cmd::Inventory {
            command: None,
            agent,
            csv,
            include_removed,
            q,
        } => {
            let Some(agent) = agent else {
                bail!("name an agent: edgefleet inventory AGENT (or: inventory compare A B, inventory rescan AGENT)");
            };
            let base = format!("/api/agents/{}/inventory", encode(agent));
            if *csv {
                // The CSV endpoint exports everything; `-q` filters rows here.
                let path = format!("{base}.csv?include_removed={include_removed}");
                let text = c.request("GET", &path, b"")?;
                let needle = q.as_deref().map(str::to_lowercase);
                for (i, line) in text.lines().enumerate() {
                    if i == 0
                        || needle
                            .as_deref()
                            .is_none_or(|n| line.to_lowercase().contains(n))
                    {
                        println!("{line}");
                    }
                }
                return Ok(());
            }
            let mut all: Option<InventoryPage> = None;
            for page in 1.. {
                let mut path =
                    format!("{base}?per_page=500&page={page}&include_removed={include_removed}");
                if let Some(q) = q {
                    path.push_str(&format!("&q={}", encode(q)));
                }
                let p: InventoryPage = c.get(&path)?;
                let done = p.items.len() < p.per_page;
                match &mut all {
                    None => all = Some(p),
                    Some(acc) => acc.items.extend(p.items),
                }
                if done {
                    break;
                }
            }
            let inv = all.expect("at least one page");
            ctx.emit(&inv, print_inventory)?;
        }
        Cmd::Packages { name } => {
            let found: PackageSearch = c.get(&format!("/api/packages?name={}", encode(name)))?;
            ctx.emit(&found, |f| {
                println!("{}: on {} hosts", f.name, f.hosts);
                for v in &f.versions {
                    println!("  {:>6}  {}", v.count, v.version);
                }
            })?;
        }
        Cmd::Commands {
            command: CommandsCmd::Status { id, wait },
        } => {
            if *wait {
                finish(&ctx, follow_command(&ctx, id)?)?;
            } else {
                let cmd: CommandView = c.get(&format!("/api/commands/{}", encode(id)))?;
                ctx.emit(&cmd, print_command)?;
            }
        }
        Cmd::Commands {
            command: CommandsCmd::List { agent },
        } => {
            let list: Vec<CommandView> =
                c.get(&format!("/api/agents/{}/commands", encode(agent)))?;
            ctx.emit(&list, |list| {
                for c in list {
                    println!(
                        "{}  {:<18}  {:<12}  {:<11}  {}  {}",
                        c.id,
                        c.action,
                        c.app.as_deref().unwrap_or("-"),
                        c.state,
                        format_ms(c.issued_at),
                        c.message.as_deref().unwrap_or("")
                    );
                }
            })?;
        }
        Cmd::Alerts { state, agent } => {
            let mut path = "/api/alerts?per_page=50".to_string();
            for (k, v) in [("state", state), ("agent", agent)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", encode(v)));
                }
            }
            let p: AlertPage = c.get(&path)?;
            ctx.emit(&p, |p| {
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
            })?;
        }
        Cmd::Silence {
            agent,
            group,
            rule,
            duration,
            reason,
        } => {
            let body = serde_json::to_string(&SilenceCreate {
                agent: agent.clone(),
                group: group.clone(),
                rule: rule.clone(),
                until: SilenceUntil::For(duration.clone()),
                reason: reason.clone(),
            })?;
            let s: SilenceView = c.send("/api/silences", "POST", Some(&body))?;
            ctx.emit(&s, |s| {
                println!(
                    "silence {} until {} (agent {}, rule {})",
                    s.id,
                    format_ms(s.until),
                    s.agent.as_deref().unwrap_or("all"),
                    s.rule.as_deref().unwrap_or("all")
                )
            })?;
        }
        Cmd::Events => c.follow("/api/events", |data| print_event(data, ctx.json))?,
        Cmd::Audit {
            agent,
            last,
            action,
            since,
            page,
            verify,
        } => {
            if *verify {
                let v: AuditVerify = c.get("/api/audit/verify")?;
                ctx.emit(&v, |v| {
                    if v.broken_at.is_none() {
                        println!("audit chain verifies: {} entries", v.entries);
                    }
                })?;
                if let Some(seq) = v.broken_at {
                    bail!(
                        "audit chain is broken at entry {seq} ({} entries verify before it)",
                        v.entries
                    );
                }
                return Ok(());
            }
            let mut path = format!("/api/audit?per_page=50&page={page}");
            if let Some(n) = last {
                path.push_str(&format!("&last={n}"));
            }
            for (k, v) in [("agent", agent), ("action", action), ("since", since)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", encode(v)));
                }
            }
            let p: AuditPage = c.get(&path)?;
            ctx.emit(&p, |p| {
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
            })?;
        }
    }
    Ok(())
}

/// `login`: checks the key against the console before saving anything.
fn login(args: &Args, url: Option<&str>) -> Result<()> {
    let Some(url) = url.or(args.console.as_deref()) else {
        bail!("login needs the console's address: edgefleet login --url http://HOST:8080");
    };
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("API key for {url}: "))
                .context("reading the API key")?
        }
        None => {
            // Piped: the first line of stdin, so scripts need not put the key in argv.
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the API key from stdin")?;
            line
        }
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!("no API key given");
    }
    let client = Client::new(url, &key, args.ca_file.as_deref())?;
    let summary: FleetSummary = client.get("/api/fleet/summary")?;
    let path = profile::save(&profile::Profile {
        url: client.url.clone(),
        api_key: key,
        ca_file: args.ca_file.clone(),
    })?;
    let ctx = Ctx {
        client,
        json: args.json,
    };
    ctx.emit(
        &serde_json::json!({ "url": ctx.client.url, "profile": path, "agents": summary.total }),
        |_| {
            println!(
                "logged in to {} ({} agents); saved to {}",
                ctx.client.url,
                summary.total,
                path.display()
            )
        },
    )
}

/// The artifact URL and SHA-256 for `apps update`: an http(s) URL as given, or a local file
/// uploaded to the console first.
fn artifact_source(ctx: &Ctx, artifact: &str, sha256: Option<&str>) -> Result<(String, String)> {
    if artifact.starts_with("http://") || artifact.starts_with("https://") {
        let Some(sha) = sha256 else {
            bail!("--sha256 is required with an artifact URL");
        };
        return Ok((artifact.to_string(), sha.to_string()));
    }
    let bytes =
        std::fs::read(artifact).with_context(|| format!("reading the artifact {artifact}"))?;
    let answer = ctx.client.request("POST", "/api/artifacts", &bytes)?;
    let stored: ArtifactView = serde_json::from_str(&answer)?;
    if let Some(expected) = sha256 {
        if !expected.eq_ignore_ascii_case(&stored.sha256) {
            bail!("{artifact} has sha256 {}, not {expected}", stored.sha256);
        }
    }
    if !ctx.json {
        eprintln!(
            "uploaded {artifact}: {} bytes, sha256 {}",
            stored.size, stored.sha256
        );
    }
    Ok((format!("{}{}", ctx.client.url, stored.path), stored.sha256))
}

/// Sends one app command and, with `--wait`, follows it to the end.
fn app_command(
    ctx: &Ctx,
    agent: &str,
    action: &str,
    body: &CommandRequest,
    wait: bool,
) -> Result<()> {
    let cmd: CommandView = ctx.client.send(
        &format!("/api/agents/{}/{action}", encode(agent)),
        "POST",
        Some(&serde_json::to_string(body)?),
    )?;
    if !wait {
        return ctx.emit(&cmd, |c| println!("command {} {}", c.id, c.state));
    }
    if !ctx.json {
        println!("command {} {}", cmd.id, cmd.state);
    }
    finish(ctx, follow_command(ctx, &cmd.id)?)
}

/// Prints a finished command; an error (exit 1) unless it succeeded.
fn finish(ctx: &Ctx, cmd: CommandView) -> Result<()> {
    ctx.emit(&cmd, |c| {
        if c.state == "succeeded" {
            println!("succeeded: {}", c.message.as_deref().unwrap_or(""));
        }
    })?;
    if cmd.state != "succeeded" {
        bail!(
            "command {} {}: {}",
            cmd.id,
            cmd.state,
            cmd.message.unwrap_or_default()
        );
    }
    Ok(())
}

const FINAL_STATES: &[&str] = &["succeeded", "failed", "rolled_back", "rejected", "expired"];

/// Polls a command until it reaches a final state. On a terminal, a live progress line
/// (percentage when the agent reports one, e.g. while downloading); elsewhere one line
/// per step, so logs of scripted runs keep every step.
fn follow_command(ctx: &Ctx, id: &str) -> Result<CommandView> {
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(100)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed:>3} [{bar:24}] {pos:>3}% {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut shown = 0;
    loop {
        let cmd: CommandView = ctx.client.get(&format!("/api/commands/{}", encode(id)))?;
        for step in cmd.progress.iter().skip(shown) {
            let line = format!("  {}  {}", format_ms(step.at), step.step);
            if bar.is_hidden() {
                if !ctx.json {
                    println!("{line}");
                }
            } else {
                bar.println(line);
            }
            if let Some(pct) = step.pct {
                bar.set_position(u64::from(pct));
            }
        }
        shown = cmd.progress.len();
        let last = cmd.progress.last().map(|s| s.step.as_str()).unwrap_or("");
        bar.set_message(format!("{}  {last}", cmd.state));
        if FINAL_STATES.contains(&cmd.state.as_str()) {
            bar.finish_and_clear();
            return Ok(cmd);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn print_agents(page: &AgentPage) {
    println!(
        "{:<16}  {:<8}  {:<24}  {:>4} {:>4} {:>4}  {:<20}  OS",
        "ID", "STATUS", "HOSTNAME", "CPU", "MEM", "DISK", "LAST SEEN"
    );
    let pct = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for a in &page.items {
        println!(
            "{:<16}  {:<8}  {:<24}  {:>4} {:>4} {:>4}  {:<20}  {}",
            a.id,
            a.status.as_str(),
            a.hostname.as_deref().unwrap_or("-"),
            pct(a.cpu),
            pct(a.mem),
            pct(a.disk),
            a.last_seen.map(format_ms).unwrap_or_else(|| "-".into()),
            a.os.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{} of {} agents (page {})",
        page.items.len(),
        page.total,
        page.page
    );
}

fn print_agent(d: &AgentDetail) {
    let s = &d.summary;
    let row = |k: &str, v: String| println!("{k:<14} {v}");
    row("id", s.id.clone());
    row("hostname", s.hostname.clone().unwrap_or_else(|| "-".into()));
    row(
        "status",
        format!(
            "{}{} since {}",
            s.status.as_str(),
            if s.stale { " (stale)" } else { "" },
            format_ms(d.status_since)
        ),
    );
    row(
        "last seen",
        s.last_seen.map(format_ms).unwrap_or_else(|| "never".into()),
    );
    row(
        "os",
        format!(
            "{} / {} / {}",
            s.os.as_deref().unwrap_or("-"),
            d.kernel.as_deref().unwrap_or("-"),
            d.arch.as_deref().unwrap_or("-")
        ),
    );
    row("ips", s.ips.join(", "));
    row(
        "agent",
        d.agent_version.clone().unwrap_or_else(|| "-".into()),
    );
    row("key", d.key_fingerprint.clone());
    if let Some(c) = &s.conflict {
        row("conflict", c.clone());
    }
    if let Some(v) = &d.vitals {
        row(
            "vitals",
            format!(
                "cpu {}%  mem {}%  disk {}%  load {:.2}  up {}",
                v.cpu,
                v.mem,
                v.disk,
                v.load,
                humantime::format_duration(Duration::from_secs(v.uptime_s))
            ),
        );
    }
    for a in &d.apps {
        row(
            "app",
            format!(
                "{:<16} {:<10} {}",
                a.id,
                a.status,
                a.version.as_deref().unwrap_or("-")
            ),
        );
    }
    for h in d.status_history.iter().take(5) {
        row(
            "history",
            format!("{}  {} ({:?})", format_ms(h.at), h.status.as_str(), h.cause),
        );
    }
}

fn print_inventory(inv: &InventoryPage) {
    println!(
        "{:<40}  {:<32}  {:<8}  {:<7}  FIRST SEEN",
        "NAME", "VERSION", "ARCH", "STATE"
    );
    for p in &inv.items {
        println!(
            "{:<40}  {:<32}  {:<8}  {:<7}  {}",
            p.name,
            p.version,
            p.arch,
            if p.removed { "removed" } else { "ok" },
            format_ms(p.first_seen)
        );
    }
    let scan = inv
        .last_scan
        .map(|t| format!("last scan {}", format_ms(t)))
        .unwrap_or_else(|| "no scan received yet".into());
    println!(
        "{} shown; {} installed, {} removed ({}, {scan}{})",
        inv.items.len(),
        inv.installed,
        inv.removed,
        inv.source.as_deref().unwrap_or("no source"),
        if inv.stale_scan { ", STALE" } else { "" }
    );
    if let Some(e) = &inv.error {
        println!("the agent reports: {e}");
    }
}

fn print_compare(c: &InventoryCompare) {
    for p in &c.only_a {
        println!("< {:<40} {}", p.name, p.version);
    }
    for p in &c.only_b {
        println!("> {:<40} {}", p.name, p.version);
    }
    for d in &c.differs {
        println!("~ {:<40} {}  |  {}", d.name, d.a, d.b);
    }
    println!(
        "{} only on {}, {} only on {}, {} differ, {} the same",
        c.only_a.len(),
        c.a,
        c.only_b.len(),
        c.b,
        c.differs.len(),
        c.same
    );
}

fn print_tokens(tokens: &[TokenView]) {
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

fn print_command(c: &CommandView) {
    println!(
        "command {} ({} {} on {}): {}",
        c.id,
        c.action,
        c.app.as_deref().unwrap_or("-"),
        c.agent,
        c.state
    );
    for step in &c.progress {
        println!("  {}  {}", format_ms(step.at), step.step);
    }
    if let Some(m) = &c.message {
        println!("  {m}");
    }
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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
