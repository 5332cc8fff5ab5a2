//! Reconnect backoff: exponential from 1 s to a 60 s cap, with full jitter, so a fleet that
//! lost its console does not reconnect in lockstep (rumqttd accepts only ~850 connects/s).

use std::time::Duration;

use rand::Rng;

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

    /// The ceiling for the current attempt: base × 2^attempt, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, uniformly in [ceiling/2, ceiling], then grows.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rng.gen_range(Duration::ZERO..=ceiling - half)
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Called on a successful connect.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ceilings_double_to_the_cap() {
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
    }

    #[test]
    fn delays_stay_within_half_to_full_ceiling_and_vary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::default();
            for _ in 0..6 {
                b.next_delay(&mut rng);
            }
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 50, "jitter spreads reconnects");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_the_delay_advances_virtual_time_only() {
        let mut b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let start = tokio::time::Instant::now();
        let mut total = Duration::ZERO;
        for _ in 0..8 {
            let d = b.next_delay(&mut rng);
            total += d;
            tokio::time::sleep(d).await;
        }
        // The paused clock advances in whole milliseconds per sleep.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= total && elapsed <= total + Duration::from_millis(8),
            "{elapsed:?} vs {total:?}"
        );
        assert!(total >= Duration::from_secs(60), "{total:?}");
    }
}
