//! Fan-out benchmark: N listeners on one channel, one publisher, delivery count and latency.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use airwave_client::{Client, ClientConfig, Error, Event};

const PROGRESS_TEMPLATE: &str = "{spinner} connecting {pos}/{len} [{bar:40}] {per_sec} {eta}";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Used for every connection (URL, token, backoff).
    pub client: ClientConfig,
    pub connections: usize,
    pub channel: String,
    pub messages: usize,
    /// How many listeners connect and subscribe at the same time.
    pub connect_concurrency: usize,
    /// How long to wait for every delivery once publishing starts.
    pub timeout: Duration,
    /// Draw a progress bar on stderr while the listeners connect.
    pub progress: bool,
}

/// Latency percentiles in milliseconds (receive time minus the publisher's `sent_at_us`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchSummary {
    pub connections_requested: usize,
    pub connections_opened: usize,
    pub connections_failed: usize,
    /// The first connection error, if any, to tell why.
    pub first_connect_error: Option<String>,
    pub messages: usize,
    pub published: usize,
    pub publish_failed: usize,
    /// `connections_requested * messages`: every requested listener should get every message.
    pub expected: u64,
    pub delivered: u64,
    pub duplicates_dropped: u64,
    pub timed_out: bool,
    pub connect_secs: f64,
    pub deliver_secs: f64,
    pub latency: Option<Latency>,
}

impl BenchSummary {
    /// Every requested listener got every message.
    pub fn complete(&self) -> bool {
        self.delivered >= self.expected
    }
}

impl fmt::Display for BenchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "connections  opened {} / {} ({} failed) in {:.2} s",
            self.connections_opened, self.connections_requested, self.connections_failed, self.connect_secs
        )?;
        if let Some(error) = &self.first_connect_error {
            writeln!(f, "             first failure: {error}")?;
        }
        writeln!(
            f,
            "published    {} / {} ({} failed)",
            self.published, self.messages, self.publish_failed
        )?;
        writeln!(
            f,
            "delivered    {} / expected {}{} in {:.2} s",
            self.delivered,
            self.expected,
            if self.timed_out { " (timed out)" } else { "" },
            self.deliver_secs
        )?;
        writeln!(f, "duplicates   {} dropped", self.duplicates_dropped)?;
        match &self.latency {
            Some(l) => write!(
                f,
                "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ),
            None => write!(f, "latency ms   no deliveries"),
        }
    }
}

/// Nearest-rank percentile of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Percentiles of latencies given in microseconds.
pub fn latency_summary(latencies_us: &mut [u64]) -> Option<Latency> {
    latencies_us.sort_unstable();
    let ms = |p: f64| percentile(latencies_us, p).map(|us| us as f64 / 1000.0);
    Some(Latency {
        p50_ms: ms(50.0)?,
        p90_ms: ms(90.0)?,
        p99_ms: ms(99.0)?,
        max_ms: ms(100.0)?,
    })
}

/// Microseconds since the UNIX epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Raises the open-files soft limit to the hard limit so thousands of sockets fit; returns the
/// limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Runs the benchmark. Connection and publish failures are counted in the summary, not
/// returned; the error is for a run that cannot start.
pub async fn run(config: BenchConfig) -> Result<BenchSummary, Error> {
    match raise_open_files_limit() {
        Ok(limit) if (limit as usize) < config.connections.saturating_add(64) => {
            warn!(
                limit,
                connections = config.connections,
                "open-files limit is below the connection count"
            );
        }
        Ok(limit) => info!(limit, "open-files limit"),
        Err(e) => warn!(error = %e, "could not raise the open-files limit"),
    }
    // Tags this run's messages so other traffic on the channel is not counted.
    let run_id = format!("{:016x}", rand::rng().random::<u64>());
    let (deliveries, mut delivered_rx) = mpsc::unbounded_channel::<u64>();

    let bar = if config.progress {
        let bar = ProgressBar::new(config.connections as u64);
        if let Ok(style) = ProgressStyle::with_template(PROGRESS_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let opened: Vec<Result<Client, Error>> = futures::stream::iter(0..config.connections)
        .map(|_| {
            open_listener(
                config.client.clone(),
                config.channel.clone(),
                run_id.clone(),
                deliveries.clone(),
            )
        })
        .buffer_unordered(config.connect_concurrency.max(1))
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let connect_secs = started.elapsed().as_secs_f64();
    // Only the listeners' tasks hold senders now, so the receiver ends if they all end.
    drop(deliveries);

    let mut listeners = Vec::with_capacity(opened.len());
    let mut first_connect_error = None;
    for result in opened {
        match result {
            Ok(client) => listeners.push(client),
            Err(e) => {
                first_connect_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let connections_failed = config.connections - listeners.len();
    info!(
        opened = listeners.len(),
        failed = connections_failed,
        connect_secs,
        "listeners subscribed"
    );

    let (publisher, _events) = Client::new(config.client.clone());
    let started = Instant::now();
    let mut published = 0;
    for seq in 0..config.messages {
        let data = json!({ "run": run_id, "seq": seq, "sent_at_us": now_us() });
        match publisher.publish(Some(&config.channel), data).await {
            Ok(_) => published += 1,
            Err(e) => warn!(seq, error = %e, "publish failed"),
        }
    }

    let expected = (config.connections as u64).saturating_mul(config.messages as u64);
    // What can still arrive: failed listeners and failed publishes are not waited for.
    let reachable = (listeners.len() as u64).saturating_mul(published as u64);
    let deadline = started + config.timeout;
    let mut latencies = Vec::new();
    let mut timed_out = false;
    while (latencies.len() as u64) < reachable {
        match tokio::time::timeout_at(deadline, delivered_rx.recv()).await {
            Ok(Some(latency)) => latencies.push(latency),
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    let deliver_secs = started.elapsed().as_secs_f64();
    let duplicates_dropped = listeners.iter().map(Client::duplicates_dropped).sum();
    let delivered = latencies.len() as u64;
    let latency = latency_summary(&mut latencies);

    // Close politely, bounded, so the server sees disconnects rather than resets.
    publisher.close().await;
    futures::stream::iter(listeners)
        .for_each_concurrent(config.connect_concurrency.max(1), |client| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
        })
        .await;

    Ok(BenchSummary {
        connections_requested: config.connections,
        connections_opened: config.connections - connections_failed,
        connections_failed,
        first_connect_error,
        messages: config.messages,
        published,
        publish_failed: config.messages - published,
        expected,
        delivered,
        duplicates_dropped,
        timed_out,
        connect_secs,
        deliver_secs,
        latency,
    })
}

/// Connects one listener, waits for its `subscribed`, and forwards the latency of every message
/// of this run it receives.
async fn open_listener(
    config: ClientConfig,
    channel: String,
    run_id: String,
    deliveries: mpsc::UnboundedSender<u64>,
) -> Result<Client, Error> {
    let (client, mut events) = Client::new(config);
    client.subscribe(&channel).await?;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(message) => {
                    let received = now_us();
                    if message.data.get("run").and_then(Value::as_str) != Some(run_id.as_str()) {
                        continue;
                    }
                    let Some(sent) = message.data.get("sent_at_us").and_then(Value::as_u64) else {
                        continue;
                    };
                    if deliveries.send(received.saturating_sub(sent)).is_err() {
                        return;
                    }
                }
                Event::Failed(e) => {
                    warn!(error = %e, "a listener gave up");
                    return;
                }
                // More listeners than the per-user cap allows: the oldest make room.
                Event::Evicted { message } => {
                    warn!(%message, "a listener was evicted");
                    return;
                }
                Event::Disconnected { .. } | Event::Reconnected | Event::RecoveryFailed { .. } => {}
            }
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_template_is_valid() {
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 90.0), Some(90));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn latency_summary_sorts_and_converts_to_milliseconds() {
        let mut us = vec![4000, 1000, 3000, 2000];
        let l = latency_summary(&mut us).unwrap();
        assert_eq!((l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms), (2.0, 4.0, 4.0, 4.0));
        assert_eq!(latency_summary(&mut []), None);
    }
}
