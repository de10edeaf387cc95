//! Logs and metrics for CloudWatch: one JSON object per log line, and metrics
//! in CloudWatch's embedded metric format (EMF), flushed after each invocation.

use std::future::Future;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// The CloudWatch namespace every Airwave metric is published under.
pub const METRICS_NAMESPACE: &str = "Airwave";

/// Metric names; each carries the dimension `function`.
pub mod metric {
    pub const CONNECTIONS_ADMITTED: &str = "ConnectionsAdmitted";
    /// Every refused `$connect`; the alarms watch this one.
    pub const CONNECTIONS_REFUSED: &str = "ConnectionsRefused";
    /// The same, with the dimension `reason`.
    pub const CONNECTIONS_REFUSED_BY_REASON: &str = "ConnectionsRefusedByReason";
    pub const DISCONNECTS: &str = "Disconnects";
    /// Connections the server closed, with the dimension `reason` (`token_expired`, `evicted`).
    pub const CONNECTIONS_CLOSED: &str = "ConnectionsClosed";
    /// Publishes refused by the per-connection rate limit.
    pub const PUBLISH_RATE_LIMITED: &str = "PublishRateLimited";
    /// Connect attempts refused by the per-IP throttle (also counted in ConnectionsRefused).
    pub const CONNECT_THROTTLED: &str = "ConnectThrottled";
    /// Slots of expired connections given back (on a full cap, or by the reaper).
    pub const SLOTS_RECLAIMED: &str = "SlotsReclaimed";
    /// Connections whose record was removed behind Airwave's back (not by
    /// TTL, not by Airwave) with subscriptions left: those were deleted and
    /// the socket closed by the reaper.
    pub const ORPHANS_CLOSED: &str = "OrphanedConnectionsClosed";
    /// Connections the scheduled sweep found past their expiry (token or
    /// lifetime), removed and closed.
    pub const CONNECTIONS_SWEPT: &str = "ExpiredConnectionsClosed";
    /// Client frames answered with an error, with the dimension `code`.
    pub const CLIENT_ERRORS: &str = "ClientErrors";
    /// Messages written through the HTTP API (not its duplicates), with the
    /// dimension `caller` (`server`, `client`, `anonymous`).
    pub const HTTP_MESSAGES_PUBLISHED: &str = "HttpMessagesPublished";
    pub const FANOUT_TARGETS: &str = "FanoutTargets";
    /// Posts made (first attempts): with coalescing, fewer than messages x targets.
    pub const FANOUT_POSTS: &str = "FanoutPosts";
    pub const FANOUT_DELIVERED: &str = "FanoutDelivered";
    pub const FANOUT_GONE: &str = "FanoutGone";
    pub const FANOUT_EXPIRED: &str = "FanoutExpired";
    pub const FANOUT_FAILED: &str = "FanoutFailed";
    /// Posts that failed the first pass and were delivered in the second.
    pub const FANOUT_SECOND_PASS: &str = "FanoutSecondPassDelivered";
    pub const FANOUT_SKIPPED: &str = "FanoutSkipped";
    pub const FANOUT_RETRIES: &str = "FanoutRetries";
    /// Broadcasts that stopped starting posts near the invocation's deadline
    /// (their records are retried).
    pub const FANOUT_STOPPED_AT_DEADLINE: &str = "FanoutStoppedAtDeadline";
    pub const FANOUT_DURATION: &str = "FanoutDuration";
    /// From a message's write (its `written_at_ms`, or the stream record's
    /// creation, rounded down to the second) to the end of the broadcast
    /// that sent it: the latest any of its targets got it. One sample per
    /// message sent to at least one connection.
    pub const DELIVERY_LATENCY: &str = "DeliveryLatency";
    pub const BREAKER_OPENED: &str = "BreakerOpened";
    /// Posts the Management API refused with 403 or 404: a deploy fault (the
    /// role lacks execute-api:ManageConnections, or the endpoint is wrong),
    /// never counted by the breaker.
    pub const MANAGEMENT_FORBIDDEN: &str = "ManagementForbidden";
    /// Posts the Management API refused with 400 for one target: counted for
    /// that target only.
    pub const FANOUT_REJECTED: &str = "FanoutRejected";
    pub const STREAM_RECORDS_POISON: &str = "StreamRecordsPoison";
    pub const STREAM_RECORDS_RETRIED: &str = "StreamRecordsRetried";
    /// Subscribes with `since`, by outcome: `recovered` or why not.
    pub const RECOVERIES: &str = "Recoveries";
    /// Channel messages given a position (retries that kept theirs included).
    pub const POSITIONS_ASSIGNED: &str = "PositionsAssigned";
    /// Message items written without `expires_at` given the default retention.
    pub const MESSAGES_RETENTION_APPLIED: &str = "MessagesRetentionApplied";
}

/// The filter `RUST_LOG` sets: a level (`debug`) or `target=level`
/// directives (`info,airwave_shared=debug`); `default` when it is unset or
/// not of that form.
pub fn log_filter(default: LevelFilter) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(default))
}

/// The level comes from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    // A second initialisation (tests, or a host that set one up) is harmless.
    let _ = json_logs(std::io::stdout).try_init();
}

/// The functions' log format: one JSON object per line, with the fields of
/// the innermost enabled span (a broadcast's message ids, say), to `writer`.
pub fn json_logs<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(json_log_layer(writer))
}

/// [`json_logs`] as a layer, with its own level filter: tests capture the
/// functions' lines exactly as deployed through a subscriber that also
/// carries other layers.
pub fn json_log_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
        .with_filter(log_filter(LevelFilter::INFO))
}

/// Writes the metrics recorded during an invocation to stdout, where the
/// Lambda log stream hands them to CloudWatch.
pub struct MetricsFlusher(Option<Box<dyn Fn() -> std::io::Result<()> + Send + Sync>>);

/// Installs the EMF recorder for `function`. Without it (tests), recording a
/// metric does nothing.
pub fn init_metrics(function: &'static str) -> MetricsFlusher {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(METRICS_NAMESPACE)
        .with_dimension("function", function)
        .init();
    match collector {
        Ok(collector) => {
            metrics::describe_histogram!(
                metric::FANOUT_DURATION,
                metrics::Unit::Milliseconds,
                "time to list the targets and post to them all"
            );
            metrics::describe_histogram!(
                metric::DELIVERY_LATENCY,
                metrics::Unit::Milliseconds,
                "time from a message's write to the end of its broadcast"
            );
            MetricsFlusher(Some(Box::new(move || collector.flush(std::io::stdout().lock()))))
        }
        Err(error) => {
            tracing::warn!(error = %error, "metrics are disabled");
            MetricsFlusher(None)
        }
    }
}

impl MetricsFlusher {
    /// Runs one invocation, then flushes what it recorded.
    pub async fn flushed<T>(&self, invocation: impl Future<Output = T>) -> T {
        let output = invocation.await;
        if let Some(flush) = &self.0 {
            if let Err(error) = flush() {
                tracing::warn!(error = %error, "could not write metrics");
            }
        }
        output
    }
}
