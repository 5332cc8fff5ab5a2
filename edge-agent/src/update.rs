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
        match fetch(&authority, &path, &part, progress).await {
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
            Err(e) => {
                tracing::warn!(url, attempt, error = %e, "artifact download interrupted; resuming");
                last_error = e;
            }
        }
    }
    Err(format!(
        "downloading {url} failed after {ATTEMPTS} attempts: {last_error}"
    ))
}

/// One request, resuming from the `.part` file's length; `Ok` once the body is complete.
async fn fetch(
    authority: &str,
    path: &str,
    part: &Path,
    progress: OnProgress<'_>,
) -> Result<(), String> {
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
        other => return Err(format!("the server answered {other}")),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| format!("opening {}: {e}", part.display()))?;
    let start = if append { have } else { 0 };
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
        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        received += n as u64;
        if let Some(p) = pct(received).filter(|p| p / 10 > reported) {
            reported = p / 10;
            progress(p);
        }
    }
    file.sync_all().map_err(|e| e.to_string())?;
    match length {
        Some(len) if received < len => {
            Err(format!("connection closed after {received} of {len} bytes"))
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

/// Where the replaced version waits for a rollback.
pub fn previous_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".edgefleet-previous");
    dir.with_file_name(name)
}

/// Moves `dir` aside and extracts the `.tar.gz` archive in its place. Entries that would
/// land outside `dir` are refused by `tar`.
pub fn install(archive: &Path, dir: &Path) -> Result<(), String> {
    let prev = previous_dir(dir);
    if prev.exists() {
        std::fs::remove_dir_all(&prev).map_err(|e| format!("clearing {}: {e}", prev.display()))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &prev).map_err(|e| format!("backing up {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir)
        .map_err(|e| format!("extracting the archive: {e}"))
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
        let path = download(&url, dir.path(), &sha, &|p| seen.lock().unwrap().push(p))
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
        let err = download(&url, dir.path(), &[7; 32], &|_| {})
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
        install(&archive, &app).unwrap();
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
}
