//! Gives heap memory the console has freed back to the system.
//!
//! glibc's malloc keeps what a thread frees in that thread's arena and returns only the top
//! of each arena to the system. Under the console's steady churn (ingest rounds on one
//! thread, sled on its own threads, retention deleting every 10 min) the freed memory
//! piles up in the arenas: in the 2,000-agent soak RSS rose about 5 MiB a minute while the
//! live heap stayed flat (heaptrack), and one `malloc_trim(0)` in the running console gave
//! back 30 MiB (BENCHMARKS.md, "Soak"). So the console trims every [`TRIM_EVERY`] and after
//! each retention pass. Built against another libc (musl), this does nothing.

use std::time::Duration;

/// How often the console trims its heap.
pub const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Returns the free memory of every malloc arena to the system. Takes milliseconds at the
/// console's sizes; call it off the async workers (`spawn_blocking`). Returns the change
/// of the resident set in bytes, when it can be read.
pub fn trim() -> Option<i64> {
    let before = resident_bytes();
    release();
    Some(before? as i64 - resident_bytes()? as i64)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The only unsafe code in the workspace (console/Cargo.toml, [lints]).
fn release() {
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

/// The resident set of this process (`/proc/self/statm`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_runs_and_the_resident_set_is_readable() {
        let resident = resident_bytes().expect("/proc/self/statm is readable on Linux");
        assert!(resident > 1 << 20, "{resident}");
        // Free a few MiB of small blocks, then trim: the resident set must not grow.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 2048]).collect();
        drop(blocks);
        let change = trim().expect("readable before and after");
        assert!(
            change > -(1 << 20),
            "trimming grew the resident set by {} bytes",
            -change
        );
    }
}
