//! `cargo xtask bench [--smoke] [scale options]`: runs the scale benchmarks (issue 9) on
//! release builds and rewrites the generated part of BENCHMARKS.md, between
//! [`BEGIN`] and [`END`].
//!
//! - The embedded broker's memory per idle connection
//!   (`broker/examples/idle_connections.rs`, 10,000 raw MQTT connections).
//! - `tests/benches/scale.rs`: connections, console ingest, recovery, agent footprint and
//!   bytes on the wire, with a real console, the simulator and a real agent.
//! - API latency with 100,000 hosts in the store (`console/benches/api_latency.rs`).
//! - Presence latency (`tests/benches/alert_latency.rs`), in the full run only.
//!
//! `--smoke` (500 agents, short windows, no presence runs, dev profile) checks that the
//! whole harness still works, in about a minute once built, and leaves BENCHMARKS.md
//! alone; `cargo xtask ci` runs it.
//! `--footprint-only` runs only the agent footprint part and rewrites only its table.
//! Other options go to the scale bench (`--agents N`, `--intervals 1s,500ms`,
//! `--window-secs S`, `--footprint-secs S`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::{capture, cargo, run};

pub const BEGIN: &str = "<!-- cargo xtask bench: begin (generated, do not edit by hand) -->";
pub const END: &str = "<!-- cargo xtask bench: end -->";

pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let smoke = args.iter().any(|a| a == "--smoke");
    // The smoke run checks that the harness still works, not the figures: it runs on the
    // dev profile, whose binaries CI has already built for the tests, instead of spending
    // a release build of every crate. Built exactly as `cargo test --workspace` builds them,
    // so in CI nothing compiles again (`build -p edgefleet-console -p edgefleet-agent`
    // has another feature set and took 1m53s there).
    let profile = if smoke { "dev" } else { "release" };
    if smoke {
        run(cargo().args(["test", "--workspace", "--locked", "--no-run"]))?;
    } else {
        crate::build_release_binaries()?;
    }
    if args.iter().any(|a| a == "--footprint-only") {
        return footprint_only(root, args);
    }

    let mut generated = String::new();
    let connections = if smoke { "1000" } else { "10000" };
    let broker = capture(cargo().args([
        "run",
        "--profile",
        profile,
        "--quiet",
        "-p",
        "edgefleet-broker",
        "--example",
        "idle_connections",
        "--",
        connections,
    ]))?;
    writeln!(
        generated,
        "### Embedded broker memory per idle connection\n\n    \
         cargo run --release -p edgefleet-broker --example idle_connections -- {connections}\n\n\
         | measured | value | goal |\n|---|---|---|"
    )?;
    let per = field(&broker, "bytes_per_connection")?;
    writeln!(
        generated,
        "| rumqttd 0.20 (patched, `vendor/rumqttd`), {connections} idle connections | **{:.1} KB per connection** ({}) | ≤ 20 KB: {} |\n",
        per / 1000.0,
        broker.trim(),
        if per <= 20_000.0 { "met" } else { "**missed**" }
    )?;

    let out = root.join("target/bench-scale.md");
    let mut scale = cargo();
    scale
        .args(["bench", "--profile", profile])
        .args(["--workspace", "--bench", "scale", "--"])
        .args(args)
        .arg("--out")
        .arg(&out);
    run(&mut scale)?;
    generated.push_str(
        &std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?,
    );

    // API latency with a large store (benchmark 4); in process, the console's own bench.
    let hosts = if smoke { "5000" } else { "100000" };
    let requests = if smoke { "20" } else { "200" };
    let api = root.join("target/bench-api.md");
    run(cargo()
        .args(["bench", "--profile", profile])
        .args(["-p", "edgefleet-console", "--bench", "api_latency", "--"])
        .args([hosts, requests, "--out"])
        .arg(&api))?;
    generated.push('\n');
    generated.push_str(
        &std::fs::read_to_string(&api).with_context(|| format!("reading {}", api.display()))?,
    );

    if smoke {
        eprintln!("xtask: bench smoke passed; BENCHMARKS.md left as it is");
        return Ok(());
    }
    let presence = capture(cargo().args([
        "bench",
        "-p",
        "edgefleet-tests",
        "--bench",
        "alert_latency",
        "--",
        "20",
        "3",
    ]))?;
    writeln!(
        generated,
        "### Presence latency (death → offline alert webhook)\n\n    \
         cargo bench -p edgefleet-tests --bench alert_latency -- 20 3\n\n```\n{}\n```",
        presence.trim()
    )?;

    let path = root.join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path)?;
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("BENCHMARKS.md has no `{BEGIN}` … `{END}` markers");
    };
    let rewritten = format!(
        "{}{BEGIN}\n\n{}\n{}",
        &doc[..start],
        generated.trim_end(),
        &doc[end..]
    );
    std::fs::write(&path, rewritten)?;
    eprintln!("xtask: BENCHMARKS.md rewritten");
    Ok(())
}

/// The footprint heading in the generated section; everything from it to [`END`] is the
/// footprint table.
const FOOTPRINT: &str = "### Agent footprint";

/// Runs the scale bench's footprint part alone and replaces only its table (the rest of the
/// generated section keeps the figures and the date of the last full run).
fn footprint_only(root: &Path, args: &[String]) -> Result<()> {
    let out = root.join("target/bench-footprint.md");
    run(cargo()
        .args(["bench", "-p", "edgefleet-tests", "--bench", "scale", "--"])
        .args(args)
        .arg("--out")
        .arg(&out))?;
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let (machine, table) = text
        .split_once(FOOTPRINT)
        .context("the bench printed no footprint table")?;
    let path = root.join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path)?;
    let (Some(start), Some(end)) = (doc.find(FOOTPRINT), doc.find(END)) else {
        bail!("BENCHMARKS.md has no `{FOOTPRINT}` table before `{END}`");
    };
    let rewritten = format!(
        "{}{FOOTPRINT}{}\n{}\n\n{}",
        &doc[..start],
        table.trim_end(),
        machine.trim(),
        &doc[end..]
    );
    std::fs::write(&path, rewritten)?;
    eprintln!("xtask: the footprint table in BENCHMARKS.md rewritten");
    Ok(())
}

/// `key=value` from the example's one-line report.
fn field(line: &str, key: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {line:?}"))?
        .parse()
        .with_context(|| format!("{key} in {line:?}"))
}
