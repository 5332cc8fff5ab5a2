//! A hand-written MQTT 3.1.1 client over a raw socket, for packets a well-behaved client
//! library refuses to send (an empty or 10 KB client id, wildcards in a PUBLISH topic).
//! Shared with `broker/tests/broker.rs` (a dev-dependency: this crate does not depend on
//! the broker).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub fn connect(client_id: &[u8], username: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4); // 3.1.1
    body.push(0xC2); // username, password, clean session
    body.extend_from_slice(&30u16.to_be_bytes());
    string(&mut body, client_id);
    string(&mut body, username.as_bytes());
    string(&mut body, password.as_bytes());
    packet(0x10, &body)
}

pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

pub fn subscribe(filter: &str) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    string(&mut body, filter.as_bytes());
    body.push(0);
    packet(0x82, &body)
}

/// Reads one packet: (first byte, body); `None` once the broker closed the socket.
pub async fn read(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let kind = stream.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = stream.read_u8().await.ok()?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((kind, body))
}

/// Sends a CONNECT; `Some(code)` for a CONNACK, `None` if the broker just closed.
pub async fn try_connect(
    addr: SocketAddr,
    client_id: &[u8],
    username: &str,
    password: &str,
) -> (TcpStream, Option<u8>) {
    let s = TcpStream::connect(addr).await.expect("broker listening");
    connect_on(s, client_id, username, password).await
}

/// [`try_connect`] from a chosen loopback source address (any of 127.0.0.0/8), as
/// another host would connect.
pub async fn try_connect_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    client_id: &[u8],
    username: &str,
    password: &str,
) -> (TcpStream, Option<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    let s = socket.connect(addr).await.expect("broker listening");
    connect_on(s, client_id, username, password).await
}

/// Sends CONNECT on `s` and reads the answer: `None` when the broker closes the socket
/// instead (also when it closed it before the CONNECT could be written).
async fn connect_on(
    mut s: TcpStream,
    client_id: &[u8],
    username: &str,
    password: &str,
) -> (TcpStream, Option<u8>) {
    if s.write_all(&connect(client_id, username, password))
        .await
        .is_err()
    {
        return (s, None);
    }
    let ack = tokio::time::timeout(Duration::from_secs(10), read(&mut s))
        .await
        .expect("an answer or a close within 10 s");
    let code = ack.filter(|(k, _)| *k == 0x20).map(|(_, b)| b[1]);
    (s, code)
}

/// Whether the broker closes the socket within `within`, reading and dropping
/// anything it sends until then.
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async { while read(s).await.is_some() {} })
        .await
        .is_ok()
}
