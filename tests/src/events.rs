//! Events in the exact shape AWS sends them: API Gateway's WebSocket routes
//! and the messages table's stream.

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

pub const CONNECT_EVENT: &str = include_str!("../events/connect.json");
pub const DISCONNECT_EVENT: &str = include_str!("../events/disconnect.json");
pub const MESSAGE_EVENT: &str = include_str!("../events/message.json");
pub const STREAM_BATCH_EVENT: &str = include_str!("../events/stream-batch.json");

fn lambda_event<T>(payload: T) -> LambdaEvent<T> {
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    LambdaEvent::new(payload, context)
}

fn websocket_event(
    template: &str,
    connection_id: &str,
    source_ip: &str,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event: Value = serde_json::from_str(template).expect("fixture is JSON");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["requestContext"]["identity"]["sourceIp"] = json!(source_ip);
    lambda_event(serde_json::from_value(event).expect("fixture is a WebSocket event"))
}

/// A `$connect` event as API Gateway sends it, for this id and source IP.
pub fn connect_event(connection_id: &str, source_ip: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    websocket_event(CONNECT_EVENT, connection_id, source_ip)
}

/// A `$connect` event carrying `token` in its query string.
pub fn connect_event_with_token(
    connection_id: &str,
    source_ip: &str,
    token: &str,
) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event = connect_event(connection_id, source_ip);
    let mut payload = serde_json::to_value(&event.payload).expect("an event serialises");
    payload["queryStringParameters"] = serde_json::json!({ "token": token });
    payload["multiValueQueryStringParameters"] = serde_json::json!({ "token": [token] });
    event.payload = serde_json::from_value(payload).expect("the event reads back");
    event
}

/// A `$disconnect` event as API Gateway sends it, for this id.
pub fn disconnect_event(connection_id: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    websocket_event(DISCONNECT_EVENT, connection_id, "203.0.113.7")
}

/// A stream batch as Lambda delivers it, from raw records.
pub fn stream_event(records: Vec<Value>) -> LambdaEvent<Value> {
    lambda_event(json!({ "Records": records }))
}

/// The stream batch fixture: an INSERT, a MODIFY and a REMOVE of `msg-0001`.
pub fn stream_batch_fixture() -> LambdaEvent<Value> {
    lambda_event(serde_json::from_str(STREAM_BATCH_EVENT).expect("fixture is JSON"))
}

/// A `$default` event as API Gateway sends it: `body` is the client's frame.
pub fn message_event(connection_id: &str, body: &str) -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
    let mut event: Value = serde_json::from_str(MESSAGE_EVENT).expect("fixture is JSON");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["body"] = json!(body);
    lambda_event(serde_json::from_value(event).expect("a WebSocket event"))
}

/// One INSERT record of the messages table's stream, in Lambda's shape, with the
/// new image given in DynamoDB JSON.
pub fn insert_record(sequence_number: &str, new_image: Value) -> Value {
    let keys = json!({ "message_id": new_image.get("message_id").cloned().unwrap_or(Value::Null) });
    json!({
        "eventID": format!("event-{sequence_number}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795378600,
            "Keys": keys,
            "NewImage": new_image,
            "SequenceNumber": sequence_number,
            "SizeBytes": 64,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/airwave-messages/stream/2026-11-22T20:00:00.000"
    })
}

/// The new image of a message with a text payload, in DynamoDB JSON.
pub fn message_image(message_id: &str, text: &str) -> Value {
    json!({
        "message_id": { "S": message_id },
        "payload": { "M": { "text": { "S": text } } }
    })
}

/// The new image of a message for one channel.
pub fn channel_message_image(message_id: &str, channel: &str, text: &str) -> Value {
    let mut image = message_image(message_id, text);
    image["channel"] = json!({ "S": channel });
    image
}
