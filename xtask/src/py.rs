//! Python tooling for the tests: a virtualenv in `target/py` with paho-mqtt, the
//! independent MQTT client of `tests/it/independent.rs` (which runs
//! `target/py/bin/python`). A venv, because Debian's system Python refuses `pip install`
//! (PEP 668) and the tests must not depend on what else is installed.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

/// The version range the test script is written against (paho-mqtt 2.x callback API).
const PAHO: &str = "paho-mqtt>=2.0,<3";

pub fn install_paho(root: &Path) -> Result<()> {
    let venv = root.join("target/py");
    let python = venv.join("bin/python");
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", "import paho.mqtt.client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports(&python) {
        return Ok(());
    }
    let make_venv = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !make_venv() {
        // A fresh Debian has python3 without the venv module (or no python3 at all).
        apt_install(&["python3", "python3-venv", "python3-pip"])?;
        if !make_venv() {
            anyhow::bail!("python3 -m venv {} failed", venv.display());
        }
    }
    super::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(PAHO),
    )
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| {
        let mut cmd = if super::is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    super::run(&mut apt(&["update", "-qq"]))?;
    super::run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(packages))
}
