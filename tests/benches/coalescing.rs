//! `make bench`: a backlog of 100 messages on one channel of 1,000
//! subscribers, through the real stream handler (positions on), the local
//! DynamoDB and the local Management API with an injected latency per post.
//!
//! Once as Lambda delivers a backlog, one batch of 100 records: one listing,
//! and the messages coalesced into as few frames as API Gateway allows. Then
//! the same messages one record per batch, which is what the handler did for
//! each record before it coalesced: a listing and a post per subscriber per
//! message. It checks the targets the README quotes: one listing, at most a
//! tenth of the posts, at least 5x faster, and every subscriber gets every
//! message once, in order.
//!
//! Settings (environment): BENCH_LATENCY_MS (default 20).

use std::time::{Duration, Instant};

use airwave_local::{Faults, LocalManagementApi, Options};
use airwave_protocol::{parse_server_frame, Incoming};
use airwave_shared::config::DEFAULT_FANOUT_CONCURRENCY;
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::DynamoStore;
use airwave_tests::{insert_record, stream_event, OperationCounter, TestTables};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde_json::json;

const SUBSCRIBERS: usize = 1_000;
const MESSAGES: usize = 100;
const CHANNEL: &str = "backlog";

fn subscriber_ids() -> Vec<String> {
    (0..SUBSCRIBERS).map(|index| format!("sub-{index:05}=")).collect()
}

/// Connection records and subscription items, as subscribes would leave them.
async fn seed(tables: &TestTables) {
    let expires_at = (epoch_seconds_now() + 3_600).to_string();
    for chunk in subscriber_ids().chunks(25) {
        let mut connections = Vec::new();
        let mut subscriptions = Vec::new();
        for id in chunk {
            let connection = PutRequest::builder()
                .item("connection_id", AttributeValue::S(id.clone()))
                .item("source_ip", AttributeValue::S("127.0.0.1".into()))
                .item("connected_at_ms", AttributeValue::N("0".into()))
                .item("expires_at", AttributeValue::N(expires_at.clone()))
                .item("channels", AttributeValue::L(vec![AttributeValue::S(CHANNEL.into())]))
                .build()
                .expect("a put request");
            connections.push(WriteRequest::builder().put_request(connection).build());
            let subscription = PutRequest::builder()
                .item("channel", AttributeValue::S(CHANNEL.into()))
                .item("connection_id", AttributeValue::S(id.clone()))
                .item("expires_at", AttributeValue::N(expires_at.clone()))
                .build()
                .expect("a put request");
            subscriptions.push(WriteRequest::builder().put_request(subscription).build());
        }
        tables
            .dynamodb
            .batch_write_item()
            .request_items(&tables.config.connections_table, connections)
            .request_items(&tables.config.subscriptions_table, subscriptions)
            .send()
            .await
            .expect("seed subscribers");
    }
}

fn records(run: &str) -> Vec<serde_json::Value> {
    (0..MESSAGES)
        .map(|index| {
            insert_record(
                &format!("{run}-{index:04}"),
                json!({
                    "message_id": {"S": format!("{run}-{index:04}")},
                    "channel": {"S": CHANNEL},
                    "payload": {"M": {"symbol": {"S": "ABC"}, "price": {"N": (100 + index).to_string()}}},
                }),
            )
        })
        .collect()
}

struct Measured {
    elapsed: Duration,
    listings: u64,
    pages: u64,
    posts: usize,
}

/// Every subscriber's messages of `run`, in the order received.
fn received_ids(gateway: &LocalManagementApi, id: &str, run: &str) -> Vec<String> {
    gateway
        .received(id)
        .iter()
        .flat_map(|frame| {
            let text = std::str::from_utf8(frame).expect("a text frame");
            match parse_server_frame(text).expect("a server frame") {
                Incoming::Messages(messages) => messages,
                other => panic!("not a message frame: {other:?}"),
            }
        })
        .map(|message| message.id)
        .filter(|message_id| message_id.starts_with(run))
        .collect()
}

async fn measure(
    tables: &TestTables,
    store: &DynamoStore,
    gateway: &LocalManagementApi,
    counter: &OperationCounter,
    run: &str,
    records_per_batch: usize,
) -> Measured {
    let fanout = tables.fanout(&gateway.endpoint(), DEFAULT_FANOUT_CONCURRENCY);
    let listings_before = counter.get("Listing");
    let pages_before = counter.get("Query");
    let posts_before = gateway.post_count();
    let started = Instant::now();
    for batch in records(run).chunks(records_per_batch) {
        let response = handle_stream_batch(
            store,
            &tables.config.history,
            &fanout,
            &RecordedFailures::default(),
            stream_event(batch.to_vec()),
        )
        .await
        .expect("a stream batch");
        assert!(response.batch_item_failures.is_empty(), "every record is broadcast");
    }
    let elapsed = started.elapsed();
    let expected: Vec<String> = (0..MESSAGES).map(|index| format!("{run}-{index:04}")).collect();
    for id in subscriber_ids() {
        assert_eq!(
            received_ids(gateway, &id, run),
            expected,
            "{id} gets every message once, in order"
        );
    }
    Measured {
        elapsed,
        // Position assignment queries nothing: the queries are the listings
        // of the subscriptions table, and their pages.
        listings: counter.get("Listing") - listings_before,
        pages: counter.get("Query") - pages_before,
        posts: gateway.post_count() - posts_before,
    }
}

#[tokio::main]
async fn main() {
    let latency_ms: u64 = std::env::var("BENCH_LATENCY_MS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    let tables = TestTables::create().await;
    seed(&tables).await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::from_millis(latency_ms),
        faults: Faults::default(),
        ..Options::default()
    })
    .await
    .expect("start the local Management API");
    for id in subscriber_ids() {
        gateway.connect(&id);
    }
    let counter = OperationCounter::default();
    let store = tables.counted_store(&counter);

    let coalesced = measure(&tables, &store, &gateway, &counter, "batch", MESSAGES).await;
    let one_by_one = measure(&tables, &store, &gateway, &counter, "single", 1).await;

    println!(
        "coalescing: {MESSAGES} messages on one channel of {SUBSCRIBERS} subscribers, {latency_ms} ms per post, concurrency {DEFAULT_FANOUT_CONCURRENCY}, positions on"
    );
    println!(
        "{:>26} {:>10} {:>9} {:>7} {:>8}",
        "", "elapsed", "listings", "pages", "posts"
    );
    for (label, measured) in [
        ("one batch of 100 records", &coalesced),
        ("100 batches of 1 record", &one_by_one),
    ] {
        println!(
            "{:>26} {:>10} {:>9} {:>7} {:>8}",
            label,
            format!("{:.2}s", measured.elapsed.as_secs_f64()),
            measured.listings,
            measured.pages,
            measured.posts
        );
    }
    let speedup = one_by_one.elapsed.as_secs_f64() / coalesced.elapsed.as_secs_f64();
    let post_share = coalesced.posts as f64 / one_by_one.posts as f64;
    println!("every subscriber got all {MESSAGES} messages once, in order, both ways");
    let mut missed = Vec::new();
    let mut check = |name: &str, value: String, met: bool| {
        println!("target: {name}: {value}, {}", if met { "met" } else { "MISSED" });
        if !met {
            missed.push(name.to_owned());
        }
    };
    check(
        "one listing for the batch",
        coalesced.listings.to_string(),
        coalesced.listings == 1,
    );
    check(
        "at most a tenth of the posts",
        format!("{post_share:.3} of them"),
        post_share <= 0.1,
    );
    check("at least 5x faster", format!("{speedup:.1}x"), speedup >= 5.0);
    assert!(missed.is_empty(), "targets missed: {}", missed.join(", "));
}
