//! Posting one frame to every target of a message through the API Gateway
//! Management API, pruning dead connections as it goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_apigatewaymanagement::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_apigatewaymanagement::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_apigatewaymanagement::error::BoxError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::StreamExt;
use tracing::Instrument;

use airwave_protocol::ErrorCode;

use crate::closer::{close_with_reason, delete_connection, TOKEN_EXPIRED_MESSAGE};
use crate::config::AwsTimeouts;
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::Audience;
use crate::pacing::{PostPacer, QuotaFeedback};
use crate::store::{
    ConnectionStore, ExpiredRemoval, SubscriptionStore, TargetPage, FIRST_TARGET_PAGE_SIZE, TARGET_PAGE_SIZE,
};
use crate::telemetry::metric;
use crate::time::epoch_seconds_now;
use crate::{Config, Error};

/// The longest a broadcast waits for an open breaker before giving up (the
/// record is then retried by Lambda).
const MAX_BREAKER_WAIT: Duration = Duration::from_secs(10);

/// How long after API Gateway accepted a connection a 410 may still mean "not
/// connected yet": `$connect` may take up to its 29 s integration timeout,
/// and the record is written before the handshake completes.
pub const CONNECTING_WINDOW: Duration = Duration::from_secs(30);

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
            connecting_window: CONNECTING_WINDOW,
        }
    }
}

/// What happened to the targets of one broadcast.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanOutReport {
    /// Records listed, expired ones included.
    pub targets: usize,
    pub delivered: usize,
    /// Answered 410 by API Gateway: the record was deleted.
    pub gone: usize,
    /// Past its TTL but not yet deleted by DynamoDB: not posted to, deleted.
    pub expired: usize,
    /// Still failing after every attempt of both passes.
    pub failed: usize,
    /// Refused for good by the Management API (400, 403, 404): not retried.
    pub refused: usize,
    /// Failed in the first pass, delivered in the second (counted in `delivered` too).
    pub second_pass_delivered: usize,
    /// Not attempted because the circuit breaker was open.
    pub skipped: usize,
    /// The invocation's deadline drew near before every target was posted
    /// to (or listed): the message must be sent again.
    pub stopped_at_deadline: bool,
    /// Frames each target gets (several messages share a frame).
    pub frames: usize,
    /// Posts made, first attempts only: a target's frames that were tried.
    pub posts: u64,
    /// Attempts beyond the first, summed over every post.
    pub retries: u64,
    /// Time spent waiting for listing requests. Pages after the first are
    /// read while posting, so this overlaps `elapsed_ms`.
    pub list_ms: u64,
    /// Time until the first page of targets arrived: when posting started.
    pub first_page_ms: u64,
    /// Listing requests made.
    pub pages: usize,
    pub elapsed_ms: u64,
    /// Summed round trips of the posts that were delivered, from starting the
    /// SDK call to API Gateway's answer (signing and any retries included):
    /// with `delivered_posts`, the L that N x L / C uses.
    pub delivered_post_us: u64,
    /// Posts answered 200, in both passes.
    pub delivered_posts: u64,
}

impl FanOutReport {
    /// The mean round trip of a delivered post, in ms (0 when none was).
    pub fn mean_post_round_trip_ms(&self) -> f64 {
        if self.delivered_posts == 0 {
            return 0.0;
        }
        self.delivered_post_us as f64 / self.delivered_posts as f64 / 1000.0
    }

    /// Whether some target did not get the message and could on a retry.
    pub fn incomplete(&self) -> bool {
        self.skipped > 0 || self.stopped_at_deadline
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Gone,
    Expired,
    Failed,
    /// Refused for good (400, 403, 404): not retried, not counted by the breaker.
    Refused,
    /// Answered 413: the frame is split into its messages, one post each.
    TooLarge,
    Skipped,
    /// Not posted: the deadline drew near first.
    Stopped,
}

/// What one target's delivery came to.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    outcome: Outcome,
    /// The first frame not delivered: where a second pass resumes.
    resume_at: usize,
    posts: u64,
    delivered_posts: u64,
    delivered_post_us: u64,
}

impl FanOutReport {
    fn add_posts(&mut self, delivery: &Delivery) {
        self.posts += delivery.posts;
        self.delivered_posts += delivery.delivered_posts;
        self.delivered_post_us += delivery.delivered_post_us;
    }

    fn count(mut self, outcome: Outcome) -> Self {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Refused | Outcome::TooLarge => self.refused += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Stopped => self.stopped_at_deadline = true,
        }
        self
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
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    /// Most recent last; `true` is a failed post.
    recent: VecDeque<bool>,
    failures: usize,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            recent: VecDeque::new(),
            failures: 0,
            open_until: None,
        }
    }

    /// How long the breaker stays open from `now`, if it is open.
    fn remaining_cooldown(&self, now: Instant) -> Option<Duration> {
        self.open_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    fn allows_post(&mut self, now: Instant) -> bool {
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

    fn record(&mut self, failed: bool, now: Instant) {
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

/// What the listing half of a broadcast did.
#[derive(Debug, Default)]
struct Listing {
    targets: usize,
    pages: usize,
    list_ms: u64,
    first_page_ms: u64,
    stopped: bool,
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

    /// [`FanOut::broadcast_frames`], starting from `first_page` when the
    /// caller read it already (of at most [`FIRST_TARGET_PAGE_SIZE`]
    /// targets, while it did something else: the stream handler reads it
    /// while positions are assigned, so it costs no round trip of its own).
    pub async fn broadcast_frames_from<S: ConnectionStore + SubscriptionStore, F: AsRef<[u8]> + Sync>(
        &self,
        store: &S,
        audience: Audience<'_>,
        first_page: Option<TargetPage>,
        frames: &[F],
        stop_starting_at: Option<Instant>,
    ) -> Result<FanOutReport, Error> {
        let channel = audience.channel();
        // An open breaker is waited out (it is short) rather than failed at
        // once: Lambda retries a stream batch without delay, and failing fast
        // would burn its retries inside one cooldown.
        let wait = self.breaker().remaining_cooldown(Instant::now());
        if let Some(wait) = wait.filter(|wait| *wait <= MAX_BREAKER_WAIT) {
            if stop_starting_at.is_some_and(|at| Instant::now() + wait >= at) {
                tracing::warn!("the circuit breaker stays open past the deadline; not starting the broadcast");
                return Ok(FanOutReport {
                    stopped_at_deadline: true,
                    frames: frames.len(),
                    ..FanOutReport::default()
                });
            }
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "waiting for the circuit breaker to close"
            );
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        {
            let mut breaker = self.breaker();
            if !breaker.allows_post(started) {
                return Err(Error::BreakerOpen {
                    failures: breaker.failures,
                    window: breaker.settings.window,
                });
            }
        }
        let now = epoch_seconds_now();
        let attempts_before = self.attempts.0.load(Ordering::Relaxed);

        // Pages wait here while another is posted, so a listing that is the
        // slower half never stalls on a posting that is briefly behind.
        let (pages_in, mut pages_out) = tokio::sync::mpsc::channel::<Vec<ConnectionTarget>>(PAGES_AHEAD);
        let listing = async move {
            let mut listing = Listing::default();
            let mut from = None;
            let mut prefetched = first_page;
            loop {
                if has_passed(stop_starting_at) {
                    listing.stopped = true;
                    return Ok(listing);
                }
                let requested = Instant::now();
                // 125, 250, 500, then full pages.
                let limit = (FIRST_TARGET_PAGE_SIZE << listing.pages.min(8)).min(TARGET_PAGE_SIZE);
                let page = match prefetched.take() {
                    Some(page) => page,
                    None => store.list_targets_page(audience, from, limit).await?,
                };
                listing.list_ms += requested.elapsed().as_millis() as u64;
                if listing.pages == 0 {
                    listing.first_page_ms = started.elapsed().as_millis() as u64;
                }
                listing.pages += 1;
                listing.targets += page.targets.len();
                if pages_in.send(page.targets).await.is_err() {
                    // Posting stopped at the deadline.
                    listing.stopped = true;
                    return Ok(listing);
                }
                match page.next {
                    Some(next) => from = Some(next),
                    None => return Ok::<_, Error>(listing),
                }
            }
        };
        let mut failed = Vec::new();
        let mut not_started = false;
        // The receiver moves into the stream, so it is dropped as soon as
        // posting stops: a listing waiting to hand over a page then returns.
        let targets =
            futures::stream::poll_fn(move |context| pages_out.poll_recv(context)).flat_map(futures::stream::iter);
        let posting = targets
            .take_while(|_| {
                let stop = has_passed(stop_starting_at);
                not_started |= stop;
                std::future::ready(!stop)
            })
            .map(|target| async move {
                let delivery = self
                    .deliver(store, channel, &target, frames, 0, now, stop_starting_at)
                    .await;
                (target, delivery)
            })
            .buffer_unordered(self.concurrency)
            .fold(FanOutReport::default(), |mut report, (target, delivery)| {
                report.add_posts(&delivery);
                if delivery.outcome == Outcome::Failed {
                    failed.push((target, delivery.resume_at));
                }
                std::future::ready(report.count(delivery.outcome))
            });
        let (listing, mut report) = futures::join!(listing, posting);
        let listing = listing?;
        report.targets = listing.targets;
        report.frames = frames.len();
        report.list_ms = listing.list_ms;
        report.first_page_ms = listing.first_page_ms;
        report.pages = listing.pages;
        report.stopped_at_deadline |= listing.stopped || not_started;
        if !failed.is_empty() {
            self.second_pass(store, channel, failed, frames, now, stop_starting_at, &mut report)
                .await;
        }
        let attempts = self.attempts.0.load(Ordering::Relaxed).saturating_sub(attempts_before);
        report.retries = attempts.saturating_sub(report.posts);
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            audience = ?audience,
            targets = report.targets,
            pages = report.pages,
            frames = report.frames,
            posts = report.posts,
            delivered = report.delivered,
            gone = report.gone,
            expired = report.expired,
            failed = report.failed,
            refused = report.refused,
            second_pass_delivered = report.second_pass_delivered,
            skipped = report.skipped,
            stopped_at_deadline = report.stopped_at_deadline,
            retries = report.retries,
            list_ms = report.list_ms,
            first_page_ms = report.first_page_ms,
            mean_post_round_trip_ms = report.mean_post_round_trip_ms(),
            elapsed_ms = report.elapsed_ms,
            concurrency = self.concurrency,
            post_rate = self.pacer.current_rate().unwrap_or_default(),
            throttles = self.pacer.throttles(),
            "fan-out finished"
        );
        metrics::counter!(metric::FANOUT_TARGETS).increment(report.targets as u64);
        metrics::counter!(metric::FANOUT_POSTS).increment(report.posts);
        metrics::counter!(metric::FANOUT_DELIVERED).increment(report.delivered as u64);
        metrics::counter!(metric::FANOUT_GONE).increment(report.gone as u64);
        metrics::counter!(metric::FANOUT_EXPIRED).increment(report.expired as u64);
        metrics::counter!(metric::FANOUT_FAILED).increment(report.failed as u64);
        metrics::counter!(metric::FANOUT_SECOND_PASS).increment(report.second_pass_delivered as u64);
        metrics::counter!(metric::FANOUT_SKIPPED).increment(report.skipped as u64);
        metrics::counter!(metric::FANOUT_RETRIES).increment(report.retries);
        if report.stopped_at_deadline {
            metrics::counter!(metric::FANOUT_STOPPED_AT_DEADLINE).increment(1);
        }
        metrics::histogram!(metric::FANOUT_DURATION).record(report.elapsed_ms as f64);
        Ok(report)
    }

    /// One more try, after the rest of the broadcast and a pause, for the
    /// posts that failed every attempt: a transient outage of a few hundred
    /// milliseconds should not cost those connections the message. What fails
    /// again stays failed, logged with its connection id. With no time left
    /// before `stop_starting_at` the pass is not made and the report says so.
    #[allow(clippy::too_many_arguments)]
    async fn second_pass<S: ConnectionStore + SubscriptionStore, F: AsRef<[u8]> + Sync>(
        &self,
        store: &S,
        channel: Option<&str>,
        failed: Vec<(ConnectionTarget, usize)>,
        frames: &[F],
        now: i64,
        stop_starting_at: Option<Instant>,
        report: &mut FanOutReport,
    ) {
        if stop_starting_at.is_some_and(|at| Instant::now() + self.second_pass_delay >= at) {
            report.stopped_at_deadline = true;
            return;
        }
        tokio::time::sleep(self.second_pass_delay).await;
        let mut not_started = false;
        let deliveries: Vec<(ConnectionTarget, Delivery)> = futures::stream::iter(failed)
            .take_while(|_| {
                let stop = has_passed(stop_starting_at);
                not_started |= stop;
                std::future::ready(!stop)
            })
            .map(|(target, resume_at)| async move {
                let delivery = self
                    .deliver(store, channel, &target, frames, resume_at, now, stop_starting_at)
                    .await;
                (target, delivery)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        report.stopped_at_deadline |= not_started;
        for (target, delivery) in deliveries {
            report.add_posts(&delivery);
            if delivery.outcome == Outcome::Failed {
                tracing::warn!(connection_id = %target.connection_id, "post failed in both passes; this connection misses the message");
                continue;
            }
            if delivery.outcome == Outcome::Stopped {
                // Still failed; the caller retries the whole message.
                report.stopped_at_deadline = true;
                continue;
            }
            report.failed -= 1;
            if delivery.outcome == Outcome::Delivered {
                report.second_pass_delivered += 1;
            }
            *report = std::mem::take(report).count(delivery.outcome);
        }
    }

    /// Posts `frames[first_frame..]` to one target, in order, stopping at
    /// the first that is not delivered, and before any frame once
    /// `stop_starting_at` has passed.
    #[allow(clippy::too_many_arguments)]
    async fn deliver<S: ConnectionStore + SubscriptionStore, F: AsRef<[u8]> + Sync>(
        &self,
        store: &S,
        channel: Option<&str>,
        target: &ConnectionTarget,
        frames: &[F],
        first_frame: usize,
        now: i64,
        stop_starting_at: Option<Instant>,
    ) -> Delivery {
        let span = tracing::debug_span!("deliver", connection_id = %target.connection_id);
        async {
            let mut delivery = Delivery {
                outcome: Outcome::Delivered,
                resume_at: first_frame,
                posts: 0,
                delivered_posts: 0,
                delivered_post_us: 0,
            };
            if target.is_expired(now) {
                match store.remove_expired_connection(&target.connection_id, now).await {
                    Ok(ExpiredRemoval::Removed(record)) => {
                        tracing::info!(expires_at = target.expires_at, "pruned an expired connection");
                        self.close_expired(&record, now).await;
                        delivery.outcome = Outcome::Expired;
                        return delivery;
                    }
                    // The record itself is not expired (the listed copy was
                    // stale): live, so it gets the message.
                    Ok(ExpiredRemoval::NotExpired) => {}
                    // No record: a connection without one gets nothing. Its
                    // leftover subscription goes, and its socket is closed so
                    // its client reconnects and recovers what it missed.
                    Ok(ExpiredRemoval::Absent) => {
                        if let Some(channel) = channel {
                            if let Err(error) = store.unsubscribe(&target.connection_id, channel).await {
                                tracing::warn!(error = %error, "could not remove the subscription of a connection without a record");
                            }
                        }
                        if let Err(error) = delete_connection(&self.client, &target.connection_id).await {
                            tracing::warn!(error = %error, "could not close a connection without a record");
                        }
                        tracing::info!(expires_at = target.expires_at, "not posting to a connection without a record");
                        delivery.outcome = Outcome::Expired;
                        return delivery;
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "could not prune an expired connection");
                        delivery.outcome = Outcome::Failed;
                        return delivery;
                    }
                }
            }
            for frame in frames.iter().skip(first_frame) {
                if has_passed(stop_starting_at) {
                    delivery.outcome = Outcome::Stopped;
                    return delivery;
                }
                if !self.breaker().allows_post(Instant::now()) {
                    delivery.outcome = Outcome::Skipped;
                    return delivery;
                }
                delivery.posts += 1;
                let sent = Instant::now();
                let mut outcome = self
                    .post(store, channel, &target.connection_id, frame.as_ref(), stop_starting_at)
                    .await;
                if outcome == Outcome::TooLarge {
                    outcome = self
                        .post_split(store, channel, target, frame.as_ref(), stop_starting_at, &mut delivery)
                        .await;
                }
                if outcome != Outcome::Refused {
                    self.breaker().record(outcome == Outcome::Failed, Instant::now());
                }
                if outcome == Outcome::Delivered {
                    delivery.delivered_posts += 1;
                    delivery.delivered_post_us += sent.elapsed().as_micros() as u64;
                } else {
                    delivery.outcome = outcome;
                    return delivery;
                }
                delivery.resume_at += 1;
            }
            delivery
        }
        .instrument(span)
        .await
    }

    /// Sends the messages of a frame API Gateway refused as too large (413)
    /// one post each, in order. A lone message that is still too large is
    /// refused for this target: logged and counted, never retried.
    async fn post_split<S: ConnectionStore + SubscriptionStore>(
        &self,
        store: &S,
        channel: Option<&str>,
        target: &ConnectionTarget,
        frame: &[u8],
        stop_starting_at: Option<Instant>,
        delivery: &mut Delivery,
    ) -> Outcome {
        let messages = match std::str::from_utf8(frame).map(airwave_protocol::parse_server_frame) {
            Ok(Ok(airwave_protocol::Incoming::Messages(messages))) if messages.len() > 1 => messages,
            _ => {
                metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                tracing::error!(
                    bytes = frame.len(),
                    "the Management API refused a single message as too large (413)"
                );
                return Outcome::Refused;
            }
        };
        tracing::warn!(
            bytes = frame.len(),
            messages = messages.len(),
            "the Management API refused a batch frame as too large (413); sending its messages one by one"
        );
        for message in messages {
            let text = message.to_text();
            delivery.posts += 1;
            let outcome = match self
                .post(store, channel, &target.connection_id, text.as_bytes(), stop_starting_at)
                .await
            {
                Outcome::TooLarge => {
                    metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                    tracing::error!(message_id = %message.id, "the Management API refused a single message as too large (413)");
                    Outcome::Refused
                }
                other => other,
            };
            if outcome != Outcome::Delivered {
                return outcome;
            }
            delivery.delivered_posts += 1;
        }
        Outcome::Delivered
    }

    /// Closes the socket of a pruned record: with a `closing` frame when its
    /// token expired (the client reconnects with a fresh one), silently when
    /// it went unpinged past its TTL (it is most likely gone already).
    async fn close_expired(&self, record: &ConnectionRecord, now: i64) {
        let closed = if record.token_expired(now) {
            close_with_reason(
                &self.client,
                &record.connection_id,
                &[],
                ErrorCode::TokenExpired,
                TOKEN_EXPIRED_MESSAGE,
            )
            .await
        } else {
            delete_connection(&self.client, &record.connection_id).await
        };
        if let Err(error) = closed {
            tracing::warn!(error = %error, "could not close a pruned connection");
        }
    }

    async fn post<S: ConnectionStore + SubscriptionStore>(
        &self,
        store: &S,
        channel: Option<&str>,
        connection_id: &str,
        frame: &[u8],
        stop_starting_at: Option<Instant>,
    ) -> Outcome {
        if !self.pacer.wait_for_turn(stop_starting_at).await {
            // Its turn would come after the deadline: left for the retry.
            return Outcome::Stopped;
        }
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame))
            .send()
            .await;
        let error = match result {
            Ok(_) => return Outcome::Delivered,
            Err(error) => error,
        };
        let is_gone = error
            .as_service_error()
            .is_some_and(|service_error| service_error.is_gone_exception())
            || error
                .raw_response()
                .is_some_and(|response| response.status().as_u16() == 410);
        if !is_gone {
            let status = error.raw_response().map(|response| response.status().as_u16());
            let error = aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error);
            return match status {
                // Retrying cannot fix a deploy fault, and it says nothing
                // about API Gateway's health, so the breaker does not count it.
                Some(403 | 404) => {
                    metrics::counter!(metric::MANAGEMENT_FORBIDDEN).increment(1);
                    tracing::error!(status, error = %error, "the Management API refused the post: check execute-api:ManageConnections and AIRWAVE_MANAGEMENT_ENDPOINT");
                    Outcome::Refused
                }
                Some(413) => Outcome::TooLarge,
                // This target's request was refused; the next target's may not be.
                Some(400) => {
                    metrics::counter!(metric::FANOUT_REJECTED).increment(1);
                    tracing::warn!(status, error = %error, "the Management API rejected the post for this connection");
                    Outcome::Refused
                }
                _ => {
                    tracing::warn!(status, error = %error, "post to connection failed after every attempt");
                    Outcome::Failed
                }
            };
        }
        if has_passed(stop_starting_at) {
            // Housekeeping can wait for the next broadcast; the invocation cannot.
            tracing::info!("leaving a gone connection for a later broadcast: the deadline is near");
            return Outcome::Gone;
        }
        let pruned = async {
            // Not a record younger than the connecting window: API Gateway
            // answers 410 while a handshake is still in progress as well.
            let connected_before_ms = crate::time::epoch_millis_now().saturating_sub(self.connecting_window_ms);
            let record = store.remove_gone_connection(connection_id, connected_before_ms).await?;
            let listed = |channel: &str| {
                record
                    .as_ref()
                    .is_some_and(|record| record.channels.iter().any(|listed| listed == channel))
            };
            match channel {
                // Removing the record removed the subscriptions it lists; one it
                // does not list (a half-finished subscribe, or a record already
                // gone) would otherwise outlive the connection.
                Some(channel) if !listed(channel) => store.unsubscribe(connection_id, channel).await,
                _ => Ok(()),
            }
        }
        .await;
        match pruned {
            Ok(()) => tracing::info!("pruned a connection API Gateway reports gone"),
            Err(error) => tracing::error!(error = %error, "could not prune a gone connection"),
        }
        Outcome::Gone
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
