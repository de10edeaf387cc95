//! Posting one frame to every target of a message through the API Gateway
//! Management API, pruning dead connections as it goes.

mod breaker;
mod broadcast;
mod deliver;
mod post;
mod report;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_apigatewaymanagement::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_apigatewaymanagement::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_apigatewaymanagement::error::BoxError;

use crate::config::AwsTimeouts;
use crate::message::Audience;
use crate::pacing::{PostPacer, QuotaFeedback};
use crate::store::{ConnectionStore, SubscriptionStore};
use crate::{Config, Error};

use breaker::Breaker;
pub use breaker::BreakerSettings;
pub use report::FanOutReport;

/// The longest a broadcast waits for an open breaker before giving up (the
/// record is then retried by Lambda).
const MAX_BREAKER_WAIT: Duration = Duration::from_secs(10);

/// A default of the configuration, and the fan-out's own: re-exported where
/// the fan-out's callers have always found it.
pub use crate::config::CONNECTING_WINDOW;

/// Whether the moment to stop starting work, if there is one, has come.
pub(crate) fn has_passed(stop_starting_at: Option<Instant>) -> bool {
    stop_starting_at.is_some_and(|at| Instant::now() >= at)
}

/// Listed pages that may wait to be posted: 4 x 1,000 targets, a few
/// hundred kilobytes, bound memory whatever the number of targets.
pub const PAGES_AHEAD: usize = 4;

/// Retry tokens of the fan-out's own retry quota: a retry costs 5 (10 after a
/// timeout) and every success returns one.
const RETRY_TOKENS: usize = 50_000;

/// How the fan-out behaves; [`FanOutSettings::from`] a [`Config`] gives the defaults.
#[derive(Debug, Clone)]
pub struct FanOutSettings {
    /// Posts in flight at once.
    pub concurrency: usize,
    /// Attempts per post (first included) for throttling and 5xx answers; the
    /// SDK spaces them with exponential backoff and full jitter.
    pub post_max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub breaker: BreakerSettings,
    /// Posts per second at most (the account's quota, see [`crate::pacing`]); 0 does not pace.
    pub post_quota_per_second: u32,
    /// Bounds on each post attempt and on each post with its retries.
    pub timeouts: AwsTimeouts,
    /// The wait before the second pass over the posts that failed.
    pub second_pass_delay: Duration,
    /// A record younger than this is not pruned on 410 (see [`CONNECTING_WINDOW`]).
    pub connecting_window: Duration,
}

impl From<&Config> for FanOutSettings {
    fn from(config: &Config) -> Self {
        FanOutSettings {
            concurrency: config.fanout_concurrency,
            post_max_attempts: config.post_max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            breaker: BreakerSettings::default(),
            post_quota_per_second: config.post_quota_per_second,
            timeouts: config.aws_timeouts,
            second_pass_delay: Duration::from_millis(500),
            connecting_window: config.connecting_window,
        }
    }
}

/// Counts every HTTP attempt the SDK makes, retries included.
#[derive(Debug, Clone, Default)]
struct AttemptCounter(Arc<AtomicU64>);

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "AirwaveAttemptCounter"
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// Sends frames with at most `concurrency` posts in flight, so a broadcast to
/// ten thousand connections neither runs one by one nor opens ten thousand
/// sockets at once. One instance (and so one HTTP connection pool and one
/// breaker) serves every invocation of a Lambda instance.
#[derive(Debug, Clone)]
pub struct FanOut {
    client: aws_sdk_apigatewaymanagement::Client,
    concurrency: usize,
    attempts: AttemptCounter,
    pacer: PostPacer,
    breaker: Arc<Mutex<Breaker>>,
    second_pass_delay: Duration,
    connecting_window_ms: i64,
    operation_timeout: Duration,
}

impl FanOut {
    /// A fan-out posting to the Management API at `endpoint` (stage included).
    pub fn new(sdk_config: &SdkConfig, endpoint: &str, settings: FanOutSettings) -> Self {
        let attempts = AttemptCounter::default();
        let pacer = PostPacer::new(settings.post_quota_per_second);
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.post_max_attempts.max(1))
            .with_initial_backoff(settings.initial_backoff)
            .with_max_backoff(settings.max_backoff);
        // The SDK stops retrying once a shared quota of retry tokens runs out
        // (500 by default: about a hundred retries). One broadcast makes
        // thousands of posts, so the fan-out gets a quota of its own, sized so
        // that transient errors on a few percent of them are all retried; the
        // breaker is what stops a broad outage.
        let partition = RetryPartition::custom("airwave-fanout")
            .token_bucket(TokenBucket::builder().capacity(RETRY_TOKENS).build())
            .build();
        let client_config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk_config)
            .endpoint_url(endpoint)
            .retry_config(retry)
            .retry_partition(partition)
            .timeout_config(crate::clients::timeout_config(&settings.timeouts))
            .interceptor(attempts.clone())
            .interceptor(QuotaFeedback(pacer.clone()))
            .build();
        FanOut {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(client_config),
            concurrency: settings.concurrency.max(1),
            attempts,
            pacer,
            breaker: Arc::new(Mutex::new(Breaker::new(settings.breaker))),
            second_pass_delay: settings.second_pass_delay,
            connecting_window_ms: i64::try_from(settings.connecting_window.as_millis()).unwrap_or(i64::MAX),
            operation_timeout: settings.timeouts.operation,
        }
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // The breaker holds counters only; a panic elsewhere cannot corrupt them.
        self.breaker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts `frame` to the message's audience: a channel's subscribers, one
    /// user's connections, or every connection. Fails if the targets cannot be
    /// listed or the breaker is open; per-connection failures are counted in
    /// the report instead.
    pub async fn broadcast<S: ConnectionStore + SubscriptionStore>(
        &self,
        store: &S,
        audience: Audience<'_>,
        frame: &[u8],
    ) -> Result<FanOutReport, Error> {
        self.broadcast_frames(store, audience, &[frame], None).await
    }

    /// How long before an invocation's deadline a broadcast stops starting
    /// posts: a post started then, and the prune that may follow it, each
    /// end within the operation timeout, and the handler still has a second
    /// to report the record for retry.
    pub fn deadline_reserve(&self) -> Duration {
        self.operation_timeout * 2 + Duration::from_secs(1)
    }

    /// Posts each of `frames`, in order, to every target of `audience`.
    ///
    /// Posting starts with the first page of targets and the next pages are
    /// read meanwhile, so memory holds at most [`PAGES_AHEAD`] + 2 pages (the
    /// one being posted, those waiting, one being read) and the posts in
    /// flight, whatever the number of targets. From `stop_starting_at` on no post, page or
    /// prune is started: the report says `stopped_at_deadline` and the caller
    /// sends the message again, rather than overrun its invocation.
    pub async fn broadcast_frames<S: ConnectionStore + SubscriptionStore, F: AsRef<[u8]> + Sync>(
        &self,
        store: &S,
        audience: Audience<'_>,
        frames: &[F],
        stop_starting_at: Option<Instant>,
    ) -> Result<FanOutReport, Error> {
        self.broadcast_frames_from(store, audience, None, frames, stop_starting_at)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_take_the_configurations_values() {
        let config = Config {
            connecting_window: Duration::from_secs(5),
            fanout_concurrency: 7,
            ..Config::default()
        };
        let settings = FanOutSettings::from(&config);
        assert_eq!(settings.connecting_window, Duration::from_secs(5));
        assert_eq!(settings.concurrency, 7);
        assert_eq!(
            FanOutSettings::from(&Config::default()).connecting_window,
            CONNECTING_WINDOW
        );
    }
}
