//! One broadcast: the targets are listed page by page while the pages
//! already listed are posted to, then the failed posts get a second pass.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;

use super::report::{Delivery, Outcome};
use super::{has_passed, FanOut, FanOutReport, MAX_BREAKER_WAIT, PAGES_AHEAD};
use crate::connection::ConnectionTarget;
use crate::message::Audience;
use crate::store::{ConnectionStore, SubscriptionStore, TargetPage, FIRST_TARGET_PAGE_SIZE, TARGET_PAGE_SIZE};
use crate::telemetry::metric;
use crate::time::epoch_seconds_now;
use crate::Error;

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
}
