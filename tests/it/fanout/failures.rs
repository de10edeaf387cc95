//! What goes wrong in a batch: a malformed, oversized or misaddressed record
//! is skipped or reported, a failing one is retried with what follows it.

use airwave_protocol::MessageFrame;
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::message::Audience;
use airwave_shared::DynamoStore;
use airwave_tests::{insert_record, message_image, stream_event, LogCapture};
use serde_json::json;

use super::{failed_sequence_numbers, Stack};

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
    let response = stack
        .process(stream_event(vec![no_payload, not_a_record, good]))
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
    let response = stack.process(stream_event(vec![huge, good])).await.unwrap();

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

    let response = stack
        .process(stream_event(vec![for_channel, for_everyone]))
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

    let response = stack.process(stream_event(vec![bad_channel, good])).await.unwrap();

    assert!(response.batch_item_failures.is_empty());
    let ids: Vec<String> = stack.frames("alice=").into_iter().map(|frame| frame.id).collect();
    assert_eq!(ids, ["msg-601"]);
}

#[tokio::test]
async fn an_event_without_records_is_an_error_not_a_silent_success() {
    let stack = Stack::start().await;
    let mut event = stream_event(vec![]);
    event.payload = json!({"not": "a stream event"});

    let error = stack.process(event).await.unwrap_err();

    assert!(error.to_string().contains("Records"));
}
