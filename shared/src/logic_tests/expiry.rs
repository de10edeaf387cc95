//! Expiry: a record past its TTL (or its token) gets nothing and is removed
//! with its slots and subscriptions, by the sweep, by its own next request,
//! or by the reaper once DynamoDB's TTL has deleted it, exactly once.

use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

use super::support::Harness;
use crate::connection::ConnectionRecord;
use crate::handlers::{handle_connection_removals, sweep_expired_connections, TTL_PRINCIPAL};
use crate::store::ConnectionStore;

#[tokio::test]
async fn a_connection_past_its_ttl_is_unknown_to_every_request() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.connection_ttl_seconds = 600;
        config.allow_client_publish = true;
        config.allow_anonymous_publish = true;
    });
    assert_eq!(test.connect("c=", "198.51.100.80", None).await.0, 200);
    test.advance(Duration::from_secs(599));
    let reply = test
        .reply_to("c=", json!({"action": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    test.advance(Duration::from_secs(1));
    for frame in [
        json!({"action": "subscribe", "channel": "prices"}),
        json!({"action": "publish", "channel": "news", "data": 1}),
    ] {
        let reply = test.reply_to("c=", frame).await;
        assert_eq!(reply["code"], "unknown_connection", "{reply}");
    }
}

#[tokio::test]
async fn a_request_after_the_token_expired_is_refused_and_removes_the_connection() {
    let test = Harness::authenticated(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 5;
    });
    let token = test.token_with(json!({"sub": "fay", "exp": test.now() + 120}));
    assert_eq!(test.connect("f=", "198.51.100.81", Some(&token)).await.0, 200);
    assert_eq!(test.store.open_count("open#user#fay"), Some(1));

    test.advance(Duration::from_secs(300));
    let reply = test
        .reply_to("f=", json!({"action": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["code"], "token_expired", "{reply}");
    assert_eq!(test.store.get_connection("f=").await.unwrap(), None);
    assert_eq!(test.store.open_count("open#user#fay"), Some(0));
}

#[tokio::test]
async fn the_sweep_removes_exactly_the_expired_connections_with_their_slots_and_subscriptions() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 10;
        config.connection_ttl_seconds = 600;
    });
    assert_eq!(test.connect("early=", "198.51.100.82", None).await.0, 200);
    test.reply_to("early=", json!({"action": "subscribe", "channel": "news"}))
        .await;
    test.advance(Duration::from_secs(300));
    assert_eq!(test.connect("late=", "198.51.100.83", None).await.0, 200);
    test.reply_to("late=", json!({"action": "subscribe", "channel": "news"}))
        .await;

    test.advance(Duration::from_secs(300));
    let report = sweep_expired_connections(&test.store, None, test.now(), None)
        .await
        .unwrap();
    assert_eq!((report.listed, report.closed), (2, 1));
    assert_eq!(test.connection_ids().await, ["late="]);
    assert_eq!(test.store.open_count("open#total"), Some(1));
    assert_eq!(
        test.store.subscription_items(),
        [("news".to_owned(), "late=".to_owned())]
    );
}

/// A REMOVE record of the connections table's stream, as Lambda delivers it.
fn remove_record(sequence_number: &str, record: &ConnectionRecord, principal: Option<&str>) -> Value {
    let old_image: serde_dynamo::Item = serde_dynamo::to_item(record).unwrap();
    let mut raw = json!({
        "eventID": format!("event-{sequence_number}"),
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"connection_id": {"S": record.connection_id}},
            "OldImage": old_image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 200,
            "StreamViewType": "OLD_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/connections/stream/2026-11-22T00:00:00.000"
    });
    if let Some(principal) = principal {
        raw["userIdentity"] = json!({"type": "Service", "principalId": principal});
    }
    raw
}

fn stream_event(records: Vec<Value>) -> LambdaEvent<Value> {
    LambdaEvent::new(json!({ "Records": records }), Context::default())
}

#[tokio::test]
async fn the_reaper_gives_back_the_slots_of_a_record_deleted_by_ttl_exactly_once() {
    let test = Harness::new(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 10;
        config.admission.max_connections_per_ip = 10;
        config.connection_ttl_seconds = 600;
    });
    assert_eq!(test.connect("ttl-deleted=", "198.51.100.84", None).await.0, 200);
    test.advance(Duration::from_secs(600));
    let deleted = test.store.delete_expired_items();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        test.store.open_count("open#total"),
        Some(1),
        "the TTL gives nothing back"
    );

    let batch = stream_event(vec![remove_record("101", &deleted[0], Some(TTL_PRINCIPAL))]);
    let redelivered = stream_event(vec![remove_record("101", &deleted[0], Some(TTL_PRINCIPAL))]);
    let response = handle_connection_removals(&test.store, None, batch).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(test.store.open_count("open#total"), Some(0));
    assert_eq!(test.store.open_count("open#ip#198.51.100.84"), Some(0));
    handle_connection_removals(&test.store, None, redelivered)
        .await
        .unwrap();
    assert_eq!(test.store.open_count("open#total"), Some(0));
}

#[tokio::test]
async fn a_record_deleted_behind_airwaves_back_loses_its_leftover_subscriptions() {
    let test = Harness::new(|config| config.admission.attempts_per_ip = 0);
    assert_eq!(test.connect("orphan=", "198.51.100.85", None).await.0, 200);
    test.reply_to("orphan=", json!({"action": "subscribe", "channel": "news"}))
        .await;
    let record = test.store.delete_record_only("orphan=").unwrap();
    assert_eq!(test.store.subscription_items().len(), 1);

    // No TTL principal: an operator's delete. The reaper waits out the
    // grace a removal of Airwave's own would need, on the test's clock.
    let batch = stream_event(vec![remove_record("201", &record, None)]);
    handle_connection_removals(&test.store, None, batch).await.unwrap();
    assert_eq!(test.store.subscription_items(), Vec::<(String, String)>::new());
}
