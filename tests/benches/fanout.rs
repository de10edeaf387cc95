//! `make bench`: the real fan-out (`FanOut::broadcast`, release build) to N
//! connections through the local Management API with an injected per-post
//! latency, listing its targets from the local DynamoDB as it goes.
//!
//! The Management API runs in this process; each measurement runs the
//! fan-out in a fresh child process, so its peak memory and CPU time are the
//! fan-out's own. L is the round trip of one post, from sending to API
//! Gateway's answer, which the fan-out measures for every delivered post
//! (`FanOutReport::mean_post_round_trip_ms`). Each row's bound uses the L of
//! its own broadcast: on a small machine the local DynamoDB's listing takes a
//! core, and every post's round trip grows while it runs, which no fan-out
//! can avoid. The bound with the idle L (the one-at-a-time run at N = 1,000)
//! is printed beside it. It checks the targets the README quotes: elapsed at
//! most 1.1 x max(listing, N x L / C) at N = 10,000, and peak memory at
//! N = 100,000 within 10 MiB of N = 10,000.
//!
//! Settings (environment): BENCH_SIZES (default "1000,10000,100000"),
//! BENCH_LATENCY_MS (default 20).

use std::process::Command;
use std::time::{Duration, Instant};

use airwave_local::{Faults, LocalManagementApi, Options};
use airwave_shared::config::DEFAULT_FANOUT_CONCURRENCY;
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::message::Audience;
use airwave_shared::{Config, FanOut};
use airwave_tests::TestTables;
use serde_json::{json, Value};

/// Set on a child: "connections table,N,concurrency,endpoint".
const CHILD_VARIABLE: &str = "AIRWAVE_BENCH_RUN";
/// The most elapsed may exceed the bound by, at N = 10,000.
const BOUND_FACTOR: f64 = 1.1;
/// How much more peak memory N = 100,000 may take than N = 10,000.
const MEMORY_GROWTH_MIB: f64 = 10.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        Err(_) => default,
    }
}

fn connection_ids(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("bench-{index:06}=")).collect()
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user and system) this process has used.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses.
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .filter_map(|field| field.parse().ok())
                .collect();
            // utime and stime are fields 14 and 15 of the whole line.
            Some(fields.get(10)? + fields.get(11)?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// One measurement, in a child process: prints one JSON line.
async fn run_child(spec: &str) {
    let parts: Vec<&str> = spec.splitn(4, ',').collect();
    let [table, count, concurrency, endpoint] = parts[..] else {
        panic!("{CHILD_VARIABLE}={spec:?} is not 'table,N,concurrency,endpoint'");
    };
    let count: usize = count.parse().expect("N");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let tables = TestTables::open(Config {
        connections_table: table.to_owned(),
        ..Config::default()
    })
    .await;
    let fanout = FanOut::new(
        &tables.sdk_config,
        endpoint,
        FanOutSettings {
            concurrency,
            ..FanOutSettings::from(&tables.config)
        },
    );
    let frame = serde_json::to_vec(&json!({
        "type": "message", "id": "6f1d2c9e-bench", "channel": "prices",
        "data": {"symbol": "ABC", "price": 12.5, "note": "x".repeat(128)}
    }))
    .expect("a frame");
    let rss_before = status_kib("VmRSS:").unwrap_or(0.0);
    let cpu_before = cpu_time();

    let report = fanout
        .broadcast(&tables.store, Audience::Everyone, &frame)
        .await
        .expect("the broadcast lists its targets");

    let cpu = cpu_time().saturating_sub(cpu_before);
    assert_eq!(report.targets, count, "every seeded connection is listed");
    println!(
        "{}",
        json!({
            "elapsed_ms": report.elapsed_ms,
            "list_ms": report.list_ms,
            "first_page_ms": report.first_page_ms,
            "delivered": report.delivered,
            "failed": report.failed,
            "posts": report.posts,
            "mean_post_ms": report.mean_post_round_trip_ms(),
            "cpu_us_per_post": cpu.as_micros() as f64 / report.posts.max(1) as f64,
            "rss_before_mib": rss_before / 1024.0,
            "peak_mib": status_kib("VmHWM:").unwrap_or(f64::NAN) / 1024.0,
        })
    );
}

struct Row {
    count: usize,
    concurrency: usize,
    result: Value,
}

impl Row {
    fn number(&self, field: &str) -> f64 {
        self.result[field].as_f64().unwrap_or(f64::NAN)
    }

    /// max(listing, N x L / C), in ms, for a round trip of `round_trip_ms`.
    fn bound_ms(&self, round_trip_ms: f64) -> f64 {
        let ideal = self.count as f64 * round_trip_ms / self.concurrency as f64;
        ideal.max(self.number("list_ms"))
    }

    /// The bound with the L this broadcast's own posts took.
    fn loaded_bound_ms(&self) -> f64 {
        self.bound_ms(self.number("mean_post_ms"))
    }
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var(CHILD_VARIABLE) {
        run_child(&spec).await;
        return;
    }
    let sizes: Vec<usize> = env_or("BENCH_SIZES", "1000,10000,100000".to_owned())
        .split(',')
        .map(|size| size.trim().parse().expect("BENCH_SIZES is a list of whole numbers"))
        .collect();
    let latency_ms: u64 = env_or("BENCH_LATENCY_MS", 20);
    let executable = std::env::current_exe().expect("the bench's own path");
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::from_millis(latency_ms),
        faults: Faults::default(),
        ..Options::default()
    })
    .await
    .expect("start the local Management API");

    println!("fan-out benchmark: {latency_ms} ms injected latency per post; each row is a fresh process");
    println!(
        "{:>7} {:>15} {:>9} {:>10} {:>8} {:>7} {:>8} {:>6} {:>10} {:>10} {:>8} {:>9} {:>6} {:>9} {:>8}",
        "N",
        "concurrency",
        "elapsed",
        "1st page",
        "list",
        "L",
        "bound",
        "ratio",
        "idle bound",
        "idle ratio",
        "posts/s",
        "delivered",
        "failed",
        "peak MiB",
        "CPU µs/post"
    );
    let mut rows = Vec::new();
    // Until the one-at-a-time run measures it.
    let mut round_trip_ms = latency_ms as f64;
    // Sizes in order, so N = 1,000 (where L is measured) comes first.
    let mut sizes = sizes;
    sizes.sort_unstable();
    for &count in &sizes {
        let tables = TestTables::create().await;
        let seeding = Instant::now();
        tables.seed_connections(&connection_ids(count)).await;
        for id in connection_ids(count) {
            gateway.connect(&id);
        }
        eprintln!(
            "(seeded {count} connection records in {:.1}s)",
            seeding.elapsed().as_secs_f64()
        );
        // One by one and unbounded only where they finish in minutes.
        let concurrencies = match count {
            ..=1_000 => vec![1, DEFAULT_FANOUT_CONCURRENCY, count],
            1_001..=10_000 => vec![DEFAULT_FANOUT_CONCURRENCY, count],
            _ => vec![DEFAULT_FANOUT_CONCURRENCY],
        };
        for concurrency in concurrencies {
            let output = Command::new(&executable)
                .env(
                    CHILD_VARIABLE,
                    format!(
                        "{},{count},{concurrency},{}",
                        tables.config.connections_table,
                        gateway.endpoint()
                    ),
                )
                .output()
                .expect("run a measurement");
            assert!(
                output.status.success(),
                "the measurement N={count} concurrency={concurrency} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = String::from_utf8_lossy(&output.stdout);
            let result: Value = line
                .lines()
                .rev()
                .find_map(|line| serde_json::from_str(line).ok())
                .expect("the measurement's result line");
            let row = Row {
                count,
                concurrency,
                result,
            };
            let label = if concurrency == DEFAULT_FANOUT_CONCURRENCY {
                format!("default {concurrency}")
            } else if concurrency == count {
                format!("unbounded {concurrency}")
            } else {
                concurrency.to_string()
            };
            if concurrency == 1 {
                round_trip_ms = (row.number("elapsed_ms") - row.number("list_ms")) / count as f64;
            }
            let elapsed = row.number("elapsed_ms");
            let bound = row.loaded_bound_ms();
            let idle_bound = row.bound_ms(round_trip_ms);
            println!(
                "{:>7} {:>15} {:>9} {:>10} {:>8} {:>7} {:>8} {:>6.2} {:>10} {:>10.2} {:>8.0} {:>9} {:>6} {:>9.1} {:>8.1}",
                count,
                label,
                format!("{elapsed:.0}ms"),
                format!("{:.0}ms", row.number("first_page_ms")),
                format!("{:.0}ms", row.number("list_ms")),
                format!("{:.2}ms", row.number("mean_post_ms")),
                format!("{bound:.0}ms"),
                elapsed / bound.max(1.0),
                format!("{idle_bound:.0}ms"),
                elapsed / idle_bound.max(1.0),
                count as f64 / (elapsed.max(1.0) / 1000.0),
                row.number("delivered"),
                row.number("failed"),
                row.number("peak_mib"),
                row.number("cpu_us_per_post"),
            );
            rows.push(row);
        }
    }
    println!("elapsed includes listing; list = time spent waiting for listing pages (read while posting);");
    println!("L = the mean round trip of this broadcast's delivered posts; bound = max(list, N x L / concurrency);");
    println!(
        "idle bound = the same with L = {round_trip_ms:.2} ms, the round trip of one post measured one at a time;"
    );
    println!("ratio = elapsed / bound; peak MiB = the fan-out process's peak resident memory;");
    println!("CPU µs/post = its user + system CPU time per post");

    let default_row = |count: usize| {
        rows.iter()
            .find(|row| row.count == count && row.concurrency == DEFAULT_FANOUT_CONCURRENCY)
    };
    let mut missed = Vec::new();
    if let Some(row) = default_row(10_000) {
        let ratio = row.number("elapsed_ms") / row.loaded_bound_ms();
        let idle_ratio = row.number("elapsed_ms") / row.bound_ms(round_trip_ms);
        let verdict = if ratio <= BOUND_FACTOR { "met" } else { "MISSED" };
        println!(
            "target: N=10000 elapsed <= {BOUND_FACTOR} x bound: {ratio:.2} x, {verdict} (with the idle L: {idle_ratio:.2} x)"
        );
        if ratio > BOUND_FACTOR {
            missed.push("elapsed at N=10000");
        }
    }
    if let (Some(small), Some(large)) = (default_row(10_000), default_row(100_000)) {
        let growth = large.number("peak_mib") - small.number("peak_mib");
        let verdict = if growth <= MEMORY_GROWTH_MIB { "met" } else { "MISSED" };
        println!("target: peak memory N=100000 within {MEMORY_GROWTH_MIB} MiB of N=10000: {growth:+.1} MiB, {verdict}");
        if growth > MEMORY_GROWTH_MIB {
            missed.push("memory at N=100000");
        }
    }
    assert!(missed.is_empty(), "targets missed: {}", missed.join(", "));
}
