//! Retention: a producer's message without an expiry gets the default once sent.

use airwave_shared::time::epoch_seconds_now;
use airwave_tests::{insert_record, message_image, stream_event};
use serde_json::json;

use super::Stack;

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

    let response = stack.process(event).await.unwrap();

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
