//! The event fixtures are in the exact shape AWS sends: they decode into the
//! `aws_lambda_events` types with the fields the handlers read.

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::aws_lambda_events::dynamodb::Event as DynamoDbEvent;
use airwave_tests::{CONNECT_EVENT, DISCONNECT_EVENT, MESSAGE_EVENT, STREAM_BATCH_EVENT};

#[test]
fn the_connect_fixture_is_an_api_gateway_connect_event() {
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_str(CONNECT_EVENT).unwrap();
    let context = &event.request_context;
    assert_eq!(context.route_key.as_deref(), Some("$connect"));
    assert_eq!(context.event_type.as_deref(), Some("CONNECT"));
    assert_eq!(context.identity.source_ip.as_deref(), Some("203.0.113.7"));
    assert!(context.connection_id.is_some() && context.domain_name.is_some() && context.stage.is_some());
}

#[test]
fn the_disconnect_fixture_is_an_api_gateway_disconnect_event() {
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_str(DISCONNECT_EVENT).unwrap();
    let context = &event.request_context;
    assert_eq!(context.route_key.as_deref(), Some("$disconnect"));
    assert_eq!(context.event_type.as_deref(), Some("DISCONNECT"));
    assert_eq!(context.disconnect_status_code, Some(1001));
}

#[test]
fn the_message_fixture_is_an_api_gateway_default_route_event() {
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_str(MESSAGE_EVENT).unwrap();
    let context = &event.request_context;
    assert_eq!(context.route_key.as_deref(), Some("$default"));
    assert_eq!(context.event_type.as_deref(), Some("MESSAGE"));
    let body: serde_json::Value = serde_json::from_str(event.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["action"], "subscribe");
}

#[test]
fn the_stream_fixture_is_a_dynamodb_stream_batch_with_insert_modify_and_remove() {
    let event: DynamoDbEvent = serde_json::from_str(STREAM_BATCH_EVENT).unwrap();
    let names: Vec<&str> = event.records.iter().map(|record| record.event_name.as_str()).collect();
    assert_eq!(names, ["INSERT", "MODIFY", "REMOVE"]);
    for record in &event.records {
        assert!(record.change.sequence_number.is_some());
    }
    assert!(event.records[0].change.new_image.contains_key("payload"));
}
