//! The Lambda handlers: plain async functions over borrowed clients and config.

mod connect;
mod disconnect;
pub mod http;
mod message;
mod reaper;
mod stream;
mod sweep;

pub use connect::handle_connect;
pub use disconnect::handle_disconnect;
pub use message::{handle_message, parse_client_frame, ErrorCode, Reply, Stats};
pub use reaper::{
    decode_removed_connection, handle_connection_removals, handle_reaper_event, RemovedConnection,
    RECORD_REMOVED_MESSAGE, TTL_PRINCIPAL,
};
pub use stream::{decode_message_record, handle_stream_batch, DecodedMessage};
pub use sweep::{sweep_expired_connections, SweepReport, LIFETIME_REACHED_MESSAGE};

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use aws_lambda_events::encodings::Body;
use serde_json::Value;

use crate::Error;

/// A response for a WebSocket route. On `$connect`, any status outside 2xx
/// makes API Gateway refuse the handshake with that status.
pub fn route_response(status_code: u16, body: &str) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status_code);
    if !body.is_empty() {
        response.body = Some(Body::Text(body.to_owned()));
    }
    response
}

/// The `Records` of a DynamoDB stream event, kept as raw JSON so that one
/// undecodable record can be logged and skipped instead of failing the batch.
pub fn stream_records(payload: Value) -> Result<Vec<Value>, Error> {
    let records = match payload {
        Value::Object(mut fields) => fields.remove("Records"),
        _ => None,
    };
    match records {
        Some(Value::Array(records)) => Ok(records),
        _ => Err(Error::EventField {
            field: "Records".into(),
        }),
    }
}

/// A stream record's `dynamodb.SequenceNumber`, what `batchItemFailures` names.
fn sequence_number(record: &Value) -> Option<String> {
    record
        .pointer("/dynamodb/SequenceNumber")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
