//! The embedded broker's per-address connect limit: one token bucket per peer address,
//! asked by the patched rumqttd right after `accept` (`rumqttd::AcceptFilter`), before any
//! TLS handshake, CONNECT parsing or connect policy. Over the limit the socket is closed at
//! once, so a flood from one address costs an `accept` and a `close` per connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

/// New connections per peer address: an IPv4 address, or an IPv6 /64 (which one host or
/// one site usually owns whole, so counting single IPv6 addresses would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectLimit {
    /// Connections one address may open at once before the rate applies.
    pub burst: u32,
    /// Connections per second one address may open in the long run.
    pub per_second: u32,
}

#[derive(Debug)]
pub(crate) struct PerIpLimiter {
    limit: ConnectLimit,
    /// Tokens left and when they were counted, per address key.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PerIpLimiter {
    /// Addresses tracked before idle ones (full buckets, the same as untracked) are
    /// forgotten.
    pub(crate) const PRUNE_AT: usize = 65_536;

    pub(crate) fn new(limit: ConnectLimit) -> PerIpLimiter {
        PerIpLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new connection from `ip` may go on now; takes a token if so.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let key = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        let burst = f64::from(self.limit.burst);
        let rate = f64::from(self.limit.per_second);
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= Self::PRUNE_AT {
            buckets.retain(|_, (tokens, at)| refill(*tokens, *at) < burst);
            if buckets.len() >= Self::PRUNE_AT {
                // Too many addresses are busy at once to track them all: start over rather
                // than grow without bound (an attacker with that many addresses is past
                // what a per-address limit can stop anyway).
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(key).or_insert((burst, now));
        *tokens = refill(*tokens, *at);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(burst: u32, per_second: u32) -> PerIpLimiter {
        PerIpLimiter::new(ConnectLimit { burst, per_second })
    }

    #[test]
    fn an_address_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let l = limiter(3, 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.admit(a, t0)).count(), 3);
        assert!(l.admit(b, t0), "another address has its own bucket");
        assert!(!l.admit(a, t0 + Duration::from_millis(400)));
        assert!(
            l.admit(a, t0 + Duration::from_millis(500)),
            "2/s: a token every 500 ms"
        );
        assert!(!l.admit(a, t0 + Duration::from_millis(600)));
        // Refills stop at the burst, however long the address was quiet.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.admit(a, later)).count(), 3);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_a_v4_mapped_address_as_the_v4_one() {
        let l = limiter(3, 1);
        let t0 = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.admit(one, t0)).count(), 3);
        assert!(!l.admit(same_64, t0), "the same /64");
        assert!(l.admit(other_64, t0));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(l.admit(v4, t0));
        assert_eq!((0..5).filter(|_| l.admit(mapped, t0)).count(), 2);
    }

    #[test]
    fn idle_addresses_are_forgotten_and_the_table_stays_bounded() {
        let l = limiter(2, 1);
        let t0 = Instant::now();
        let n = PerIpLimiter::PRUNE_AT as u32;
        for i in 0..n + 10 {
            assert!(l.admit(IpAddr::V4((0x0a00_0000u32 + i).into()), t0));
        }
        // Every bucket was in use at t0, so the prune could drop none and started over.
        assert!(l.tracked() <= 11, "{}", l.tracked());
        for i in 0..n {
            l.admit(IpAddr::V4((0x0b00_0000u32 + i).into()), t0);
        }
        // Three seconds later those buckets are full again: the next prune drops them, and
        // an address that is still over its limit stays tracked (and limited).
        let busy: IpAddr = "198.51.100.1".parse().unwrap();
        let later = t0 + Duration::from_secs(3);
        assert!(l.admit(busy, later) && l.admit(busy, later));
        assert!(!l.admit(busy, later));
        assert!(l.tracked() < PerIpLimiter::PRUNE_AT);
        assert!(!l.admit(busy, later), "still limited after the prune");
    }
}
