//! update-app: downloading an artifact with HTTP range-resume (links drop at remote sites),
//! checking its SHA-256, and swapping an app directory with a way back.
//!
//! The download goes to `<downloads>/<sha256>.part` and resumes from that file's length with
//! `Range: bytes=N-` after every dropped connection, across attempts and agent restarts. A
//! server that ignores the range (200 instead of 206) restarts it from zero. Only `http://`
//! URLs are fetched: integrity comes from the signed SHA-256 in the command, not from TLS.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Attempts before a download gives up (each resumes where the last one stopped).
pub const ATTEMPTS: u32 = 6;
/// A connection that sends nothing for this long is dropped and resumed.
pub const STALL: Duration = Duration::from_secs(30);

use crate::identity::hex;

/// Called with the download's percentage each time it crosses a 10 % step (progress goes
/// over metered links, so it is coarse on purpose).
pub type OnProgress<'a> = &'a (dyn Fn(u8) + Send + Sync);

/// Downloads `url` into `dir` and checks it against `sha256`; returns the file's path.
pub async fn download(
    url: &str,
    dir: &Path,
    sha256: &[u8; 32],
    max_bytes: u64,
    progress: OnProgress<'_>,
) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// artifact URLs are supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest.to_string(), "/".to_string()), |(a, p)| {
            (a.to_string(), format!("/{p}"))
        });
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let done = dir.join(hex(sha256));
    if done.exists() && file_sha256(&done).ok().as_ref() == Some(sha256) {
        return Ok(done);
    }
    let part = dir.join(format!("{}.part", hex(sha256)));
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(4))).await;
        }
        match fetch(&authority, &path, &part, max_bytes, progress).await {
            Ok(()) => {
                let got = file_sha256(&part).map_err(|e| format!("reading the download: {e}"))?;
                if got != *sha256 {
                    let _ = std::fs::remove_file(&part);
                    return Err(format!(
                        "checksum mismatch: expected sha256 {}, got {}",
                        hex(sha256),
                        hex(&got)
                    ));
                }
                std::fs::rename(&part, &done).map_err(|e| e.to_string())?;
                return Ok(done);
            }
            Err(Fetch::TooLarge(e)) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            Err(Fetch::Retry(e)) => {
                tracing::warn!(url, attempt, error = %e, "artifact download interrupted; resuming");
                last_error = e;
            }
        }
    }
    Err(format!(
        "downloading {url} failed after {ATTEMPTS} attempts: {last_error}"
    ))
}

/// Why one request ended early.
enum Fetch {
    /// Worth resuming.
    Retry(String),
    /// Over the download cap: resuming would not help.
    TooLarge(String),
}

impl From<String> for Fetch {
    fn from(e: String) -> Fetch {
        Fetch::Retry(e)
    }
}

fn too_large(bytes: u64, max: u64) -> Fetch {
    Fetch::TooLarge(format!(
        "the artifact is over the agent's download cap: {bytes} bytes > {max} bytes (artifact_max_mb)"
    ))
}

/// One request, resuming from the `.part` file's length; `Ok` once the body is complete.
async fn fetch(
    authority: &str,
    path: &str,
    part: &Path,
    max_bytes: u64,
    progress: OnProgress<'_>,
) -> Result<(), Fetch> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let stream = tokio::time::timeout(STALL, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nRange: bytes={have}-\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    tokio::time::timeout(STALL, reader.read_line(&mut line))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim()))?;
    let mut length: Option<u64> = None;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
    let append = match status {
        206 => true,
        200 => false,
        // The file is already complete.
        416 if have > 0 => return Ok(()),
        other => return Err(format!("the server answered {other}").into()),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| format!("opening {}: {e}", part.display()))?;
    let start = if append { have } else { 0 };
    if let Some(claimed) = length.map(|l| start.saturating_add(l)) {
        if claimed > max_bytes {
            return Err(too_large(claimed, max_bytes));
        }
    }
    let total = length.map(|l| start + l).filter(|t| *t > 0);
    let pct = |received: u64| total.map(|t| ((start + received) * 100 / t).min(100) as u8);
    let mut reported = pct(0).unwrap_or(0) / 10;
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(STALL, reader.read(&mut buf))
            .await
            .map_err(|_| format!("stalled after {received} bytes"))?
            .map_err(|e| format!("after {received} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        received += n as u64;
        // A server that sends no length (or more than it said) is cut off at the cap.
        if start + received > max_bytes {
            return Err(too_large(start + received, max_bytes));
        }
        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        if let Some(p) = pct(received).filter(|p| p / 10 > reported) {
            reported = p / 10;
            progress(p);
        }
    }
    file.sync_all().map_err(|e| e.to_string())?;
    match length {
        Some(len) if received < len => {
            Err(format!("connection closed after {received} of {len} bytes").into())
        }
        _ => Ok(()),
    }
}

pub fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// Size bounds on one update-app artifact (agent config `artifact_max_mb` and
/// `artifact_unpacked_max_mb`). A signed SHA-256 proves who chose the bytes, not that they
/// fit on the device: an archive bomb from a compromised build is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The download (the compressed archive), in bytes.
    pub max_download: u64,
    /// The sum of the regular files' sizes once unpacked, in bytes.
    pub max_unpacked: u64,
    /// Entries (files, directories, links) in the archive: an inode bomb is a bomb too.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_download: 512 * 1024 * 1024,
            max_unpacked: 2048 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// Where the replaced version waits for a rollback.
pub fn previous_dir(dir: &Path) -> PathBuf {
    sibling(dir, ".edgefleet-previous")
}

/// Where the new version is unpacked before it replaces `dir` (same filesystem, so the
/// swap is two renames).
pub fn staging_dir(dir: &Path) -> PathBuf {
    sibling(dir, ".edgefleet-staging")
}

/// The record of an update in progress, read after a crash (see [`recover`]).
pub fn marker_path(dir: &Path) -> PathBuf {
    sibling(dir, ".edgefleet-update")
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// How far an update got; persisted in the marker before each step that changes `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Unpacking into the staging directory; `dir` is untouched.
    Staging,
    /// The app is stopped and the two renames (`dir` to previous, staging to `dir`) run.
    Swapping,
    /// The new version is in `dir`; starting and checking it.
    Swapped,
}

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Hex command id, so the result can be reported after a restart.
    pub command: String,
    pub version: String,
    pub stage: Stage,
}

/// Which version an interrupted update left in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    Previous,
    New,
}

/// Records (or advances) the update in progress for `dir`, durably.
pub fn mark(dir: &Path, pending: &Pending) -> Result<(), String> {
    let path = marker_path(dir);
    let tmp = sibling(dir, ".edgefleet-update.tmp");
    let bytes = serde_json::to_vec(pending).expect("the marker serializes");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_parent(dir)
    };
    write().map_err(|e| format!("recording the update in {}: {e}", path.display()))
}

/// Forgets the update in progress for `dir` (it finished and its result is queued) and
/// removes any staging left over.
pub fn unmark(dir: &Path) {
    let _ = std::fs::remove_dir_all(staging_dir(dir));
    let _ = std::fs::remove_file(marker_path(dir));
    let _ = sync_parent(dir);
}

/// After an agent restart: finishes or undoes an update the crash interrupted, so `dir`
/// holds either the previous or the new version, complete, never a half-unpacked one.
/// Returns the interrupted update and which version is now in place; the marker stays
/// until the caller has queued the result ([`unmark`]).
pub fn recover(dir: &Path) -> Result<Option<(Pending, Left)>, String> {
    let path = marker_path(dir);
    let pending: Pending = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                // The marker is written with a rename, so this is not a torn write; a
                // marker that cannot be read cannot name its command either.
                tracing::error!(path = %path.display(), error = %e, "unreadable update marker; ignored");
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let staging = staging_dir(dir);
    let prev = previous_dir(dir);
    let io = |what: &str, e: std::io::Error| format!("recovering {}: {what}: {e}", dir.display());
    let left = match pending.stage {
        Stage::Staging => Left::Previous,
        Stage::Swapping if dir.exists() && staging.exists() => Left::Previous,
        Stage::Swapping if dir.exists() => Left::New,
        Stage::Swapping if prev.exists() => {
            // Between the two renames: the previous version goes back.
            std::fs::rename(&prev, dir).map_err(|e| io("restoring the previous version", e))?;
            Left::Previous
        }
        Stage::Swapping if staging.exists() => {
            // A first install (nothing to go back to): the unpacked version is complete.
            std::fs::rename(&staging, dir).map_err(|e| io("moving the new version in", e))?;
            Left::New
        }
        Stage::Swapping => {
            return Err(format!(
                "{} is gone and nothing can replace it",
                dir.display()
            ))
        }
        Stage::Swapped => Left::New,
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io("clearing the staging directory", e))?;
    }
    sync_parent(dir).map_err(|e| io("syncing", e))?;
    Ok(Some((pending, left)))
}

/// Unpacks the `.tar.gz` archive into the staging directory next to `dir`, refusing the
/// whole archive on the first entry that is not a plain file, directory or a link that
/// stays inside, and on any size bound. `dir` itself is not touched, so the app keeps
/// running while this runs.
pub fn stage(archive: &Path, dir: &Path, limits: &Limits) -> Result<(), String> {
    let staging = staging_dir(dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| format!("clearing {}: {e}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let unpacked = unpack_checked(archive, &staging, limits).and_then(|()| {
        sync_tree(&staging).map_err(|e| format!("syncing {}: {e}", staging.display()))
    });
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(())
}

/// Replaces `dir` with the staged version: the old one moves to [`previous_dir`] for a
/// rollback. Two renames in one directory, so a crash leaves whole directories only.
pub fn swap(dir: &Path) -> Result<(), String> {
    let staging = staging_dir(dir);
    if !staging.is_dir() {
        return Err(format!("nothing staged at {}", staging.display()));
    }
    let prev = previous_dir(dir);
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| format!("clearing {}: {e}", prev.display()))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &prev).map_err(|e| format!("backing up {}: {e}", dir.display()))?;
    }
    std::fs::rename(&staging, dir)
        .map_err(|e| format!("moving the new version into {}: {e}", dir.display()))?;
    sync_parent(dir).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// [`stage`] then [`swap`]: the whole install, for callers with nothing to stop between.
pub fn install(archive: &Path, dir: &Path, limits: &Limits) -> Result<(), String> {
    stage(archive, dir, limits)?;
    swap(dir)
}

/// Puts the previous version back.
pub fn rollback(dir: &Path) -> Result<(), String> {
    let prev = previous_dir(dir);
    if !prev.exists() {
        return Err(format!("no previous version at {}", prev.display()));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    std::fs::rename(&prev, dir).map_err(|e| format!("restoring {}: {e}", dir.display()))
}

/// The archive walk behind [`stage`]. Every entry is checked before anything of it is
/// written; `tar`'s own `unpack_in` then writes it (and refuses to write through a link).
fn unpack_checked(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), String> {
    use tar::EntryType;
    let file =
        std::fs::File::open(archive).map_err(|e| format!("opening {}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let bad = |path: &Path, why: &str| {
        format!(
            "refusing the archive: entry {:?} {why}",
            path.to_string_lossy()
        )
    };
    let mut total = 0u64;
    let mut entries = 0u64;
    for entry in tar
        .entries()
        .map_err(|e| format!("extracting the archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("extracting the archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("extracting the archive: {e}"))?
            .into_owned();
        entries += 1;
        if entries > limits.max_entries {
            return Err(format!(
                "refusing the archive: more than {} entries (artifact cap)",
                limits.max_entries
            ));
        }
        let depth = inside_depth(&path).map_err(|why| bad(&path, why))?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
                if total > limits.max_unpacked {
                    return Err(format!(
                        "refusing the archive: it unpacks to more than {} MB (artifact_unpacked_max_mb)",
                        limits.max_unpacked / (1024 * 1024)
                    ));
                }
            }
            EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("extracting the archive: {e}"))?
                    .ok_or_else(|| bad(&path, "is a symlink without a target"))?;
                // Relative to the link's own directory, which is `depth - 1` levels deep.
                link_stays_inside(&target, depth.saturating_sub(1))
                    .map_err(|why| bad(&path, &format!("is a symlink to {target:?} that {why}")))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("extracting the archive: {e}"))?
                    .ok_or_else(|| bad(&path, "is a hard link without a target"))?;
                // A hard link names a path from the archive root.
                inside_depth(&target).map_err(|why| {
                    bad(
                        &path,
                        &format!("is a hard link to {target:?} whose path {why}"),
                    )
                })?;
            }
            EntryType::Char | EntryType::Block => return Err(bad(&path, "is a device file")),
            EntryType::Fifo => return Err(bad(&path, "is a FIFO")),
            other => return Err(bad(&path, &format!("has an unsupported type {other:?}"))),
        }
        if depth == 0 {
            if entry.header().entry_type() == EntryType::Directory {
                continue; // "./": the staging directory itself.
            }
            return Err(bad(&path, "has an empty path"));
        }
        let written = entry
            .unpack_in(dest)
            .map_err(|e| format!("extracting {:?}: {e}", path.to_string_lossy()))?;
        if !written {
            return Err(bad(&path, "would land outside the app directory"));
        }
    }
    if entries == 0 {
        return Err("refusing the archive: it has no entries".into());
    }
    // `tar` stops at the end-of-archive blocks; reading on to the end makes gzip check its
    // trailer (CRC and length), so an archive cut short there is an error too.
    let mut rest = std::io::Read::take(tar.into_inner(), 1024 * 1024 + 1);
    let extra = std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| format!("extracting the archive: {e}"))?;
    if extra > 1024 * 1024 {
        return Err("refusing the archive: more than 1 MiB after the end of the tar stream".into());
    }
    Ok(())
}

/// The number of normal components of an archive path, or why it is refused.
fn inside_depth(path: &Path) -> Result<usize, &'static str> {
    use std::path::Component;
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(depth)
}

/// Whether a symlink target, read from a directory `depth` levels inside the app dir,
/// stays inside it.
fn link_stays_inside(target: &Path, mut depth: usize) -> Result<(), &'static str> {
    use std::path::Component;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or("leaves the app directory")?;
            }
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}

/// fsyncs every file and directory under `root`, so a power cut after the swap cannot
/// leave empty files in the new version.
fn sync_tree(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            sync_tree(&entry?.path())?;
        }
        std::fs::File::open(root)?.sync_all()
    } else if meta.is_file() {
        std::fs::File::open(root)?.sync_all()
    } else {
        Ok(())
    }
}

fn sync_parent(dir: &Path) -> std::io::Result<()> {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::File::open(p)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    /// Serves `body`; the first request is cut after half the bytes. Records Range headers.
    async fn flaky_server(body: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (body, seen, count) = (body.clone(), seen.clone(), count.clone());
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut from = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).await.unwrap();
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some(r) = line.trim().strip_prefix("Range: bytes=") {
                            seen.lock().unwrap().push(r.to_string());
                            from = r.trim_end_matches('-').parse().unwrap();
                        }
                    }
                    let mut s = reader.into_inner();
                    let rest = &body[from..];
                    let head = if from > 0 {
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\n\r\n",
                            rest.len()
                        )
                    } else {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", rest.len())
                    };
                    s.write_all(head.as_bytes()).await.unwrap();
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        s.write_all(&rest[..rest.len() / 2]).await.unwrap();
                        return; // the link drops
                    }
                    s.write_all(rest).await.unwrap();
                });
            }
        });
        (format!("http://{addr}/artifacts/x"), ranges)
    }

    #[tokio::test]
    async fn a_download_cut_at_half_resumes_with_a_range_and_verifies() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sha: [u8; 32] = Sha256::digest(&body).into();
        let (url, ranges) = flaky_server(body.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let path = download(&url, dir.path(), &sha, u64::MAX, &|p| {
            seen.lock().unwrap().push(p)
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        // Coarse steps, rising across the resume: 10..40 from the first connection, then
        // 50 or more from the second.
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&100), "{seen:?}");
        assert!(seen.len() <= 10, "{seen:?}");
        assert_eq!(
            *ranges.lock().unwrap(),
            ["0-", "50000-"],
            "resumed, not restarted"
        );
    }

    #[tokio::test]
    async fn a_checksum_mismatch_is_an_error_and_leaves_nothing() {
        let body = b"not the artifact you signed".to_vec();
        let (url, _) = flaky_server(body).await;
        let dir = tempfile::tempdir().unwrap();
        let err = download(&url, dir.path(), &[7; 32], u64::MAX, &|_| {})
            .await
            .unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn install_swaps_the_directory_and_rollback_restores_it() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("VERSION"), "1.0\n").unwrap();
        let archive = tmp.path().join("v2.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&archive).unwrap(),
                flate2::Compression::default(),
            );
            let mut tar = tar::Builder::new(gz);
            let data = b"2.0\n";
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, "VERSION", &data[..]).unwrap();
            tar.into_inner().unwrap().finish().unwrap();
        }
        install(&archive, &app, &Limits::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(app.join("VERSION")).unwrap(),
            "2.0\n"
        );
        rollback(&app).unwrap();
        assert_eq!(
            std::fs::read_to_string(app.join("VERSION")).unwrap(),
            "1.0\n"
        );
        assert!(rollback(&app).is_err(), "only one way back");
    }

    /// One archive entry, written with a raw name so that names `tar::Builder` would
    /// refuse (`../x`, `/etc/x`) can be built.
    struct Raw<'a> {
        name: &'a str,
        kind: tar::EntryType,
        link: Option<&'a str>,
        data: &'a [u8],
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            link: None,
            data,
        }
    }

    fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> Raw<'a> {
        Raw {
            name,
            kind,
            link: Some(target),
            data: b"",
        }
    }

    fn tar_gz(path: &Path, entries: &[Raw<'_>]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for e in entries {
            let mut header = tar::Header::new_old();
            let name = &mut header.as_old_mut().name;
            name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            if let Some(target) = e.link {
                let field = &mut header.as_old_mut().linkname;
                field[..target.len()].copy_from_slice(target.as_bytes());
            }
            header.set_entry_type(e.kind);
            header.set_size(e.data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append(&header, e.data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    /// An app dir at version 1.0 and a place for archives.
    fn app_v1() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("VERSION"), "1.0\n").unwrap();
        (tmp, app)
    }

    /// The app dir still holds exactly version 1.0 and nothing was left beside it.
    fn assert_untouched(tmp: &Path, app: &Path) {
        assert_eq!(
            std::fs::read_to_string(app.join("VERSION")).unwrap(),
            "1.0\n"
        );
        assert_eq!(std::fs::read_dir(app).unwrap().count(), 1);
        assert!(!staging_dir(app).exists(), "staging cleaned up");
        assert!(!tmp.join("etc").exists() && !tmp.join("outside").exists());
    }

    #[test]
    fn escaping_paths_links_and_device_files_refuse_the_whole_archive() {
        use tar::EntryType;
        let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
            (
                "dotdot",
                vec![file("VERSION", b"2.0\n"), file("../outside", b"x")],
                "`..`",
            ),
            (
                "nested dotdot",
                vec![file("bin/../../outside", b"x")],
                "`..`",
            ),
            (
                "absolute",
                vec![file("VERSION", b"2.0\n"), file("/etc/passwd", b"x")],
                "absolute",
            ),
            (
                "symlink up",
                vec![link("lib", EntryType::Symlink, "../../etc")],
                "leaves the app directory",
            ),
            (
                "nested symlink up",
                vec![link("a/b/c", EntryType::Symlink, "../../../x")],
                "leaves the app directory",
            ),
            (
                "absolute symlink",
                vec![link("passwd", EntryType::Symlink, "/etc/passwd")],
                "is absolute",
            ),
            (
                "hard link out",
                vec![link("h", EntryType::Link, "../outside")],
                "`..`",
            ),
            (
                "absolute hard link",
                vec![link("h", EntryType::Link, "/etc/shadow")],
                "absolute",
            ),
            (
                "char device",
                vec![Raw {
                    name: "tty",
                    kind: EntryType::Char,
                    link: None,
                    data: b"",
                }],
                "device file",
            ),
            (
                "block device",
                vec![Raw {
                    name: "sda",
                    kind: EntryType::Block,
                    link: None,
                    data: b"",
                }],
                "device file",
            ),
            (
                "fifo",
                vec![Raw {
                    name: "pipe",
                    kind: EntryType::Fifo,
                    link: None,
                    data: b"",
                }],
                "FIFO",
            ),
        ];
        for (what, entries, why) in cases {
            let (tmp, app) = app_v1();
            let archive = tmp.path().join("bad.tar.gz");
            tar_gz(&archive, &entries);
            let err = stage(&archive, &app, &Limits::default()).unwrap_err();
            assert!(
                err.starts_with("refusing the archive") && err.contains(why),
                "{what}: {err}"
            );
            assert_untouched(tmp.path(), &app);
        }
    }

    #[test]
    fn links_that_stay_inside_are_unpacked() {
        use tar::EntryType;
        let (tmp, app) = app_v1();
        let archive = tmp.path().join("v2.tar.gz");
        tar_gz(
            &archive,
            &[
                file("./VERSION", b"2.0\n"),
                file("lib/libpump.so.2", b"elf"),
                link("lib/libpump.so", EntryType::Symlink, "libpump.so.2"),
                link("bin/lib", EntryType::Symlink, "../lib"),
                link("VERSION.copy", EntryType::Link, "VERSION"),
            ],
        );
        install(&archive, &app, &Limits::default()).unwrap();
        assert_eq!(
            std::fs::read(app.join("bin/lib/libpump.so")).unwrap(),
            b"elf"
        );
        assert_eq!(
            std::fs::read_to_string(app.join("VERSION.copy")).unwrap(),
            "2.0\n"
        );
        assert!(!staging_dir(&app).exists());
        assert_eq!(
            std::fs::read_to_string(previous_dir(&app).join("VERSION")).unwrap(),
            "1.0\n"
        );
    }

    #[test]
    fn an_archive_bomb_is_refused_by_size_or_entry_count() {
        let (tmp, app) = app_v1();
        // 4 MiB of zeros compresses to a few KB.
        let zeros = vec![0u8; 4 << 20];
        let archive = tmp.path().join("bomb.tar.gz");
        tar_gz(&archive, &[file("a", &zeros), file("b", &zeros)]);
        assert!(std::fs::metadata(&archive).unwrap().len() < 64 * 1024);
        let limits = Limits {
            max_unpacked: 6 << 20,
            ..Limits::default()
        };
        let err = stage(&archive, &app, &limits).unwrap_err();
        assert!(
            err.contains("unpacks to more than 6 MB (artifact_unpacked_max_mb)"),
            "{err}"
        );
        assert_untouched(tmp.path(), &app);

        let names: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
        let many: Vec<Raw<'_>> = names.iter().map(|n| file(n, b"")).collect();
        tar_gz(&archive, &many);
        let limits = Limits {
            max_entries: 20,
            ..Limits::default()
        };
        let err = stage(&archive, &app, &limits).unwrap_err();
        assert!(err.contains("more than 20 entries"), "{err}");
        assert_untouched(tmp.path(), &app);
    }

    #[test]
    fn a_truncated_archive_fails_cleanly_and_leaves_the_app_alone() {
        let (tmp, app) = app_v1();
        let archive = tmp.path().join("v2.tar.gz");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        tar_gz(
            &archive,
            &[file("VERSION", b"2.0\n"), file("bin/pump", &body)],
        );
        let full = std::fs::read(&archive).unwrap();
        for cut in [10, full.len() / 2, full.len() - 4] {
            std::fs::write(&archive, &full[..cut]).unwrap();
            let err = install(&archive, &app, &Limits::default()).unwrap_err();
            assert!(err.contains("extracting"), "cut at {cut}: {err}");
            assert_untouched(tmp.path(), &app);
        }
    }

    #[tokio::test]
    async fn a_download_over_the_cap_is_refused_and_leaves_nothing() {
        let body = vec![1u8; 100_000];
        let sha: [u8; 32] = Sha256::digest(&body).into();
        let (url, _) = flaky_server(body).await;
        let dir = tempfile::tempdir().unwrap();
        let err = download(&url, dir.path(), &sha, 60_000, &|_| {})
            .await
            .unwrap_err();
        assert!(
            err.contains("over the agent's download cap") && err.contains("artifact_max_mb"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Builds the on-disk state a crash at each point of an update leaves, then recovers.
    #[test]
    fn recovery_after_a_crash_leaves_one_whole_version_at_every_step() {
        let pending = |stage| Pending {
            command: "00".repeat(16),
            version: "2.0".into(),
            stage,
        };
        let setup = || {
            let (tmp, app) = app_v1();
            let archive = tmp.path().join("v2.tar.gz");
            tar_gz(&archive, &[file("VERSION", b"2.0\n")]);
            (tmp, app, archive)
        };
        let version = |app: &Path| std::fs::read_to_string(app.join("VERSION")).unwrap();

        // No marker: nothing to do.
        let (_tmp, app, _) = setup();
        assert_eq!(recover(&app).unwrap(), None);

        // Killed while unpacking: a partial staging dir is dropped.
        let (_tmp, app, _) = setup();
        mark(&app, &pending(Stage::Staging)).unwrap();
        std::fs::create_dir_all(staging_dir(&app).join("half")).unwrap();
        let (p, left) = recover(&app).unwrap().unwrap();
        assert_eq!((p.stage, left), (Stage::Staging, Left::Previous));
        assert_eq!(version(&app), "1.0\n");
        assert!(!staging_dir(&app).exists());

        // Killed after unpacking, before the first rename.
        let (_tmp, app, archive) = setup();
        mark(&app, &pending(Stage::Swapping)).unwrap();
        stage(&archive, &app, &Limits::default()).unwrap();
        assert_eq!(recover(&app).unwrap().unwrap().1, Left::Previous);
        assert_eq!(version(&app), "1.0\n");
        assert!(!staging_dir(&app).exists());

        // Killed between the two renames: the previous version goes back.
        let (_tmp, app, archive) = setup();
        mark(&app, &pending(Stage::Swapping)).unwrap();
        stage(&archive, &app, &Limits::default()).unwrap();
        std::fs::rename(&app, previous_dir(&app)).unwrap();
        assert_eq!(recover(&app).unwrap().unwrap().1, Left::Previous);
        assert_eq!(version(&app), "1.0\n");
        assert!(!staging_dir(&app).exists() && !previous_dir(&app).exists());

        // Killed after both renames, before the marker said so.
        let (_tmp, app, archive) = setup();
        mark(&app, &pending(Stage::Swapping)).unwrap();
        install(&archive, &app, &Limits::default()).unwrap();
        assert_eq!(recover(&app).unwrap().unwrap().1, Left::New);
        assert_eq!(version(&app), "2.0\n");

        // Killed while starting the new version: it stays, and can still be rolled back.
        let (_tmp, app, archive) = setup();
        install(&archive, &app, &Limits::default()).unwrap();
        mark(&app, &pending(Stage::Swapped)).unwrap();
        let (p, left) = recover(&app).unwrap().unwrap();
        assert_eq!((p, left), (pending(Stage::Swapped), Left::New));
        assert_eq!(version(&app), "2.0\n");
        unmark(&app);
        assert_eq!(recover(&app).unwrap(), None, "the marker is gone");
        rollback(&app).unwrap();
        assert_eq!(version(&app), "1.0\n");
    }
}
