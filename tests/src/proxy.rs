//! A TCP fault proxy for link simulation, controllable while it runs.
//!
//! It sits between an agent and the broker and forwards bytes both ways. The fault mode
//! can change at any time and applies to established connections too:
//! - [`Fault::None`]: forward as fast as possible (plus the configured latency and rate);
//! - [`Fault::Blackhole`]: stop forwarding but keep both sockets open, like a cellular link
//!   that silently dies; bytes read meanwhile are discarded;
//! - [`Fault::Reset`]: close every connection at once and refuse new ones until the mode
//!   changes.
//!
//! Latency is added per chunk, and the throttle limits bytes per second per direction.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Blackhole,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    pub fault: Fault,
    /// Added one-way delay per forwarded chunk.
    pub latency: Duration,
    /// Bytes per second per direction; `None` is unlimited.
    pub rate: Option<u64>,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            fault: Fault::None,
            latency: Duration::ZERO,
            rate: None,
        }
    }
}

/// A running proxy. Dropping it stops accepting; existing connections end when the
/// runtime does.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: watch::Sender<Shaping>,
    stats: Arc<Mutex<ProxyStats>>,
    accept_task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyStats {
    pub accepted: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (control, watcher) = watch::channel(Shaping::default());
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let accept_task = tokio::spawn(accept_loop(listener, upstream, watcher, stats.clone()));
        Ok(FaultProxy {
            addr,
            control,
            stats,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_fault(&self, fault: Fault) {
        self.control.send_modify(|s| s.fault = fault);
    }

    pub fn set_shaping(&self, shaping: Shaping) {
        self.control.send_replace(shaping);
    }

    pub fn stats(&self) -> ProxyStats {
        *self
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: watch::Receiver<Shaping>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if control.borrow().fault == Fault::Reset {
            reset(client);
            continue;
        }
        stats.lock().expect("not poisoned").accepted += 1;
        let control = control.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pipe(
                client_read,
                server_write,
                control.clone(),
                stats.clone(),
                true,
            );
            let down = pipe(server_read, client_write, control, stats, false);
            // When either direction ends, drop both so the other side sees the close.
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        });
    }
}

/// Closes with RST rather than FIN, as a middlebox dropping state would.
fn reset(stream: TcpStream) {
    // A zero linger sends RST and does not block, which is what the deprecation warns of.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut control: watch::Receiver<Shaping>,
    stats: Arc<Mutex<ProxyStats>>,
    upstream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = control.changed() => {
                if changed.is_err() || control.borrow().fault == Fault::Reset {
                    return;
                }
                continue;
            }
        };
        let shaping = *control.borrow();
        match shaping.fault {
            Fault::Reset => return,
            Fault::Blackhole => continue,
            Fault::None => {}
        }
        if !shaping.latency.is_zero() {
            tokio::time::sleep(shaping.latency).await;
        }
        let mut sent = 0;
        while sent < n {
            let chunk = match shaping.rate {
                Some(rate) => {
                    // Send at most 1/20 s worth of bytes, then wait that long.
                    let slice = (rate / 20).max(1) as usize;
                    let end = (sent + slice).min(n);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    &buf[sent..end]
                }
                None => &buf[sent..n],
            };
            if to.write_all(chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let mut s = stats.lock().expect("not poisoned");
        if upstream {
            s.bytes_up += n as u64;
        } else {
            s.bytes_down += n as u64;
        }
    }
}
