//! The agent's own key (`agent.key`, a 32-byte Ed25519 seed, mode 0600) and the pinned
//! console key (`console.pub`, hex), both files in the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use edgefleet_codec::{Identity, PublicKey};

/// Loads the agent key from `path`, creating it (mode 0600) on first run. A key file that
/// other users can read is refused with an error that says how to fix it.
pub fn load_or_create(path: &Path) -> Result<Identity> {
    if path.exists() {
        let bytes = edgefleet_config::keyfile::read_secret(path)
            .with_context(|| format!("reading the agent key {}", path.display()))?;
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not an agent key (expected 32 bytes, found {})",
                path.display(),
                bytes.len()
            )
        })?;
        return Ok(Identity::from_seed(&seed));
    }
    let identity = Identity::generate();
    edgefleet_config::keyfile::write_secret(path, identity.seed().as_ref())
        .with_context(|| format!("writing the new agent key to {}", path.display()))?;
    tracing::info!(agent.id = %identity.agent_id(), path = %path.display(), "created a new agent key");
    Ok(identity)
}

/// The pinned console public key (docs/wire.md, "Console key pinning"). Once a key is
/// pinned, console messages signed by any other key are refused.
#[derive(Debug, Clone)]
pub struct ConsolePin {
    path: PathBuf,
}

impl ConsolePin {
    /// The pin in `data_dir/console.pub`.
    pub fn in_dir(data_dir: &Path) -> ConsolePin {
        ConsolePin {
            path: data_dir.join("console.pub"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned key, or `None` before first contact. A damaged file is an error: silently
    /// re-pinning would let any console take the agent over.
    pub fn load(&self) -> Result<Option<PublicKey>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let Some(bytes) = decode_hex(text.trim()) else {
            bail!(
                "{} is not a console key (expected 64 hex digits); remove it to pin again",
                self.path.display()
            );
        };
        Ok(Some(PublicKey::from_bytes(bytes)))
    }

    /// Pins `key`, atomically (temp file, fsync, rename).
    pub fn store(&self, key: &PublicKey) -> Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("pub.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{}", hex(key.as_bytes()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Lowercase hex, as fingerprints are shown to operators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.agent_id(), b.agent_id());
    }

    #[test]
    fn a_world_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", load_or_create(&path).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_truncated_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        edgefleet_config::keyfile::write_secret(&path, b"short").unwrap();
        let err = format!("{:#}", load_or_create(&path).unwrap_err());
        assert!(err.contains("expected 32 bytes"), "{err}");
    }

    #[test]
    fn the_console_pin_round_trips_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pin = ConsolePin::in_dir(dir.path());
        assert!(pin.load().unwrap().is_none());
        let key = Identity::generate().public_key();
        pin.store(&key).unwrap();
        assert_eq!(pin.load().unwrap(), Some(key));
        std::fs::write(pin.path(), "zz").unwrap();
        assert!(pin.load().is_err());
    }
}
