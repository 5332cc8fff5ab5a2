//! Counters an operator would graph, rendered in Prometheus text format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    ingested: Mutex<BTreeMap<&'static str, u64>>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    transitions: Mutex<BTreeMap<&'static str, u64>>,
    connect_refused: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<Histogram>,
    pub store_errors: AtomicU64,
    /// Heartbeat samples not stored because the free-space guard refused writes.
    pub store_refused_samples: AtomicU64,
    /// Events and transitions dropped because the held-back backlog was full.
    pub store_backlog_dropped: AtomicU64,
}

/// Upper bounds of the ingest latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus-style histogram: counts per bucket (the last one is +Inf), sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    *map.lock()
        .expect("metrics lock is never poisoned")
        .entry(key)
        .or_default() += 1;
}

/// Gauges read at render time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub agents_online: usize,
    pub agents_total: usize,
    pub sled_bytes: u64,
    pub broker_queue_dropped: u64,
    /// Of those, births, statuses, events and results (heartbeats are shed first).
    pub broker_queue_dropped_other: u64,
    /// Connections the embedded broker closed because their address was over
    /// `mqtt.connect_burst_per_ip` / `mqtt.connects_per_ip_per_s`.
    pub broker_connects_refused_per_ip: u64,
    /// Whether the console is connected to its broker (always, for the embedded one).
    pub broker_connected: bool,
    /// Free bytes on the data dir's filesystem at the guard's last sample (`None` with the
    /// guard off).
    pub store_free_bytes: Option<u64>,
    pub store_reserve_bytes: u64,
    pub store_writes_refused: bool,
    /// Events and transitions held in memory until writes resume.
    pub store_backlog: usize,
}

impl Metrics {
    pub fn ingested(&self, kind: &'static str) {
        bump(&self.ingested, kind);
    }

    pub fn rejected(&self, reason: &'static str) {
        bump(&self.rejected, reason);
    }

    pub fn transition(&self, cause: &'static str) {
        bump(&self.transitions, cause);
    }

    pub fn connect_refused(&self, reason: &'static str) {
        bump(&self.connect_refused, reason);
    }

    /// Time from the broker link handing a message over to its ingest round being written.
    pub fn ingest_latency(&self, seconds: f64) {
        let mut h = self.latency.lock().expect("not poisoned");
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        h.buckets[i] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.lock().expect("not poisoned").values().sum()
    }

    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        let family = |out: &mut String,
                      name: &str,
                      help: &str,
                      label: &str,
                      map: &Mutex<BTreeMap<&'static str, u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, v) in map.lock().expect("not poisoned").iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        family(
            &mut out,
            "edgefleet_ingest_messages_total",
            "Agent messages accepted, by kind.",
            "kind",
            &self.ingested,
        );
        family(
            &mut out,
            "edgefleet_ingest_rejected_total",
            "Agent messages rejected, by reason.",
            "reason",
            &self.rejected,
        );
        family(
            &mut out,
            "edgefleet_presence_transitions_total",
            "Status transitions, by cause.",
            "cause",
            &self.transitions,
        );
        family(
            &mut out,
            "edgefleet_connect_refused_total",
            "MQTT connects refused by the console policy, by reason.",
            "reason",
            &self.connect_refused,
        );
        {
            let h = self.latency.lock().expect("not poisoned");
            let name = "edgefleet_ingest_latency_seconds";
            let _ = writeln!(out, "# HELP {name} From the broker handing a message over to its ingest round being stored.\n# TYPE {name} histogram");
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
                cumulative += h.buckets[i];
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            cumulative += h.buckets[LATENCY_BOUNDS.len()];
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {}\n{name}_count {}",
                h.sum, h.count
            );
        }
        let _ = writeln!(out, "# HELP edgefleet_agents_online Agents currently online.\n# TYPE edgefleet_agents_online gauge\nedgefleet_agents_online {}", g.agents_online);
        let _ = writeln!(out, "# HELP edgefleet_agents_total Agents known.\n# TYPE edgefleet_agents_total gauge\nedgefleet_agents_total {}", g.agents_total);
        let _ = writeln!(out, "# HELP edgefleet_sled_bytes Size of the sled database on disk.\n# TYPE edgefleet_sled_bytes gauge\nedgefleet_sled_bytes {}", g.sled_bytes);
        let _ = writeln!(out, "# HELP edgefleet_broker_console_queue_dropped_total Messages the broker link dropped because ingest fell behind.\n# TYPE edgefleet_broker_console_queue_dropped_total counter\nedgefleet_broker_console_queue_dropped_total {}", g.broker_queue_dropped);
        let _ = writeln!(out, "# HELP edgefleet_broker_console_queue_dropped_other_total Of those, messages other than heartbeats (births, statuses, events, results), dropped only once the queue was full.\n# TYPE edgefleet_broker_console_queue_dropped_other_total counter\nedgefleet_broker_console_queue_dropped_other_total {}", g.broker_queue_dropped_other);
        let _ = writeln!(out, "# HELP edgefleet_broker_connects_refused_per_ip_total Connections the embedded broker closed at once because their address was over its connect limit (mqtt.connect_burst_per_ip).\n# TYPE edgefleet_broker_connects_refused_per_ip_total counter\nedgefleet_broker_connects_refused_per_ip_total {}", g.broker_connects_refused_per_ip);
        let _ = writeln!(out, "# HELP edgefleet_broker_connected 1 while the console is connected to its MQTT broker (an external broker can be unreachable).\n# TYPE edgefleet_broker_connected gauge\nedgefleet_broker_connected {}", u8::from(g.broker_connected));
        let _ = writeln!(out, "# HELP edgefleet_store_errors_total Failed sled writes.\n# TYPE edgefleet_store_errors_total counter\nedgefleet_store_errors_total {}", self.store_errors.load(Ordering::Relaxed));
        if let Some(free) = g.store_free_bytes {
            let _ = writeln!(out, "# HELP edgefleet_store_free_bytes Free bytes on the data dir's filesystem (sampled every second).\n# TYPE edgefleet_store_free_bytes gauge\nedgefleet_store_free_bytes {free}");
        }
        let _ = writeln!(out, "# HELP edgefleet_store_reserve_bytes Free space the console keeps (store.min_free_mb); 0 when the guard is off.\n# TYPE edgefleet_store_reserve_bytes gauge\nedgefleet_store_reserve_bytes {}", g.store_reserve_bytes);
        let _ = writeln!(out, "# HELP edgefleet_store_writes_refused 1 while free space is below the reserve and the console refuses writes.\n# TYPE edgefleet_store_writes_refused gauge\nedgefleet_store_writes_refused {}", u8::from(g.store_writes_refused));
        let _ = writeln!(out, "# HELP edgefleet_store_backlog Agent events and status changes held in memory until writes resume.\n# TYPE edgefleet_store_backlog gauge\nedgefleet_store_backlog {}", g.store_backlog);
        let _ = writeln!(out, "# HELP edgefleet_store_refused_samples_total Heartbeat samples not stored while writes were refused.\n# TYPE edgefleet_store_refused_samples_total counter\nedgefleet_store_refused_samples_total {}", self.store_refused_samples.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP edgefleet_store_backlog_dropped_total Events and status changes lost because the backlog was full.\n# TYPE edgefleet_store_backlog_dropped_total counter\nedgefleet_store_backlog_dropped_total {}", self.store_backlog_dropped.load(Ordering::Relaxed));
        out
    }
}
