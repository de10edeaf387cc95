//! Pacing posts to the account's API Gateway quota.
//!
//! Every `@connections` request of an account and region shares one quota
//! (10,000 requests per second with a burst of 5,000 by default, adjustable).
//! A broadcast that posts faster only collects 429s, and so does every
//! other broadcast running at the same time. So posts start at a paced
//! rate: at most the configured quota, halved when API Gateway answers 429
//! (at most once per [`DECREASE_INTERVAL`], so one burst of 429s counts
//! once), and raised again by [`INCREASE_SHARE_PER_SECOND`] of the quota
//! each second without one (additive increase, multiplicative decrease).
//! Several invocations pacing this way converge on fair shares of whatever
//! the account has left, with no shared state and no extra request.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_apigatewaymanagement::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_apigatewaymanagement::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_apigatewaymanagement::error::BoxError;

/// The least time between two halvings of the rate.
pub const DECREASE_INTERVAL: Duration = Duration::from_millis(200);
/// How much of the quota the rate regains per second without a 429.
pub const INCREASE_SHARE_PER_SECOND: f64 = 0.05;
/// The rate never drops below this share of the quota: 429s that have
/// nothing to do with this fan-out's pace (another tenant of the account)
/// must not stall it.
pub const MIN_SHARE: f64 = 0.05;
/// Posts that may start at once after a quiet moment: 50 ms at the rate.
pub const BURST_SECONDS: f64 = 0.05;

#[derive(Debug)]
struct State {
    rate: f64,
    /// When the next post may start: each post reserves the slot after the
    /// one before it (a virtual schedule, so waiting posts sleep once each
    /// instead of polling).
    next_slot: Instant,
    decreased_at: Option<Instant>,
    increased_at: Instant,
    throttles: u64,
}

/// Paces the posts of one Lambda instance (shared by its invocations).
#[derive(Debug, Clone)]
pub struct PostPacer {
    /// Posts per second at most; `None` does not pace.
    quota: Option<f64>,
    state: Arc<Mutex<State>>,
}

impl PostPacer {
    /// A pacer for `quota_per_second` (0: no pacing).
    pub fn new(quota_per_second: u32) -> Self {
        let quota = (quota_per_second > 0).then_some(f64::from(quota_per_second));
        let rate = quota.unwrap_or(0.0);
        let now = Instant::now();
        PostPacer {
            quota,
            state: Arc::new(Mutex::new(State {
                rate,
                next_slot: now,
                decreased_at: None,
                increased_at: now,
                throttles: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Counters only: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current rate, posts per second (`None` when not pacing).
    pub fn current_rate(&self) -> Option<f64> {
        self.quota.map(|_| self.state().rate)
    }

    /// 429s seen so far.
    pub fn throttles(&self) -> u64 {
        self.state().throttles
    }

    /// Waits until one more post may start: takes the next slot of the
    /// schedule (slots up to [`BURST_SECONDS`] in the past count, so a quiet
    /// moment allows a short burst) and sleeps until it. A slot at or after
    /// `stop_at` is not taken: answers `false` at once, and the post is not
    /// made (nor is its slot left to delay the posts after it).
    pub async fn wait_for_turn(&self, stop_at: Option<std::time::Instant>) -> bool {
        if self.quota.is_none() {
            return true;
        }
        let stop_at = stop_at.map(Instant::from_std);
        let slot = {
            let mut state = self.state();
            let now = Instant::now();
            let earliest = now.checked_sub(Duration::from_secs_f64(BURST_SECONDS)).unwrap_or(now);
            let slot = state.next_slot.max(earliest);
            if stop_at.is_some_and(|stop_at| slot >= stop_at) {
                return false;
            }
            state.next_slot = slot + Duration::from_secs_f64(1.0 / state.rate);
            slot
        };
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        true
    }

    /// API Gateway answered 429: halve the rate, once per interval.
    pub fn throttled(&self) {
        let Some(quota) = self.quota else { return };
        let mut state = self.state();
        state.throttles += 1;
        let now = Instant::now();
        if state
            .decreased_at
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_INTERVAL)
        {
            return;
        }
        state.rate = (state.rate / 2.0).max(quota * MIN_SHARE);
        // The posts already scheduled keep their slots; the next ones are
        // spaced at the new rate, after a pause of one slot.
        state.next_slot = state.next_slot.max(now) + Duration::from_secs_f64(1.0 / state.rate);
        state.decreased_at = Some(now);
        state.increased_at = now;
        tracing::debug!(rate = state.rate, "API Gateway throttled a post; halving the post rate");
    }

    /// A post was answered without a throttle: regain rate with time.
    pub fn answered(&self) {
        let Some(quota) = self.quota else { return };
        let mut state = self.state();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.increased_at).as_secs_f64();
        state.rate = (state.rate + quota * INCREASE_SHARE_PER_SECOND * elapsed).min(quota);
        state.increased_at = now;
    }
}

/// Tells the pacer how API Gateway answered each attempt, retries included.
#[derive(Debug, Clone)]
pub(crate) struct QuotaFeedback(pub PostPacer);

impl Intercept for QuotaFeedback {
    fn name(&self) -> &'static str {
        "AirwaveQuotaFeedback"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match context.response().map(|response| response.status().as_u16()) {
            Some(429) => self.0.throttled(),
            Some(_) => self.0.answered(),
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn posts_start_no_faster_than_the_quota() {
        let pacer = PostPacer::new(1_000);
        let started = tokio::time::Instant::now();
        for _ in 0..2_050 {
            pacer.wait_for_turn(None).await;
        }
        // 2,050 slots a millisecond apart.
        let elapsed = started.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&elapsed), "{elapsed}");
    }

    #[test]
    fn a_burst_of_throttles_halves_the_rate_once_and_time_restores_it() {
        let pacer = PostPacer::new(10_000);
        for _ in 0..50 {
            pacer.throttled();
        }
        assert_eq!(pacer.current_rate(), Some(5_000.0));
        assert_eq!(pacer.throttles(), 50);
        std::thread::sleep(DECREASE_INTERVAL);
        pacer.throttled();
        assert_eq!(pacer.current_rate(), Some(2_500.0));
        std::thread::sleep(Duration::from_millis(100));
        pacer.answered();
        let rate = pacer.current_rate().unwrap_or_default();
        // 5 % of the quota a second, for about 0.1 s: about 50 more.
        assert!(rate > 2_540.0 && rate < 2_700.0, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_slot_is_taken_past_the_deadline() {
        let pacer = PostPacer::new(100);
        let stop_at = std::time::Instant::now() + Duration::from_millis(95);
        let mut started = 0;
        while pacer.wait_for_turn(Some(stop_at)).await {
            started += 1;
            assert!(started < 1_000, "the deadline stops the posts");
        }
        // About 10 a second's tenth, and the refused one took no slot.
        assert!((9..=11).contains(&started), "{started}");
        assert!(pacer.wait_for_turn(None).await);
    }

    #[tokio::test]
    async fn a_quota_of_zero_does_not_pace() {
        let pacer = PostPacer::new(0);
        for _ in 0..100_000 {
            pacer.wait_for_turn(None).await;
        }
        pacer.throttled();
        assert_eq!(pacer.current_rate(), None);
    }
}
