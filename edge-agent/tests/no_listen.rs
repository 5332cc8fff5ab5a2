//! The agent opens no listening socket of any kind: devices behind NAT accept nothing.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Socket inodes owned by `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Rows of a /proc/net table whose inode belongs to the process and that listen:
/// TCP state 0A (LISTEN), any bound UDP socket (state 07 with a local port), or a unix
/// socket with the __SO_ACCEPTCON flag (0x10000) set.
fn listening(pid: u32, inodes: &HashSet<u64>) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if !inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                continue;
            }
            let udp_bound = table.starts_with("udp") && !local.ends_with(":0000");
            if *state == "0A" || udp_bound {
                found.push(format!("{table} {line}"));
            }
        }
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in unix.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(inode)) = (cols.get(3), cols.get(6)) else {
            continue;
        };
        let accepts = u32::from_str_radix(flags, 16).is_ok_and(|f| f & 0x10000 != 0);
        if accepts && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
            found.push(format!("unix {line}"));
        }
    }
    found
}

#[test]
fn the_running_agent_has_no_listening_socket_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Something that accepts TCP so the agent really holds a connected socket.
    let console = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("mqtt://{}", console.local_addr().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .args(["run", "--console", &url, "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while !dir.path().join("status.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "agent never wrote its status file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_conn, _) = console.accept().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let inodes = socket_inodes(pid);
    assert!(
        !inodes.is_empty(),
        "the agent holds its outbound socket, so the check sees sockets"
    );
    let found = listening(pid, &inodes);
    assert!(found.is_empty(), "listening sockets: {found:#?}");

    let stopped = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "agent did not exit within 2 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_detector_would_see_a_listening_socket() {
    // The same check on this test process, with a listener open, must find it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pid = std::process::id();
    let found = listening(pid, &socket_inodes(pid));
    assert!(!found.is_empty(), "the check must detect a listener");
    drop(listener);
}
