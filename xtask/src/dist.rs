//! `cargo xtask dist`: the release artifacts in `dist/`.
//!
//! - `edgefleet-agent_<v>_amd64.deb` and `edgefleet-console_<v>_amd64.deb`, built by
//!   Debian's own `dpkg-deb --build --root-owner-group` from a staging tree under
//!   `target/dist-stage/`. The unit files, default configs and maintainer script templates
//!   live in `packaging/`; this module lays them out, fills in the control files, and sets
//!   every mode explicitly so the package does not depend on the builder's umask.
//! - `edgefleet-cli_<v>_x86_64-linux.tar.gz`: the operator CLI alone, for laptops.
//!
//! The version is the git tag when HEAD is tagged `v*`, else `[workspace.package] version`.
//! The agent is built for `x86_64-unknown-linux-musl` (static, runs on any libc) when that
//! target installs and builds, else for the host's glibc, with a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const MUSL: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, Clone)]
pub struct Options {
    /// Cargo profile: `release` (default) or `dev` (CI packages the test build's binaries).
    pub profile: String,
    /// Overrides the version (the upgrade test builds a second, newer package).
    pub version: Option<String>,
    /// Use `web-ui/dist` as it is instead of running `xtask ui` first.
    pub skip_ui_build: bool,
    /// Build the agent for glibc without trying musl.
    pub no_musl: bool,
    /// Where the artifacts go (default `dist/`).
    pub out: Option<PathBuf>,
}

/// What `dist` produced.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub version: String,
    pub agent_deb: PathBuf,
    pub console_deb: PathBuf,
    pub cli_tarball: PathBuf,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options {
            profile: "release".into(),
            version: None,
            skip_ui_build: false,
            no_musl: false,
            out: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--profile" => opts.profile = value("--profile")?,
                "--version" => opts.version = Some(value("--version")?),
                "--out" => opts.out = Some(value("--out")?.into()),
                "--skip-ui-build" => opts.skip_ui_build = true,
                "--no-musl" => opts.no_musl = true,
                other => bail!(
                    "dist: unknown argument `{other}` (expected --profile release|dev, --version V, --out DIR, --skip-ui-build, --no-musl)"
                ),
            }
        }
        if !matches!(opts.profile.as_str(), "release" | "dev") {
            bail!("dist: --profile must be release or dev");
        }
        Ok(opts)
    }
}

pub fn dist(root: &Path, opts: &Options) -> Result<Artifacts> {
    let started = std::time::Instant::now();
    let version = match &opts.version {
        Some(v) => v.clone(),
        None => version(root)?,
    };
    check_debian_version(&version)?;
    let out = opts.out.clone().unwrap_or_else(|| root.join("dist"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    if !opts.skip_ui_build {
        super::ui::build(root)?;
    }
    let ui = root.join("web-ui/dist");
    if !ui.join("index.html").is_file() {
        bail!(
            "{} has no index.html: run `cargo xtask ui` (or drop --skip-ui-build)",
            ui.display()
        );
    }

    let mut build = super::cargo();
    build.args(["build", "--locked", "--profile", &opts.profile]);
    build.args(["-p", "edgefleet-console"]);
    super::run(&mut build)?;
    // The agent is built on its own, in its own profile (release: `release-agent`, size
    // first; see the workspace Cargo.toml), so the console's features do not unify into it.
    let agent_profile = super::agent_profile(&opts.profile);
    let mut build = super::cargo();
    build.args(["build", "--locked", "--profile", agent_profile]);
    build.args(["-p", "edgefleet-agent"]);
    super::run(&mut build)?;
    let bins = target_dir(root).join(super::profile_dir(&opts.profile));
    let agent_bins = target_dir(root).join(super::profile_dir(agent_profile));
    let agent_bin = if opts.no_musl || opts.profile == "dev" {
        agent_bins.join("edgefleet-agent")
    } else {
        match musl_agent(root, agent_profile) {
            Ok(path) => path,
            Err(e) => {
                eprintln!(
                    "xtask dist: WARNING: no static musl agent ({e:#}); packaging the glibc build"
                );
                agent_bins.join("edgefleet-agent")
            }
        }
    };

    let stage_root = target_dir(root).join("dist-stage");
    let _ = std::fs::remove_dir_all(&stage_root);
    let packaging = root.join("packaging");

    // The agent package.
    let stage = stage_root.join("edgefleet-agent");
    let opt = stage.join("opt/edgefleet-agent");
    install_bin(&agent_bin, &opt.join("edgefleet-agent"), &opts.profile)?;
    symlink(
        "/opt/edgefleet-agent/edgefleet-agent",
        &stage.join("usr/bin/edgefleet-agent"),
    )?;
    install(
        &packaging.join("agent/agent.toml"),
        &stage.join("etc/edgefleet-agent/agent.toml"),
        0o600,
    )?;
    install(
        &packaging.join("agent/edgefleet-agent.service"),
        &stage.join("lib/systemd/system/edgefleet-agent.service"),
        0o644,
    )?;
    copyright(&stage, "edgefleet-agent")?;
    let libc = glibc_dependency(&opt.join("edgefleet-agent"))?;
    let depends = format!("passwd, init-system-helpers (>= 1.54){libc}");
    control(
        &stage,
        &packaging,
        &Control {
            package: "edgefleet-agent",
            other: "edgefleet-console",
            conffile: "/etc/edgefleet-agent/agent.toml",
            version: &version,
            depends: &depends,
            recommends: Some("polkitd | policykit-1"),
            description: "EdgeFleet agent for Linux edge devices\n \
                 Connects out to the EdgeFleet console over MQTT (it opens no listening\n \
                 socket), reports vitals, apps and inventory, and runs the signed commands\n \
                 the console sends. Runs as the unprivileged user edgefleet.",
        },
    )?;
    let agent_deb = out.join(format!("edgefleet-agent_{version}_amd64.deb"));
    dpkg_build(&stage, &agent_deb, &opts.profile)?;

    // The console package, with the web UI and the operator CLI.
    let stage = stage_root.join("edgefleet-console");
    let opt = stage.join("opt/edgefleet-console");
    install_bin(
        &bins.join("edgefleet-console"),
        &opt.join("edgefleet-console"),
        &opts.profile,
    )?;
    copy_tree(&ui, &opt.join("ui"))?;
    symlink(
        "/opt/edgefleet-console/edgefleet-console",
        &stage.join("usr/bin/edgefleet-console"),
    )?;
    install_bin(
        &bins.join("edgefleet"),
        &stage.join("usr/bin/edgefleet"),
        &opts.profile,
    )?;
    install(
        &packaging.join("console/console.toml"),
        &stage.join("etc/edgefleet-console/console.toml"),
        0o600,
    )?;
    install(
        &packaging.join("console/edgefleet-console.service"),
        &stage.join("lib/systemd/system/edgefleet-console.service"),
        0o644,
    )?;
    copyright(&stage, "edgefleet-console")?;
    let libc = glibc_dependency(&opt.join("edgefleet-console"))?;
    let depends = format!("passwd, init-system-helpers (>= 1.54){libc}");
    control(
        &stage,
        &packaging,
        &Control {
            package: "edgefleet-console",
            other: "edgefleet-agent",
            conffile: "/etc/edgefleet-console/console.toml",
            version: &version,
            depends: &depends,
            recommends: None,
            description: "EdgeFleet console: MQTT broker, fleet state, REST API and web UI\n \
                 The server EdgeFleet agents connect to, with the web UI and the edgefleet\n \
                 operator CLI. Runs as the unprivileged user edgefleet.",
        },
    )?;
    let console_deb = out.join(format!("edgefleet-console_{version}_amd64.deb"));
    dpkg_build(&stage, &console_deb, &opts.profile)?;

    // The CLI tarball.
    let name = format!("edgefleet-cli_{version}_x86_64-linux");
    let stage = stage_root.join(&name);
    install_bin(
        &bins.join("edgefleet"),
        &stage.join("edgefleet"),
        &opts.profile,
    )?;
    let cli_tarball = out.join(format!("{name}.tar.gz"));
    super::run(
        Command::new("tar")
            .arg("-C")
            .arg(&stage_root)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
            .arg(&cli_tarball)
            .arg(&name),
    )?;

    let artifacts = Artifacts {
        version,
        agent_deb,
        console_deb,
        cli_tarball,
    };
    for path in [
        &artifacts.agent_deb,
        &artifacts.console_deb,
        &artifacts.cli_tarball,
    ] {
        let size = std::fs::metadata(path)?.len();
        eprintln!(
            "xtask dist: {} ({:.1} MB)",
            path.display(),
            size as f64 / 1e6
        );
    }
    eprintln!(
        "xtask dist: done in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(artifacts)
}

/// The git tag (without its `v`) when HEAD is tagged `v*`, else the workspace version. A
/// pre-release tag `v1.2.0-rc1` becomes `1.2.0~rc1`, which Debian sorts before `1.2.0`.
pub fn version(root: &Path) -> Result<String> {
    let tag = Command::new("git")
        .current_dir(root)
        .args([
            "describe",
            "--exact-match",
            "--tags",
            "--match",
            "v*",
            "HEAD",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let workspace = workspace_version(root)?;
    match tag {
        Some(tag) => {
            let v = tag.trim_start_matches('v').replacen('-', "~", 1);
            if v != workspace {
                eprintln!("xtask dist: WARNING: tag {tag} differs from the workspace version {workspace}; the binaries report {workspace}");
            }
            Ok(v)
        }
        None => Ok(workspace),
    }
}

fn workspace_version(root: &Path) -> Result<String> {
    let path = root.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim_start().trim_start_matches('=').trim();
                return Ok(v.trim_matches('"').to_string());
            }
        }
    }
    bail!("no version in [workspace.package] of {}", path.display())
}

fn check_debian_version(v: &str) -> Result<()> {
    let ok = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c));
    if !ok {
        bail!("`{v}` is not a Debian package version (digits first, then [A-Za-z0-9.+~])");
    }
    Ok(())
}

/// Builds the agent for musl; any failure (no target, no C toolchain for musl) is returned
/// for the caller to fall back.
fn musl_agent(root: &Path, profile: &str) -> Result<PathBuf> {
    let installed = super::capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|t| t.trim() == MUSL) {
        super::run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    // ring (the agent's TLS crypto) compiles C for the target: it needs a musl C compiler,
    // which Debian's musl-tools provides as `musl-gcc`.
    let mut build = super::cargo();
    if !super::on_path("x86_64-linux-musl-gcc") {
        if !super::on_path("musl-gcc") {
            bail!("no C compiler for musl (ring needs one): apt-get install musl-tools");
        }
        build.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
    }
    super::run(build.args([
        "build",
        "--locked",
        "--profile",
        profile,
        "--target",
        MUSL,
        "-p",
        "edgefleet-agent",
    ]))?;
    Ok(target_dir(root)
        .join(MUSL)
        .join(profile)
        .join("edgefleet-agent"))
}

struct Control<'a> {
    package: &'a str,
    /// The other package, which shares the `edgefleet` user (postrm keeps it for that one).
    other: &'a str,
    conffile: &'a str,
    version: &'a str,
    depends: &'a str,
    recommends: Option<&'a str>,
    description: &'a str,
}

fn control(stage: &Path, packaging: &Path, c: &Control) -> Result<()> {
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let installed_kib = tree_size(stage)?.div_ceil(1024);
    let mut text = format!(
        "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: EdgeFleet maintainers <maintainers@edgefleet.invalid>\n\
         Section: admin\nPriority: optional\nInstalled-Size: {installed_kib}\nDepends: {}\n",
        c.package, c.version, c.depends
    );
    if let Some(r) = c.recommends {
        text.push_str(&format!("Recommends: {r}\n"));
    }
    text.push_str(&format!("Description: {}\n", c.description));
    write(&debian.join("control"), &text, 0o644)?;
    write(
        &debian.join("conffiles"),
        &format!("{}\n", c.conffile),
        0o644,
    )?;
    let conf_name = Path::new(c.conffile)
        .file_name()
        .expect("a conffile path names a file")
        .to_string_lossy();
    for script in ["postinst", "prerm", "postrm"] {
        let path = packaging.join(script);
        let template = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let filled = template
            .replace("@PKG@", c.package)
            .replace("@OTHER@", c.other)
            .replace("@CONF@", &conf_name);
        write(&debian.join(script), &filled, 0o755)?;
    }
    Ok(())
}

fn copyright(stage: &Path, package: &str) -> Result<()> {
    write(
        &stage.join(format!("usr/share/doc/{package}/copyright")),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: EdgeFleet\n\n\
         Files: *\nCopyright: The EdgeFleet contributors\nLicense: Apache-2.0\n \
         On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )
}

fn dpkg_build(stage: &Path, deb: &Path, profile: &str) -> Result<()> {
    fix_dir_modes(stage)?;
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["--root-owner-group", "--build"]);
    // xz for releases; gzip for the CI build, where packing speed matters more than size.
    if profile == "dev" {
        cmd.args(["-Zgzip", "-z1"]);
    } else {
        cmd.args(["-Zxz", "-z6"]);
    }
    super::run(cmd.arg(stage).arg(deb).stdout(std::process::Stdio::null()))
}

/// `libc6 (>= 2.N)` for the newest glibc symbol version the binary uses; empty for a
/// static binary.
fn glibc_dependency(bin: &Path) -> Result<String> {
    let bytes = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let needle = b"GLIBC_2.";
    let mut newest: Option<(u32, u32)> = None;
    let mut at = 0;
    while let Some(pos) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + pos + needle.len();
        let rest: String = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .map(|&b| b as char)
            .collect();
        let mut parts = rest.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let Some(minor) = parts.next() {
            let patch = parts.next().unwrap_or(0);
            newest = newest.max(Some((minor, patch)));
        }
        at = start;
    }
    Ok(match newest {
        None => String::new(),
        Some((minor, 0)) => format!(", libc6 (>= 2.{minor})"),
        Some((minor, patch)) => format!(", libc6 (>= 2.{minor}.{patch})"),
    })
}

/// Copies a binary; debug builds are stripped on the copy (they carry line tables that
/// only make the CI package slower to build).
fn install_bin(from: &Path, to: &Path, profile: &str) -> Result<()> {
    install(from, to, 0o755)?;
    if profile == "dev" && super::on_path("strip") {
        super::run(Command::new("strip").arg(to))?;
    }
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    make_parent(to)?;
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    make_parent(to)?;
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    make_parent(link)?;
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {target}", link.display()))
}

fn make_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("staged paths have a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

/// Every staged directory 0755, whatever the builder's umask.
fn fix_dir_modes(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fix_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            install(&path, &dest, 0o644)?;
        }
    }
    Ok(())
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            if entry.file_name() != "DEBIAN" {
                total += tree_size(&entry.path())?;
            }
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = Options::parse(&args(&["--profile", "dev", "--version", "1.2.3"])).unwrap();
        assert_eq!(o.profile, "dev");
        assert_eq!(o.version.as_deref(), Some("1.2.3"));
        assert!(Options::parse(&args(&["--profile", "fast"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        assert!(Options::parse(&args(&["--version"])).is_err());
    }

    #[test]
    fn versions_must_suit_debian() {
        assert!(check_debian_version("0.1.0").is_ok());
        assert!(check_debian_version("1.2.0~rc1").is_ok());
        assert!(check_debian_version("v1.2").is_err());
        assert!(check_debian_version("1.2 3").is_err());
    }

    #[test]
    fn the_workspace_version_is_read_from_the_root_manifest() {
        let root = super::super::workspace_root();
        let v = workspace_version(&root).unwrap();
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn glibc_versions_are_compared_numerically() {
        let dir = std::env::temp_dir().join(format!("xtask-glibc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bin");
        std::fs::write(&bin, b"\0GLIBC_2.9\0GLIBC_2.34\0GLIBC_2.17\0GLIBC_2.3.4\0").unwrap();
        assert_eq!(glibc_dependency(&bin).unwrap(), ", libc6 (>= 2.34)");
        std::fs::write(&bin, b"static").unwrap();
        assert_eq!(glibc_dependency(&bin).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
