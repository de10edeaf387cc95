//! `make bench`, second part: what channel positions and history cost per
//! message on the broadcast path. The real stream handler broadcasts batches
//! of channel messages to one subscriber through the local Management API (no
//! added latency), with positions off (`AIRWAVE_HISTORY_SIZE=0`, the path
//! before positions existed) and on (the default), against the local
//! DynamoDB. It counts the DynamoDB requests by operation with an SDK
//! interceptor and times the whole run.
//!
//! Settings (environment): BENCH_POSITION_MESSAGES (default 300).

use std::collections::BTreeMap;
use std::time::Instant;

use airwave_local::{Faults, LocalManagementApi, Options};
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_tests::{insert_record, stream_event, OperationCounter, TestTables};
use serde_json::json;

struct Run {
    elapsed_ms: f64,
    requests: BTreeMap<String, u64>,
}

async fn run(history_size: u64, messages: usize) -> Run {
    let tables = TestTables::create_with(|config| config.history.size = history_size).await;
    tables.admit("bench-subscriber=").await;
    tables.subscribe("bench-subscriber=", "bench").await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: std::time::Duration::ZERO,
        faults: Faults::default(),
        ..Options::default()
    })
    .await
    .expect("start the local Management API");
    gateway.connect("bench-subscriber=");
    let fanout = tables.fanout(&gateway.endpoint(), 64);
    let counter = OperationCounter::default();
    let store = tables.counted_store(&counter);
    let records: Vec<_> = (0..messages)
        .map(|n| {
            insert_record(
                &format!("{:012}", n + 1),
                json!({
                    "message_id": {"S": format!("bench-{history_size}-{n}")},
                    "channel": {"S": "bench"},
                    "payload": {"M": {"n": {"N": n.to_string()}}},
                }),
            )
        })
        .collect();
    let started = Instant::now();
    for batch in records.chunks(100) {
        let response = handle_stream_batch(
            &store,
            &tables.config.history,
            &fanout,
            &RecordedFailures::default(),
            stream_event(batch.to_vec()),
        )
        .await
        .expect("a stream batch");
        assert!(response.batch_item_failures.is_empty(), "every record is broadcast");
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let delivered: usize = gateway
        .received("bench-subscriber=")
        .iter()
        .map(|frame| {
            let text = std::str::from_utf8(frame).expect("a text frame");
            match airwave_protocol::parse_server_frame(text).expect("a server frame") {
                airwave_protocol::Incoming::Messages(batch) => batch.len(),
                other => panic!("not a message frame: {other:?}"),
            }
        })
        .sum();
    assert_eq!(delivered, messages, "one delivery per message");
    let requests = counter.counts();
    Run { elapsed_ms, requests }
}

fn per_message(requests: &BTreeMap<String, u64>, operation: &str, messages: usize) -> f64 {
    requests.get(operation).copied().unwrap_or(0) as f64 / messages as f64
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::var("BENCH_POSITION_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300);
    println!("positions and history: {messages} channel messages, one subscriber, local DynamoDB");
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12} {:>10}",
        "positions", "ms/msg", "Query", "GetItem", "Scan", "TransactW", "other", "WCU/msg"
    );
    for (label, size) in [("off", 0), ("on", airwave_shared::config::DEFAULT_HISTORY_SIZE)] {
        let result = run(size, messages).await;
        // `Listing` counts the queries that start a listing, not requests of its own.
        let known = ["Query", "GetItem", "Scan", "TransactWriteItems", "Listing"];
        let other: u64 = result
            .requests
            .iter()
            .filter(|(operation, _)| !known.contains(&operation.as_str()))
            .map(|(_, count)| count)
            .sum();
        let transactions = per_message(&result.requests, "TransactWriteItems", messages);
        // Each transaction writes three small items (head, claim, entry) at
        // twice the write units of a plain write.
        let write_units = transactions * 3.0 * 2.0;
        println!(
            "{:>10} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>12} {:>10.1}",
            label,
            result.elapsed_ms / messages as f64,
            per_message(&result.requests, "Query", messages),
            per_message(&result.requests, "GetItem", messages),
            per_message(&result.requests, "Scan", messages),
            transactions,
            other,
            write_units,
        );
    }
}
