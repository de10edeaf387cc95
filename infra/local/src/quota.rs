//! API Gateway's account-wide request quota, which every `@connections`
//! request of an account and region shares: a token bucket of `burst`
//! requests refilled at `per_second`. Both local Management APIs answer a
//! request with no token left 429 `LimitExceededException`, as API Gateway
//! does, so a fan-out that ignores the quota fails here first.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for Quota {
    /// The default quota of most regions: 10,000 a second, a burst of 5,000.
    fn default() -> Self {
        Quota {
            per_second: 10_000.0,
            burst: 5_000.0,
        }
    }
}

/// A [`Quota`]'s tokens, shared by every request handler.
#[derive(Debug)]
pub struct QuotaBucket {
    quota: Option<Quota>,
    /// Tokens left as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl QuotaBucket {
    /// A full bucket; `None` lets every request through.
    pub fn new(quota: Option<Quota>) -> Self {
        QuotaBucket {
            quota,
            state: Mutex::new((quota.map_or(0.0, |quota| quota.burst), Instant::now())),
        }
    }

    /// Takes one token; `false` when none is left (answer 429).
    pub fn admit(&self) -> bool {
        let Some(quota) = self.quota else {
            return true;
        };
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, refilled_at) = &mut *state;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(*refilled_at).as_secs_f64();
        *tokens = (*tokens + elapsed * quota.per_second).min(quota.burst);
        *refilled_at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let bucket = QuotaBucket::new(Some(Quota {
            per_second: 1_000.0,
            burst: 100.0,
        }));
        let admitted = (0..150).filter(|_| bucket.admit()).count();
        assert!((100..=105).contains(&admitted), "{admitted}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let admitted = (0..150).filter(|_| bucket.admit()).count();
        assert!((45..=70).contains(&admitted), "about 50 tokens in 50 ms: {admitted}");
    }

    #[test]
    fn no_quota_admits_everything() {
        let bucket = QuotaBucket::new(None);
        assert!((0..100_000).all(|_| bucket.admit()));
    }
}
