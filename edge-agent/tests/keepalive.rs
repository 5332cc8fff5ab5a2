//! The MQTT client the agent uses (the patched rumqttc in `vendor/rumqttc`) sends a
//! PINGREQ only after a keepalive without any outgoing packet: heartbeats at the keepalive
//! interval keep the connection alive on their own, so the link carries no ping pairs
//! (issue 9's bytes-per-day goal). Checked against a minimal fake broker on a real socket,
//! in real time (tokio's paused clock runs ahead of the socket reads), with a 1 s keepalive.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Reads one MQTT packet's fixed header and body; returns the packet type (high nibble).
async fn read_packet(stream: &mut TcpStream) -> Option<u8> {
    let kind = stream.read_u8().await.ok()? >> 4;
    let mut len = 0usize;
    for shift in (0..28).step_by(7) {
        let byte = stream.read_u8().await.ok()?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(kind)
}

/// Accepts one client, answers CONNECT and PINGREQ, and reports every packet type it
/// receives with the time it arrived.
async fn fake_broker(listener: TcpListener, seen: mpsc::UnboundedSender<(u8, Instant)>) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    while let Some(kind) = read_packet(&mut stream).await {
        let _ = seen.send((kind, Instant::now()));
        let reply: &[u8] = match kind {
            1 => &[0x20, 0x02, 0x00, 0x00], // CONNECT → CONNACK, accepted
            12 => &[0xd0, 0x00],            // PINGREQ → PINGRESP
            _ => &[],
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;
const PINGREQ: u8 = 12;

#[tokio::test]
async fn a_client_that_hears_nothing_pings_every_keepalive_even_while_publishing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(fake_broker(listener, tx));

    let keepalive = Duration::from_secs(1);
    let mut opts = MqttOptions::new("keepalive-test", "127.0.0.1", port);
    opts.set_keep_alive(keepalive);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);

    // Publish at exactly the keepalive interval, each one scheduled from the moment the
    // previous one was handed to the client, as the agent's heartbeat pacer does: the
    // publish and the ping timer fall due on the same tick every time.
    let start = Instant::now();
    let publishing = Duration::from_secs(8);
    let mut next: Option<Instant> = None;
    loop {
        let due = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(due), if next.is_some() => {
                client.try_publish("t", QoS::AtMostOnce, false, vec![1u8; 20]).unwrap();
                next = Some(Instant::now() + keepalive);
            }
            event = eventloop.poll() => {
                if let Event::Incoming(Packet::ConnAck(_)) = event.expect("connection") {
                    next = Some(Instant::now() + keepalive);
                }
            }
        }
        if start.elapsed() >= publishing {
            break;
        }
    }
    // Then silence: the client must ping on its own within a keepalive (and a bit).
    let silent = Instant::now();
    tokio::time::timeout(keepalive * 2, async {
        loop {
            eventloop.poll().await.expect("connection");
        }
    })
    .await
    .unwrap_err();

    let mut publishes = 0;
    let mut pings_while_publishing = 0;
    let mut pings_while_silent = Vec::new();
    while let Ok((kind, at)) = seen.try_recv() {
        match kind {
            CONNECT => {}
            PUBLISH => publishes += 1,
            PINGREQ if at < silent => pings_while_publishing += 1,
            PINGREQ => pings_while_silent.push(at - silent),
            other => panic!("unexpected packet type {other}"),
        }
    }
    assert!(publishes >= 6, "{publishes} publishes in 8 s");
    // The fake broker answers nothing but CONNECT and PINGREQ: a QoS 0 publisher hears
    // nothing else, so it pings about once per keepalive to learn the link is alive
    // (a blackhole that swallows its publishes must end the connection).
    assert!(
        pings_while_publishing >= 5,
        "{pings_while_publishing} PINGREQs in 8 s of publishing to a silent broker"
    );
    assert!(
        !pings_while_silent.is_empty()
            && pings_while_silent[0] <= keepalive + Duration::from_millis(300),
        "the silent client pings within a keepalive: {pings_while_silent:?}"
    );
}
