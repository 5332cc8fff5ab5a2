//! Probes: where vitals and system facts come from. The session code is the same for the
//! real agent ([`SysinfoProbe`]) and the simulator ([`SimProbe`]); only the probe differs.

use std::path::PathBuf;
use std::time::Instant;

use edgefleet_codec::{AppState, AppStatus, Vitals};
use rand::{Rng, SeedableRng};

/// What a birth says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemFacts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub ips: Vec<String>,
    pub boot_time: u64,
}

/// A source of device facts and vitals. Calls happen on the session task between event
/// loop polls, so they must be quick (milliseconds) and must not block on the network.
pub trait Probe: Send {
    /// What the birth says: read on every connect.
    fn facts(&mut self) -> SystemFacts;
    /// A sample for a heartbeat; rates are averaged since the previous call.
    fn vitals(&mut self) -> Vitals;
    /// Apps the probe brings itself (the simulator's). A real device declares its apps in
    /// its config; their status and version come from the service manager
    /// (`service::AppWatch`), which also sets `apps_digest` in heartbeats.
    fn apps(&mut self) -> Vec<AppState>;
}

/// The real device, read with `sysinfo` and `/etc/os-release`.
#[derive(Debug)]
pub struct SysinfoProbe {
    system: sysinfo::System,
    networks: sysinfo::Networks,
    disks: sysinfo::Disks,
    mounts: Vec<PathBuf>,
    /// Total bytes received and sent (all interfaces but loopback) at the last sample.
    last_net: (u64, u64, Instant),
}

impl SysinfoProbe {
    /// `mounts`: the fullest of these is reported as disk %.
    pub fn new(mounts: Vec<PathBuf>) -> SysinfoProbe {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        let networks = sysinfo::Networks::new_with_refreshed_list();
        let (rx, tx) = net_totals(&networks);
        SysinfoProbe {
            system,
            networks,
            disks: sysinfo::Disks::new_with_refreshed_list(),
            mounts,
            last_net: (rx, tx, Instant::now()),
        }
    }
}

/// Cumulative counters, so the rate does not depend on who refreshed the list last.
fn net_totals(networks: &sysinfo::Networks) -> (u64, u64) {
    networks
        .iter()
        .filter(|(name, _)| name.as_str() != "lo")
        .fold((0u64, 0u64), |(r, t), (_, d)| {
            (
                r.saturating_add(d.total_received()),
                t.saturating_add(d.total_transmitted()),
            )
        })
}

/// `PRETTY_NAME` from os-release, the name operators know their devices by.
pub fn os_pretty_name() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| pretty_name(&text))
        .or_else(sysinfo::System::long_os_version)
        .unwrap_or_else(|| "Linux".to_string())
}

/// `PRETTY_NAME` in os-release text, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
}

impl Probe for SysinfoProbe {
    fn facts(&mut self) -> SystemFacts {
        self.networks.refresh(true);
        let mut ips: Vec<String> = self
            .networks
            .values()
            .flat_map(|data| data.ip_networks().iter().map(|n| n.addr))
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| ip.to_string())
            .collect();
        ips.sort();
        ips.dedup();
        SystemFacts {
            hostname: sysinfo::System::host_name().unwrap_or_else(|| "unknown".into()),
            os: os_pretty_name(),
            kernel: sysinfo::System::kernel_version().unwrap_or_default(),
            arch: sysinfo::System::cpu_arch(),
            ips,
            boot_time: sysinfo::System::boot_time(),
        }
    }

    fn vitals(&mut self) -> Vitals {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let (total_rx, total_tx) = net_totals(&self.networks);
        let (last_rx, last_tx, last_at) = self.last_net;
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        self.last_net = (total_rx, total_tx, Instant::now());
        // An interface that went away makes the totals drop: report 0, not a wrap.
        let rx = total_rx.saturating_sub(last_rx);
        let tx = total_tx.saturating_sub(last_tx);
        let total = self.system.total_memory().max(1);
        let mem = self.system.used_memory() as f64 * 100.0 / total as f64;
        let disk = self
            .disks
            .iter()
            .filter(|d| self.mounts.iter().any(|m| d.mount_point() == m))
            .map(|d| {
                let total = d.total_space().max(1);
                (total - d.available_space().min(total)) as f64 * 100.0 / total as f64
            })
            .fold(0.0f64, f64::max);
        let pct = |v: f64| v.round().clamp(0.0, 100.0) as u8;
        Vitals {
            cpu_pct: pct(f64::from(self.system.global_cpu_usage())),
            mem_pct: pct(mem),
            disk_pct: pct(disk),
            load_centi: (sysinfo::System::load_average().one * 100.0)
                .round()
                .clamp(0.0, 65535.0) as u16,
            uptime_s: sysinfo::System::uptime(),
            rx_bps: (rx as f64 / elapsed).min(f64::from(u32::MAX)) as u32,
            tx_bps: (tx as f64 / elapsed).min(f64::from(u32::MAX)) as u32,
            // Set by the session from the app watch.
            apps_digest: 0,
        }
    }

    fn apps(&mut self) -> Vec<AppState> {
        Vec::new()
    }
}

/// A plausible simulated device: random-walk metrics, 2-4 apps, varied OS names.
#[derive(Debug)]
pub struct SimProbe {
    index: usize,
    rng: rand::rngs::StdRng,
    current: Vitals,
    facts: SystemFacts,
    apps: Vec<AppState>,
}

const SIM_OS: [&str; 5] = [
    "Debian GNU/Linux 12 (bookworm)",
    "Ubuntu 22.04.4 LTS",
    "Raspbian GNU/Linux 11 (bullseye)",
    "Alpine Linux v3.19",
    "Ubuntu 24.04.1 LTS",
];
const SIM_SITES: [&str; 6] = ["ferry", "store", "tower", "farm", "depot", "ship"];
const SIM_APPS: [&str; 5] = ["modbus-bridge", "camera", "edge-db", "vpn", "pos"];

impl SimProbe {
    /// The simulated device number `index`: the same index gives the same device (host
    /// name, OS, apps), so a restarted simulation keeps its fleet.
    pub fn new(index: usize) -> SimProbe {
        let mut rng = rand::rngs::StdRng::seed_from_u64(index as u64 ^ 0x5eed);
        let apps = (0..rng.gen_range(2..=4))
            .map(|i| AppState {
                id: SIM_APPS[(index + i) % SIM_APPS.len()].to_string(),
                status: AppStatus::Active,
                version: Some(format!(
                    "1.{}.{}",
                    rng.gen_range(0..9),
                    rng.gen_range(0..20)
                )),
            })
            .collect();
        let facts = SystemFacts {
            hostname: format!("sim-{index:05}-{}", SIM_SITES[index % SIM_SITES.len()]),
            os: SIM_OS[index % SIM_OS.len()].to_string(),
            kernel: "6.1.0-sim".to_string(),
            arch: if index.is_multiple_of(3) {
                "aarch64"
            } else {
                "x86_64"
            }
            .to_string(),
            ips: vec![format!(
                "10.{}.{}.{}",
                (index >> 16) & 255,
                (index >> 8) & 255,
                index & 255
            )],
            boot_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .saturating_sub(rng.gen_range(600..30 * 86_400)),
        };
        let current = Vitals {
            cpu_pct: rng.gen_range(2..60),
            mem_pct: rng.gen_range(20..85),
            disk_pct: rng.gen_range(10..90),
            load_centi: rng.gen_range(5..200),
            uptime_s: 0,
            rx_bps: rng.gen_range(100..5000),
            tx_bps: rng.gen_range(100..3000),
            apps_digest: 0,
        };
        SimProbe {
            index,
            rng,
            current,
            facts,
            apps,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

fn walk(rng: &mut impl Rng, v: u8, step: i16, lo: i16, hi: i16) -> u8 {
    (i16::from(v) + rng.gen_range(-step..=step)).clamp(lo, hi) as u8
}

impl Probe for SimProbe {
    fn facts(&mut self) -> SystemFacts {
        self.facts.clone()
    }

    fn vitals(&mut self) -> Vitals {
        let r = &mut self.rng;
        self.current.cpu_pct = walk(r, self.current.cpu_pct, 6, 0, 100);
        self.current.mem_pct = walk(r, self.current.mem_pct, 2, 5, 99);
        self.current.disk_pct = walk(r, self.current.disk_pct, 1, 1, 99);
        self.current.load_centi =
            (i32::from(self.current.load_centi) + r.gen_range(-20..=20)).clamp(0, 800) as u16;
        self.current.rx_bps =
            (i64::from(self.current.rx_bps) + r.gen_range(-300..=300)).clamp(0, 1_000_000) as u32;
        self.current.tx_bps =
            (i64::from(self.current.tx_bps) + r.gen_range(-200..=200)).clamp(0, 1_000_000) as u32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.current.uptime_s = now.saturating_sub(self.facts.boot_time);
        self.current.apps_digest = edgefleet_codec::apps_digest(&self.apps);
        self.current
    }

    fn apps(&mut self) -> Vec<AppState> {
        self.apps.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_values_stay_in_range_and_differ_between_agents() {
        let mut a = SimProbe::new(1);
        let mut b = SimProbe::new(2);
        assert_ne!(a.facts().hostname, b.facts().hostname);
        assert!((2..=4).contains(&a.apps().len()));
        let mut cpus = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            let v = a.vitals();
            assert!(v.cpu_pct <= 100, "{v:?}");
            assert!((5..=99).contains(&v.mem_pct), "{v:?}");
            assert!((1..=99).contains(&v.disk_pct), "{v:?}");
            assert!(v.load_centi <= 800, "{v:?}");
            assert!(v.rx_bps <= 1_000_000 && v.tx_bps <= 1_000_000, "{v:?}");
            assert!(v.uptime_s > 0, "{v:?}");
            cpus.insert(v.cpu_pct);
        }
        assert!(cpus.len() > 20, "cpu wanders: {cpus:?}");
        let _ = b.vitals();
        let oses: std::collections::BTreeSet<String> =
            (0..10).map(|i| SimProbe::new(i).facts().os).collect();
        assert!(oses.len() >= 4, "{oses:?}");
        assert_eq!(
            SimProbe::new(3).facts().hostname,
            SimProbe::new(3).facts().hostname
        );
        assert!(SimProbe::new(3).facts().hostname.starts_with("sim-"));
    }

    #[test]
    fn the_real_probe_reads_this_machine() {
        let mut p = SysinfoProbe::new(vec![PathBuf::from("/")]);
        let f = p.facts();
        assert!(!f.hostname.is_empty() && !f.os.is_empty() && !f.arch.is_empty());
        assert!(f.boot_time > 1_500_000_000);
        let v = p.vitals();
        assert!(v.mem_pct > 0 && v.mem_pct <= 100, "{v:?}");
        assert!(v.disk_pct > 0, "root fs has some data: {v:?}");
        assert!(
            p.apps().is_empty(),
            "a real device's apps come from its config"
        );
    }
}
