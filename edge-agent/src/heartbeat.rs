//! When heartbeats go out and what they carry.
//!
//! [`Heartbeats`] combines three small clocks-in-hand types: the codec's
//! [`HeartbeatReporter`] (report by exception, keyframes), a [`Pacer`] for the live
//! interval, and a [`History`] that keeps one sample per `history_interval` (default
//! [`HISTORY_EVERY`]) for the store-and-forward queue while no heartbeat can be sent. None of them reads the clock;
//! the session passes `now`, so tests run on tokio's paused clock or plain instants.

use std::time::Duration;

use edgefleet_codec::{Deadband, Heartbeat, HeartbeatReporter, Vitals};
use tokio::time::Instant;

/// While disconnected, one heartbeat sample is queued for history this often, by default
/// (the agent's `history_interval`).
pub const HISTORY_EVERY: Duration = Duration::from_secs(300);

/// Live heartbeats of a connection: the first right after the connect, then one every
/// `interval` after the previous one (a late tick delays the next rather than bunching).
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

/// Down-sampled heartbeat history while offline: a sample is due `every` after the last
/// heartbeat that went out live or into the queue.
#[derive(Debug, Clone)]
pub struct History {
    every: Duration,
    last: Instant,
}

/// Everything the session needs to decide about heartbeats.
#[derive(Debug)]
pub struct Heartbeats {
    reporter: HeartbeatReporter,
    pacer: Pacer,
    history: History,
}

impl Pacer {
    pub fn new(interval: Duration) -> Pacer {
        Pacer {
            interval: interval.max(Duration::from_millis(10)),
            next: None,
        }
    }

    /// A connection is up and may send: the first heartbeat is due now.
    pub fn start(&mut self, now: Instant) {
        self.next = Some(now);
    }

    /// No connection: nothing is due.
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// When the next heartbeat is due, if a connection is up.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// A heartbeat went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now + self.interval);
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new interval; a heartbeat already scheduled moves to at most one new interval away.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.interval = interval.max(Duration::from_millis(10));
        if let Some(next) = self.next {
            self.next = Some(next.min(now + self.interval));
        }
    }
}

impl History {
    pub fn new(every: Duration, now: Instant) -> History {
        History { every, last: now }
    }

    pub fn deadline(&self) -> Instant {
        self.last + self.every
    }

    /// A heartbeat went out (live or queued) at `now`.
    pub fn sampled(&mut self, now: Instant) {
        self.last = now;
    }
}

impl Heartbeats {
    pub fn new(
        interval: Duration,
        history_every: Duration,
        deadband: Deadband,
        now: Instant,
    ) -> Heartbeats {
        Heartbeats {
            reporter: HeartbeatReporter::new(deadband),
            pacer: Pacer::new(interval),
            history: History::new(history_every, now),
        }
    }

    /// A connection that can send telemetry is up: the next heartbeat is a keyframe, now.
    pub fn connected(&mut self, now: Instant) {
        self.reporter.reset();
        self.pacer.start(now);
    }

    pub fn disconnected(&mut self) {
        self.pacer.stop();
    }

    /// When the next live heartbeat is due (`None` while disconnected).
    pub fn live_deadline(&self) -> Option<Instant> {
        self.pacer.deadline()
    }

    /// When the next history sample is due (only meaningful while disconnected).
    pub fn history_deadline(&self) -> Instant {
        self.history.deadline()
    }

    /// The live heartbeat for `vitals` at `now`, by exception, and schedules the next.
    /// `keyframe` forces a full one (an explicit request).
    pub fn live(&mut self, vitals: &Vitals, now: Instant, keyframe: bool) -> Heartbeat {
        if keyframe {
            self.reporter.reset();
        }
        let hb = self.reporter.next(vitals);
        self.pacer.sent(now);
        self.history.sampled(now);
        hb
    }

    /// A full history sample stamped with `at_unix` (seconds), for the queue.
    pub fn history(&mut self, vitals: &Vitals, now: Instant, at_unix: u64) -> Heartbeat {
        self.history.sampled(now);
        let mut hb = vitals.keyframe();
        hb.at = Some(at_unix);
        hb
    }

    pub fn interval(&self) -> Duration {
        self.pacer.interval()
    }

    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.pacer.set_interval(interval, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals(cpu: u8) -> Vitals {
        Vitals {
            cpu_pct: cpu,
            mem_pct: 50,
            disk_pct: 40,
            load_centi: 100,
            uptime_s: 1000,
            rx_bps: 1000,
            tx_bps: 1000,
            apps_digest: 7,
        }
    }

    /// Drives the pacer on the paused tokio clock the way the session does and records the
    /// offsets at which heartbeats went out.
    #[tokio::test(start_paused = true)]
    async fn live_heartbeats_start_at_connect_and_follow_the_interval() {
        let t0 = Instant::now();
        let mut hb = Heartbeats::new(
            Duration::from_secs(30),
            HISTORY_EVERY,
            Deadband::default(),
            t0,
        );
        assert_eq!(hb.live_deadline(), None, "nothing before a connect");
        tokio::time::sleep(Duration::from_secs(7)).await;
        hb.connected(Instant::now());
        let mut sent = Vec::new();
        while sent.len() < 4 {
            let due = hb.live_deadline().expect("connected");
            tokio::time::sleep_until(due).await;
            hb.live(&vitals(10), Instant::now(), false);
            sent.push((Instant::now() - t0).as_secs());
        }
        assert_eq!(sent, [7, 37, 67, 97]);
        hb.disconnected();
        assert_eq!(hb.live_deadline(), None);
    }

    #[test]
    fn the_first_after_each_connect_is_a_keyframe_and_every_tenth_after_that() {
        let t = Instant::now();
        let mut hb = Heartbeats::new(
            Duration::from_secs(30),
            HISTORY_EVERY,
            Deadband::default(),
            t,
        );
        hb.connected(t);
        let full: Vec<bool> = (0..12)
            .map(|_| hb.live(&vitals(10), t, false) == vitals(10).keyframe())
            .collect();
        let mut expected = [false; 12];
        expected[0] = true;
        expected[10] = true;
        assert_eq!(full, expected);
        hb.connected(t);
        assert_eq!(hb.live(&vitals(10), t, false), vitals(10).keyframe());
        assert_eq!(
            hb.live(&vitals(11), t, false),
            Heartbeat::default(),
            "inside the deadband: nothing to say"
        );
        assert_eq!(hb.live(&vitals(11), t, true), vitals(11).keyframe());
    }

    #[test]
    fn history_samples_are_full_stamped_and_due_five_minutes_after_the_last_heartbeat() {
        let t0 = Instant::now();
        let mut hb = Heartbeats::new(
            Duration::from_secs(30),
            HISTORY_EVERY,
            Deadband::default(),
            t0,
        );
        hb.connected(t0);
        hb.live(&vitals(10), t0 + Duration::from_secs(60), false);
        hb.disconnected();
        assert_eq!(hb.history_deadline(), t0 + Duration::from_secs(360));
        let sample = hb.history(&vitals(12), t0 + Duration::from_secs(360), 1_700_000_000);
        assert_eq!(sample.at, Some(1_700_000_000));
        assert_eq!(sample.cpu_pct, Some(12));
        assert_eq!(sample.uptime_s, Some(1000));
        assert_eq!(hb.history_deadline(), t0 + Duration::from_secs(660));
    }
}
