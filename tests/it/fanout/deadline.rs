//! The invocation's deadline: nothing is started too close to it, and what
//! is not sent in time is reported for retry.

use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::FanOut;
use airwave_tests::{insert_record, message_image, stream_event, TestTables};

use super::{failed_sequence_numbers, seed_connections, Stack};

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

    let response = stack.process(event).await.unwrap();

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

    let response = stack.process(event).await.unwrap();

    assert!(failed_sequence_numbers(&response).is_empty());
    assert_eq!(stack.frames("alice=").len(), 1);
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

    let response = stack.process(event).await.unwrap();

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
