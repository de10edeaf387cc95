//! Reconnect policy: capped exponential backoff with full jitter.
//!
//! Full jitter (a uniform draw in `[0, ceiling]`) spreads the reconnects of many clients that lost
//! their sockets at the same moment, e.g. all of them when a deployment or the API Gateway
//! two-hour limit drops them, instead of having them retry in lock step.

use std::time::Duration;

use rand::{Rng, RngExt};

/// Capped exponential backoff with full jitter and a bounded number of retries.
///
/// Retry `n` (0-based) waits a random delay in `[0, min(cap, base * factor^n)]`. After
/// `max_attempts` retries the policy yields no more delays, and the caller gives up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    cap: Duration,
    max_attempts: u32,
}

impl Default for Backoff {
    /// 500 ms base, factor 2, 30 s cap, 10 retries.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(30), 10)
    }
}

impl Backoff {
    /// A policy; a `factor` below 1 (or NaN) is taken as 1 so delays never shrink.
    pub fn new(base: Duration, factor: f64, cap: Duration, max_attempts: u32) -> Self {
        let factor = if factor >= 1.0 { factor } else { 1.0 };
        Backoff {
            base,
            factor,
            cap,
            max_attempts,
        }
    }

    pub fn base(&self) -> Duration {
        self.base
    }

    pub fn factor(&self) -> f64 {
        self.factor
    }

    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// How many retries the policy allows before giving up.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The un-jittered upper bound of the delay before retry `attempt` (0-based):
    /// `min(cap, base * factor^attempt)`. Saturates at the cap instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let secs = self.base.as_secs_f64() * self.factor.powf(f64::from(attempt));
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            return self.cap;
        }
        Duration::try_from_secs_f64(secs).unwrap_or(self.cap)
    }

    /// The jittered delay before retry `attempt` (0-based), uniform in `[0, ceiling(attempt)]`,
    /// or `None` once `attempt >= max_attempts`: time to give up.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(rng.random_range(0..=ceiling)))
    }

    /// Every delay of one retry sequence, in order: exactly `max_attempts` of them.
    pub fn delays<R: Rng>(&self, rng: R) -> Delays<R> {
        Delays {
            backoff: *self,
            attempt: 0,
            rng,
        }
    }
}

/// Iterator over the jittered delays of one retry sequence; see [`Backoff::delays`].
#[derive(Debug)]
pub struct Delays<R> {
    backoff: Backoff,
    attempt: u32,
    rng: R,
}

impl<R: Rng> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.backoff.delay(self.attempt, &mut self.rng)?;
        self.attempt += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_match_the_documented_policy() {
        let b = Backoff::default();
        assert_eq!(b.base(), ms(500));
        assert_eq!(b.factor(), 2.0);
        assert_eq!(b.cap(), Duration::from_secs(30));
        assert_eq!(b.max_attempts(), 10);
    }

    #[test]
    fn ceilings_grow_by_the_factor_until_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<Duration> = (0..9).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
    }

    #[test]
    fn ceiling_saturates_at_the_cap_instead_of_overflowing() {
        let b = Backoff::new(ms(500), 1e300, Duration::from_secs(30), u32::MAX);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(Backoff::default().ceiling(u32::MAX), Duration::from_secs(30));
        // A shrinking factor is taken as 1: the delay never drops below the base.
        assert_eq!(Backoff::new(ms(500), 0.1, ms(900), 3).ceiling(5), ms(500));
    }

    #[test]
    fn delays_are_full_jitter_within_the_ceiling() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let ceiling = b.ceiling(3);
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut rng).unwrap()).collect();
        assert!(draws.iter().all(|d| *d <= ceiling));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 150, "only {} distinct delays", distinct.len());
        // Full jitter covers the whole range, not just a band near the ceiling.
        assert!(draws.iter().any(|d| *d < ceiling / 4));
        assert!(draws.iter().any(|d| *d > ceiling * 3 / 4));
    }

    #[test]
    fn delays_stop_after_max_attempts_and_respect_each_ceiling() {
        let b = Backoff::new(ms(100), 3.0, ms(2000), 6);
        let delays: Vec<Duration> = b.delays(StdRng::seed_from_u64(1)).collect();
        assert_eq!(delays.len(), 6);
        for (n, d) in delays.iter().enumerate() {
            assert!(*d <= b.ceiling(n as u32), "retry {n}: {d:?}");
        }
        assert_eq!(b.delay(6, &mut StdRng::seed_from_u64(1)), None);
        assert_eq!(
            Backoff::new(ms(1), 2.0, ms(1), 0)
                .delays(StdRng::seed_from_u64(1))
                .count(),
            0
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let b = Backoff::default();
        let one: Vec<Duration> = b.delays(StdRng::seed_from_u64(42)).collect();
        let two: Vec<Duration> = b.delays(StdRng::seed_from_u64(42)).collect();
        let other: Vec<Duration> = b.delays(StdRng::seed_from_u64(43)).collect();
        assert_eq!(one, two);
        assert_ne!(one, other);
    }
}
