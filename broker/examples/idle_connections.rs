//! Memory per idle MQTT connection in the embedded broker.
//!
//!     cargo run --release -p edgefleet-broker --example idle_connections -- 10000
//!
//! Starts the broker in this process, then a child process (this same binary) opens N raw
//! TCP connections, each with a real MQTT 3.1.1 CONNECT answered by a CONNACK, and keeps
//! them idle. The client side is a bare socket per connection, so it costs this process
//! nothing and the child nothing but file descriptors. Prints the broker process's RSS
//! before and after, and the difference per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_broker::{BrokerConfig, EmbeddedBroker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("clients") {
        let port: u16 = args.get(2).ok_or("port")?.parse()?;
        let count: usize = args.get(3).ok_or("count")?.parse()?;
        return clients(port, count);
    }
    let count: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse()?,
        // Every client here connects from 127.0.0.1: the per-address flood limit (1,000
        // at once, then 100/s) would reset connection 1,001 on.
        connect_limit_per_ip: None,
        ..BrokerConfig::default()
    };
    let (broker, _link, _inbound) =
        EmbeddedBroker::start(&config, Arc::new(|_| true), &["ef/a/+/+".to_string()])?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib()?;
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "clients",
            &broker.mqtt_addr().port().to_string(),
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("child stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        child.kill()?;
        return Err(format!("client process failed: {line:?}").into());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the router finish registering the last connections.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib()?;
    child.kill()?;
    child.wait()?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / count as f64;
    println!(
        "connections={count} connect_secs={connect_secs:.1} rss_before_kib={before} \
         rss_after_kib={after} bytes_per_connection={per:.0}"
    );
    Ok(())
}

/// Opens `count` MQTT connections to 127.0.0.1:`port`, prints `ready`, and waits to be
/// killed.
fn clients(port: u16, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(&connect_packet(&format!("idle-{i:06}")))?;
        let mut ack = [0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.read_exact(&mut ack)?;
        if ack != [0x20, 0x02, 0x00, 0x00] {
            return Err(format!("connection {i}: unexpected CONNACK {ack:?}").into());
        }
        sockets.push(s);
    }
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// MQTT 3.1.1 CONNECT: clean session, keepalive 600 s (idle for the whole measurement),
/// username and password present.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0x02, 0x58];
    for field in [client_id, "user", "pass"] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn rss_kib() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("VmRSS value")?
        .parse()?)
}
