//! The live event stream behind `GET /api/events` (Server-Sent Events).
//!
//! Events get increasing ids that start at the console's start time in microseconds, so ids
//! from an earlier run are always lower. The last [`RING`] events are kept in memory: a
//! client that reconnects with `Last-Event-ID` inside that window gets exactly the events it
//! missed, then the live ones; one whose id is older than the window (or from before a
//! restart) gets a `reset` event and should reload from the REST API. Vitals are throttled
//! to one event per host every [`VITALS_EVERY_MS`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use edgefleet_codec::api::{LiveBody, LiveEvent};
use tokio::sync::broadcast;

/// Events kept for resuming.
pub const RING: usize = 10_000;
pub const VITALS_EVERY_MS: u64 = 5_000;

#[derive(Debug)]
pub struct Live {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Cancelled on console shutdown: open streams end, so the HTTP server can drain.
    pub closed: tokio_util::sync::CancellationToken,
}

#[derive(Debug)]
struct Inner {
    next: u64,
    ring: VecDeque<Arc<LiveEvent>>,
    vitals_sent: HashMap<String, u64>,
}

/// What a new subscriber gets: the events it missed, then the live receiver.
#[derive(Debug)]
pub struct Subscription {
    pub backlog: Vec<Arc<LiveEvent>>,
    pub live: broadcast::Receiver<Arc<LiveEvent>>,
}

impl Live {
    pub fn new(now_ms: u64) -> Live {
        let (tx, _) = broadcast::channel(4096);
        Live {
            inner: Mutex::new(Inner {
                next: now_ms * 1000,
                ring: VecDeque::with_capacity(RING),
                vitals_sent: HashMap::new(),
            }),
            tx,
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub fn publish(&self, body: LiveBody, now_ms: u64) {
        let mut inner = self.inner.lock().expect("live lock");
        if let LiveBody::Vitals { agent, .. } = &body {
            let last = inner.vitals_sent.get(agent).copied().unwrap_or(0);
            if now_ms.saturating_sub(last) < VITALS_EVERY_MS {
                return;
            }
            inner.vitals_sent.insert(agent.clone(), now_ms);
        }
        inner.next += 1;
        let event = Arc::new(LiveEvent {
            id: inner.next,
            at: now_ms,
            body,
        });
        if inner.ring.len() == RING {
            inner.ring.pop_front();
        }
        inner.ring.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event once: in its backlog or live.
        let _ = self.tx.send(event);
    }

    /// Subscribes, resuming after `last_id` when it is given.
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let inner = self.inner.lock().expect("live lock");
        let live = self.tx.subscribe();
        let backlog = match last_id {
            None => Vec::new(),
            Some(last) => {
                let oldest = inner.ring.front().map(|e| e.id);
                let covered = oldest.is_some_and(|o| last + 1 >= o) || last == inner.next;
                if covered {
                    inner.ring.iter().filter(|e| e.id > last).cloned().collect()
                } else {
                    vec![Arc::new(LiveEvent {
                        id: inner.next,
                        at: 0,
                        body: LiveBody::Reset,
                    })]
                }
            }
        };
        Subscription { backlog, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::api::{AgentStatus, Cause};

    fn status(agent: &str) -> LiveBody {
        LiveBody::Status {
            agent: agent.into(),
            status: AgentStatus::Online,
            cause: Cause::Birth,
        }
    }

    #[test]
    fn resuming_returns_exactly_the_missed_events_and_too_old_ids_get_a_reset() {
        let live = Live::new(1);
        live.publish(status("a"), 1);
        let first = live.subscribe(None);
        assert!(first.backlog.is_empty());
        live.publish(status("b"), 2);
        live.publish(status("c"), 3);
        let resumed = live.subscribe(Some(1001));
        let ids: Vec<u64> = resumed.backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1002, 1003]);
        assert!(live.subscribe(Some(1003)).backlog.is_empty(), "up to date");
        let reset = live.subscribe(Some(5));
        assert_eq!(reset.backlog[0].body, LiveBody::Reset);
    }

    #[test]
    fn vitals_are_throttled_per_host() {
        let live = Live::new(0);
        let mut rx = live.subscribe(None).live;
        let v = |agent: &str| LiveBody::Vitals {
            agent: agent.into(),
            cpu: 1,
            mem: 2,
            disk: 3,
        };
        live.publish(v("a"), 10_000);
        live.publish(v("a"), 11_000);
        live.publish(v("b"), 11_000);
        live.publish(v("a"), 15_000);
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e.at);
        }
        assert_eq!(got, [10_000, 11_000, 15_000]);
    }
}
