//! Secret files (private keys, API keys): written atomically with mode 0600, and refused
//! when other users could read or change them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:o}: a secret file must not be readable or writable by others \
         (fix with `chmod 600 {path}`)"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a secret file, refusing one that is world-readable, or group/world-writable.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o026 != 0 || mode & 0o004 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read(path).map_err(io(path))
}

/// Writes a secret file atomically: a 0600 temp file in the same directory, fsync, rename,
/// fsync of the directory. Missing parent directories are created with mode 0700.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_secrets_are_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/agent.key");
        write_secret(&path, b"seed").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret(&path).unwrap(), b"seed");
        write_secret(&path, b"seed2").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"seed2");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn world_readable_or_group_writable_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret(&path, b"x").unwrap();
        for mode in [0o644, 0o604, 0o620, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_secret(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("mode {mode:o}")) && err.contains("chmod 600"),
                "{err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            read_secret(&path).is_ok(),
            "group-readable is allowed for a service group"
        );
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = read_secret(Path::new("/nonexistent/edgefleet.key"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/edgefleet.key: "), "{err}");
    }
}
