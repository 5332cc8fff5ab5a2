//! The free-space guard: the console stops writing before its disk is full.
//!
//! sled 0.34 latches its first failed write for the life of the process (`global_error`),
//! so a store that once hit ENOSPC refuses every write until a restart, even after space is
//! freed. The guard keeps sled from getting there: a task samples the data dir's
//! filesystem with `statvfs` once a second ([`CHECK_EVERY`]) and sets one flag that every
//! writer reads. Below the reserve (`store.min_free_mb`) writes are refused; they resume
//! once free space is back above the reserve plus [`hysteresis`], so a disk hovering at the
//! line does not flap. The reserve also leaves room for what was accepted just before the
//! flag flipped and for sled's own flushes.
//!
//! Something that fills the disk faster than one check (a runaway log on the same
//! filesystem) can still make sled hit ENOSPC; that case stays as it was: `/healthz`
//! degraded with the sled error until the console restarts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the filesystem is sampled.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How far above the reserve free space must climb before writes resume: a quarter of the
/// reserve, at least 1 MiB.
pub fn hysteresis(reserve: u64) -> u64 {
    (reserve / 4).max(1 << 20)
}

/// Whether writes are refused after a sample of `free` bytes, given whether they were
/// refused before. A reserve of 0 never refuses.
pub fn refuses(was_refused: bool, free: u64, reserve: u64) -> bool {
    if reserve == 0 {
        false
    } else if was_refused {
        free < reserve.saturating_add(hysteresis(reserve))
    } else {
        free < reserve
    }
}

/// What one sample changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Free space fell below the reserve: writes are refused from now on.
    Refused { free: u64 },
    /// Free space is back above the reserve plus the hysteresis: writes resume.
    Resumed { free: u64 },
}

/// Writes are refused: the numbers for errors, `/healthz` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub dir: PathBuf,
    pub free: u64,
    pub reserve: u64,
    /// Unix ms of the sample that refused.
    pub since: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "low disk space: {} bytes free on the filesystem of {}, below the reserve of {} bytes (store.min_free_mb); writes are refused until {} bytes are free",
            self.free,
            self.dir.display(),
            self.reserve,
            self.reserve.saturating_add(hysteresis(self.reserve)),
        )
    }
}

/// The shared flag and the last sample. One per store.
#[derive(Debug)]
pub struct Guard {
    dir: PathBuf,
    reserve: u64,
    refused: AtomicBool,
    since: AtomicU64,
    free: AtomicU64,
}

impl Guard {
    /// A guard for the filesystem holding `dir`, keeping `reserve` bytes free. It starts
    /// open; call [`Guard::check`] before the first write to know better.
    pub fn new(dir: &Path, reserve: u64) -> Guard {
        Guard {
            dir: dir.to_path_buf(),
            reserve,
            refused: AtomicBool::new(false),
            since: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
        }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free bytes at the last sample (`u64::MAX` before the first).
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// One relaxed load: cheap enough for every message and request.
    pub fn is_refusing(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// `Some` while writes are refused.
    pub fn refusal(&self) -> Option<Refusal> {
        self.is_refusing().then(|| Refusal {
            dir: self.dir.clone(),
            free: self.free(),
            reserve: self.reserve,
            since: self.since.load(Ordering::Relaxed),
        })
    }

    /// Samples the filesystem and updates the flag. A failed `statvfs` changes nothing (the
    /// error is returned for the caller to log): the guard cannot tell, and sled's own
    /// errors still reach `/healthz`.
    pub fn check(&self, now_ms: u64) -> Result<Option<Change>, std::io::Error> {
        if self.reserve == 0 {
            return Ok(None);
        }
        let free = free_bytes(&self.dir)?;
        Ok(self.apply(free, now_ms))
    }

    /// Applies one sample of `free` bytes.
    pub fn apply(&self, free: u64, now_ms: u64) -> Option<Change> {
        self.free.store(free, Ordering::Relaxed);
        let was = self.is_refusing();
        let now = refuses(was, free, self.reserve);
        if now == was {
            return None;
        }
        if now {
            self.since.store(now_ms, Ordering::Relaxed);
        }
        self.refused.store(now, Ordering::Relaxed);
        Some(if now {
            Change::Refused { free }
        } else {
            Change::Resumed { free }
        })
    }
}

/// Bytes an unprivileged user can still write on the filesystem holding `dir` (the console
/// runs as `edgefleet`, so root's reserved blocks do not count).
pub fn free_bytes(dir: &Path) -> Result<u64, std::io::Error> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn writes_stop_below_the_reserve_and_resume_only_above_it_plus_the_hysteresis() {
        let guard = Guard::new(Path::new("/data"), 64 * MIB);
        assert_eq!(guard.apply(100 * MIB, 1), None);
        assert!(!guard.is_refusing());
        assert_eq!(
            guard.apply(64 * MIB, 2),
            None,
            "at the reserve is still fine"
        );
        assert_eq!(
            guard.apply(64 * MIB - 1, 3),
            Some(Change::Refused { free: 64 * MIB - 1 })
        );
        assert!(guard.is_refusing());
        // Back above the reserve but within the hysteresis (16 MiB): still refused.
        assert_eq!(guard.apply(70 * MIB, 4), None);
        assert_eq!(guard.apply(80 * MIB - 1, 5), None);
        assert!(guard.is_refusing());
        let refusal = guard.refusal().unwrap();
        assert_eq!((refusal.free, refusal.since), (80 * MIB - 1, 3));
        let text = refusal.to_string();
        assert!(
            text.contains("/data") && text.contains(&(64 * MIB).to_string()),
            "{text}"
        );
        assert_eq!(
            guard.apply(80 * MIB, 6),
            Some(Change::Resumed { free: 80 * MIB })
        );
        assert!(!guard.is_refusing() && guard.refusal().is_none());
        // Each transition is reported once: the next low sample refuses again, once.
        assert!(guard.apply(MIB, 7).is_some());
        assert_eq!(guard.apply(0, 8), None);
    }

    #[test]
    fn the_hysteresis_is_a_quarter_of_the_reserve_and_at_least_a_mebibyte() {
        assert_eq!(hysteresis(64 * MIB), 16 * MIB);
        assert_eq!(hysteresis(4 * MIB), MIB);
        assert_eq!(hysteresis(1), MIB);
        assert!(!refuses(true, u64::MAX, u64::MAX), "no overflow at the top");
        assert!(refuses(false, 0, 1));
    }

    #[test]
    fn a_reserve_of_zero_never_refuses() {
        let guard = Guard::new(Path::new("/nonexistent"), 0);
        assert_eq!(guard.check(1).unwrap(), None, "no statvfs at all");
        assert_eq!(guard.apply(0, 1), None);
        assert!(!guard.is_refusing());
    }

    #[test]
    fn statvfs_reads_a_real_filesystem_and_names_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        // A reserve no disk has: the first real sample refuses.
        let guard = Guard::new(dir.path(), u64::MAX / 2);
        assert!(matches!(guard.check(1), Ok(Some(Change::Refused { .. }))));
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
