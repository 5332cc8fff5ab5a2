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

/// Rows of a /proc/net table whose inode belongs to the process and that could receive
/// unsolicited traffic: TCP state 0A (LISTEN), any UDP socket bound to a local port, or a
/// unix socket that accepts (__SO_ACCEPTCON, 0x10000) or is bound to a name.
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
        let bound = cols.get(7).is_some();
        if (accepts || bound) && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
            found.push(format!("unix {line}"));
        }
    }
    found
}

/// Starts `edgefleet-agent run` against `url`, waits for its state file, checks its
/// sockets, then stops it with SIGTERM and expects exit 0 within 2 s. `console`, if
/// given, is accepted first so the agent holds a real outbound connection.
fn run_and_check(url: &str, console: Option<&std::net::TcpListener>) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .args(["run", "--console", url, "--data-dir"])
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
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _conn = console.map(|listener| {
        let (conn, _) = listener.accept().unwrap();
        // Wait until the agent's side of this connection shows up among its fds.
        let deadline = Instant::now() + Duration::from_secs(5);
        while socket_inodes(pid).is_empty() {
            assert!(Instant::now() < deadline, "the agent holds no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        conn
    });
    let inodes = socket_inodes(pid);
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
fn an_agent_whose_console_is_unreachable_listens_on_nothing_and_stops_on_sigterm() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    run_and_check(&format!("mqtt://127.0.0.1:{port}"), None);
}

#[test]
fn a_connected_agent_listens_on_nothing_either() {
    // Something that accepts TCP (and never answers MQTT), so the agent really holds a
    // connected socket while it is checked.
    let console = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("mqtt://{}", console.local_addr().unwrap());
    run_and_check(&url, Some(&console));
}

#[test]
fn the_detector_sees_tcp_udp_and_unix_listeners() {
    // The same check on this test process must find each kind of listener it opens.
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
    let found = listening(pid, &socket_inodes(pid)).join("\n");
    for (what, local) in [
        ("tcp", tcp.local_addr().unwrap().port()),
        ("udp", udp.local_addr().unwrap().port()),
    ] {
        let hex = format!(":{local:04X} ");
        assert!(
            found
                .lines()
                .any(|l| l.starts_with(what) && l.contains(&hex)),
            "{what} listener on {local} not detected in:\n{found}"
        );
    }
    assert!(
        found.contains(dir.path().join("s").to_str().unwrap()),
        "{found}"
    );
    drop((tcp, udp, unix));
}
