//! `cargo xtask deb-test`: the packages, tested for real on this machine (root only).
//!
//! 1. Packages the debug binaries twice (`dist --profile dev`): the workspace version and a
//!    newer `+upgradetest1` one.
//! 2. Static checks with `dpkg-deb`: fields, conffiles, every path's mode and owner, the
//!    maintainer scripts, the hardening lines of the unit files.
//! 3. `dpkg -i` of both packages: the user, modes, the polkit rule, the enable symlink, and
//!    `systemd-analyze verify` of the installed units.
//! 4. An admin edit of the config (`config set` and a comment), then `dpkg -i` of the newer
//!    agent: the edit, owner and mode survive.
//! 5. A real console from `target/debug`: `scripts/install-agent.sh` in the non-systemd
//!    foreground mode (pending token; then approval and a second run, by version from a
//!    download base: approved, and the console shows the agent's version),
//!    `edgefleet-agent enroll` (approved, and refused with a revoked token), and the
//!    script's refusal of bad arguments.
//! 6. `dpkg -P` of both, also when a step failed: nothing is left, not even the user.
//!
//! systemd is not PID 1 in the CI container, so the maintainer scripts' systemctl branch
//! and the hardening itself are not exercised here; `systemd-analyze verify` is the check
//! the units get.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::dist::{self, Artifacts};

const AGENT_CONF: &str = "/etc/edgefleet-agent/agent.toml";
const POLKIT_RULE: &str = "/etc/polkit-1/rules.d/50-edgefleet-agent.rules";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("deb-test takes no arguments (got `{arg}`)");
    }
    if !super::is_root() {
        bail!("deb-test installs and purges packages on this machine: run it as root, in a container or a CI VM");
    }
    for pkg in ["edgefleet-agent", "edgefleet-console"] {
        if package_status(pkg) != "not-installed" {
            bail!("{pkg} is already installed here; deb-test would purge it. Remove it first (dpkg -P {pkg})");
        }
    }
    if getent("passwd", "edgefleet").is_some() {
        bail!("the user edgefleet exists here; deb-test would delete it");
    }
    let started = Instant::now();
    let out = dist::target_dir(root).join("deb-test");
    let _ = std::fs::remove_dir_all(&out);
    let v1 = dist::version(root)?;
    let v2 = format!("{v1}+upgradetest1");
    let build = |version: &str| {
        dist::dist(
            root,
            &dist::Options {
                profile: "dev".into(),
                version: Some(version.into()),
                skip_ui_build: true,
                no_musl: true,
                out: Some(out.join(version)),
            },
        )
    };
    let old = build(&v1)?;
    let new = build(&v2)?;
    step("static checks of the packages");
    check_packages(&old, &out.join("extract"))?;

    let mut console = None;
    let result = scenario(root, &out, &old, &new, &mut console);
    if let Some(mut child) = console {
        let _ = child.kill();
        let _ = child.wait();
    }
    step("purging both packages");
    let purged = purge_and_check();
    match (result, purged) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => {
            eprintln!(
                "xtask deb-test: all package checks passed in {:.0}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

fn scenario(
    root: &Path,
    out: &Path,
    old: &Artifacts,
    new: &Artifacts,
    console: &mut Option<Child>,
) -> Result<()> {
    step(&format!("installing {} (agent and console)", old.version));
    dpkg_install(&[&old.agent_deb, &old.console_deb])?;
    check_installed(&old.version)?;
    verify_units()?;

    step("editing the agent config as an admin would");
    let agent = Path::new("/usr/bin/edgefleet-agent");
    run_ok(Command::new(agent).args([
        "config",
        "set",
        "--config",
        AGENT_CONF,
        "labels.site",
        "deb-test",
    ]))?;
    let mut file = std::fs::OpenOptions::new().append(true).open(AGENT_CONF)?;
    file.write_all(b"# deb-test: an admin's own note\n")?;
    drop(file);
    check_mode(AGENT_CONF, 0o600, "edgefleet")?;

    step(&format!("upgrading the agent to {}", new.version));
    dpkg_install(&[&new.agent_deb])?;
    ensure!(
        package_status("edgefleet-agent") == "installed"
            && package_version("edgefleet-agent") == new.version,
        "after the upgrade dpkg reports {} {}",
        package_status("edgefleet-agent"),
        package_version("edgefleet-agent")
    );
    let text = std::fs::read_to_string(AGENT_CONF)?;
    ensure!(
        text.contains("# deb-test: an admin's own note") && text.contains("site = \"deb-test\""),
        "the upgrade lost the admin's config edit:\n{text}"
    );
    ensure!(
        !Path::new("/etc/edgefleet-agent/agent.toml.dpkg-dist").exists()
            && !Path::new("/etc/edgefleet-agent/agent.toml.dpkg-new").exists(),
        "the upgrade left a .dpkg-dist or .dpkg-new config next to the admin's"
    );
    check_installed(&new.version)?;

    step("starting a console from target/debug");
    let bins = dist::target_dir(root).join("debug");
    let dir = out.join("console");
    let (http, mqtt) = start_console(&bins, &dir, console)?;
    let api_key = std::fs::read_to_string(dir.join("data/admin.key"))
        .context("the console writes data/admin.key on first start")?
        .trim()
        .to_string();
    let cli = |args: &[&str]| -> Result<String> {
        let out = run_ok(
            Command::new(bins.join("edgefleet"))
                .arg("--console")
                .arg(&http)
                .env("EDGEFLEET_API_KEY", &api_key)
                .args(args),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let script = root.join("scripts/install-agent.sh");

    step("install-agent.sh refuses incomplete arguments");
    let o = run_any(
        Command::new(&script)
            .arg(&new.agent_deb)
            .env("EDGEFLEET_AGENT_TOKEN", "x"),
    )?;
    ensure!(
        !o.status.success() && stderr(&o).contains("no console"),
        "install-agent.sh without --console: {:?} {}",
        o.status,
        stderr(&o)
    );

    step("install-agent.sh --foreground with a token that needs approval");
    let pending_token = cli(&["tokens", "create", "--expires", "1h"])?;
    let install = |package: &std::ffi::OsStr, download_base: Option<&Path>| {
        let mut cmd = Command::new(&script);
        cmd.arg(package)
            .args(["--console", &mqtt, "--foreground", "--timeout", "60"])
            .env("EDGEFLEET_AGENT_TOKEN", &pending_token);
        if let Some(base) = download_base {
            cmd.env(
                "EDGEFLEET_DOWNLOAD_BASE",
                format!("file://{}", base.display()),
            );
        }
        run_any(&mut cmd)
    };
    let o = install(new.agent_deb.as_os_str(), None)?;
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    eprint!("{log}");
    ensure!(
        o.status.success(),
        "install-agent.sh failed: {:?}",
        o.status
    );
    ensure!(
        log.contains("pending"),
        "install-agent.sh did not report pending"
    );
    ensure!(
        !log.contains(&pending_token),
        "install-agent.sh printed the token"
    );
    let status =
        String::from_utf8_lossy(&run_ok(Command::new(agent).arg("status"))?.stdout).into_owned();
    ensure!(
        status.contains("enrollment:    pending") && status.contains("connected:     true"),
        "edgefleet-agent status after the install:\n{status}"
    );
    let agent_id = status
        .lines()
        .find_map(|l| l.strip_prefix("agent id:"))
        .map(|s| s.trim().to_string())
        .context("no agent id in the status")?;

    step("approving it; install-agent.sh again, by version (idempotent), now reports approved");
    cli(&["agents", "approve", &agent_id])?;
    // This time by version, fetched from a download base (curl, here a file:// URL).
    let base = new
        .agent_deb
        .parent()
        .context("the package is in a directory")?;
    let o = install(new.version.as_ref(), Some(base))?;
    ensure!(
        String::from_utf8_lossy(&o.stdout).contains("downloading file://"),
        "install-agent.sh did not download the version it was given"
    );
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    eprint!("{log}");
    ensure!(
        o.status.success() && log.contains("approved"),
        "the second install-agent.sh run: {:?}",
        o.status
    );
    let want = format!("\"{}\"", env!("CARGO_PKG_VERSION"));
    let shown = wait_for(Duration::from_secs(30), || {
        let detail = cli(&["--json", "agents", "status", &agent_id]).ok()?;
        let after = detail.split("\"agent_version\"").nth(1)?;
        after
            .trim_start_matches([':', ' '])
            .starts_with(&want)
            .then_some(())
    });
    ensure!(
        shown.is_some(),
        "the console never showed agent_version {want} for agent {agent_id}"
    );

    // The console refuses a second host with the same hostname while the first is known,
    // and the enroll runs below are on this same machine: stop and forget this agent.
    step("stopping the foreground agent and deleting it from the console");
    let pid = std::fs::read_to_string("/run/edgefleet-agent.pid")
        .context("install-agent.sh --foreground writes /run/edgefleet-agent.pid")?;
    run_ok(Command::new("kill").arg(pid.trim()))?;
    let gone = wait_for(Duration::from_secs(10), || {
        (!Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
    ensure!(
        gone.is_some(),
        "the foreground agent (pid {}) did not stop on SIGTERM",
        pid.trim()
    );
    cli(&["agents", "delete", &agent_id])?;

    step("edgefleet-agent enroll (one shot, approved)");
    let auto_token = cli(&["tokens", "create", "--auto-approve", "--expires", "1h"])?;
    let enroll_dir = out.join("enroll");
    std::fs::create_dir_all(&enroll_dir)?;
    let conf = enroll_dir.join("agent.toml");
    run_ok(
        Command::new(agent)
            .args(["config", "set", "--config"])
            .arg(&conf)
            .arg("data_dir")
            .arg(enroll_dir.join("data")),
    )?;
    let enroll = |conf: &Path, token: &str| {
        run_any(
            Command::new(agent)
                .args(["enroll", "--console", &mqtt, "--timeout", "30s", "--config"])
                .arg(conf)
                .env("EDGEFLEET_AGENT_TOKEN", token)
                .env("RUST_LOG", "warn"),
        )
    };
    let o = enroll(&conf, &auto_token)?;
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(
        o.status.success() && said.contains("approved"),
        "enroll: {:?}\n{said}{}",
        o.status,
        stderr(&o)
    );
    let enrolled_id = said
        .split_whitespace()
        .skip_while(|w| *w != "agent")
        .nth(1)
        .context("enroll names the agent")?;
    cli(&["agents", "delete", enrolled_id])?;
    check_mode(&conf.to_string_lossy(), 0o600, "root")?;
    let shown = String::from_utf8_lossy(
        &run_ok(
            Command::new(agent)
                .args(["config", "show", "--config"])
                .arg(&conf),
        )?
        .stdout,
    )
    .into_owned();
    ensure!(
        shown.contains("token = \"<redacted>\"")
            && !shown.contains(&auto_token)
            && shown.contains(&mqtt),
        "config show after enroll:\n{shown}"
    );

    step("edgefleet-agent enroll with a revoked token is refused");
    let revoked = cli(&["tokens", "create", "--auto-approve", "--expires", "1h"])?;
    let token_id = revoked
        .split('.')
        .nth(1)
        .context("a token has four parts")?;
    cli(&["tokens", "revoke", token_id])?;
    let conf = enroll_dir.join("refused.toml");
    run_ok(
        Command::new(agent)
            .args(["config", "set", "--config"])
            .arg(&conf)
            .arg("data_dir")
            .arg(enroll_dir.join("refused")),
    )?;
    let o = enroll(&conf, &revoked)?;
    ensure!(
        !o.status.success() && stderr(&o).contains("refused"),
        "enroll with a revoked token: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    Ok(())
}

fn check_packages(a: &Artifacts, extract: &Path) -> Result<()> {
    let agent = [
        ("-rwxr-xr-x", "./opt/edgefleet-agent/edgefleet-agent"),
        (
            "lrwxrwxrwx",
            "./usr/bin/edgefleet-agent -> /opt/edgefleet-agent/edgefleet-agent",
        ),
        ("-rw-------", "./etc/edgefleet-agent/agent.toml"),
        ("-rw-r--r--", "./lib/systemd/system/edgefleet-agent.service"),
        ("-rw-r--r--", "./usr/share/doc/edgefleet-agent/copyright"),
    ];
    let console = [
        ("-rwxr-xr-x", "./opt/edgefleet-console/edgefleet-console"),
        ("-rw-r--r--", "./opt/edgefleet-console/ui/index.html"),
        (
            "lrwxrwxrwx",
            "./usr/bin/edgefleet-console -> /opt/edgefleet-console/edgefleet-console",
        ),
        ("-rwxr-xr-x", "./usr/bin/edgefleet"),
        ("-rw-------", "./etc/edgefleet-console/console.toml"),
        (
            "-rw-r--r--",
            "./lib/systemd/system/edgefleet-console.service",
        ),
        ("-rw-r--r--", "./usr/share/doc/edgefleet-console/copyright"),
    ];
    for (deb, pkg, expected, conffile) in [
        (
            &a.agent_deb,
            "edgefleet-agent",
            &agent[..],
            "/etc/edgefleet-agent/agent.toml",
        ),
        (
            &a.console_deb,
            "edgefleet-console",
            &console[..],
            "/etc/edgefleet-console/console.toml",
        ),
    ] {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ensure!(
            name == format!("{pkg}_{}_amd64.deb", a.version),
            "unexpected package file name {name}"
        );
        let fields = capture(Command::new("dpkg-deb").arg("-f").arg(deb).args([
            "Package",
            "Version",
            "Architecture",
            "Depends",
        ]))?;
        for want in [
            format!("Package: {pkg}"),
            format!("Version: {}", a.version),
            "Architecture: amd64".to_string(),
        ] {
            ensure!(
                fields.contains(&want),
                "{name}: control lacks `{want}`:\n{fields}"
            );
        }
        ensure!(
            fields.contains("passwd"),
            "{name}: Depends lacks passwd (useradd):\n{fields}"
        );
        let conffiles = capture(
            Command::new("dpkg-deb")
                .arg("--info")
                .arg(deb)
                .arg("conffiles"),
        )?;
        ensure!(
            conffiles.trim() == conffile,
            "{name}: conffiles is {conffiles:?}"
        );

        let listing = capture(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
        let mut entries = Vec::new();
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() >= 6, "{name}: odd listing line {line:?}");
            ensure!(
                f[1] == "root/root",
                "{name}: {line} is not owned by root/root"
            );
            if f[0].starts_with('d') {
                ensure!(
                    f[0] == "drwxr-xr-x",
                    "{name}: directory with mode {}: {line}",
                    f[0]
                );
            }
            entries.push((f[0].to_string(), f[5..].join(" ")));
        }
        for (mode, path) in expected {
            ensure!(
                entries.iter().any(|(m, p)| m == mode && p == path),
                "{name}: no `{mode} {path}` in\n{listing}"
            );
        }

        let dir = extract.join(pkg);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
        run_ok(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(deb)
                .arg(dir.join("DEBIAN")),
        )?;
        for script in ["postinst", "prerm", "postrm"] {
            let path = dir.join("DEBIAN").join(script);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{name}: no {script}"))?;
            ensure!(
                !text.contains("@PKG@") && !text.contains("@OTHER@") && !text.contains("@CONF@"),
                "{name}: {script} has an unfilled placeholder"
            );
            ensure!(
                text.contains(&format!("PKG={pkg}")),
                "{name}: {script} is not filled in for {pkg}"
            );
            ensure!(
                path.metadata()?.permissions().mode() & 0o777 == 0o755,
                "{name}: {script} is not 0755"
            );
            run_ok(Command::new("sh").arg("-n").arg(&path))?;
        }
        let unit = std::fs::read_to_string(dir.join(format!("lib/systemd/system/{pkg}.service")))?;
        for line in [
            "User=edgefleet",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            &format!("ReadWritePaths=/var/lib/{pkg}"),
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "Restart=on-failure",
            &format!("ExecStart=/opt/{pkg}/{pkg} "),
        ] {
            ensure!(
                unit.lines().any(|l| l.starts_with(line)),
                "{name}: the unit lacks `{line}`"
            );
        }
        for key in ["MemoryMax=", "CPUQuota="] {
            ensure!(
                unit.lines()
                    .any(|l| l.starts_with(key) && l.len() > key.len()),
                "{name}: the unit sets no {key}"
            );
        }
        let writable: Vec<&str> = unit
            .lines()
            .filter(|l| l.starts_with("ReadWritePaths="))
            .collect();
        ensure!(
            writable.len() == 1,
            "{name}: ReadWritePaths must name the data dir only: {writable:?}"
        );
    }
    Ok(())
}

fn check_installed(version: &str) -> Result<()> {
    for pkg in ["edgefleet-agent", "edgefleet-console"] {
        ensure!(
            package_status(pkg) == "installed",
            "{pkg} is {}",
            package_status(pkg)
        );
    }
    ensure!(
        package_version("edgefleet-agent") == version,
        "agent version {}",
        package_version("edgefleet-agent")
    );
    let user =
        getent("passwd", "edgefleet").context("postinst did not create the user edgefleet")?;
    let f: Vec<&str> = user.split(':').collect();
    let uid: u32 = f.get(2).and_then(|u| u.parse().ok()).context("a uid")?;
    ensure!(uid < 1000, "edgefleet is not a system user (uid {uid})");
    ensure!(
        f.get(6) == Some(&"/usr/sbin/nologin"),
        "edgefleet can log in: {user}"
    );
    check_mode("/opt/edgefleet-agent/edgefleet-agent", 0o755, "root")?;
    check_mode("/etc/edgefleet-agent", 0o750, "edgefleet")?;
    check_mode(AGENT_CONF, 0o600, "edgefleet")?;
    check_mode("/var/lib/edgefleet-agent", 0o750, "edgefleet")?;
    check_mode("/etc/edgefleet-console", 0o750, "edgefleet")?;
    check_mode("/etc/edgefleet-console/console.toml", 0o600, "edgefleet")?;
    check_mode("/var/lib/edgefleet-console", 0o750, "edgefleet")?;
    check_mode("/opt/edgefleet-console/ui/index.html", 0o644, "root")?;
    check_mode("/usr/bin/edgefleet", 0o755, "root")?;
    check_mode(POLKIT_RULE, 0o644, "root")?;
    let rule = std::fs::read_to_string(POLKIT_RULE)?;
    ensure!(
        rule.contains("var units = [];") && rule.contains("subject.user != \"edgefleet\""),
        "the polkit rule:\n{rule}"
    );
    if super::on_path("node") {
        // polkit rules are JavaScript; node's parser catches a malformed one.
        let copy = std::env::temp_dir().join("edgefleet-polkit-check.js");
        std::fs::write(&copy, &rule)?;
        let checked = run_ok(Command::new("node").arg("--check").arg(&copy));
        let _ = std::fs::remove_file(&copy);
        checked?;
    }
    for pkg in ["edgefleet-agent", "edgefleet-console"] {
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{pkg}.service");
        ensure!(
            std::fs::read_link(&wants).ok()
                == Some(PathBuf::from(format!("/lib/systemd/system/{pkg}.service"))),
            "postinst did not enable {pkg}.service ({wants})"
        );
    }
    let v = capture(Command::new("/usr/bin/edgefleet-agent").arg("version"))?;
    ensure!(
        v.trim() == format!("edgefleet-agent {}", env!("CARGO_PKG_VERSION")),
        "edgefleet-agent version: {v}"
    );
    let v = capture(Command::new("/usr/bin/edgefleet").arg("--version"))?;
    ensure!(v.starts_with("edgefleet "), "edgefleet --version: {v}");
    Ok(())
}

/// `systemd-analyze verify` of the installed units. Without systemd as PID 1 it still
/// parses them, checks every directive and value, and that ExecStart is executable, which
/// is why it runs on the installed files rather than on the staging tree.
fn verify_units() -> Result<()> {
    if !super::on_path("systemd-analyze") {
        eprintln!("xtask deb-test: WARNING: no systemd-analyze; the unit files are not verified");
        return Ok(());
    }
    for pkg in ["edgefleet-agent", "edgefleet-console"] {
        let unit = format!("/lib/systemd/system/{pkg}.service");
        let o = run_any(Command::new("systemd-analyze").args(["verify", &unit]))?;
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        // Warnings (unknown keys, bad values) exit 0, so any output at all is a failure.
        ensure!(
            o.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {unit}: {:?}\n{text}",
            o.status
        );
        eprintln!("xtask deb-test: systemd-analyze verify {unit}: ok");
    }
    Ok(())
}

fn purge_and_check() -> Result<()> {
    let o = run_any(Command::new("dpkg").args(["-P", "edgefleet-agent", "edgefleet-console"]))?;
    ensure!(o.status.success(), "dpkg -P failed: {}", stderr(&o));
    let mut left = Vec::new();
    for path in [
        "/opt/edgefleet-agent",
        "/etc/edgefleet-agent",
        "/var/lib/edgefleet-agent",
        "/usr/bin/edgefleet-agent",
        "/lib/systemd/system/edgefleet-agent.service",
        "/etc/systemd/system/multi-user.target.wants/edgefleet-agent.service",
        "/run/edgefleet-agent.pid",
        POLKIT_RULE,
        "/opt/edgefleet-console",
        "/etc/edgefleet-console",
        "/var/lib/edgefleet-console",
        "/usr/bin/edgefleet-console",
        "/usr/bin/edgefleet",
        "/lib/systemd/system/edgefleet-console.service",
        "/etc/systemd/system/multi-user.target.wants/edgefleet-console.service",
        "/usr/share/doc/edgefleet-agent",
        "/usr/share/doc/edgefleet-console",
    ] {
        if Path::new(path).symlink_metadata().is_ok() {
            left.push(path.to_string());
        }
    }
    if getent("passwd", "edgefleet").is_some() {
        left.push("user edgefleet".into());
    }
    if getent("group", "edgefleet").is_some() {
        left.push("group edgefleet".into());
    }
    for pkg in ["edgefleet-agent", "edgefleet-console"] {
        if package_status(pkg) != "not-installed" {
            left.push(format!("{pkg} is {}", package_status(pkg)));
        }
    }
    ensure!(
        left.is_empty(),
        "after dpkg -P these remain: {}",
        left.join(", ")
    );
    Ok(())
}

fn start_console(bins: &Path, dir: &Path, slot: &mut Option<Child>) -> Result<(String, String)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let free = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (http, mqtt) = (free()?, free()?);
    let config = dir.join("console.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", dir.join("data")))?;
    let log = std::fs::File::create(dir.join("console.log"))?;
    let child = Command::new(bins.join("edgefleet-console"))
        .arg("--config")
        .arg(&config)
        .args([
            "--http",
            &format!("127.0.0.1:{http}"),
            "--mqtt",
            &format!("127.0.0.1:{mqtt}"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting edgefleet-console")?;
    *slot = Some(child);
    let up = wait_for(Duration::from_secs(30), || healthz(http).then_some(()));
    if up.is_none() {
        let log = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
        bail!("the console did not answer /healthz within 30 s; its log:\n{log}");
    }
    Ok((
        format!("http://127.0.0.1:{http}"),
        format!("mqtt://127.0.0.1:{mqtt}"),
    ))
}

fn healthz(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dpkg_install(debs: &[&Path]) -> Result<()> {
    run_ok(
        Command::new("dpkg")
            .args(["--force-confdef", "--force-confold", "-i"])
            .args(debs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    )
    .map(drop)
}

fn check_mode(path: &str, mode: u32, owner: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{path} is missing"))?;
    let actual = meta.permissions().mode() & 0o7777;
    ensure!(
        actual == mode,
        "{path} has mode {actual:o}, expected {mode:o}"
    );
    let uid = match owner {
        "root" => 0,
        user => getent("passwd", user)
            .and_then(|l| l.split(':').nth(2).and_then(|u| u.parse().ok()))
            .with_context(|| format!("no user {user}"))?,
    };
    ensure!(
        meta.uid() == uid,
        "{path} is owned by uid {}, expected {owner}",
        meta.uid()
    );
    Ok(())
}

fn package_status(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not-installed".into())
}

fn package_version(pkg: &str) -> String {
    capture(Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg])).unwrap_or_default()
}

fn getent(db: &str, key: &str) -> Option<String> {
    let o = Command::new("getent").args([db, key]).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn step(what: &str) {
    eprintln!("xtask deb-test: {what}");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run_any(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

fn run_ok(cmd: &mut Command) -> Result<Output> {
    let o = run_any(cmd)?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed with {}:\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
    Ok(o)
}

fn capture(cmd: &mut Command) -> Result<String> {
    run_ok(cmd).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}
