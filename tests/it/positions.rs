//! Positions per run: consecutive messages of one channel in a stream batch
//! take their offsets with one update of the channel's head, and cost what
//! the README says, counted by the DynamoDB meter.

use airwave_local::{round_trips_before, LocalManagementApi, MeteredDynamoDb};
use airwave_protocol::{parse_server_frame, Incoming, MessageFrame};
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::history::{recover, ChannelHistory, Recovery};
use airwave_shared::message::MessageRecord;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{DynamoStore, MessageStore};
use airwave_tests::{insert_record, stream_event, RequestTimer, TestTables};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

const SUBSCRIBER: &str = "positions-subscriber=";

fn message(id: &str, channel: &str, n: usize) -> MessageRecord {
    MessageRecord::to_channel(id, channel, json!({ "n": n }))
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

#[tokio::test]
async fn the_first_page_of_subscribers_is_read_after_the_head_has_moved() {
    // A subscribe writes its subscription, then reads the head for its reply:
    // a listing read after the head moved sees every subscription whose reply
    // said a position before the run.
    let setup = setup("ordered").await;
    let records = produce(&setup.tables, "ordered", 1, 10).await;
    setup.timer.reset();
    assert_eq!(send(&setup, &setup.metered, records).await, 0);
    let spans = setup.timer.spans();
    let head_moved = spans
        .iter()
        .filter(|span| span.operation == "UpdateItem")
        .map(|span| span.answered)
        .min()
        .expect("the head update");
    let listed = spans
        .iter()
        .filter(|span| span.operation == "Query")
        .map(|span| span.arrived)
        .min()
        .expect("the listing");
    assert!(listed >= head_moved, "the listing started before the head moved");
}

#[tokio::test]
async fn a_retry_writes_again_the_entries_an_earlier_try_left_out() {
    let setup = setup("repaired").await;
    let records = produce(&setup.tables, "repaired", 1, 5).await;
    let messages: Vec<MessageRecord> = (1..6)
        .map(|n| message(&format!("repaired-{n}"), "repaired", n))
        .collect();
    let refs: Vec<&MessageRecord> = messages.iter().collect();
    let ttl = setup.tables.config.history.ttl_seconds;
    let now = epoch_seconds_now();
    // An earlier try took the positions and claimed them, and two of its
    // entries were never written.
    let given = setup
        .tables
        .store
        .assign_positions("repaired", &refs, ttl, now)
        .await
        .unwrap();
    for position in &given[1..3] {
        setup
            .tables
            .dynamodb
            .delete_item()
            .table_name(&setup.tables.config.history.table)
            .key("channel", AttributeValue::S("repaired".into()))
            .key("entry", AttributeValue::S(format!("o#{:020}", position.offset)))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(send(&setup, &setup.tables.store, records).await, 0);
    let frames = received(&setup.gateway, SUBSCRIBER);
    let offsets: Vec<u64> = frames.iter().map(|f| f.position.as_ref().unwrap().offset).collect();
    assert_eq!(
        offsets,
        given.iter().map(|p| p.offset).collect::<Vec<_>>(),
        "the claimed positions"
    );
    let epoch = &given[0].epoch;
    let history = setup
        .tables
        .store
        .read_history("repaired", epoch, (given[0].offset, given[4].offset), 1 << 20, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.len(), 5, "every entry is there again");
}

#[tokio::test]
async fn one_id_twice_in_a_run_gets_one_position() {
    let setup = setup("twice").await;
    let mut records = produce(&setup.tables, "twice", 1, 2).await;
    // The first id again (deleted and written again within one batch).
    let mut again = records[0].clone();
    again["dynamodb"]["SequenceNumber"] = json!("000000000099");
    records.push(again);
    assert_eq!(send(&setup, &setup.metered, records).await, 0);
    assert!(setup.meter.usage().throttled.is_empty());
    let frames = received(&setup.gateway, SUBSCRIBER);
    let seen: Vec<(String, u64)> = frames
        .iter()
        .map(|f| (f.id.clone(), f.position.as_ref().unwrap().offset))
        .collect();
    assert_eq!(
        seen,
        [
            ("twice-1".to_owned(), 2),
            ("twice-2".to_owned(), 3),
            ("twice-1".to_owned(), 2)
        ],
        "no offset for the copy; clients drop it by its id"
    );
}

#[tokio::test]
async fn a_head_written_by_hand_with_the_wrong_types_is_started_again() {
    let setup = setup("by-hand").await;
    setup
        .tables
        .dynamodb
        .put_item()
        .table_name(&setup.tables.config.history.table)
        .item("channel", AttributeValue::S("by-hand".into()))
        .item("entry", AttributeValue::S("head".into()))
        .item("epoch", AttributeValue::S("e".into()))
        .item("offset", AttributeValue::S("seven".into()))
        .item(
            "expires_at",
            AttributeValue::N((epoch_seconds_now() + 3_600).to_string()),
        )
        .send()
        .await
        .unwrap();
    let records = produce(&setup.tables, "by-hand", 1, 3).await;
    assert_eq!(send(&setup, &setup.tables.store, records).await, 0);
    let frames = received(&setup.gateway, SUBSCRIBER);
    let offsets: Vec<u64> = frames.iter().map(|f| f.position.as_ref().unwrap().offset).collect();
    assert_eq!(offsets, [1, 2, 3], "a new epoch from offset 1");
    assert_ne!(frames[0].position.as_ref().unwrap().epoch, "e");
}

#[tokio::test]
async fn a_recovery_skips_offsets_a_stopped_try_took_and_never_wrote() {
    let tables = TestTables::create().await;
    let settings = tables.config.history.clone();
    let ttl = settings.ttl_seconds;
    let now = epoch_seconds_now();
    let store = &tables.store;
    let written = |n: usize| message(&format!("gap-{n}"), "gap", n);
    let (one, lost, three) = (written(1), written(2), written(3));
    for item in [&one, &lost, &three] {
        store.put_message(item).await.unwrap();
    }
    let first = store.assign_position("gap", &one, ttl, now).await.unwrap();
    // A try that took offset 2 and was stopped before writing anything.
    let orphan = store.reserve_positions("gap", &[&lost], now).await.unwrap();
    assert_eq!(orphan.positions[0].offset, 2);
    let third = store.assign_position("gap", &three, ttl, now).await.unwrap();
    let head = store.channel_head("gap", now).await.unwrap().unwrap();
    assert_eq!((third.offset, head.offset), (3, 3));

    for since in [first.clone(), airwave_protocol::Position::not_started()] {
        let recovery = recover(store, "gap", &since, &head, &settings, 1 << 20, now)
            .await
            .unwrap();
        let Recovery::Recovered(frames) = recovery else {
            panic!("recovered from {since:?}: {recovery:?}");
        };
        let offsets: Vec<u64> = frames.iter().map(|f| f.position.as_ref().unwrap().offset).collect();
        let expected: Vec<u64> = if since.is_not_started() { vec![1, 3] } else { vec![3] };
        assert_eq!(offsets, expected, "from {since:?}");
    }
}
