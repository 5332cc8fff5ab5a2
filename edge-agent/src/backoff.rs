//! Reconnect backoff: exponential from 1 s to a 60 s cap, with full jitter, so a fleet that
//! lost its console does not reconnect in lockstep when it comes back (the embedded broker
//! accepts well under a thousand connects per second).

use std::time::Duration;

use rand::Rng;

/// Delays between reconnect attempts: attempt `n` (from 0) waits a uniformly random time
/// in `[0, min(cap, base × 2ⁿ)]` ("full jitter"). Pure: the caller owns the clock and the
/// random number generator, so tests are exact.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay: base × 2^attempt, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, uniform in `[0, ceiling]`; the ceiling then grows.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        rng.gen_range(Duration::ZERO..=ceiling)
    }

    /// How many delays were handed out since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Called on a successful connect (CONNACK accepted).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ceilings_double_from_one_second_to_the_sixty_second_cap() {
        let mut b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_secs();
                b.next_delay(&mut rng);
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.attempt(), 9);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling_and_spreads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        let mut low = 0;
        for _ in 0..500 {
            let mut b = Backoff::default();
            for _ in 0..6 {
                b.next_delay(&mut rng);
            }
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d <= ceiling, "{d:?} vs {ceiling:?}");
            if d < ceiling / 2 {
                low += 1;
            }
            seen.insert(d.as_millis());
        }
        assert!(
            seen.len() > 400,
            "jitter spreads reconnects: {}",
            seen.len()
        );
        assert!(
            (150..350).contains(&low),
            "full jitter uses the lower half too: {low}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let delays = |seed| {
            let mut b = Backoff::default();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..10).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(delays(42), delays(42));
        assert_ne!(delays(42), delays(43));
    }

    #[test]
    fn reset_starts_over_at_one_second() {
        let mut b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn a_huge_attempt_count_saturates_at_the_cap() {
        let b = Backoff {
            attempt: u32::MAX,
            ..Backoff::default()
        };
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_the_delays_advances_virtual_time_by_exactly_their_sum() {
        let mut b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let start = tokio::time::Instant::now();
        let mut total = Duration::ZERO;
        for _ in 0..12 {
            let d = b.next_delay(&mut rng);
            total += d;
            tokio::time::sleep(d).await;
        }
        // The paused clock rounds each sleep up to the next millisecond.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= total && elapsed <= total + Duration::from_millis(12),
            "{elapsed:?} vs {total:?}"
        );
        // Twelve attempts never exceed the sum of their ceilings.
        assert!(total <= Duration::from_secs(1 + 2 + 4 + 8 + 16 + 32 + 60 * 6));
    }
}
