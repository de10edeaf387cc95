//! Fan-out at scale through the real stream-processor, the local DynamoDB and
//! the local Management API: channels, transient faults, partial batch
//! failures, the concurrency bound and the circuit breaker.

use airwave_shared::message::Audience;
use std::time::Duration;

use airwave_local::{Faults, LocalManagementApi, Options};
use airwave_protocol::MessageFrame;
use airwave_shared::aws_lambda_events::streams::DynamoDbEventResponse;
use airwave_shared::failures::RecordedFailures;
use airwave_shared::fanout::{BreakerSettings, FanOutSettings};
use airwave_shared::handlers::{handle_message, handle_stream_batch};
use airwave_shared::{Error, FanOut};
use airwave_tests::{channel_message_image, insert_record, message_event, message_image, stream_event, TestTables};
use serde_json::{json, Value};

async fn connect(tables: &TestTables, gateway: &LocalManagementApi, connection_id: &str) {
    gateway.connect(connection_id);
    tables.admit(connection_id).await;
}

async fn subscribe(tables: &TestTables, connection_id: &str, channel: &str) {
    let body = json!({"action": "subscribe", "channel": channel}).to_string();
    handle_message(&tables.store, None, &tables.config, message_event(connection_id, &body))
        .await
        .unwrap();
}

fn frame_ids(gateway: &LocalManagementApi, connection_id: &str) -> Vec<String> {
    gateway
        .received(connection_id)
        .iter()
        .map(|bytes| serde_json::from_slice::<MessageFrame>(bytes).expect("a frame").id)
        .collect()
}

fn failed_sequence_numbers(response: &DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|failure| failure.item_identifier.clone())
        .collect()
}

fn connection_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|index| format!("{prefix}-{index:05}=")).collect()
}

#[tokio::test]
async fn subscribers_of_a_channel_receive_its_messages_and_nobody_else_does() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start().await.unwrap();
    for id in ["alice=", "bob=", "carol=", "dave="] {
        connect(&tables, &gateway, id).await;
    }
    subscribe(&tables, "alice=", "prices").await;
    subscribe(&tables, "bob=", "prices").await;
    subscribe(&tables, "carol=", "news").await;
    let fanout = tables.fanout(&gateway.endpoint(), 8);

    let batch = stream_event(vec![
        insert_record("10", channel_message_image("for-prices", "prices", "ABC 12.5")),
        insert_record("11", message_image("for-everyone", "maintenance at noon")),
        insert_record("12", channel_message_image("for-nobody", "empty-channel", "unheard")),
    ]);
    let response = handle_stream_batch(
        &tables.store,
        &tables.config.history,
        &fanout,
        &RecordedFailures::default(),
        batch,
    )
    .await
    .unwrap();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(frame_ids(&gateway, "alice="), ["for-prices", "for-everyone"]);
    assert_eq!(frame_ids(&gateway, "bob="), ["for-prices", "for-everyone"]);
    assert_eq!(frame_ids(&gateway, "carol="), ["for-everyone"]);
    assert_eq!(frame_ids(&gateway, "dave="), ["for-everyone"]);
    let mut frame: Value = serde_json::from_slice(&gateway.received("alice=")[0]).unwrap();
    // The first message of a fresh channel: offset 1 of a new epoch.
    let epoch = frame["position"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 12);
    frame["position"]["epoch"] = json!("<epoch>");
    assert_eq!(
        frame,
        json!({"type": "message", "id": "for-prices", "channel": "prices", "data": {"text": "ABC 12.5"},
               "position": {"epoch": "<epoch>", "offset": 1}})
    );
    let broadcast: Value = serde_json::from_slice(&gateway.received("alice=")[1]).unwrap();
    assert!(
        broadcast.get("position").is_none(),
        "a message to everyone has no position"
    );
}

#[tokio::test]
async fn with_transient_500s_and_429s_every_live_connection_still_receives_the_message_once() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::ZERO,
        faults: Faults {
            server_error_percent: 10,
            throttle_percent: 5,
            seed: 20261122,
            ..Faults::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let live = connection_ids("live", 200);
    let stale = connection_ids("stale", 10);
    for id in live.iter().chain(&stale) {
        connect(&tables, &gateway, id).await;
    }
    for id in &stale {
        gateway.disconnect(id);
    }
    let fanout = tables.fanout(&gateway.endpoint(), 16);

    let report = fanout
        .broadcast(&tables.store, Audience::Everyone, br#"{"id":"m"}"#)
        .await
        .unwrap();

    let counts = gateway.post_counts();
    assert!(
        counts.server_errors > 0 && counts.throttled > 0,
        "faults were injected: {counts:?}"
    );
    assert_eq!(
        (report.delivered, report.gone, report.failed),
        (200, 10, 0),
        "{report:?}"
    );
    assert_eq!(report.retries as usize, counts.server_errors + counts.throttled);
    for id in &live {
        assert_eq!(gateway.received(id).len(), 1, "{id}");
    }
    let mut expected = live.clone();
    expected.sort();
    assert_eq!(
        tables.stored_connection_ids().await,
        expected,
        "the 410 ids are pruned in the same run"
    );
}

#[tokio::test]
async fn a_poison_record_and_a_failed_listing_give_exactly_the_right_batch_item_failures() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start().await.unwrap();
    connect(&tables, &gateway, "alice=").await;
    let fanout = tables.fanout(&gateway.endpoint(), 8);
    // Channel listings read the subscriptions table: without it they fail.
    tables
        .dynamodb
        .delete_table()
        .table_name(&tables.config.subscriptions_table)
        .send()
        .await
        .unwrap();
    let records = vec![
        insert_record("100", message_image("first", "delivered now")),
        insert_record("101", json!({ "message_id": { "S": "poison" } })),
        insert_record("102", channel_message_image("listing-fails", "prices", "retried")),
        insert_record("103", message_image("after", "delivered on the retry")),
    ];

    let response = handle_stream_batch(
        &tables.store,
        &tables.config.history,
        &fanout,
        &RecordedFailures::default(),
        stream_event(records.clone()),
    )
    .await
    .unwrap();

    assert_eq!(failed_sequence_numbers(&response), ["102"]);
    assert_eq!(frame_ids(&gateway, "alice="), ["first"]);

    // Lambda retries from the reported record on; with the table back, the
    // rest of the batch goes through, in order and without duplicates.
    tables.create_tables_from_template().await;
    subscribe(&tables, "alice=", "prices").await;
    let retry = handle_stream_batch(
        &tables.store,
        &tables.config.history,
        &fanout,
        &RecordedFailures::default(),
        stream_event(records[2..].to_vec()),
    )
    .await
    .unwrap();
    assert!(retry.batch_item_failures.is_empty());
    assert_eq!(frame_ids(&gateway, "alice="), ["first", "listing-fails", "after"]);
}

#[tokio::test]
async fn in_flight_posts_never_exceed_the_configured_bound() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::from_millis(20),
        faults: Faults::default(),
        ..Options::default()
    })
    .await
    .unwrap();
    for id in connection_ids("c", 150) {
        connect(&tables, &gateway, &id).await;
    }
    let fanout = tables.fanout(&gateway.endpoint(), 6);

    let report = fanout
        .broadcast(&tables.store, Audience::Everyone, b"{}")
        .await
        .unwrap();

    assert_eq!(report.delivered, 150);
    let peak = gateway.max_in_flight();
    assert!(peak <= 6, "{peak} posts were in flight at once with a bound of 6");
    assert!(peak > 1, "posts ran one at a time");
}

#[tokio::test]
async fn a_broadly_failing_endpoint_trips_the_breaker_and_the_record_is_retried_later() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        latency: Duration::ZERO,
        faults: Faults {
            server_error_percent: 100,
            throttle_percent: 0,
            seed: 1,
            ..Faults::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    for id in connection_ids("c", 200) {
        connect(&tables, &gateway, &id).await;
    }
    let concurrency = 4;
    let attempts = 3;
    let window = 20;
    let fanout = FanOut::new(
        &tables.sdk_config,
        &gateway.endpoint(),
        FanOutSettings {
            concurrency,
            post_max_attempts: attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            breaker: BreakerSettings {
                window,
                failure_ratio: 0.5,
                cooldown: Duration::from_secs(60),
            },
            ..FanOutSettings::from(&tables.config)
        },
    );

    let response = handle_stream_batch(
        &tables.store,
        &tables.config.history,
        &fanout,
        &RecordedFailures::default(),
        stream_event(vec![insert_record("900", message_image("m", "x"))]),
    )
    .await
    .unwrap();

    assert_eq!(failed_sequence_numbers(&response), ["900"]);
    let requests = gateway.post_count();
    assert!(
        requests <= (window + concurrency) * attempts as usize,
        "{requests} requests reached a failing endpoint"
    );
    let again = fanout.broadcast(&tables.store, Audience::Everyone, b"{}").await;
    assert!(matches!(again, Err(Error::BreakerOpen { .. })), "{again:?}");
    assert_eq!(gateway.post_count(), requests, "an open breaker posts nothing");
}

/// A fan-out with `attempts` per post and the given timeouts, backoffs short.
fn fanout_with(tables: &TestTables, gateway: &LocalManagementApi, attempts: u32, attempt_timeout: Duration) -> FanOut {
    let settings = FanOutSettings {
        concurrency: 8,
        post_max_attempts: attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeouts: airwave_shared::config::AwsTimeouts {
            attempt: attempt_timeout,
            operation: Duration::from_secs(30),
        },
        second_pass_delay: Duration::from_millis(20),
        ..FanOutSettings::from(&tables.config)
    };
    FanOut::new(&tables.sdk_config, &gateway.endpoint(), settings)
}

#[tokio::test]
async fn posts_that_fail_every_attempt_of_the_first_pass_are_delivered_in_the_second() {
    let tables = TestTables::create().await;
    // Every connection's first two attempts fail: the whole first pass (two
    // attempts per post) fails, and the second pass's attempt succeeds.
    let gateway = LocalManagementApi::start_with(Options {
        faults: Faults {
            fail_first_attempts: 2,
            ..Faults::default()
        },
        latency: Duration::from_millis(30),
        ..Options::default()
    })
    .await
    .unwrap();
    let ids = connection_ids("flaky", 20);
    for id in &ids {
        connect(&tables, &gateway, id).await;
    }

    let report = fanout_with(&tables, &gateway, 2, Duration::from_secs(30))
        .broadcast(&tables.store, Audience::Everyone, br#"{"id":"m"}"#)
        .await
        .unwrap();

    assert_eq!(
        (report.delivered, report.second_pass_delivered, report.failed),
        (20, 20, 0),
        "{report:?}"
    );
    // Only the posts answered 200 give the round trip the bound uses, and
    // none of them took less than the injected latency.
    assert_eq!((report.posts, report.delivered_posts), (40, 20), "{report:?}");
    assert!(report.mean_post_round_trip_ms() >= 30.0, "{report:?}");
    for id in &ids {
        assert_eq!(gateway.received(id).len(), 1, "{id}");
    }
}

#[tokio::test]
async fn what_fails_in_both_passes_is_counted_as_failed() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        faults: Faults {
            fail_first_attempts: 10,
            ..Faults::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    for id in connection_ids("down", 5) {
        connect(&tables, &gateway, &id).await;
    }

    let report = fanout_with(&tables, &gateway, 2, Duration::from_secs(30))
        .broadcast(&tables.store, Audience::Everyone, br#"{"id":"m"}"#)
        .await
        .unwrap();

    assert_eq!((report.delivered, report.failed), (0, 5), "{report:?}");
    assert_eq!((report.delivered_posts, report.mean_post_round_trip_ms()), (0, 0.0));
    // Two attempts in each pass.
    assert_eq!(gateway.post_count(), 5 * 4);
}

#[tokio::test]
async fn a_403_is_a_deploy_fault_reported_without_retries_and_without_opening_the_breaker() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        faults: Faults {
            forbidden: true,
            ..Faults::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    // More targets than the breaker's window of 50.
    for id in connection_ids("denied", 60) {
        connect(&tables, &gateway, &id).await;
    }

    let report = fanout_with(&tables, &gateway, 4, Duration::from_secs(30))
        .broadcast(&tables.store, Audience::Everyone, br#"{"id":"m"}"#)
        .await
        .unwrap();

    assert_eq!(
        (report.refused, report.failed, report.skipped, report.delivered),
        (60, 0, 0, 0),
        "{report:?}"
    );
    // One attempt each: no SDK retry, no second pass.
    assert_eq!(gateway.post_counts().forbidden, 60);
}

#[tokio::test]
async fn a_post_that_hangs_is_given_up_after_the_attempt_timeout_and_retried() {
    let tables = TestTables::create().await;
    let gateway = LocalManagementApi::start_with(Options {
        faults: Faults {
            hang_first_attempts: 1,
            ..Faults::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let ids = connection_ids("stuck", 10);
    for id in &ids {
        connect(&tables, &gateway, id).await;
    }
    let fanout = fanout_with(&tables, &gateway, 2, Duration::from_millis(300));

    // Without the attempt timeout the first attempts would hang for good.
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        fanout.broadcast(&tables.store, Audience::Everyone, br#"{"id":"m"}"#),
    )
    .await
    .expect("the broadcast does not hang")
    .unwrap();

    assert_eq!(gateway.post_counts().hung, 10);
    assert_eq!((report.delivered, report.failed), (10, 0), "{report:?}");
    for id in &ids {
        assert_eq!(gateway.received(id).len(), 1, "{id}");
    }
}
