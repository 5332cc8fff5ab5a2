//! Heartbeats, reported by exception.
//!
//! [`HeartbeatReporter`] (agent side) leaves out fields that did not move beyond the
//! [`Deadband`] since they were last sent, and sends a full keyframe after every connect and
//! every `keyframe_every` heartbeats, so a lost QoS 0 heartbeat is repaired within that many
//! intervals. [`Vitals::apply`] (console side) keeps the previous value of an absent field.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub bd_seq: u64,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_pct: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_pct: Option<u8>,
    /// One-minute load average × 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_centi: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// Bytes per second received, averaged over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps_digest: Option<u16>,
    /// Unix seconds; set only on store-and-forward history samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// The managed apps' states, sent with every `apps_digest` (keyframes and changes), so
    /// a lost heartbeat is repaired by the next keyframe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<crate::AppState>>,
    /// The inventory digest the console last acknowledged, sent with `apps_digest`
    /// (keyframes and changes).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub inventory_digest: Option<[u8; 8]>,
}

/// The full set of vitals of a device at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vitals {
    pub cpu_pct: u8,
    pub mem_pct: u8,
    pub disk_pct: u8,
    pub load_centi: u16,
    pub uptime_s: u64,
    pub rx_bps: u32,
    pub tx_bps: u32,
    pub apps_digest: u16,
}

/// How far a value must move before it is reported again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadband {
    /// Percentage points for cpu, mem and disk.
    pub pct: u8,
    /// Load × 100.
    pub load_centi: u16,
    /// Relative change of the network rates, in percent.
    pub rate_pct: u32,
    /// A full heartbeat every this many heartbeats.
    pub keyframe_every: u32,
}

impl Default for Deadband {
    fn default() -> Self {
        Deadband {
            pct: 2,
            load_centi: 10,
            rate_pct: 10,
            keyframe_every: 10,
        }
    }
}

impl Vitals {
    /// A full heartbeat carrying every field.
    pub fn keyframe(&self) -> Heartbeat {
        Heartbeat {
            cpu_pct: Some(self.cpu_pct),
            mem_pct: Some(self.mem_pct),
            disk_pct: Some(self.disk_pct),
            load_centi: Some(self.load_centi),
            uptime_s: Some(self.uptime_s),
            rx_bps: Some(self.rx_bps),
            tx_bps: Some(self.tx_bps),
            apps_digest: Some(self.apps_digest),
            ..Heartbeat::default()
        }
    }

    /// Applies a (possibly partial) heartbeat: absent fields keep their previous value.
    pub fn apply(&mut self, hb: &Heartbeat) {
        if let Some(v) = hb.cpu_pct {
            self.cpu_pct = v.min(100);
        }
        if let Some(v) = hb.mem_pct {
            self.mem_pct = v.min(100);
        }
        if let Some(v) = hb.disk_pct {
            self.disk_pct = v.min(100);
        }
        if let Some(v) = hb.load_centi {
            self.load_centi = v;
        }
        if let Some(v) = hb.uptime_s {
            self.uptime_s = v;
        }
        if let Some(v) = hb.rx_bps {
            self.rx_bps = v;
        }
        if let Some(v) = hb.tx_bps {
            self.tx_bps = v;
        }
        if let Some(v) = hb.apps_digest {
            self.apps_digest = v;
        }
    }
}

/// Agent-side state for report-by-exception. Call [`HeartbeatReporter::reset`] on every
/// (re)connect so the next heartbeat is a keyframe.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReporter {
    deadband: Deadband,
    last_sent: Option<Vitals>,
    since_keyframe: u32,
}

impl HeartbeatReporter {
    pub fn new(deadband: Deadband) -> HeartbeatReporter {
        HeartbeatReporter {
            deadband,
            last_sent: None,
            since_keyframe: 0,
        }
    }

    pub fn reset(&mut self) {
        self.last_sent = None;
    }

    /// The heartbeat to send for `now` (with `bd_seq`/`seq` still to be stamped).
    pub fn next(&mut self, now: &Vitals) -> Heartbeat {
        let db = self.deadband;
        let keyframe = self.since_keyframe + 1 >= db.keyframe_every.max(1);
        let Some(last) = self.last_sent.as_mut().filter(|_| !keyframe) else {
            self.last_sent = Some(*now);
            self.since_keyframe = 0;
            return now.keyframe();
        };
        self.since_keyframe += 1;
        let mut hb = Heartbeat::default();
        if now.cpu_pct.abs_diff(last.cpu_pct) > db.pct {
            hb.cpu_pct = Some(now.cpu_pct);
            last.cpu_pct = now.cpu_pct;
        }
        if now.mem_pct.abs_diff(last.mem_pct) > db.pct {
            hb.mem_pct = Some(now.mem_pct);
            last.mem_pct = now.mem_pct;
        }
        if now.disk_pct.abs_diff(last.disk_pct) > db.pct {
            hb.disk_pct = Some(now.disk_pct);
            last.disk_pct = now.disk_pct;
        }
        if now.load_centi.abs_diff(last.load_centi) > db.load_centi {
            hb.load_centi = Some(now.load_centi);
            last.load_centi = now.load_centi;
        }
        if rate_moved(now.rx_bps, last.rx_bps, db.rate_pct) {
            hb.rx_bps = Some(now.rx_bps);
            last.rx_bps = now.rx_bps;
        }
        if rate_moved(now.tx_bps, last.tx_bps, db.rate_pct) {
            hb.tx_bps = Some(now.tx_bps);
            last.tx_bps = now.tx_bps;
        }
        if now.apps_digest != last.apps_digest {
            hb.apps_digest = Some(now.apps_digest);
            last.apps_digest = now.apps_digest;
        }
        // Uptime is left out between keyframes: the console derives it from the boot time.
        last.uptime_s = now.uptime_s;
        hb
    }
}

fn rate_moved(now: u32, last: u32, pct: u32) -> bool {
    let diff = u64::from(now.abs_diff(last));
    // Small rates move by whole bytes; a floor of 64 B/s keeps them from flapping.
    diff > 64 && diff * 100 > u64::from(last) * u64::from(pct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals() -> Vitals {
        Vitals {
            cpu_pct: 37,
            mem_pct: 61,
            disk_pct: 42,
            load_centi: 85,
            uptime_s: 259_200,
            rx_bps: 1530,
            tx_bps: 820,
            apps_digest: 0xbeef,
        }
    }

    #[test]
    fn first_heartbeat_after_reset_is_a_keyframe() {
        let mut r = HeartbeatReporter::new(Deadband::default());
        assert_eq!(r.next(&vitals()), vitals().keyframe());
        r.reset();
        assert_eq!(r.next(&vitals()), vitals().keyframe());
    }

    #[test]
    fn changes_inside_the_deadband_are_left_out_and_outside_are_sent() {
        let mut r = HeartbeatReporter::new(Deadband::default());
        r.next(&vitals());
        let mut v = vitals();
        v.cpu_pct += 2;
        v.mem_pct -= 2;
        v.rx_bps += 100;
        v.uptime_s += 30;
        assert_eq!(r.next(&v), Heartbeat::default(), "all within deadband");
        v.cpu_pct += 1; // now 3 away from the last sent value
        let hb = r.next(&v);
        assert_eq!(hb.cpu_pct, Some(40));
        assert_eq!(hb.mem_pct, None);
        assert_eq!(hb.uptime_s, None);
    }

    #[test]
    fn drift_is_measured_from_the_last_sent_value_not_the_last_sample() {
        let mut r = HeartbeatReporter::new(Deadband::default());
        r.next(&vitals());
        let mut v = vitals();
        for _ in 0..3 {
            v.disk_pct += 1;
            let hb = r.next(&v);
            if v.disk_pct - vitals().disk_pct > 2 {
                assert_eq!(hb.disk_pct, Some(v.disk_pct));
            } else {
                assert_eq!(hb.disk_pct, None);
            }
        }
    }

    #[test]
    fn a_keyframe_comes_every_n_heartbeats() {
        let db = Deadband {
            keyframe_every: 4,
            ..Deadband::default()
        };
        let mut r = HeartbeatReporter::new(db);
        let full: Vec<bool> = (0..9)
            .map(|_| r.next(&vitals()) == vitals().keyframe())
            .collect();
        assert_eq!(
            full,
            [true, false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn the_console_keeps_absent_fields() {
        let mut seen = Vitals::default();
        seen.apply(&vitals().keyframe());
        seen.apply(&Heartbeat {
            cpu_pct: Some(90),
            ..Heartbeat::default()
        });
        assert_eq!(
            seen,
            Vitals {
                cpu_pct: 90,
                ..vitals()
            }
        );
    }
}
