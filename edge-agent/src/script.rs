//! `run-script`: the one way past the fixed command set, and it is the device's local admin
//! who opens it, not the console. A script runs only if `allow_scripts = true` *and* its
//! SHA-256 is on the allow-list file (`script_allowlist`), which the agent re-reads for
//! every script and refuses to trust when group or others may write it. A compromised
//! console can therefore run exactly the scripts the admin vetted, byte for byte.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::identity::hex;

/// A script that runs longer is killed and reported failed.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// The result message keeps the end of the output, where errors usually are.
const OUTPUT_TAIL: usize = 1024;

/// The local admin's decision: `None` means scripts are off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptPolicy {
    pub allowlist: Option<PathBuf>,
}

impl ScriptPolicy {
    pub fn from_config(cfg: &edgefleet_config::AgentConfig) -> ScriptPolicy {
        ScriptPolicy {
            allowlist: cfg
                .allow_scripts
                .then(|| cfg.script_allowlist.clone())
                .flatten(),
        }
    }

    /// `Ok` if this exact script may run; the error says why not.
    pub fn check(&self, script: &str) -> Result<(), String> {
        let Some(path) = &self.allowlist else {
            return Err(
                "scripts are disabled on this agent (allow_scripts = false in its config)".into(),
            );
        };
        let hash = hex(&Sha256::digest(script.as_bytes()));
        let allowed = read_allowlist(path)?;
        if allowed.contains(&hash) {
            Ok(())
        } else {
            Err(format!(
                "script sha256 {hash} is not on this agent's allow-list {}",
                path.display()
            ))
        }
    }
}

/// The hashes in an allow-list file: hex SHA-256 per line, `#` starts a comment.
fn read_allowlist(path: &Path) -> Result<Vec<String>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("reading the allow-list {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "the allow-list {} is writable by group or others; refusing to trust it (chmod go-w)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the allow-list {}: {e}", path.display()))?;
    let mut hashes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let entry = entry.to_ascii_lowercase();
        if entry.len() != 64 || !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "the allow-list {} line {}: expected a hex SHA-256, got {entry:?}",
                path.display(),
                n + 1
            ));
        }
        hashes.push(entry);
    }
    Ok(hashes)
}

/// Runs `script` with `sh -s` (the script on stdin, so no argv length limit), stdout and
/// stderr merged into the result. `Ok` with the output tail on exit 0.
pub async fn run(script: &str, timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let body = script.as_bytes().to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("waiting for the script: {e}")),
        Err(_) => return Err(format!("timed out after {} s; killed", timeout.as_secs())),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail = tail(text.trim(), OUTPUT_TAIL);
    if out.status.success() {
        Ok(format!("exit 0: {tail}"))
    } else {
        Err(format!("{}: {tail}", out.status))
    }
}

fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "echo checking; df -h / >/dev/null; echo done\n";

    fn allowlist(dir: &Path, lines: &str, mode: u32) -> PathBuf {
        let path = dir.join("allow");
        std::fs::write(&path, lines).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_listed_scripts_pass_and_a_loose_or_bad_list_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let off = ScriptPolicy::default();
        assert!(off.check(SCRIPT).unwrap_err().contains("disabled"));

        let hash = hex(&Sha256::digest(SCRIPT.as_bytes()));
        let list = allowlist(
            dir.path(),
            &format!("# disk check\n{}  # vetted\n", hash.to_uppercase()),
            0o644,
        );
        let on = ScriptPolicy {
            allowlist: Some(list.clone()),
        };
        on.check(SCRIPT).unwrap();
        let err = on.check("rm -rf /\n").unwrap_err();
        assert!(err.contains("not on this agent's allow-list"), "{err}");
        // One byte different is a different script.
        assert!(on.check(&SCRIPT.replace("done", "d0ne")).is_err());

        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(on.check(SCRIPT).unwrap_err().contains("writable"));
        let list = allowlist(dir.path(), "not-a-hash\n", 0o600);
        let err = ScriptPolicy {
            allowlist: Some(list),
        }
        .check(SCRIPT)
        .unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[tokio::test]
    async fn scripts_report_their_output_exit_status_and_timeouts() {
        let ok = run(SCRIPT, TIMEOUT).await.unwrap();
        assert!(ok.starts_with("exit 0:") && ok.contains("done"), "{ok}");
        let err = run("echo broken >&2; exit 4\n", TIMEOUT).await.unwrap_err();
        assert!(err.contains("4") && err.contains("broken"), "{err}");
        let err = run("sleep 5\n", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert_eq!(tail(&"x".repeat(5000), 10).len(), 13);
    }
}
