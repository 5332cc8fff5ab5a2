//! Update artifacts hosted by the console, so devices behind NAT fetch updates from the
//! console they already reach: `data_dir/artifacts/<sha256>`, uploaded through the API and
//! served at `/artifacts/<sha256>` with `Range` support (agents resume cut downloads).
//!
//! Serving needs no API key: a device has none. The file is named by its hash and the
//! update command carries that hash signed by the console, so a tampered or substituted file
//! is refused by the agent; what is public is the artifact itself, to anyone who can reach
//! the console's HTTP port and knows the hash.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("artifacts")
}

/// Stores `bytes` under their SHA-256 (atomically); returns the hex hash.
pub fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<String> {
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&sha);
    if !path.exists() {
        let tmp = dir.join(format!("{sha}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(sha)
}

/// A valid artifact name: 64 lowercase hex digits.
pub fn valid_name(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a single `bytes=a-b` / `bytes=a-` range against `len`: `Some(Ok((start, end)))`
/// (inclusive), `Some(Err(()))` when unsatisfiable, `None` when absent or not understood
/// (then the whole file is sent, as HTTP allows).
pub fn parse_range(header: Option<&str>, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.saturating_sub(1)),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(len.saturating_sub(1)),
        ),
    };
    if start >= len || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range(Some("bytes=0-"), 10), Some(Ok((0, 9))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Some(Ok((5, 9))));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Some(Ok((2, 4))));
        assert_eq!(parse_range(Some("bytes=2-400"), 10), Some(Ok((2, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Some(Ok((7, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Some(Err(())));
        assert_eq!(parse_range(Some("bytes=1-2,4-5"), 10), None);
        assert_eq!(parse_range(Some("items=1-2"), 10), None);
        assert_eq!(parse_range(None, 10), None);
    }

    #[test]
    fn artifacts_are_stored_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let sha = store(dir.path(), b"hello").unwrap();
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(dir.path().join(&sha)).unwrap(), b"hello");
        assert!(valid_name(&sha) && !valid_name("../etc/passwd"));
    }
}
