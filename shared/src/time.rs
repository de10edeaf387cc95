//! The time the logic reads: the system's clock in the functions, a manual
//! one in tests, which moves only when a test moves it (so a test of a
//! window, a TTL or an expiry neither sleeps nor depends on when it runs).
//!
//! Only wall-clock time (epoch seconds and milliseconds: TTLs, windows,
//! expiries) goes through [`Clock`]. Deadlines measured on the monotonic
//! clock (an invocation's remaining time, the fan-out's breaker, the pacer)
//! stay on `Instant`, which tokio's paused test time already controls.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit API Gateway uses for `connectedAt`.
pub fn epoch_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        // A clock before 1970 is a broken host; treating it as the epoch only makes
        // every record look expired, which errs on the side of pruning.
        .unwrap_or(0)
}

/// Seconds since the Unix epoch: the unit of DynamoDB's TTL attribute.
pub fn epoch_seconds_now() -> i64 {
    epoch_millis_now() / 1000
}

/// Where the handlers read the time. A plain value, cloned into whatever
/// needs it: a manual clock's clones share its time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The host's clock.
    #[default]
    System,
    /// A test's clock.
    Manual(ManualClock),
}

impl Clock {
    pub fn epoch_millis(&self) -> i64 {
        match self {
            Clock::System => epoch_millis_now(),
            Clock::Manual(clock) => clock.epoch_millis(),
        }
    }

    pub fn epoch_seconds(&self) -> i64 {
        self.epoch_millis().div_euclid(1_000)
    }

    /// Waits `duration`. A manual clock moves on by it at once instead, so
    /// a pause in the logic (a re-read's, a grace period's) costs a test nothing.
    pub async fn sleep(&self, duration: Duration) {
        match self {
            Clock::System => tokio::time::sleep(duration).await,
            Clock::Manual(clock) => clock.advance(duration),
        }
    }
}

/// A clock that stands still until it is moved.
#[derive(Debug, Clone)]
pub struct ManualClock {
    epoch_millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn at_epoch_millis(epoch_millis: i64) -> Self {
        ManualClock {
            epoch_millis: Arc::new(AtomicI64::new(epoch_millis)),
        }
    }

    pub fn at_epoch_seconds(epoch_seconds: i64) -> Self {
        Self::at_epoch_millis(epoch_seconds.saturating_mul(1_000))
    }

    pub fn epoch_millis(&self) -> i64 {
        self.epoch_millis.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.epoch_millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// The clock as the handlers take it; it keeps following this one.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

/// Whatever tells the handlers the time: the store, whose records expire by
/// that same time (DynamoDB's TTL, or the in-memory store's).
pub trait Clocked {
    fn clock(&self) -> &Clock;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_moved_and_every_clone_sees_it() {
        let manual = ManualClock::at_epoch_seconds(1_000);
        let clock = manual.clock();
        assert_eq!(clock.epoch_seconds(), 1_000);
        clock.sleep(Duration::from_millis(1_500)).await;
        assert_eq!(manual.epoch_millis(), 1_001_500);
        manual.advance(Duration::from_secs(60));
        assert_eq!(clock.epoch_seconds(), 1_061);
    }
}
