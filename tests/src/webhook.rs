//! A webhook receiver for the alert tests and the alert latency benchmark: answers 200 to
//! every POST and records it, and can be taken down and brought back on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature: Option<String>,
    pub delivery: Option<String>,
    pub body: Value,
    pub raw: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

/// A webhook receiver that answers 200 to every POST and records it; `stop` closes the
/// listener (connections refused), `start` listens again on the same port.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn new(addr: SocketAddr) -> Receiver {
        let mut r = Receiver {
            addr,
            got: Arc::new(Mutex::new(Vec::new())),
            task: None,
        };
        r.start().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub async fn start(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let got = self.got.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let got = got.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                        headers.push(line.trim().to_string());
                    }
                    let header = |name: &str| {
                        headers.iter().find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut raw = vec![0u8; len];
                    if reader.read_exact(&mut raw).await.is_err() {
                        return;
                    }
                    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                    got.lock().unwrap().push(Delivery {
                        signature: header("x-edgefleet-signature"),
                        delivery: header("x-edgefleet-delivery"),
                        body,
                        raw,
                        at: Instant::now(),
                    });
                    let mut stream = reader.into_inner();
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// (event, rule, agent) of every delivery so far.
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.deliveries()
            .iter()
            .map(|d| {
                (
                    d.body["event"].as_str().unwrap_or_default().to_string(),
                    d.body["alert"]["rule"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d.body["alert"]["agent"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }
}
