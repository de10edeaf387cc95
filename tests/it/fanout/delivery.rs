//! Delivery: every live connection gets each message exactly once, in order
//! and in as few frames as fit; expired and stale ones get nothing and go.

use airwave_shared::connection::ConnectionRecord;
use airwave_shared::message::Audience;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::ConnectionStore;
use airwave_tests::{insert_record, message_image, stream_batch_fixture, stream_event, LogCapture};
use serde_json::json;

use super::{channel_records, seed_connections, Stack};

#[tokio::test]
async fn a_stream_batch_reaches_every_live_connection_exactly_once() {
    let stack = Stack::start().await;
    for id in ["alice=", "bob=", "carol="] {
        stack.connect(id).await;
    }

    let response = stack.process(stream_batch_fixture()).await.unwrap();

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

    let response = stack.process(stream_event(records)).await.unwrap();

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

#[tokio::test(flavor = "current_thread")]
async fn each_delivered_message_is_timed_from_its_write_to_the_end_of_its_broadcast() {
    let stack = Stack::start().await;
    stack.connect("alice=").await;
    let written_at_ms = airwave_shared::time::epoch_millis_now() - 2_000;
    let mut timed = message_image("msg-timed", "x");
    timed["written_at_ms"] = json!({"N": written_at_ms.to_string()});
    // Without `written_at_ms` the stream record's creation time counts: the
    // fixture's is in 2026, long before the broadcast.
    let untimed = message_image("msg-untimed", "y");
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let started_ms = airwave_shared::time::epoch_millis_now();
    let response = stack
        .process(stream_event(vec![
            insert_record("800", timed),
            insert_record("801", untimed),
        ]))
        .await
        .unwrap();
    let ended_ms = airwave_shared::time::epoch_millis_now();

    assert!(response.batch_item_failures.is_empty());
    let samples: Vec<f64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == airwave_shared::telemetry::metric::DELIVERY_LATENCY)
        .flat_map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Histogram(samples) => {
                samples.into_iter().map(f64::from).collect::<Vec<_>>()
            }
            other => panic!("DeliveryLatency is a histogram, not {other:?}"),
        })
        .collect();
    assert_eq!(samples.len(), 2, "one sample per message: {samples:?}");
    let timed_ms = (started_ms - written_at_ms) as f64..=(ended_ms - written_at_ms) as f64;
    assert!(
        samples.iter().any(|sample| timed_ms.contains(sample)),
        "{samples:?} holds no sample in {timed_ms:?}"
    );
    assert!(samples.iter().all(|sample| *sample >= 2_000.0), "{samples:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_message_no_connection_received_is_not_timed() {
    let stack = Stack::start().await;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let response = stack
        .process(stream_event(vec![insert_record(
            "810",
            message_image("msg-nobody", "x"),
        )]))
        .await
        .unwrap();

    assert!(response.batch_item_failures.is_empty());
    let timed = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, ..)| key.key().name() == airwave_shared::telemetry::metric::DELIVERY_LATENCY);
    assert!(!timed, "no target, so no delivery to time");
}

#[tokio::test(flavor = "current_thread")]
async fn every_line_logged_while_a_run_is_sent_names_its_messages() {
    let stack = Stack::start().await;
    stack.connect("live=").await;
    stack.connect("gone=").await;
    stack.gateway.disconnect("gone=");
    let logs = LogCapture::default();
    let _capture = logs.install_as_deployed();

    let response = stack
        .process(stream_event(vec![
            insert_record("820", message_image("msg-820", "x")),
            insert_record("821", message_image("msg-821", "y")),
        ]))
        .await
        .unwrap();

    assert!(response.batch_item_failures.is_empty());
    let lines = logs.lines();
    let message_ids = |message: &str| {
        lines
            .iter()
            .find(|line| line["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no line says {message:?}: {lines:#?}"))["span"]["message_ids"]
            .clone()
    };
    // The prune of one target's post, the broadcast's summary and the run's.
    for message in [
        "pruned a connection API Gateway reports gone",
        "fan-out finished",
        "messages broadcast",
    ] {
        assert_eq!(message_ids(message), "msg-820,msg-821", "{message}");
    }
}
