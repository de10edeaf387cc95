//! The caps: exactly the cap open under concurrent connects, and a slot
//! comes back however its connection went (disconnect, TTL, 410, reaper).

use airwave_local::LocalManagementApi;
use airwave_shared::config::JwtSecret;
use airwave_shared::handlers::{handle_connection_removals, handle_disconnect, TTL_PRINCIPAL};
use airwave_shared::message::Audience;
use airwave_shared::ConnectionStore;
use airwave_tests::{connect_event, disconnect_event, stream_event, TestTables};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

use super::{connect_all, expire, statuses, stored_user_ids, token_for, SECRET};

#[tokio::test]
async fn a_hundred_concurrent_connects_of_one_user_leave_exactly_the_cap_open_and_a_disconnect_frees_exactly_one() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 5;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
    })
    .await;
    let alice = token_for("alice");
    let events = (0..100)
        .map(|i| airwave_tests::connect_event_with_token(&format!("alice-{i:03}="), "198.51.100.20", &alice))
        .collect();
    let responses = connect_all(&tables, events).await;
    let (admitted, refused) = statuses(&responses);
    assert_eq!(admitted, 5);
    assert!(refused.iter().all(|status| *status == 403), "{refused:?}");
    let open = tables.stored_connection_ids().await;
    assert_eq!(open.len(), 5);
    assert_eq!(stored_user_ids(&tables).await, vec!["alice"; 5]);
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(5));

    // Another user is not affected by alice's cap.
    let bob = connect_all(
        &tables,
        vec![airwave_tests::connect_event_with_token(
            "bob-000=",
            "198.51.100.20",
            &token_for("bob"),
        )],
    )
    .await;
    assert_eq!(bob[0].status_code, 200);

    handle_disconnect(&tables.store, disconnect_event(&open[0]))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(4));
    // A repeated $disconnect gives nothing back twice.
    handle_disconnect(&tables.store, disconnect_event(&open[0]))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(4));

    let events = (0..20)
        .map(|i| airwave_tests::connect_event_with_token(&format!("alice-again-{i:02}="), "198.51.100.20", &alice))
        .collect();
    let (admitted, _) = statuses(&connect_all(&tables, events).await);
    assert_eq!(admitted, 1);
    assert_eq!(tables.admission_counter("open#user#alice").await, Some(5));
}

#[tokio::test]
async fn a_connection_whose_disconnect_never_came_frees_its_slot_once_its_ttl_has_passed() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_ip = 1;
    })
    .await;
    let first = connect_all(&tables, vec![connect_event("first=", "198.51.100.30")]).await;
    assert_eq!(first[0].status_code, 200);
    let refused = connect_all(&tables, vec![connect_event("second=", "198.51.100.30")]).await;
    assert_eq!(refused[0].status_code, 403);
    for channel in ["prices", "news"] {
        let body = serde_json::json!({"action": "subscribe", "channel": channel}).to_string();
        airwave_shared::handlers::handle_message(
            &tables.store,
            None,
            &tables.config,
            airwave_tests::message_event("first=", &body),
        )
        .await
        .unwrap();
    }
    assert_eq!(tables.stored_subscriptions().await.len(), 2);

    // No $disconnect ever arrives; the record's TTL passes.
    expire(&tables, "first=").await;
    let admitted = connect_all(&tables, vec![connect_event("third=", "198.51.100.30")]).await;
    assert_eq!(admitted[0].status_code, 200);
    assert_eq!(tables.stored_connection_ids().await, vec!["third="]);
    assert_eq!(tables.admission_counter("open#ip#198.51.100.30").await, Some(1));
    // The reclaimed record's subscriptions went with it.
    assert_eq!(tables.stored_subscriptions().await, Vec::<(String, String)>::new());
}

#[tokio::test]
async fn a_connection_that_answered_410_frees_its_slot() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 1;
    })
    .await;
    let gateway = LocalManagementApi::start().await.unwrap();
    let first = connect_all(&tables, vec![connect_event("dropped=", "198.51.100.40")]).await;
    assert_eq!(first[0].status_code, 200);
    let refused = connect_all(&tables, vec![connect_event("waiting=", "198.51.100.41")]).await;
    assert_eq!(refused[0].status_code, 403);

    // The socket is gone without a $disconnect: the gateway answers 410.
    let report = tables
        .fanout(&gateway.endpoint(), 4)
        .broadcast(&tables.store, Audience::Everyone, br#"{"type":"message"}"#)
        .await
        .unwrap();
    assert_eq!(report.gone, 1);
    assert_eq!(tables.admission_counter("open#total").await, Some(0));

    let admitted = connect_all(&tables, vec![connect_event("waiting=", "198.51.100.41")]).await;
    assert_eq!(admitted[0].status_code, 200);
}

/// A REMOVE record of the connections table's stream, as Lambda delivers it.
fn remove_record(sequence_number: &str, old_image: Value, principal: Option<&str>) -> Value {
    let mut record = json!({
        "eventID": format!("event-{sequence_number}"),
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795378600,
            "Keys": { "connection_id": old_image["connection_id"].clone() },
            "OldImage": old_image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 200,
            "StreamViewType": "OLD_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/connections/stream/2026-11-22T00:00:00.000"
    });
    if let Some(principal) = principal {
        record["userIdentity"] = json!({ "type": "Service", "principalId": principal });
    }
    record
}

#[tokio::test]
async fn the_reaper_gives_back_the_slots_of_a_record_deleted_by_ttl_exactly_once() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections = 10;
        config.admission.max_connections_per_ip = 10;
    })
    .await;
    for id in ["ttl-deleted=", "user-deleted="] {
        let response = connect_all(&tables, vec![connect_event(id, "198.51.100.50")]).await;
        assert_eq!(response[0].status_code, 200);
    }
    assert_eq!(tables.admission_counter("open#total").await, Some(2));

    // DynamoDB's TTL deletes the record: only the stream sees it go.
    let old = tables
        .dynamodb
        .delete_item()
        .table_name(&tables.config.connections_table)
        .key("connection_id", AttributeValue::S("ttl-deleted=".to_owned()))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let old_image: Value = serde_json::to_value(
        old.into_iter()
            .map(|(name, value)| (name, attribute_json(&value)))
            .collect::<serde_json::Map<_, _>>(),
    )
    .unwrap();
    // A $disconnect removes the other record and gives its slots back itself;
    // its stream record (no TTL principal) must not give them back again.
    let disconnected = tables.store.get_connection("user-deleted=").await.unwrap().unwrap();
    handle_disconnect(&tables.store, disconnect_event("user-deleted="))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#total").await, Some(1));
    let disconnected_image = serde_json::to_value(
        serde_dynamo::to_item::<_, std::collections::HashMap<String, AttributeValue>>(&disconnected)
            .unwrap()
            .into_iter()
            .map(|(name, value)| (name, attribute_json(&value)))
            .collect::<serde_json::Map<_, _>>(),
    )
    .unwrap();
    let batch = vec![
        remove_record("100", disconnected_image, None),
        remove_record("101", old_image.clone(), Some(TTL_PRINCIPAL)),
        json!({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "102"}, "userIdentity": {"type": "Service", "principalId": TTL_PRINCIPAL}}),
    ];
    let response = handle_connection_removals(&tables.store, None, stream_event(batch.clone()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(tables.admission_counter("open#total").await, Some(0));
    assert_eq!(tables.admission_counter("open#ip#198.51.100.50").await, Some(0));

    // Lambda delivers the same batch again: nothing changes.
    handle_connection_removals(&tables.store, None, stream_event(batch))
        .await
        .unwrap();
    assert_eq!(tables.admission_counter("open#total").await, Some(0));
    assert_eq!(tables.admission_counter("open#ip#198.51.100.50").await, Some(0));
}

fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(text) => json!({ "S": text }),
        AttributeValue::N(number) => json!({ "N": number }),
        AttributeValue::Ss(set) => json!({ "SS": set }),
        other => panic!("unexpected attribute {other:?}"),
    }
}
