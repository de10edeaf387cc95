//! `make bench`, a hot channel: what positions and history cost per message
//! when one channel takes a burst. The real stream handler sends 1,000
//! messages of one channel (10 stream batches of 100, as Lambda delivers a
//! backlog) to one subscriber through the local Management API, against the
//! local DynamoDB behind the DynamoDB meter, which prices every request as
//! DynamoDB on-demand bills it and enforces its per-partition-key limits
//! (1,000 write and 3,000 read units a second). It reports the write units per message, the
//! head updates per run, the messages per second on the one channel beside
//! the raw `PutItem` rate of the same DynamoDB in the same run, and the
//! round trips a backlog of 100 waits for before its first post. It checks
//! the targets the README quotes.
//!
//! Settings (environment): BENCH_HOT_MESSAGES (default 1000).

use std::time::Instant;

use airwave_local::{round_trips_before, LocalManagementApi, MeteredDynamoDb};
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::message::MessageRecord;
use airwave_shared::{DynamoStore, MessageStore};
use airwave_tests::{insert_record, stream_event, RequestTimer, TestTables};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

const CHANNEL: &str = "hot";
const SUBSCRIBER: &str = "hot-subscriber=";
/// Records per stream batch: the template's BatchSize.
const BATCH: usize = 100;

fn message(n: usize) -> MessageRecord {
    MessageRecord {
        message_id: format!("hot-{n:06}"),
        channel: Some(CHANNEL.to_owned()),
        payload: json!({ "n": n, "price": 100.0 + n as f64 / 100.0 }),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
        written_at_ms: None,
    }
}

fn record(message: &MessageRecord, n: usize) -> Value {
    insert_record(
        &format!("{:021}", n + 1),
        json!({
            "message_id": {"S": message.message_id},
            "channel": {"S": CHANNEL},
            "payload": {"M": {"n": {"N": n.to_string()}, "price": {"N": (100.0 + n as f64 / 100.0).to_string()}}},
        }),
    )
}

/// Writes messages `from..to` as a producer would, and answers their records.
async fn produce(tables: &TestTables, from: usize, to: usize) -> Vec<Value> {
    let mut records = Vec::new();
    for n in from..to {
        let message = message(n);
        tables.store.put_message(&message).await.expect("a producer's put");
        records.push(record(&message, n));
    }
    records
}

async fn send(tables: &TestTables, store: &DynamoStore, gateway: &LocalManagementApi, records: &[Value]) {
    let fanout = tables.fanout(&gateway.endpoint(), 64);
    for batch in records.chunks(BATCH) {
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
}

fn delivered(gateway: &LocalManagementApi) -> Vec<u64> {
    gateway
        .received(SUBSCRIBER)
        .iter()
        .flat_map(|frame| {
            let text = std::str::from_utf8(frame).expect("a text frame");
            match airwave_protocol::parse_server_frame(text).expect("a server frame") {
                airwave_protocol::Incoming::Messages(batch) => batch,
                other => panic!("not a message frame: {other:?}"),
            }
        })
        .map(|message| message.position.map(|position| position.offset).unwrap_or(0))
        .collect()
}

/// `count` one-at-a-time `PutItem`s of items like the history entries,
/// through `meter` or straight to the local DynamoDB.
async fn raw_put_rate(tables: &TestTables, meter: Option<&MeteredDynamoDb>, count: usize) -> f64 {
    let client = match meter {
        Some(meter) => aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&tables.sdk_config)
                .endpoint_url(meter.endpoint())
                .build(),
        ),
        None => tables.dynamodb.clone(),
    };
    let started = Instant::now();
    for n in 0..count {
        client
            .put_item()
            .table_name(&tables.config.history.table)
            .item("channel", AttributeValue::S("raw".into()))
            .item("entry", AttributeValue::S(format!("o#{n:020}")))
            .item("payload", AttributeValue::S(format!("{{\"n\":{n}}}")))
            .send()
            .await
            .expect("a raw put");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::var("BENCH_HOT_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    let tables = TestTables::create().await;
    tables.admit(SUBSCRIBER).await;
    tables.subscribe(SUBSCRIBER, CHANNEL).await;
    let timer = RequestTimer::default();
    let (metered, meter) = tables.timed_metered_store(&timer).await;

    // The channel's first message starts its head (one more write and round
    // trip, once per channel); the burst comes after.
    let warm_up = LocalManagementApi::start().await.expect("a Management API");
    warm_up.connect(SUBSCRIBER);
    send(&tables, &tables.store, &warm_up, &produce(&tables, 0, 1).await).await;

    let gateway = LocalManagementApi::start().await.expect("a Management API");
    gateway.connect(SUBSCRIBER);
    let burst = produce(&tables, 1, messages + 1).await;
    meter.reset();
    let started = Instant::now();
    send(&tables, &metered, &gateway, &burst).await;
    let elapsed = started.elapsed().as_secs_f64();
    let usage = meter.usage();
    let offsets = delivered(&gateway);
    assert_eq!(
        offsets,
        (2..=messages as u64 + 1).collect::<Vec<_>>(),
        "each message once, in position order"
    );
    let throttled: u64 = usage.throttled.values().sum();
    let history = usage.table(&tables.config.history.table);
    let message_items = usage.table(&tables.config.messages_table);
    let runs = messages.div_ceil(BATCH);
    let head_updates = history.requests.get("UpdateItem").copied().unwrap_or(0);
    let write_units = history.write_units + message_items.write_units;
    let per_message = write_units / messages as f64;
    let rate = messages as f64 / elapsed;

    // A backlog of 100, as Lambda delivers it after an outage.
    let backlog_gateway = LocalManagementApi::start().await.expect("a Management API");
    backlog_gateway.connect(SUBSCRIBER);
    let backlog = produce(&tables, messages + 1, messages + 101).await;
    timer.reset();
    send(&tables, &metered, &backlog_gateway, &backlog).await;
    let first_post = backlog_gateway.first_post_at().expect("a post");
    let round_trips = round_trips_before(&timer.spans(), first_post);

    meter.reset();
    let raw_rate = raw_put_rate(&tables, Some(&meter), messages).await;

    // The same burst and puts without the meter, which passes requests one at
    // a time and reads every written item before and after.
    let plain_gateway = LocalManagementApi::start().await.expect("a Management API");
    plain_gateway.connect(SUBSCRIBER);
    let plain_burst = produce(&tables, messages + 101, 2 * messages + 101).await;
    let started = Instant::now();
    send(&tables, &tables.store, &plain_gateway, &plain_burst).await;
    let plain_rate = messages as f64 / started.elapsed().as_secs_f64();
    let plain_raw_rate = raw_put_rate(&tables, None, messages).await;

    println!("a hot channel: {messages} messages on one channel in batches of {BATCH}, one subscriber, local DynamoDB behind the meter");
    println!("{:>38} {:>12}", "", "measured");
    println!("{:>38} {:>12}", "runs (one per batch)", runs);
    println!("{:>38} {:>12}", "head updates", head_updates);
    println!(
        "{:>38} {:>12}",
        "history write units",
        format!("{:.0}", history.write_units)
    );
    println!(
        "{:>38} {:>12}",
        "message-item write units (claims)",
        format!("{:.0}", message_items.write_units)
    );
    println!("{:>38} {:>12}", "write units per message", format!("{per_message:.3}"));
    println!(
        "{:>38} {:>12}",
        "read units per message",
        format!("{:.3}", usage.total_read_units() / messages as f64)
    );
    println!(
        "{:>38} {:>12}",
        "transactions",
        usage.requests.get("TransactWriteItems").copied().unwrap_or(0)
    );
    for (label, value) in [
        ("messages/s on the channel (metered)", rate),
        ("raw PutItem/s, one at a time (metered)", raw_rate),
        ("messages/s on the channel", plain_rate),
        ("raw PutItem/s, one at a time", plain_raw_rate),
    ] {
        println!("{label:>38} {:>12}", format!("{value:.0}"));
    }
    println!("{:>38} {:>12}", "round trips before a backlog's post", round_trips);

    let mut missed = Vec::new();
    let mut check = |name: &str, value: String, met: bool| {
        println!("target: {name}: {value}, {}", if met { "met" } else { "MISSED" });
        if !met {
            missed.push(name.to_owned());
        }
    };
    check(
        "with DynamoDB's per-key limits enforced, no request throttled",
        format!("{throttled} throttled"),
        throttled == 0,
    );
    check(
        "one head update per run",
        format!("{head_updates} for {runs} runs"),
        head_updates as usize == runs,
    );
    check(
        "about 2 write units per message (2 + 1/run length)",
        format!("{per_message:.3}"),
        per_message <= 2.0 + 1.0 / BATCH as f64 + 1e-9,
    );
    check(
        "a backlog of 100 reaches its first post within 3 round trips",
        round_trips.to_string(),
        round_trips <= 3,
    );
    assert!(missed.is_empty(), "targets missed: {}", missed.join(", "));
}
