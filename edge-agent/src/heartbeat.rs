//! When heartbeats go out and what they carry.
//!
//! [`Heartbeats`] combines three small clocks-in-hand types: the codec's
//! [`HeartbeatReporter`] (report by exception, keyframes), a [`Pacer`] for the live
//! interval, and a [`History`] that keeps one sample per `history_interval` (default
//! [`HISTORY_EVERY`]) for the store-and-forward queue while no heartbeat can be sent. None of them reads the clock;
//! the session passes `now`, so tests run on tokio's paused clock or plain instants.

use std::collections::VecDeque;
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

/// At most this many live heartbeats wait for confirmation: a heartbeat goes at QoS 1 once
/// this many are unconfirmed, whatever the keepalive (at short intervals), so what a dead
/// link can cost stays bounded.
pub const MAX_UNCONFIRMED: usize = 32;

/// Live heartbeats that nothing has yet shown the broker received, and the liveness rule
/// that confirms them (docs/wire.md, "Acknowledged heartbeats").
///
/// Heartbeats go at QoS 0, which gets no answer, so a link that swallows them (a hung
/// broker, a middlebox that keeps ACKing) would lose them unnoticed. Once a keepalive
/// would otherwise pass without a word from the broker, the next heartbeat goes at QoS 1
/// instead of a separate PINGREQ: its PUBACK proves the link (so rumqttc never pings while
/// the link is up) and, since TCP and the broker keep order, confirms every heartbeat
/// sent before it on the connection. What is still unconfirmed when a connection ends
/// goes into the queue as history. A QoS 1 heartbeat costs about 110 bytes on the wire more
/// than a QoS 0 one (the PUBACK and the ACK of it), a ping exchange about 160 (issue 9's
/// bytes-per-day goal; BENCHMARKS.md, "Acknowledged heartbeats instead of pings").
#[derive(Debug, Default)]
pub struct Unconfirmed {
    /// (number, vitals, unix seconds sent), oldest first.
    sent: VecDeque<(u64, Vitals, u64)>,
    next: u64,
    /// The number of the QoS 1 heartbeat awaiting its PUBACK.
    probe: Option<u64>,
}

impl Unconfirmed {
    /// Whether the heartbeat sent at `now` should go at QoS 1. `heard` is when the broker
    /// last sent anything. The PUBACK has to be back before `heard + keepalive`, when
    /// rumqttc would ping; `margin` (a twentieth of the keepalive, at most 5 s) is for
    /// its round trip.
    pub fn wants_probe(
        &self,
        now: Instant,
        heard: Instant,
        interval: Duration,
        keepalive: Duration,
    ) -> bool {
        if self.probe.is_some() {
            return false;
        }
        let margin = (keepalive / 20).min(Duration::from_secs(5));
        self.sent.len() + 1 >= MAX_UNCONFIRMED || now + interval + margin >= heard + keepalive
    }

    /// A live heartbeat with `vitals` went out at unix second `at`; returns its number,
    /// which the PUBACK of a QoS 1 one ([`Unconfirmed::probing`]) confirms.
    pub fn sent(&mut self, vitals: &Vitals, at: u64) -> u64 {
        let n = self.next;
        self.next += 1;
        self.sent.push_back((n, *vitals, at));
        if self.sent.len() > MAX_UNCONFIRMED {
            self.sent.pop_front();
        }
        n
    }

    /// The number the next [`Unconfirmed::sent`] returns.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Heartbeat `n` went at QoS 1.
    pub fn probing(&mut self, n: u64) {
        self.probe = Some(n);
    }

    /// The broker acknowledged heartbeat `n`: it and everything before it arrived.
    pub fn confirmed(&mut self, n: u64) {
        while self.sent.front().is_some_and(|(m, _, _)| *m <= n) {
            self.sent.pop_front();
        }
        if self.probe.is_some_and(|m| m <= n) {
            self.probe = None;
        }
    }

    /// Everything sent so far arrived (the goodbye's PUBACK).
    pub fn confirm_all(&mut self) {
        self.sent.clear();
        self.probe = None;
    }

    /// The connection ended: the unconfirmed heartbeats as full history samples, oldest
    /// first, stamped with the time they were first sent.
    pub fn take(&mut self) -> Vec<Heartbeat> {
        self.probe = None;
        self.sent
            .drain(..)
            .map(|(_, vitals, at)| {
                let mut hb = vitals.keyframe();
                hb.at = Some(at);
                hb
            })
            .collect()
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

    /// Runs the liveness rule for `beats` heartbeats on a link whose broker answers every
    /// QoS 1 heartbeat within `rtt`; returns which ones went at QoS 1.
    fn probes(interval: u64, keepalive: u64, beats: usize) -> Vec<usize> {
        let t0 = Instant::now();
        let (interval, keepalive) = (
            Duration::from_secs(interval),
            Duration::from_secs(keepalive),
        );
        let rtt = Duration::from_millis(600);
        let mut u = Unconfirmed::default();
        let mut heard = t0;
        let mut out = Vec::new();
        for i in 0..beats {
            let now = t0 + interval * u32::try_from(i + 1).unwrap();
            let probe = u.wants_probe(now, heard, interval, keepalive);
            let n = u.sent(&vitals(10), 1_700_000_000);
            if probe {
                u.probing(n);
                out.push(i + 1);
                // The PUBACK is back before rumqttc would ping (a keepalive of silence),
                // unless heartbeats are as far apart as the keepalive: then it pings too.
                assert!(
                    now + rtt < heard + keepalive || interval + rtt >= keepalive,
                    "heartbeat {} probed too late",
                    i + 1
                );
                heard = now + rtt;
                u.confirmed(n);
            }
        }
        out
    }

    #[test]
    fn a_heartbeat_goes_at_qos1_once_per_keepalive_before_rumqttc_would_ping() {
        // The defaults: 30 s heartbeats, 150 s keepalive: every fourth (one PUBACK per 2 min).
        assert_eq!(probes(30, 150, 12), [4, 8, 12]);
        // A keepalive at or below the interval: every heartbeat proves the link.
        assert_eq!(probes(30, 30, 3), [1, 2, 3]);
        assert_eq!(probes(5, 5, 3), [1, 2, 3]);
        // Short intervals: bounded by MAX_UNCONFIRMED or the keepalive, whichever comes
        // first.
        assert_eq!(probes(1, 60, 120), [32, 64, 96]);
        assert_eq!(probes(10, 60, 12), [5, 10]);
    }

    #[test]
    fn a_puback_confirms_its_heartbeat_and_the_ones_before_and_the_rest_become_history() {
        let t = Instant::now();
        let mut u = Unconfirmed::default();
        assert!(u.sent.is_empty());
        assert!(u.probe.is_none());
        let first = u.sent(&vitals(10), 100);
        let probe = u.sent(&vitals(11), 130);
        u.probing(probe);
        assert!(
            !u.wants_probe(
                t,
                t - Duration::from_secs(999),
                Duration::from_secs(30),
                Duration::from_secs(30)
            ),
            "one probe at a time"
        );
        assert!(u.probe.is_some());
        u.sent(&vitals(12), 160);
        u.sent(&vitals(13), 190);
        assert_eq!(u.sent.len(), 4);
        u.confirmed(probe);
        assert_eq!(u.sent.len(), 2, "{first} and {probe} arrived");
        assert!(u.probe.is_none(), "answered");
        let history = u.take();
        assert!(u.sent.is_empty());
        let mut expected = [vitals(12).keyframe(), vitals(13).keyframe()];
        expected[0].at = Some(160);
        expected[1].at = Some(190);
        assert_eq!(
            history, expected,
            "full samples with the time they were sent"
        );
        // Only the newest MAX_UNCONFIRMED are kept.
        for at in 0..40 {
            u.sent(&vitals(10), at);
        }
        let kept = u.take();
        assert_eq!(kept.len(), MAX_UNCONFIRMED);
        assert_eq!(kept[0].at, Some(40 - MAX_UNCONFIRMED as u64));
        u.sent(&vitals(10), 1);
        u.confirm_all();
        assert!(
            u.take().is_empty(),
            "the goodbye's PUBACK confirms everything"
        );
    }
}
