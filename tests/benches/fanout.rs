//! `make bench`: the real fan-out against the local Management API with an
//! injected per-post latency, for N registered connections, at the default
//! concurrency, one at a time, and unbounded.
//!
//! Each measurement runs in a fresh child process, so its peak memory is its
//! own. Settings (environment): BENCH_SIZES (default "1000,10000"),
//! BENCH_LATENCY_MS (default 20).

use airwave_shared::message::Audience;
use std::process::Command;
use std::time::{Duration, Instant};

use airwave_local::{Faults, LocalManagementApi, Options};
use airwave_shared::config::DEFAULT_FANOUT_CONCURRENCY;
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{Config, FanOut};
use airwave_tests::TestTables;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::StreamExt;

/// Set on a child: "connections table,N,concurrency".
const CHILD_VARIABLE: &str = "AIRWAVE_BENCH_RUN";

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

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn seed(tables: &TestTables, count: usize) {
    let expires_at = (epoch_seconds_now() + 3_600).to_string();
    let ids = connection_ids(count);
    let batches: Vec<Vec<WriteRequest>> = ids
        .chunks(25)
        .map(|chunk| {
            chunk
                .iter()
                .map(|id| {
                    let put = PutRequest::builder()
                        .item("connection_id", AttributeValue::S(id.clone()))
                        .item("source_ip", AttributeValue::S("127.0.0.1".into()))
                        .item("connected_at_ms", AttributeValue::N("0".into()))
                        .item("expires_at", AttributeValue::N(expires_at.clone()))
                        .build()
                        .expect("a put request");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect()
        })
        .collect();
    futures::stream::iter(batches)
        .for_each_concurrent(4, |requests| async {
            let output = tables
                .dynamodb
                .batch_write_item()
                .request_items(&tables.config.connections_table, requests)
                .send()
                .await
                .expect("seed connections");
            let unprocessed = output
                .unprocessed_items
                .map_or(0, |items| items.values().map(Vec::len).sum());
            assert_eq!(unprocessed, 0, "the local server left items unprocessed");
        })
        .await;
}

/// One measurement, in a child process: prints one table row.
async fn run_child(spec: &str) {
    let mut parts = spec.split(',');
    let (Some(table), Some(count), Some(concurrency)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CHILD_VARIABLE}={spec:?} is not 'table,N,concurrency'");
    };
    let count: usize = count.parse().expect("N");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let latency_ms: u64 = env_or("BENCH_LATENCY_MS", 20);
    let tables = TestTables::open(Config {
        connections_table: table.to_owned(),
        ..Config::default()
    })
    .await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::from_millis(latency_ms),
        faults: Faults::default(),
    })
    .await
    .expect("start the local Management API");
    for id in connection_ids(count) {
        gateway.connect(&id);
    }
    let fanout = FanOut::new(
        &tables.sdk_config,
        &gateway.endpoint(),
        FanOutSettings {
            concurrency,
            ..FanOutSettings::from(&tables.config)
        },
    );
    let frame = serde_json::to_vec(&serde_json::json!({
        "type": "message", "id": "6f1d2c9e-bench", "channel": "prices",
        "data": {"symbol": "ABC", "price": 12.5, "note": "x".repeat(128)}
    }))
    .expect("a frame");

    let report = fanout
        .broadcast(&tables.store, Audience::Everyone, &frame)
        .await
        .expect("the broadcast lists its targets");

    let post_ms = report.elapsed_ms.saturating_sub(report.list_ms);
    let ideal_ms = (count as u64 * latency_ms) as f64 / concurrency as f64;
    let label = if concurrency == DEFAULT_FANOUT_CONCURRENCY {
        format!("default {concurrency}")
    } else if concurrency == count {
        format!("unbounded {concurrency}")
    } else {
        concurrency.to_string()
    };
    println!(
        "{:>6} {:>15} {:>9} {:>8} {:>8} {:>8} {:>6.2} {:>8.0} {:>9} {:>6} {:>8.1} {:>9}",
        count,
        label,
        format!("{}ms", report.elapsed_ms),
        format!("{}ms", report.list_ms),
        format!("{post_ms}ms"),
        format!("{ideal_ms:.0}ms"),
        post_ms as f64 / ideal_ms.max(1.0),
        count as f64 / (post_ms.max(1) as f64 / 1000.0),
        report.delivered,
        report.failed,
        peak_rss_mib().unwrap_or(f64::NAN),
        gateway.max_in_flight(),
    );
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var(CHILD_VARIABLE) {
        run_child(&spec).await;
        return;
    }
    let sizes: Vec<usize> = env_or("BENCH_SIZES", "1000,10000".to_owned())
        .split(',')
        .map(|size| size.trim().parse().expect("BENCH_SIZES is a list of whole numbers"))
        .collect();
    let latency_ms: u64 = env_or("BENCH_LATENCY_MS", 20);
    let executable = std::env::current_exe().expect("the bench's own path");

    println!("fan-out benchmark: {latency_ms} ms injected latency per post; each row is a fresh process");
    println!(
        "{:>6} {:>15} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8} {:>9} {:>6} {:>8} {:>9}",
        "N",
        "concurrency",
        "elapsed",
        "list",
        "post",
        "ideal",
        "ratio",
        "posts/s",
        "delivered",
        "failed",
        "peak MiB",
        "in-flight"
    );
    for &count in &sizes {
        let tables = TestTables::create().await;
        let seeding = Instant::now();
        seed(&tables, count).await;
        eprintln!(
            "(seeded {count} connection records in {:.1}s)",
            seeding.elapsed().as_secs_f64()
        );
        for concurrency in [DEFAULT_FANOUT_CONCURRENCY, 1, count] {
            let status = Command::new(&executable)
                .env(
                    CHILD_VARIABLE,
                    format!("{},{count},{concurrency}", tables.config.connections_table),
                )
                .status()
                .expect("run a measurement");
            assert!(
                status.success(),
                "the measurement N={count} concurrency={concurrency} failed"
            );
        }
    }
    println!("elapsed = list + post; list reads the targets from the local DynamoDB; ratio = post / ideal;");
    println!("ideal = N x latency / concurrency; peak MiB = the process's peak resident memory, local");
    println!("Management API server (which keeps every frame) included; in-flight = most posts it saw at once");
}
