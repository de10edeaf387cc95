//! The circuit breaker: a broad failure of the Management API stops the
//! posting for a cooldown instead of adding load.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::telemetry::metric;

/// When the Management API fails broadly, posting more only adds load: once
/// `failure_ratio` of the last `window` posts failed, the breaker opens and no
/// post is attempted for `cooldown`.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    pub window: usize,
    pub failure_ratio: f64,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: 50,
            failure_ratio: 0.5,
            cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub(super) struct Breaker {
    pub(super) settings: BreakerSettings,
    /// Most recent last; `true` is a failed post.
    recent: VecDeque<bool>,
    pub(super) failures: usize,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(super) fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            recent: VecDeque::new(),
            failures: 0,
            open_until: None,
        }
    }

    /// How long the breaker stays open from `now`, if it is open.
    pub(super) fn remaining_cooldown(&self, now: Instant) -> Option<Duration> {
        self.open_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    pub(super) fn allows_post(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                // Cooldown over: start a fresh window.
                self.open_until = None;
                self.recent.clear();
                self.failures = 0;
                true
            }
            None => true,
        }
    }

    pub(super) fn record(&mut self, failed: bool, now: Instant) {
        if self.open_until.is_some() {
            return;
        }
        self.recent.push_back(failed);
        self.failures += usize::from(failed);
        if self.recent.len() > self.settings.window {
            let oldest_failed = self.recent.pop_front().unwrap_or(false);
            self.failures -= usize::from(oldest_failed);
        }
        let window_full = self.recent.len() >= self.settings.window;
        if window_full && self.failures as f64 >= self.settings.failure_ratio * self.settings.window as f64 {
            self.open_until = Some(now + self.settings.cooldown);
            metrics::counter!(metric::BREAKER_OPENED).increment(1);
            tracing::warn!(
                failures = self.failures,
                window = self.settings.window,
                cooldown_ms = self.settings.cooldown.as_millis() as u64,
                "circuit breaker opened: the Management API is failing broadly"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(window: usize) -> Breaker {
        Breaker::new(BreakerSettings {
            window,
            failure_ratio: 0.5,
            cooldown: Duration::from_secs(5),
        })
    }

    #[test]
    fn the_breaker_stays_closed_while_failures_stay_under_the_ratio() {
        let mut breaker = breaker(10);
        let now = Instant::now();
        for post in 0..100 {
            breaker.record(post % 3 == 0, now);
        }
        assert!(breaker.allows_post(now));
    }

    #[test]
    fn the_breaker_opens_at_the_ratio_and_closes_after_the_cooldown() {
        let mut breaker = breaker(10);
        let now = Instant::now();
        for post in 0..10 {
            breaker.record(post % 2 == 0, now);
        }
        assert!(!breaker.allows_post(now + Duration::from_secs(1)));
        assert!(breaker.allows_post(now + Duration::from_secs(6)));
        breaker.record(true, now + Duration::from_secs(6));
        assert!(
            breaker.allows_post(now + Duration::from_secs(6)),
            "a fresh window after the cooldown"
        );
    }

    #[test]
    fn the_breaker_needs_a_full_window_before_it_judges() {
        let mut breaker = breaker(10);
        let now = Instant::now();
        for _ in 0..9 {
            breaker.record(true, now);
        }
        assert!(breaker.allows_post(now));
    }
}
