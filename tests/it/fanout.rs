//! The stream-processor: given these connections, when this batch arrives, then
//! these connections receive it and these stale ids are gone.

use airwave_local::LocalManagementApi;
use airwave_protocol::MessageFrame;
use airwave_shared::connection::ConnectionRecord;
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::message::Audience;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{ConnectionStore, DynamoStore, FanOut};
use airwave_tests::{insert_record, message_image, stream_batch_fixture, stream_event, LogCapture, TestTables};
use serde_json::json;

struct Stack {
    tables: TestTables,
    gateway: LocalManagementApi,
    fanout: FanOut,
}

impl Stack {
    async fn start() -> Self {
        let tables = TestTables::create().await;
        let gateway = LocalManagementApi::start().await.unwrap();
        let fanout = tables.fanout(&gateway.endpoint(), 8);
        Stack {
            tables,
            gateway,
            fanout,
        }
    }

    /// A browser connects: API Gateway knows the id and `$connect` stored it.
    async fn connect(&self, connection_id: &str) {
        self.gateway.connect(connection_id);
        self.tables.admit(connection_id).await;
    }

    fn frames(&self, connection_id: &str) -> Vec<MessageFrame> {
        self.gateway
            .received(connection_id)
            .iter()
            .flat_map(|bytes| {
                let text = std::str::from_utf8(bytes).expect("a text frame");
                match airwave_protocol::parse_server_frame(text).expect("a JSON frame") {
                    airwave_protocol::Incoming::Messages(messages) => messages,
                    other => panic!("not a message frame: {other:?}"),
                }
            })
            .collect()
    }
}

fn failed_sequence_numbers(
    response: &airwave_shared::aws_lambda_events::streams::DynamoDbEventResponse,
) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|failure| failure.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn a_stream_batch_reaches_every_live_connection_exactly_once() {
    let stack = Stack::start().await;
    for id in ["alice=", "bob=", "carol="] {
        stack.connect(id).await;
    }

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_batch_fixture(),
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    for id in ["alice=", "bob=", "carol="] {
        let frames = stack.frames(id);
        assert_eq!(frames.len(), 1, "{id} got {frames:?}: only the INSERT is a new message");
        assert_eq!(frames[0].id, "msg-0001");
        assert_eq!(frames[0].data, json!({"text": "hello, everyone", "priority": 2}));
    }
}

#[tokio::test]
async fn a_stale_id_answered_410_is_deleted_during_the_same_fan_out() {
    let stack = Stack::start().await;
    stack.connect("live=").await;
    stack.connect("closed-without-disconnect=").await;
    // The browser went away and $disconnect never arrived.
    stack.gateway.disconnect("closed-without-disconnect=");

    let report = stack
        .fanout
        .broadcast(&stack.tables.store, Audience::Everyone, b"{\"hello\":1}")
        .await
        .unwrap();

    assert_eq!(
        (report.targets, report.delivered, report.gone, report.failed),
        (2, 1, 1, 0)
    );
    assert_eq!(stack.gateway.received("live=").len(), 1);
    assert_eq!(stack.tables.stored_connection_ids().await, vec!["live=".to_owned()]);
}

#[tokio::test]
async fn an_expired_but_undeleted_record_receives_nothing_and_is_deleted() {
    let stack = Stack::start().await;
    stack.connect("fresh=").await;
    // DynamoDB deletes expired items lazily: this one is past its TTL but still
    // there, and API Gateway would even still accept posts to it.
    stack.gateway.connect("expired=");
    stack
        .tables
        .store
        .put_connection(&ConnectionRecord {
            connection_id: "expired=".into(),
            source_ip: "198.51.100.23".into(),
            user_id: None,
            connected_at_ms: 0,
            expires_at: epoch_seconds_now() - 30,
            domain_name: None,
            stage: None,
            channels: Vec::new(),
            slot_total: None,
            slot_user: None,
            slot_ip: None,
            allowed_channels: None,
            allowed_publish: None,
            token_expires_at: None,
            operator: false,
        })
        .await
        .unwrap();

    let report = stack
        .fanout
        .broadcast(&stack.tables.store, Audience::Everyone, b"{}")
        .await
        .unwrap();

    assert_eq!((report.targets, report.delivered, report.expired), (2, 1, 1));
    assert!(stack.gateway.received("expired=").is_empty());
    assert_eq!(stack.tables.stored_connection_ids().await, vec!["fresh=".to_owned()]);
}

#[tokio::test]
async fn a_subscription_listed_as_expired_whose_record_is_gone_gets_nothing_and_is_closed() {
    let stack = Stack::start().await;
    stack.connect("live=").await;
    stack.tables.subscribe("live=", "news").await;
    // A socket API Gateway still holds, whose record is gone (an operator's
    // delete, a lost race) and whose subscription outlived it, now expired.
    stack.gateway.connect("orphan=");
    stack
        .tables
        .dynamodb
        .put_item()
        .table_name(&stack.tables.config.subscriptions_table)
        .item(
            "channel",
            aws_sdk_dynamodb::types::AttributeValue::S(airwave_shared::store::subscription_partition(
                "news", "orphan=",
            )),
        )
        .item(
            "connection_id",
            aws_sdk_dynamodb::types::AttributeValue::S("orphan=".into()),
        )
        .item(
            "expires_at",
            aws_sdk_dynamodb::types::AttributeValue::N((epoch_seconds_now() - 30).to_string()),
        )
        .send()
        .await
        .unwrap();

    let report = stack
        .fanout
        .broadcast(&stack.tables.store, Audience::Channel("news"), b"{}")
        .await
        .unwrap();

    // It is never posted to: its socket is closed, so its client reconnects
    // and recovers, and its subscription is gone.
    assert_eq!((report.targets, report.delivered, report.expired), (2, 1, 1));
    assert_eq!(stack.gateway.received("live=").len(), 1);
    assert_eq!(
        stack.gateway.post_count(),
        1,
        "no post to the connection without a record"
    );
    assert!(!stack.gateway.is_live("orphan="), "the orphan's socket was closed");
    assert!(stack.gateway.is_live("live="));
    assert_eq!(
        stack.tables.stored_subscriptions().await,
        vec![("news".to_owned(), "live=".to_owned())]
    );
}

#[tokio::test]
async fn a_batch_frame_refused_as_too_large_is_sent_message_by_message() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let message = |id: &str| MessageFrame {
        id: id.to_owned(),
        channel: None,
        data: json!("x".repeat(50_000)),
        position: None,
        publisher: None,
        to_user: None,
    };
    // Three 50 KB messages in one frame: over the 128 KB API Gateway takes.
    let batch = MessageFrame::batch_text(vec![message("m-1"), message("m-2"), message("m-3")]);
    assert!(batch.len() > airwave_local::management::MAX_MESSAGE_BYTES);

    let report = stack
        .fanout
        .broadcast_frames(&stack.tables.store, Audience::Everyone, &[batch.as_bytes()], None)
        .await
        .unwrap();

    assert_eq!((report.delivered, report.failed, report.refused), (1, 0, 0));
    let ids: Vec<String> = stack.frames("alice=").into_iter().map(|frame| frame.id).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3"], "each message once, in order");
    assert_eq!(stack.gateway.post_counts().too_large, 1);
}

#[tokio::test]
async fn a_malformed_record_is_logged_with_its_sequence_number_and_the_batch_goes_on() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let logs = LogCapture::default();
    let _guard = logs.install();

    let no_payload = insert_record("200", json!({ "message_id": { "S": "no-payload" } }));
    let mut not_a_record = insert_record("201", message_image("x", "y"));
    not_a_record["dynamodb"]["NewImage"] = json!("this is not an item");
    let good = insert_record("202", message_image("msg-good", "still delivered"));
    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(vec![no_payload, not_a_record, good]),
    )
    .await
    .unwrap();

    assert!(
        response.batch_item_failures.is_empty(),
        "a record that can never succeed is not retried"
    );
    let frames = stack.frames("alice=");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].id, "msg-good");
    let errors: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line["level"] == "ERROR")
        .collect();
    for sequence_number in ["200", "201"] {
        assert!(
            errors
                .iter()
                .any(|line| line["span"]["sequence_number"] == sequence_number),
            "no error logged for record {sequence_number}: {errors:#?}"
        );
    }
}

#[tokio::test]
async fn an_oversized_message_is_skipped_without_posting_and_the_batch_goes_on() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;

    let huge = insert_record("300", message_image("msg-huge", &"x".repeat(130 * 1024)));
    let good = insert_record("301", message_image("msg-ok", "fits"));
    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(vec![huge, good]),
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(stack.gateway.post_count(), 1, "the oversized message is never posted");
    assert_eq!(stack.frames("alice=")[0].id, "msg-ok");
}

#[tokio::test]
async fn a_record_whose_listing_fails_is_reported_for_retry_and_later_records_wait() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    // Channel listings read the subscriptions table: without it they fail.
    stack
        .tables
        .dynamodb
        .delete_table()
        .table_name(&stack.tables.config.subscriptions_table)
        .send()
        .await
        .unwrap();
    let mut for_channel = insert_record("400", message_image("msg-1", "one"));
    for_channel["dynamodb"]["NewImage"]["channel"] = json!({ "S": "prices" });
    let for_everyone = insert_record("401", message_image("msg-2", "two"));

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(vec![for_channel, for_everyone]),
    )
    .await
    .unwrap();

    // Lambda resumes the shard from the first reported record, so that one is
    // enough, and the later record is not broadcast ahead of it.
    assert_eq!(failed_sequence_numbers(&response), vec!["400".to_owned()]);
    assert!(stack.frames("alice=").is_empty());
    assert_eq!(stack.gateway.post_count(), 0);
}

#[tokio::test]
async fn records_before_a_failure_are_delivered_and_poison_before_it_is_not_reported() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let mut broken = stack.tables.config.clone();
    broken.subscriptions_table = "missing-subscriptions-table".into();
    let store = DynamoStore::new(stack.tables.dynamodb.clone(), &broken);
    let good = insert_record("500", message_image("msg-500", "delivered"));
    let poison = insert_record("501", json!({ "message_id": { "S": "no-payload" } }));
    let mut failing = insert_record("502", message_image("msg-502", "retried"));
    failing["dynamodb"]["NewImage"]["channel"] = json!({ "S": "prices" });

    let response = handle_stream_batch(
        &store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(vec![good, poison, failing]),
    )
    .await
    .unwrap();

    assert_eq!(failed_sequence_numbers(&response), vec!["502".to_owned()]);
    let ids: Vec<String> = stack.frames("alice=").into_iter().map(|frame| frame.id).collect();
    assert_eq!(ids, ["msg-500"]);
}

#[tokio::test]
async fn a_message_for_an_invalid_channel_is_skipped_not_retried() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let mut bad_channel = insert_record("600", message_image("msg-600", "x"));
    bad_channel["dynamodb"]["NewImage"]["channel"] = json!({ "S": "" });
    let good = insert_record("601", message_image("msg-601", "y"));

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(vec![bad_channel, good]),
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    let ids: Vec<String> = stack.frames("alice=").into_iter().map(|frame| frame.id).collect();
    assert_eq!(ids, ["msg-601"]);
}

#[tokio::test]
async fn records_are_not_started_close_to_the_invocation_deadline() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let mut event = stream_event(vec![
        insert_record("700", message_image("msg-700", "x")),
        insert_record("701", message_image("msg-701", "y")),
    ]);
    // Less time left than the handler keeps in reserve.
    let now_ms = airwave_shared::time::epoch_millis_now() as u64;
    event.context.deadline = now_ms + stack.fanout.deadline_reserve().as_millis() as u64 / 2;

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        event,
    )
    .await
    .unwrap();

    assert_eq!(failed_sequence_numbers(&response), vec!["700".to_owned()]);
    assert_eq!(stack.gateway.post_count(), 0);
}

#[tokio::test]
async fn a_deadline_already_past_on_arrival_is_ignored_as_a_local_emulators() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let mut event = stream_event(vec![insert_record("710", message_image("msg-710", "x"))]);
    // What `cargo lambda watch` sends: a fixed 600000 ms, i.e. 1970.
    event.context.deadline = 600_000;

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        event,
    )
    .await
    .unwrap();

    assert!(failed_sequence_numbers(&response).is_empty());
    assert_eq!(stack.frames("alice=").len(), 1);
}

#[tokio::test]
async fn an_event_without_records_is_an_error_not_a_silent_success() {
    let stack = Stack::start().await;
    let mut event = stream_event(vec![]);
    event.payload = json!({"not": "a stream event"});

    let error = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        event,
    )
    .await
    .unwrap_err();

    assert!(error.to_string().contains("Records"));
}

impl Stack {
    async fn subscribe(&self, connection_id: &str, channel: &str) {
        self.connect(connection_id).await;
        self.tables.subscribe(connection_id, channel).await;
    }
}

fn channel_records(first: usize, count: usize, channel: &str) -> Vec<serde_json::Value> {
    (first..first + count)
        .map(|index| {
            insert_record(
                &index.to_string(),
                airwave_tests::channel_message_image(&format!("msg-{index}"), channel, "x"),
            )
        })
        .collect()
}

#[tokio::test]
async fn consecutive_messages_for_one_channel_reach_each_subscriber_in_one_frame_in_order() {
    let stack = Stack::start().await;
    for id in ["alice=", "bob=", "carol="] {
        stack.subscribe(id, "prices").await;
    }
    stack.subscribe("dana=", "news").await;
    // Twenty for prices, two for news, three for prices again: three runs.
    let mut records = channel_records(800, 20, "prices");
    records.extend(channel_records(820, 2, "news"));
    records.extend(channel_records(822, 3, "prices"));

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        stream_event(records),
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    let prices: Vec<String> = (800..820).chain(822..825).map(|index| format!("msg-{index}")).collect();
    for id in ["alice=", "bob=", "carol="] {
        assert_eq!(stack.gateway.received(id).len(), 2, "{id}: one frame per run");
        let frames = stack.frames(id);
        let ids: Vec<String> = frames.iter().map(|frame| frame.id.clone()).collect();
        assert_eq!(ids, prices, "{id} gets every message once, in stream order");
        let offsets: Vec<u64> = frames
            .iter()
            .map(|frame| frame.position.as_ref().unwrap().offset)
            .collect();
        assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 1), "{offsets:?}");
    }
    assert_eq!(stack.gateway.received("dana=").len(), 1);
    let news: Vec<String> = stack.frames("dana=").into_iter().map(|frame| frame.id).collect();
    assert_eq!(news, ["msg-820", "msg-821"]);
    assert_eq!(stack.gateway.post_count(), 3 * 2 + 1);
}

/// `count` connections that `$connect` admitted and API Gateway knows.
async fn seed_connections(stack: &Stack, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|index| format!("seeded-{index:05}=")).collect();
    stack.tables.seed_connections(&ids).await;
    for id in &ids {
        stack.gateway.connect(id);
    }
    ids
}

#[tokio::test]
async fn a_broadcast_to_more_connections_than_one_listing_page_reaches_each_exactly_once() {
    let stack = Stack::start().await;
    use airwave_shared::store::{FIRST_TARGET_PAGE_SIZE, TARGET_PAGE_SIZE};
    // Pages of 125, 250, 500 and 1,000, and part of one more.
    let first = FIRST_TARGET_PAGE_SIZE as usize;
    let count = first + 2 * first + 4 * first + TARGET_PAGE_SIZE as usize + 300;
    let ids = seed_connections(&stack, count).await;

    let report = stack
        .fanout
        .broadcast(&stack.tables.store, Audience::Everyone, b"{\"hello\":1}")
        .await
        .unwrap();

    assert_eq!((report.targets, report.delivered, report.failed), (count, count, 0));
    assert_eq!(report.pages, 5, "{count} targets in growing pages");
    for id in &ids {
        assert_eq!(stack.gateway.received(id).len(), 1, "{id}");
    }
}

#[tokio::test]
async fn a_broadcast_started_near_the_deadline_reports_its_record_for_retry_instead_of_overrunning() {
    use std::time::{Duration, Instant};
    let tables = TestTables::create().await;
    // Each post takes 100 ms and two are in flight: 8,000 connections would
    // take over six minutes, and they fill more listing pages than may wait
    // to be posted, so the listing is blocked handing one over when the
    // deadline comes.
    let gateway = airwave_local::LocalManagementApi::start_with(airwave_local::Options {
        latency: Duration::from_millis(100),
        faults: airwave_local::Faults::default(),
        ..airwave_local::Options::default()
    })
    .await
    .unwrap();
    let settings = airwave_shared::fanout::FanOutSettings {
        concurrency: 2,
        timeouts: airwave_shared::config::AwsTimeouts {
            attempt: Duration::from_millis(300),
            operation: Duration::from_millis(500),
        },
        connecting_window: Duration::ZERO,
        ..airwave_shared::fanout::FanOutSettings::from(&tables.config)
    };
    let fanout = FanOut::new(&tables.sdk_config, &gateway.endpoint(), settings);
    let stack = Stack {
        tables,
        gateway,
        fanout,
    };
    let ids = seed_connections(&stack, 8_000).await;
    let reserve = stack.fanout.deadline_reserve();
    // Time for a few posts only before the reserve begins.
    let left = reserve + Duration::from_millis(600);
    let deadline = Instant::now() + left;
    let mut event = stream_event(vec![insert_record("900", message_image("msg-900", "x"))]);
    event.context.deadline = airwave_shared::time::epoch_millis_now() as u64 + left.as_millis() as u64;

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        event,
    )
    .await
    .unwrap();

    assert!(Instant::now() < deadline, "the handler overran its deadline");
    assert_eq!(failed_sequence_numbers(&response), ["900"]);
    let posted = stack.gateway.post_count();
    assert!(posted > 0 && posted < ids.len(), "{posted} posts before it stopped");

    // Lambda sends the record again: with time enough, everyone has it, the
    // first ones twice (at least once, with the id to drop the copy).
    let unbounded = FanOut::new(
        &stack.tables.sdk_config,
        &stack.gateway.endpoint(),
        airwave_shared::fanout::FanOutSettings {
            concurrency: 256,
            connecting_window: Duration::ZERO,
            ..airwave_shared::fanout::FanOutSettings::from(&stack.tables.config)
        },
    );
    let retry = stream_event(vec![insert_record("900", message_image("msg-900", "x"))]);
    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &unbounded,
        &RecordedFailures::default(),
        retry,
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    for id in &ids {
        assert!(stack.frames(id).iter().any(|frame| frame.id == "msg-900"), "{id}");
    }
}

#[tokio::test]
async fn a_producers_message_without_an_expiry_gets_the_default_retention_once_sent() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let own_expiry = epoch_seconds_now() + 600;
    // What a producer wrote: one item without expires_at, one with its own.
    for (message_id, expires_at) in [("msg-950", None), ("msg-951", Some(own_expiry))] {
        let mut put = stack
            .tables
            .dynamodb
            .put_item()
            .table_name(&stack.tables.config.messages_table)
            .item("message_id", AttributeValue::S(message_id.into()))
            .item("payload", AttributeValue::S("x".into()));
        if let Some(expires_at) = expires_at {
            put = put.item("expires_at", AttributeValue::N(expires_at.to_string()));
        }
        put.send().await.unwrap();
    }
    let mut with_expiry = message_image("msg-951", "x");
    with_expiry["expires_at"] = json!({"N": own_expiry.to_string()});
    let event = stream_event(vec![
        insert_record("950", message_image("msg-950", "x")),
        insert_record("951", with_expiry),
    ]);

    let response = handle_stream_batch(
        &stack.tables.store,
        &stack.tables.config.history,
        &stack.fanout,
        &RecordedFailures::default(),
        event,
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    let expiry_of = |message_id: &'static str| {
        let tables = &stack.tables;
        async move {
            let item = tables
                .dynamodb
                .get_item()
                .table_name(&tables.config.messages_table)
                .key("message_id", AttributeValue::S(message_id.into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            item.get("expires_at")
                .map(|value| value.as_n().unwrap().parse::<i64>().unwrap())
        }
    };
    let retention = stack.tables.config.message_retention_seconds as i64;
    let stamped = expiry_of("msg-950").await.expect("the default retention was applied");
    assert!((stamped - (epoch_seconds_now() + retention)).abs() <= 5, "{stamped}");
    assert_eq!(
        expiry_of("msg-951").await,
        Some(own_expiry),
        "a producer's own expiry is kept"
    );
}
