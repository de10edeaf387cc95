//! `make bench`: a broadcast at the account's API Gateway quota. The real
//! fan-out posts to N = 50,000 connections through the local Management API,
//! which holds every post for 20 ms and enforces an account quota of Q posts
//! a second (a token bucket with a burst of Q / 2, answering 429 beyond it,
//! as API Gateway does). The targets are handed to the fan-out as one listed
//! page, so what is measured is posting against the quota; the listing's own
//! cost is the fan-out benchmark's. It runs at Q = 5,000 and 2Q, with the
//! fan-out told the quota, and once with the fan-out left at the default
//! 10,000 against Q = 5,000 (its rate then comes from the 429s alone). First
//! it measures what the machine can post with no quota at all: the fan-out
//! and the Management API share its cores, so past that rate the machine, not
//! the quota, is the limit. It checks the targets the README quotes: at Q and
//! 2Q, elapsed at most 1.15 x N / min(Q, ceiling), and under 1 % of the posts
//! throttled.
//!
//! Settings (environment): BENCH_QUOTA_TARGETS (default 50000),
//! BENCH_QUOTA (default 5000), BENCH_LATENCY_MS (default 20).

use std::time::{Duration, Instant};

use airwave_local::{LocalManagementApi, Options, Quota};
use airwave_shared::config::DEFAULT_POST_QUOTA_PER_SECOND;
use airwave_shared::connection::ConnectionTarget;
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::message::Audience;
use airwave_shared::store::TargetPage;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::FanOut;
use airwave_tests::TestTables;

const BOUND_FACTOR: f64 = 1.15;
const MAX_THROTTLED_SHARE: f64 = 0.01;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        Err(_) => default,
    }
}

struct Run {
    elapsed: Duration,
    delivered: usize,
    throttled: usize,
    max_in_flight: usize,
}

/// One broadcast to `targets` connections against an account quota of
/// `quota` posts a second (none: no quota), the fan-out told `told`.
async fn run(tables: &TestTables, targets: usize, latency: Duration, quota: Option<f64>, told: u32) -> Run {
    let gateway = LocalManagementApi::start_with(Options {
        latency,
        quota: quota.map(|quota| Quota {
            per_second: quota,
            burst: quota / 2.0,
        }),
        ..Options::default()
    })
    .await
    .expect("start the local Management API");
    let expires_at = epoch_seconds_now() + 3_600;
    let page: Vec<ConnectionTarget> = (0..targets)
        .map(|index| {
            let connection_id = format!("quota-{index:06}=");
            gateway.connect(&connection_id);
            ConnectionTarget {
                connection_id,
                expires_at,
            }
        })
        .collect();
    let fanout = FanOut::new(
        &tables.sdk_config,
        &gateway.endpoint(),
        FanOutSettings {
            post_quota_per_second: told,
            ..FanOutSettings::from(&tables.config)
        },
    );
    let frame = br#"{"type":"message","id":"quota-bench","channel":"prices","data":{"price":12.5}}"#;
    let started = Instant::now();
    let report = fanout
        .broadcast_frames_from(
            &tables.store,
            Audience::Everyone,
            Some(TargetPage {
                targets: page,
                next: None,
            }),
            &[frame.as_slice()],
            None,
        )
        .await
        .expect("a broadcast");
    let elapsed = started.elapsed();
    assert_eq!(report.delivered, targets, "every connection gets the message");
    let counts = gateway.post_counts();
    assert_eq!(counts.delivered, targets, "once");
    Run {
        elapsed,
        delivered: counts.delivered,
        throttled: counts.throttled,
        max_in_flight: gateway.max_in_flight(),
    }
}

#[tokio::main]
async fn main() {
    let targets: usize = env_or("BENCH_QUOTA_TARGETS", 50_000);
    let quota: f64 = env_or("BENCH_QUOTA", 5_000.0);
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 20));
    let tables = TestTables::create().await;
    let concurrency = tables.config.fanout_concurrency;
    println!(
        "broadcast at the quota: N = {targets}, {} ms per post, concurrency {concurrency}, the quota's burst Q / 2",
        latency.as_millis()
    );
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "Q", "fan-out told", "elapsed", "N / Q", "ratio", "throttled", "share", "in flight"
    );
    // What this machine can post at all, with no quota and no pacing: both
    // ends share its cores, so past this rate the quota is not what limits.
    let ceiling_run = run(&tables, targets, latency, None, 0).await;
    let ceiling = targets as f64 / ceiling_run.elapsed.as_secs_f64();
    let mut missed = Vec::new();
    for (quota, told, checked) in [
        (quota, quota as u32, true),
        (2.0 * quota, (2.0 * quota) as u32, true),
        (quota, DEFAULT_POST_QUOTA_PER_SECOND, false),
    ] {
        let result = run(&tables, targets, latency, Some(quota), told).await;
        let ideal = targets as f64 / quota;
        let ratio = result.elapsed.as_secs_f64() / ideal;
        // The bound: the quota, or this machine's own ceiling if lower.
        let bound = targets as f64 / quota.min(ceiling);
        let share = result.throttled as f64 / result.delivered as f64;
        println!(
            "{:>8} {:>14} {:>10} {:>10} {:>8.3} {:>10} {:>10} {:>10}",
            quota,
            told,
            format!("{:.2}s", result.elapsed.as_secs_f64()),
            format!("{ideal:.2}s"),
            ratio,
            result.throttled,
            format!("{:.2}%", share * 100.0),
            result.max_in_flight
        );
        if checked && (result.elapsed.as_secs_f64() > BOUND_FACTOR * bound || share >= MAX_THROTTLED_SHARE) {
            missed.push(format!(
                "Q = {quota}: {ratio:.3} x N / Q, {:.2}% throttled",
                share * 100.0
            ));
        }
    }
    println!(
        "this machine's ceiling, no quota: {ceiling:.0} posts/s ({:.2}s for N, {} in flight at most)",
        ceiling_run.elapsed.as_secs_f64(),
        ceiling_run.max_in_flight
    );
    let verdict = if missed.is_empty() { "met" } else { "MISSED" };
    println!(
        "target: at Q and 2Q, elapsed <= {BOUND_FACTOR} x N / min(Q, ceiling) and under {}% throttled: {verdict}",
        MAX_THROTTLED_SHARE * 100.0
    );
    assert!(missed.is_empty(), "targets missed: {}", missed.join("; "));
}
