//! The login profile: `~/.config/edgefleet/config.json` (or `$XDG_CONFIG_HOME/edgefleet/`),
//! written by `edgefleet login` with mode 0600 because it holds an API key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where the profile lives; `None` when neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("edgefleet").join("config.json"))
}

/// The saved profile, `None` if there is none yet. A profile that exists but cannot be read
/// is an error, not a silent logout.
pub fn load() -> Result<Option<Profile>> {
    let Some(path) = path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let profile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid profile; run 'edgefleet login' again",
            path.display()
        )
    })?;
    Ok(Some(profile))
}

/// Writes the profile atomically (temp file, fsync, rename), mode 0600 in a 0700 directory.
pub fn save(profile: &Profile) -> Result<PathBuf> {
    let path = path().context("cannot tell where to keep the profile: set HOME")?;
    let dir = path.parent().expect("the profile path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    write_private(&path, &serde_json::to_vec_pretty(profile)?)?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // An older file from a looser umask keeps its mode through O_CREAT, so set it again.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
