//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: installs what the checks need on a fresh machine, then runs every check CI runs.
//! - `demo`: builds everything and starts the console with simulated agents.
//!
//! Tasks shell out to `cargo`, `rustup` and `apt-get`; each step prints what it runs so a
//! red CI log says which step failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const APT_PACKAGES: &[(&str, &str)] = &[
    // (binary that proves it is installed, Debian package)
    ("mosquitto", "mosquitto"),
    ("mosquitto_sub", "mosquitto-clients"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "ci" => ci(),
        "demo" => demo(rest),
        "install-deps" => install_deps(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 ci            install missing tools, then fmt, clippy, tests, wasm and fuzz builds\n  \
                 demo [N]      build and start the console with N simulated agents (default 25)\n  \
                 install-deps  only install the tools the tests need (rustup target, apt packages)"
            );
            if task == "help" {
                Ok(())
            } else {
                bail!("unknown task `{task}`")
            }
        }
    }
}

fn ci() -> Result<()> {
    install_deps()?;
    let root = workspace_root();
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace", "--locked"]))?;
    run(cargo().args([
        "build",
        "--locked",
        "-p",
        "edgefleet-web-ui",
        "--target",
        "wasm32-unknown-unknown",
    ]))?;
    // The fuzz crate is outside the workspace (cargo-fuzz wants nightly to run it). Building
    // it with stable proves every fuzz target still compiles against the codec.
    run(cargo()
        .args(["build", "--locked", "--manifest-path"])
        .arg(root.join("codec/fuzz/Cargo.toml")))?;
    println!("xtask ci: all checks passed");
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    let count = args.first().map(String::as_str).unwrap_or("25");
    count
        .parse::<u32>()
        .with_context(|| format!("demo takes a number of simulated agents, got `{count}`"))?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "edgefleet-console",
        "-p",
        "edgefleet-agent",
    ]))?;
    let bin = workspace_root().join("target/release/edgefleet-console");
    run(Command::new(bin).args(["--demo", count]))
}

fn install_deps() -> Result<()> {
    let targets = capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets
        .lines()
        .any(|t| t.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        let sudo = if is_root() { None } else { Some("sudo") };
        let apt = |args: &[&str]| {
            let mut cmd = match sudo {
                Some(s) => {
                    let mut c = Command::new(s);
                    c.arg("apt-get");
                    c
                }
                None => Command::new("apt-get"),
            };
            cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
            cmd
        };
        run(&mut apt(&["update", "-qq"]))?;
        let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
        install.args(&missing);
        run(&mut install)?;
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    capture(Command::new("id").arg("-u"))
        .map(|uid| uid.trim() == "0")
        .unwrap_or(false)
}
