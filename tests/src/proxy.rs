//! A TCP fault proxy for link simulation, controllable while it runs.
//!
//! It sits between an agent and the broker and forwards bytes both ways. Every setting can
//! change at any time and applies to established connections too:
//! - [`Fault::None`]: forward, with the configured latency and throttle;
//! - [`Fault::Blackhole`]: stop forwarding but keep both sockets open, like a cellular link
//!   that silently dies; bytes read meanwhile (and bytes still in the delay line) are lost.
//!   A connection opened while the link is down is held, and connected upstream with what
//!   it sent when the link returns, as a SYN sent again would be (one the client closed
//!   meanwhile is forgotten);
//! - [`Fault::HalfOpen`]: the same, in one [`Direction`] only;
//! - [`Fault::Reset`]: close every connection with RST on both sides (zero linger) and
//!   refuse new ones with RST until the mode changes. [`FaultProxy::reset_connections`]
//!   does the RST once and keeps accepting.
//!
//! Latency is a real delay line (each chunk is written `latency` after it was read, however
//! many chunks are in flight), and the throttle is a byte rate per direction. A
//! [`DropSchedule`] run by [`FaultProxy::run_schedule`] takes the link down and up again on a
//! seeded random plan, and every outage, scheduled or manual, is kept in
//! [`FaultProxy::outages`] so a test can compare what the console saw with what happened.
//! Byte counters per direction ([`FaultProxy::bytes_forwarded`]) count what reached the
//! other side, so benchmarks can use the proxy to count wire bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client (agent) to upstream (broker).
    Up,
    /// Upstream (broker) to client (agent).
    Down,
}

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Blackhole,
    /// One direction is silently dropped, the other still flows.
    HalfOpen(Direction),
    Reset,
}

impl Fault {
    fn drops(self, direction: Direction) -> bool {
        match self {
            Fault::None => false,
            Fault::Blackhole | Fault::Reset => true,
            Fault::HalfOpen(dead) => dead == direction,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    pub fault: Fault,
    /// Added one-way delay, per direction.
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

/// One period with a fault other than [`Fault::None`], in ms since the Unix epoch (the
/// console's clock), so it can be compared with status history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub fault: Fault,
    pub start_ms: u64,
    /// `None` while it lasts.
    pub end_ms: Option<u64>,
}

/// "Down for `min_down`..=`max_down` (uniform) once every `period`", on a seeded plan: the
/// outage starts at a random point of its period that leaves room for it to end inside the
/// period, so consecutive outages never merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropSchedule {
    pub period: Duration,
    pub min_down: Duration,
    pub max_down: Duration,
    /// The fault applied while down (usually [`Fault::Blackhole`]).
    pub fault: Fault,
    pub seed: u64,
    /// Stop after this many periods; `None` runs until the handle is dropped or aborted.
    pub periods: Option<u32>,
}

impl DropSchedule {
    /// The planned outages as (offset from the start, duration), period by period.
    pub fn plan(&self) -> impl Iterator<Item = (Duration, Duration)> + '_ {
        assert!(
            self.min_down <= self.max_down && self.max_down < self.period,
            "a drop schedule needs min_down <= max_down < period"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let periods = self.periods.unwrap_or(u32::MAX);
        (0..periods).map(move |i| {
            let down = rng.gen_range(self.min_down..=self.max_down);
            let slack = self.period - down;
            let offset = rng.gen_range(Duration::ZERO..=slack);
            (self.period * i + offset, down)
        })
    }
}

/// Counters since the proxy started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    /// Connections refused or cut with RST.
    pub resets: u64,
    /// Bytes written to the upstream side.
    pub bytes_up: u64,
    /// Bytes written to the client side.
    pub bytes_down: u64,
    /// Bytes read but dropped by a blackhole or half-open fault.
    pub dropped_up: u64,
    pub dropped_down: u64,
}

/// A running proxy. Dropping it stops accepting and running schedules; established
/// connections end when the runtime does.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    control: watch::Sender<Shaping>,
    /// Bumped to cut every established connection with RST.
    resets: watch::Sender<u64>,
    counters: Counters,
    outages: Mutex<Vec<Outage>>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    dropped_up: AtomicU64,
    dropped_down: AtomicU64,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            control: watch::channel(Shaping::default()).0,
            resets: watch::channel(0).0,
            counters: Counters::default(),
            outages: Mutex::new(Vec::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the fault; [`Fault::Reset`] also cuts every established connection.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// Changes everything at once (the fault as in [`FaultProxy::set_fault`]).
    pub fn set_shaping(&self, shaping: Shaping) {
        self.shared.set_fault(shaping.fault);
        self.shared.control.send_modify(|s| {
            s.latency = shaping.latency;
            s.rate = shaping.rate;
        });
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.control.send_modify(|s| s.latency = latency);
    }

    /// Bytes per second per direction; `None` lifts the throttle.
    pub fn set_rate(&self, rate: Option<u64>) {
        self.shared.control.send_modify(|s| s.rate = rate);
    }

    pub fn shaping(&self) -> Shaping {
        *self.shared.control.borrow()
    }

    /// Cuts every established connection with RST on both sides, and keeps accepting.
    pub fn reset_connections(&self) {
        self.shared.resets.send_modify(|g| *g += 1);
    }

    /// Runs `schedule` in the background, from now. Dropping or aborting the handle stops
    /// it, leaving the fault as it was at that moment.
    pub fn run_schedule(&self, schedule: DropSchedule) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for (offset, down) in schedule.plan() {
                tokio::time::sleep_until(start + offset).await;
                shared.set_fault(schedule.fault);
                tokio::time::sleep(down).await;
                shared.set_fault(Fault::None);
            }
        })
    }

    /// Every period with a fault, in order, the current one last with `end_ms: None`.
    pub fn outages(&self) -> Vec<Outage> {
        self.shared.outages.lock().expect("not poisoned").clone()
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: load(&c.accepted),
            resets: load(&c.resets),
            bytes_up: load(&c.bytes_up),
            bytes_down: load(&c.bytes_down),
            dropped_up: load(&c.dropped_up),
            dropped_down: load(&c.dropped_down),
        }
    }

    /// (up, down): bytes that reached the other side, for counting wire bytes.
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        let s = self.stats();
        (s.bytes_up, s.bytes_down)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Shared {
    fn set_fault(&self, fault: Fault) {
        let before = self.control.borrow().fault;
        if before != fault {
            let now = now_ms();
            let mut outages = self.outages.lock().expect("not poisoned");
            if before != Fault::None {
                if let Some(last) = outages.last_mut() {
                    last.end_ms = Some(now);
                }
            }
            if fault != Fault::None {
                outages.push(Outage {
                    fault,
                    start_ms: now,
                    end_ms: None,
                });
            }
        }
        self.control.send_modify(|s| s.fault = fault);
        if fault == Fault::Reset {
            self.resets.send_modify(|g| *g += 1);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// How much a connection opened while the link is down holds before it stops reading.
const HELD_BYTES: usize = 64 * 1024;

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.control.borrow().fault == Fault::Reset {
            shared.counters.resets.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, upstream, shared.clone()));
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    // A link that is down would lose the SYN, and the client's TCP would send it again
    // until the link returns; a client that gives up first never reaches the server. The
    // kernel here has already completed the handshake, so the next best thing: hold what the
    // client sends, connect upstream only once the link is back, and forget the connection
    // if the client closes it before then. Discarding the bytes instead would lose the start
    // of a connection, which real TCP never does.
    let mut control = shared.control.subscribe();
    let mut held = Vec::new();
    loop {
        let fault = control.borrow_and_update().fault;
        if !fault.drops(Direction::Up) && !fault.drops(Direction::Down) {
            break;
        }
        tokio::select! {
            changed = control.changed() => if changed.is_err() { return },
            _ = resets.changed() => {
                shared.counters.resets.fetch_add(1, Ordering::Relaxed);
                reset(client);
                return;
            }
            read = client.read_buf(&mut held), if held.len() < HELD_BYTES => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if !held.is_empty() {
        if server.write_all(&held).await.is_err() {
            return;
        }
        shared
            .counters
            .bytes_up
            .fetch_add(held.len() as u64, Ordering::Relaxed);
    }
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = direction(client_read, server_write, Direction::Up, &shared);
        let down = direction(server_read, client_write, Direction::Down, &shared);
        // When either direction ends, drop both so the other side sees the close.
        tokio::select! {
            _ = up => false,
            _ = down => false,
            _ = resets.changed() => true,
        }
    };
    if was_reset {
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
        reset(client);
        reset(server);
    }
}

/// Closes with RST rather than FIN, as a middlebox dropping state would.
fn reset(stream: TcpStream) {
    // A zero linger sends RST and does not block, which is what the deprecation warns of.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One direction: a reader stamps each chunk with its arrival time into a bounded delay
/// line (bounded, so a throttled writer pushes back on the sender through TCP), and a
/// writer releases it `latency` later at the configured rate, or drops it if the direction
/// is dead by then.
async fn direction(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    dir: Direction,
    shared: &Shared,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let (forwarded, dropped) = match dir {
        Direction::Up => (&shared.counters.bytes_up, &shared.counters.dropped_up),
        Direction::Down => (&shared.counters.bytes_down, &shared.counters.dropped_down),
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async {
        while let Some((read_at, chunk)) = rx.recv().await {
            let latency = shared.control.borrow().latency;
            tokio::time::sleep_until(read_at + latency).await;
            if shared.control.borrow().fault.drops(dir) {
                dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                continue;
            }
            let mut sent = 0;
            while sent < chunk.len() {
                let rate = shared.control.borrow().rate;
                let end = match rate {
                    // At most 1/20 s worth of bytes, then wait for the time they take.
                    Some(rate) => (sent + (rate / 20).max(1) as usize).min(chunk.len()),
                    None => chunk.len(),
                };
                if to.write_all(&chunk[sent..end]).await.is_err() {
                    return;
                }
                forwarded.fetch_add((end - sent) as u64, Ordering::Relaxed);
                if let Some(rate) = rate {
                    let secs = (end - sent) as f64 / rate.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                sent = end;
            }
        }
        // The reader saw the end of the stream: pass the FIN on.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes everything back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// An upstream that accepts and hands the server side of each connection to the test.
    async fn capture_server() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = tx.send(s);
            }
        });
        (addr, rx)
    }

    async fn read_exact_within(s: &mut TcpStream, n: usize, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts_bytes() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello proxy").await.unwrap();
        let back = read_exact_within(&mut c, 11, Duration::from_secs(5)).await;
        assert_eq!(back.as_deref(), Some(&b"hello proxy"[..]));
        assert_eq!(proxy.bytes_forwarded(), (11, 11));
        assert_eq!(proxy.stats().accepted, 1);
    }

    #[tokio::test]
    async fn latency_is_added_each_way_without_serialising_chunks() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_latency(Duration::from_millis(300));
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.set_nodelay(true).unwrap();
        let started = std::time::Instant::now();
        // Ten small writes 20 ms apart: a delay line returns the last one about 600 ms
        // after it was sent, not 10 x 600 ms.
        for i in 0..10u8 {
            c.write_all(&[i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let back = read_exact_within(&mut c, 10, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert_eq!(back, Some((0..10u8).collect::<Vec<_>>()));
        assert!(
            took >= Duration::from_millis(600),
            "round trip took {took:?}"
        );
        assert!(
            took < Duration::from_millis(2_000),
            "round trip took {took:?}"
        );
    }

    #[tokio::test]
    async fn the_throttle_limits_bytes_per_second() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_rate(Some(8_000));
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let data = vec![7u8; 8_000];
        let started = std::time::Instant::now();
        c.write_all(&data).await.unwrap();
        // 8 kB up then 8 kB down at 8 kB/s each, pipelined: about 1 s, surely under 4 s.
        let back = read_exact_within(&mut c, data.len(), Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert_eq!(back.map(|b| b.len()), Some(data.len()));
        assert!(
            took >= Duration::from_millis(900),
            "8 kB at 8 kB/s took {took:?}"
        );
        assert!(
            took < Duration::from_secs(4),
            "8 kB at 8 kB/s took {took:?}"
        );
    }

    #[tokio::test]
    async fn a_blackhole_drops_silently_and_keeps_the_sockets_open() {
        let (upstream, mut servers) = capture_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut s = servers.recv().await.unwrap();
        proxy.set_fault(Fault::Blackhole);
        c.write_all(b"lost").await.unwrap();
        s.write_all(b"gone").await.unwrap();
        assert_eq!(
            read_exact_within(&mut s, 1, Duration::from_millis(500)).await,
            None
        );
        assert_eq!(
            read_exact_within(&mut c, 1, Duration::from_millis(500)).await,
            None
        );
        let stats = proxy.stats();
        assert_eq!((stats.dropped_up, stats.dropped_down), (4, 4));
        // Both sockets are still open: traffic flows again when the link comes back.
        proxy.set_fault(Fault::None);
        c.write_all(b"back").await.unwrap();
        let got = read_exact_within(&mut s, 4, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"back"[..]));
        let outages = proxy.outages();
        assert_eq!(outages.len(), 1);
        assert_eq!(outages[0].fault, Fault::Blackhole);
        assert!(outages[0].end_ms.unwrap() >= outages[0].start_ms + 500);
    }

    #[tokio::test]
    async fn a_connection_opened_during_a_blackhole_goes_through_when_the_link_returns() {
        let (upstream, mut servers) = capture_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        proxy.set_fault(Fault::Blackhole);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), servers.recv()).await;
        assert!(early.is_err(), "connected upstream while the link was down");
        proxy.set_fault(Fault::None);
        let mut s = tokio::time::timeout(Duration::from_secs(5), servers.recv())
            .await
            .expect("connected upstream once the link was back")
            .unwrap();
        let got = read_exact_within(&mut s, 5, Duration::from_secs(5)).await;
        assert_eq!(
            got.as_deref(),
            Some(&b"hello"[..]),
            "the first bytes were lost"
        );
        assert_eq!(proxy.stats().dropped_up, 0);

        // One the client gave up on before the link returned never reaches the server.
        proxy.set_fault(Fault::Blackhole);
        let mut gone = TcpStream::connect(proxy.addr()).await.unwrap();
        gone.write_all(b"stale").await.unwrap();
        drop(gone);
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.set_fault(Fault::None);
        let late = tokio::time::timeout(Duration::from_millis(500), servers.recv()).await;
        assert!(
            late.is_err(),
            "a connection the client closed was opened upstream"
        );
    }

    #[tokio::test]
    async fn half_open_kills_one_direction_only() {
        for dead in [Direction::Up, Direction::Down] {
            let (upstream, mut servers) = capture_server().await;
            let proxy = FaultProxy::start(upstream).await.unwrap();
            let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
            let mut s = servers.recv().await.unwrap();
            proxy.set_fault(Fault::HalfOpen(dead));
            c.write_all(b"up").await.unwrap();
            s.write_all(b"dn").await.unwrap();
            let up = read_exact_within(&mut s, 2, Duration::from_millis(700)).await;
            let down = read_exact_within(&mut c, 2, Duration::from_millis(700)).await;
            match dead {
                Direction::Up => {
                    assert_eq!(up, None);
                    assert_eq!(down.as_deref(), Some(&b"dn"[..]));
                }
                Direction::Down => {
                    assert_eq!(up.as_deref(), Some(&b"up"[..]));
                    assert_eq!(down, None);
                }
            }
        }
    }

    #[tokio::test]
    async fn reset_sends_rst_to_both_sides_and_refuses_new_connections() {
        let (upstream, mut servers) = capture_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut s = servers.recv().await.unwrap();
        proxy.set_fault(Fault::Reset);
        let mut buf = [0u8; 1];
        let client_side = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the client sees the reset");
        let server_side = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server sees the reset");
        for (side, got) in [("client", client_side), ("server", server_side)] {
            let err = got.expect_err("RST, not a clean FIN");
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{side}: {err}"
            );
        }
        // New connections are refused with RST while the mode lasts.
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), again.read(&mut buf))
            .await
            .expect("refused promptly");
        assert!(refused.is_err() || refused.unwrap() == 0);
        proxy.set_fault(Fault::None);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut s = servers.recv().await.unwrap();
        c.write_all(b"ok").await.unwrap();
        let got = read_exact_within(&mut s, 2, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"ok"[..]));
        // One established connection cut, one new connection refused.
        assert_eq!(proxy.stats().resets, 2);
    }

    #[tokio::test]
    async fn reset_connections_cuts_established_ones_and_keeps_accepting() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"x").await.unwrap();
        assert!(read_exact_within(&mut c, 1, Duration::from_secs(5))
            .await
            .is_some());
        proxy.reset_connections();
        let mut buf = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("cut promptly");
        assert_eq!(got.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"y").await.unwrap();
        assert!(read_exact_within(&mut c, 1, Duration::from_secs(5))
            .await
            .is_some());
    }

    #[test]
    fn drop_schedules_are_seeded_and_stay_inside_their_periods() {
        let schedule = DropSchedule {
            period: Duration::from_secs(120),
            min_down: Duration::from_secs(20),
            max_down: Duration::from_secs(90),
            fault: Fault::Blackhole,
            seed: 7,
            periods: Some(50),
        };
        let plan: Vec<_> = schedule.plan().collect();
        assert_eq!(
            plan,
            schedule.plan().collect::<Vec<_>>(),
            "same seed, same plan"
        );
        let other = DropSchedule {
            seed: 8,
            ..schedule
        };
        assert_ne!(plan, other.plan().collect::<Vec<_>>());
        assert_eq!(plan.len(), 50);
        for (i, (offset, down)) in plan.iter().enumerate() {
            let period_start = schedule.period * i as u32;
            assert!(*down >= schedule.min_down && *down <= schedule.max_down);
            assert!(*offset >= period_start);
            assert!(*offset + *down <= period_start + schedule.period);
        }
    }

    #[tokio::test]
    async fn a_running_schedule_takes_the_link_down_and_up_and_logs_each_outage() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let schedule = DropSchedule {
            period: Duration::from_millis(400),
            min_down: Duration::from_millis(100),
            max_down: Duration::from_millis(200),
            fault: Fault::Blackhole,
            seed: 1,
            periods: Some(3),
        };
        let task = proxy.run_schedule(schedule);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("three periods end")
            .unwrap();
        let outages = proxy.outages();
        assert_eq!(outages.len(), 3, "{outages:?}");
        for o in &outages {
            let took = o.end_ms.expect("ended") - o.start_ms;
            assert!((90..=400).contains(&took), "{o:?}");
        }
        assert_eq!(proxy.shaping().fault, Fault::None);
    }
}
