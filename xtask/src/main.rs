//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: installs what the checks need on a fresh machine, then runs every check CI runs.
//! - `demo`: builds the UI and everything else, and starts the console with simulated agents.
//! - `ui`: builds the web UI (wasm, JS glue, hashed and precompressed assets) into
//!   `web-ui/dist`, which the console serves.
//! - `screenshot`: regenerates `docs/overview.png` from a demo fleet in headless Chromium.
//! - `dist`: release binaries, the agent and console `.deb` packages and the CLI tarball in
//!   `dist/` (module `dist`).
//! - `fuzz`: every cargo-fuzz target for N minutes (module `fuzz`).
//! - `bench`: the scale benchmarks on release builds; rewrites the generated tables in
//!   BENCHMARKS.md (`--smoke`: a short run for CI that leaves the file alone; module `bench`).
//! - `deb-test`: checks the packages' contents, then really installs, upgrades and purges
//!   them on this machine and runs the install script against a local console (module
//!   `debtest`; root only).
//! - `soak`: the long fault runs (module `soak`): 2,000 simulated agents for 30 minutes and
//!   the long versions of the fault scenarios.
//!
//! Tasks shell out to `cargo`, `rustup` and `apt-get`; each step prints what it runs so a
//! red CI log says which step failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod debtest;
mod dist;
mod fuzz;
mod py;
mod soak;
mod ui;

const APT_PACKAGES: &[(&str, &str)] = &[
    // (binary that proves it is installed, Debian package)
    ("mosquitto", "mosquitto"),
    ("mosquitto_sub", "mosquitto-clients"),
    // The browser tests drive it with playwright-core (tests/ui).
    ("chromium", "chromium"),
    ("node", "nodejs"),
    ("npm", "npm"),
    // deb-test: install-agent.sh downloads a package by version.
    ("curl", "curl"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "ci" => ci(),
        "demo" => demo(rest),
        "ui" => ui::build(&workspace_root()),
        "screenshot" => screenshot(),
        "install-deps" => install_deps(),
        "dist" => dist::dist(&workspace_root(), &dist::Options::parse(rest)?).map(drop),
        "deb-test" => debtest::run(&workspace_root(), rest),
        "fuzz" => fuzz::run(&workspace_root(), rest),
        "soak" => soak::run(&soak::Options::parse(rest)?),
        "bench" => bench::bench(&workspace_root(), rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 ci            install missing tools, then fmt, clippy, tests, wasm and fuzz builds\n  \
                 demo [N]      build the UI and start the console with N simulated agents (default 25)\n  \
                 ui            build the web UI into web-ui/dist (served by the console)\n  \
                 screenshot    regenerate docs/overview.png from a demo fleet (headless Chromium)\n  \
                 install-deps  only install the tools the tests need (rustup target, apt packages)\n  \
                 dist          release binaries, .deb packages and the CLI tarball into dist/\n                \
                 (--profile release|dev, --version V, --out DIR, --skip-ui-build, --no-musl)\n  \
                 deb-test      build dev packages, then install, upgrade and purge them here (root)\n  \
                 fuzz          run every cargo-fuzz target (--minutes N in total, default 1; --only T)\n  \
                 soak          long fault runs: 2,000 agents for 60 min and the long scenarios\n                \
                 (--minutes N, --agents N, --soak-only)\n  \
                 bench         scale benchmarks, rewrites BENCHMARKS.md (--smoke: short CI run)"
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
    // The views exist only in the wasm build, so the workspace clippy above does not see
    // them.
    run(cargo().args([
        "clippy",
        "--locked",
        "-p",
        "edgefleet-web-ui",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The browser tests (tests/it/ui.rs) need the built UI and fail loudly without it.
    ui::build(&root)?;
    run(cargo().args(["test", "--workspace", "--locked"]))?;
    // The end-to-end suite again, with every console behind a real Mosquitto the harness
    // starts (external broker mode, issue 9). Tests about the embedded broker itself, and
    // the long fault scenarios, run on the first pass only (`harness::external_broker`).
    // `--workspace`, not `-p edgefleet-tests`: closer to the feature set of the pass above
    // (only the other packages' dev-dependencies drop out), so less is compiled again:
    // 57 s instead of 1m45s in CI. The scale bench below builds the same way.
    run(cargo()
        .args(["test", "--workspace", "--locked", "--test", "it"])
        .env("EDGEFLEET_TEST_BROKER", "mosquitto"))?;
    // The scale bench, reduced (500 agents, seconds-long windows, dev profile): the bench
    // harness must not rot between full runs (issue 9).
    bench::bench(&root, &["--smoke".to_string()])?;
    // The fuzz crates are outside the workspace (cargo-fuzz builds them with its own flags;
    // `cargo xtask fuzz` runs them). Building them plainly proves every target still
    // compiles. edge-agent/fuzz is left to `cargo xtask fuzz`: it would rebuild the whole
    // agent dependency tree a second time for one small target.
    for krate in ["codec/fuzz", "config/fuzz"] {
        run(cargo()
            .args(["build", "--locked", "--manifest-path"])
            .arg(root.join(krate).join("Cargo.toml")))?;
    }
    // The EdgeFleet patches to the vendored broker carry their own unit tests
    // (vendor/rumqttd/README.edgefleet.md). The crate is outside the workspace, like the
    // fuzz crates, so it builds in its own target directory: about 75 s here.
    run(cargo()
        .args(["test", "--locked", "--lib", "--manifest-path"])
        .arg(root.join("vendor/rumqttd/Cargo.toml"))
        .arg("edgefleet_tests"))?;
    // Last: it packages the debug binaries the tests just built and installs them here.
    debtest::run(&root, &[])?;
    println!("xtask ci: all checks passed");
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    let count = args.first().map(String::as_str).unwrap_or("25");
    count
        .parse::<u32>()
        .with_context(|| format!("demo takes a number of simulated agents, got `{count}`"))?;
    ui::build(&workspace_root())?;
    build_release_binaries()?;
    let bin = workspace_root().join("target/release/edgefleet-console");
    run(Command::new(bin).args(["--demo", count]))
}

/// Starts a demo console on a free port, waits for its fleet, and has headless Chromium
/// (tests/ui/screenshot.mjs) log in to the demo and capture the overview.
fn screenshot() -> Result<()> {
    let root = workspace_root();
    install_deps()?;
    ui::build(&root)?;
    build_release_binaries()?;
    let dir = std::env::temp_dir().join(format!("edgefleet-screenshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mqtt = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut console = Command::new(root.join("target/release/edgefleet-console"))
        .args(["--demo", "40", "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--mqtt")
        .arg(format!("127.0.0.1:{mqtt}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the demo console")?;
    let result = run(Command::new("node")
        .current_dir(root.join("tests/ui"))
        .arg("screenshot.mjs")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(root.join("docs/overview.png")));
    // SIGTERM, so the console stops its simulated agents (SIGKILL would orphan them).
    let _ = Command::new("kill")
        .args(["-TERM", &console.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while console.try_wait()?.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = console.kill();
    let _ = console.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn install_deps() -> Result<()> {
    install_system_deps()?;
    // paho-mqtt, the independent MQTT client of tests/it/independent.rs.
    py::install_paho(&workspace_root())?;
    // playwright-core for the browser tests, at the versions in the committed lock file.
    let ui_tests = workspace_root().join("tests/ui");
    if !ui_tests.join("node_modules/playwright-core").is_dir() {
        run(Command::new("npm")
            .current_dir(&ui_tests)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    Ok(())
}

/// The UI build needs the wasm target; `demo` and `ui` call this without the rest.
fn ensure_wasm_target() -> Result<()> {
    let targets = capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets
        .lines()
        .any(|t| t.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

fn install_system_deps() -> Result<()> {
    ensure_wasm_target()?;
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

/// Release builds of the console and the agent (`demo`, `screenshot`, `bench`), plus the
/// agent as shipped (profile `release-agent`), which the bench's footprint row measures.
/// `target/release/edgefleet-agent` stays: the simulator runs from there.
fn build_release_binaries() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "edgefleet-console",
        "-p",
        "edgefleet-agent",
    ]))?;
    run(cargo().args([
        "build",
        "--profile",
        agent_profile("release"),
        "-p",
        "edgefleet-agent",
    ]))
}

/// The profile the agent is built with when the rest is built with `profile`.
fn agent_profile(profile: &str) -> &str {
    if profile == "release" {
        "release-agent"
    } else {
        profile
    }
}

/// The directory under `target/` that cargo writes `profile`'s binaries to.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
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
