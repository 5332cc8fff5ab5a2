//! `cargo xtask fuzz [--minutes N] [--only TARGET]`: runs every cargo-fuzz target of the
//! three fuzz crates (`codec/fuzz`, `config/fuzz`, `edge-agent/fuzz`) with libFuzzer.
//!
//! N minutes is the total budget, shared evenly by the targets (at least 10 s each);
//! default 1. This machine has no nightly toolchain, so the stable one is used with
//! `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes `-Z` flags) and `--sanitizer none` (ASan needs a
//! nightly-only flag): the targets are safe Rust, so panics, aborts, overflows (debug
//! assertions are on) and timeouts are what is caught. Each target keeps its corpus in
//! `<crate>/fuzz/corpus/<target>` (not committed) and also reads the committed seeds in
//! `<crate>/fuzz/seeds/<target>` when present. Crashes land in `<crate>/fuzz/artifacts`
//! and make the task fail; the summary table goes to stdout for TESTING.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The fuzz crates, relative to the workspace root.
pub const CRATES: &[&str] = &["codec/fuzz", "config/fuzz", "edge-agent/fuzz"];

struct Options {
    minutes: f64,
    only: Option<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        minutes: 1.0,
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => {
                let v = it.next().context("--minutes takes a number")?;
                opts.minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0)
                    .with_context(|| format!("--minutes takes a positive number, got `{v}`"))?;
            }
            "--only" => opts.only = Some(it.next().context("--only takes a target name")?.clone()),
            other => bail!("unknown fuzz option `{other}` (use --minutes N, --only TARGET)"),
        }
    }
    Ok(opts)
}

fn cargo_fuzz(dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = super::cargo();
    cmd.current_dir(dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz"]);
    // Every crate builds into one target dir, so shared dependencies build once.
    cmd.env("CARGO_TARGET_DIR", target_dir);
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = super::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        super::run(super::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// One target's result, from libFuzzer's final stats.
struct Outcome {
    target: String,
    seconds: u64,
    execs: u64,
    corpus: usize,
    crashed: bool,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    ensure_cargo_fuzz()?;
    let target_dir = root.join("target/fuzz");
    let mut plan: Vec<(PathBuf, String)> = Vec::new();
    for krate in CRATES {
        let dir = root.join(krate);
        let list = super::capture(cargo_fuzz(&dir, &target_dir).arg("list"))?;
        for target in list.lines().map(str::trim).filter(|t| !t.is_empty()) {
            if opts.only.as_deref().is_none_or(|o| o == target) {
                plan.push((dir.clone(), target.to_string()));
            }
        }
    }
    if plan.is_empty() {
        bail!("no fuzz target matches");
    }
    let each = ((opts.minutes * 60.0) / plan.len() as f64).max(10.0) as u64;
    eprintln!(
        "xtask fuzz: {} targets, {each} s each ({} min total)",
        plan.len(),
        opts.minutes
    );
    for krate in CRATES {
        let dir = root.join(krate);
        if plan.iter().any(|(d, _)| *d == dir) {
            super::run(cargo_fuzz(&dir, &target_dir).args(["build", "-O", "--sanitizer", "none"]))?;
        }
    }
    let mut outcomes = Vec::new();
    for (dir, target) in &plan {
        outcomes.push(run_one(dir, &target_dir, target, each)?);
    }
    println!("| target | seconds | executions | corpus entries | result |");
    println!("|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| `{}` | {} | {} | {} | {} |",
            o.target,
            o.seconds,
            o.execs,
            o.corpus,
            if o.crashed {
                "**crash** (see artifacts/)"
            } else {
                "no crash"
            }
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

fn run_one(dir: &Path, target_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = cargo_fuzz(dir, target_dir);
    cmd.args(["run", "-O", "--sanitizer", "none", target])
        .arg(&corpus);
    let seeds = dir.join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-print_final_stats=1",
        "-timeout=10",
        "-rss_limit_mb=1024",
    ]);
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let crashed = !out.status.success();
    if crashed {
        eprintln!("{log}");
    }
    Ok(Outcome {
        target: target.to_string(),
        seconds,
        execs: stat("number_of_executed_units"),
        corpus: std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0),
        crashed,
    })
}
