//! Positions per run: consecutive messages of one channel in a stream batch
//! take their offsets with one update of the channel's head, and cost what
//! the README says, counted by the DynamoDB meter.

use airwave_local::{round_trips_before, LocalManagementApi, MeteredDynamoDb};
use airwave_protocol::{parse_server_frame, Incoming, MessageFrame};
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::history::ChannelHistory;
use airwave_shared::message::MessageRecord;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{DynamoStore, MessageStore};
use airwave_tests::{insert_record, stream_event, RequestTimer, TestTables};
use serde_json::{json, Value};

const SUBSCRIBER: &str = "positions-subscriber=";

fn message(id: &str, channel: &str, n: usize) -> MessageRecord {
    MessageRecord {
        message_id: id.to_owned(),
        channel: Some(channel.to_owned()),
        payload: json!({ "n": n }),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
    }
}

/// `count` messages of `channel`, written to the messages table as a
/// producer would (unmetered), and their stream records.
async fn produce(tables: &TestTables, channel: &str, from: usize, count: usize) -> Vec<Value> {
    let mut records = Vec::new();
    for n in from..from + count {
        let message = message(&format!("{channel}-{n}"), channel, n);
        tables.store.put_message(&message).await.unwrap();
        records.push(insert_record(
            &format!("{:012}", n + 1),
            json!({
                "message_id": {"S": message.message_id},
                "channel": {"S": channel},
                "payload": {"M": {"n": {"N": n.to_string()}}},
            }),
        ));
    }
    records
}

/// Every message frame `connection_id` received, in order.
fn received(gateway: &LocalManagementApi, connection_id: &str) -> Vec<MessageFrame> {
    gateway
        .received(connection_id)
        .iter()
        .flat_map(
            |frame| match parse_server_frame(std::str::from_utf8(frame).unwrap()).unwrap() {
                Incoming::Messages(batch) => batch,
                other => panic!("not a message frame: {other:?}"),
            },
        )
        .collect()
}

struct Setup {
    tables: TestTables,
    gateway: LocalManagementApi,
    metered: DynamoStore,
    meter: MeteredDynamoDb,
    timer: RequestTimer,
}

/// One subscriber to `channel`, which has had one message already (a
/// channel's first run also starts its head: one more write and round trip).
async fn setup(channel: &str) -> Setup {
    let tables = TestTables::create().await;
    tables.admit(SUBSCRIBER).await;
    tables.subscribe(SUBSCRIBER, channel).await;
    let gateway = LocalManagementApi::start().await.unwrap();
    let timer = RequestTimer::default();
    let (metered, meter) = tables.timed_metered_store(&timer).await;
    let setup = Setup {
        tables,
        gateway,
        metered,
        meter,
        timer,
    };
    // The first message goes out through a gateway of its own, so the one
    // the test reads sees only what the test sends.
    let warm_up = LocalManagementApi::start().await.unwrap();
    warm_up.connect(SUBSCRIBER);
    let first = produce(&setup.tables, channel, 0, 1).await;
    assert_eq!(send_through(&setup, &warm_up, &setup.tables.store, first).await, 0);
    assert_eq!(received(&warm_up, SUBSCRIBER).len(), 1);
    setup.gateway.connect(SUBSCRIBER);
    setup
}

async fn send(setup: &Setup, store: &DynamoStore, records: Vec<Value>) -> usize {
    send_through(setup, &setup.gateway, store, records).await
}

/// Runs the stream handler on `records`; answers how many it reported for retry.
async fn send_through(setup: &Setup, gateway: &LocalManagementApi, store: &DynamoStore, records: Vec<Value>) -> usize {
    let fanout = setup.tables.fanout(&gateway.endpoint(), 16);
    let response = handle_stream_batch(
        store,
        &setup.tables.config.history,
        &fanout,
        &RecordedFailures::default(),
        stream_event(records),
    )
    .await
    .unwrap();
    response.batch_item_failures.len()
}

#[tokio::test]
async fn a_run_of_100_messages_takes_one_head_update_and_about_two_write_units_each() {
    let setup = setup("run").await;
    let records = produce(&setup.tables, "run", 1, 100).await;
    setup.meter.reset();
    assert_eq!(send(&setup, &setup.metered, records).await, 0);

    let frames = received(&setup.gateway, SUBSCRIBER);
    assert_eq!(frames.len(), 100);
    let offsets: Vec<u64> = frames.iter().map(|f| f.position.as_ref().unwrap().offset).collect();
    assert_eq!(offsets, (2..=101).collect::<Vec<_>>(), "in stream order, no gap");

    let usage = setup.meter.usage();
    let history = usage.table(&setup.tables.config.history.table);
    let messages = usage.table(&setup.tables.config.messages_table);
    assert_eq!(
        history.requests.get("UpdateItem"),
        Some(&1),
        "one head update for the run"
    );
    assert_eq!(history.requests.get("TransactWriteItems"), None, "no transaction");
    assert_eq!(history.requests.get("BatchWriteItem"), Some(&4), "entries 25 a request");
    // 100 entries and the head; 100 claims on the messages' own items (which
    // also give them their retention: no separate retention write).
    assert_eq!(history.write_units, 101.0);
    assert_eq!(messages.write_units, 100.0);
    assert_eq!(messages.requests.get("UpdateItem"), Some(&100));
    assert!(
        usage.throttled.is_empty(),
        "within DynamoDB's per-key limits: {:?}",
        usage.throttled
    );
    let per_message = (history.write_units + messages.write_units) / 100.0;
    println!("write units per message, run of 100: {per_message:.2}");
    assert!(per_message <= 2.01, "{per_message}");

    // Each item got its claim and the table's retention.
    let stored = setup.tables.stored_messages().await;
    assert!(stored
        .iter()
        .all(|item| item.get("position_offset").is_some() && item.get("expires_at").is_some()));
}

#[tokio::test]
async fn a_backlog_of_100_reaches_its_first_post_within_three_round_trips() {
    let setup = setup("backlog").await;
    let records = produce(&setup.tables, "backlog", 1, 100).await;
    setup.timer.reset();
    assert_eq!(send(&setup, &setup.metered, records).await, 0);
    let first_post = setup.gateway.first_post_at().expect("a post was made");
    let spans = setup.timer.spans();
    let round_trips = round_trips_before(&spans, first_post);
    let before: Vec<&str> = spans
        .iter()
        .filter(|span| span.answered <= first_post)
        .map(|span| span.operation.as_str())
        .collect();
    println!(
        "round trips before the first post: {round_trips} ({} requests)",
        before.len()
    );
    assert_eq!(
        round_trips, 3,
        "claims and the first listing page, the head, then entries and claims"
    );
    assert_eq!(received(&setup.gateway, SUBSCRIBER).len(), 100);
}

#[tokio::test]
async fn a_retried_run_keeps_its_positions_and_the_messages_after_it_take_the_next() {
    let setup = setup("retried").await;
    let first = produce(&setup.tables, "retried", 1, 10).await;
    // Listing the subscribers fails after the positions were taken: the run
    // is reported for retry.
    let mut broken = setup.tables.config.clone();
    broken.subscriptions_table = "missing-subscriptions-table".into();
    let broken_store = DynamoStore::new(setup.tables.dynamodb.clone(), &broken);
    assert_eq!(send(&setup, &broken_store, first.clone()).await, 1);
    assert!(received(&setup.gateway, SUBSCRIBER).is_empty());

    // Lambda sends the run again, with two records that came after it.
    let mut retried = first;
    retried.extend(produce(&setup.tables, "retried", 11, 2).await);
    assert_eq!(send(&setup, &setup.tables.store, retried).await, 0);
    let frames = received(&setup.gateway, SUBSCRIBER);
    let offsets: Vec<u64> = frames.iter().map(|f| f.position.as_ref().unwrap().offset).collect();
    assert_eq!(offsets, (2..=13).collect::<Vec<_>>(), "no offset taken twice");
    let ids: Vec<String> = frames.iter().map(|f| f.id.clone()).collect();
    let expected: Vec<String> = (1..13).map(|n| format!("retried-{n}")).collect();
    assert_eq!(ids, expected);
    let head = setup
        .tables
        .store
        .channel_head("retried", epoch_seconds_now())
        .await
        .unwrap();
    assert_eq!(head.map(|head| head.offset), Some(13));
}

#[tokio::test]
async fn a_message_whose_item_is_gone_still_gets_a_position_and_is_sent() {
    let setup = setup("gone").await;
    // A stream record whose item was deleted before the stream-processor ran.
    let record = insert_record(
        "000000000001",
        json!({
            "message_id": {"S": "gone-1"},
            "channel": {"S": "gone"},
            "payload": {"M": {"n": {"N": "1"}}},
        }),
    );
    assert_eq!(send(&setup, &setup.tables.store, vec![record]).await, 0);
    let frames = received(&setup.gateway, SUBSCRIBER);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].position.as_ref().map(|p| p.offset), Some(2));
    let stored = setup.tables.stored_messages().await;
    assert!(
        stored
            .iter()
            .all(|item| item.get("message_id") != Some(&json!("gone-1"))),
        "the claim never recreates a deleted message item: {stored:?}"
    );
}
