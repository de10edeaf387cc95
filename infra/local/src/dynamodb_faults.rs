//! What to inject in front of the local DynamoDB, which never does either by
//! itself: throttling, and transactions cancelled by a conflict with another
//! one. moto applies one request at a time, so without this the paths that
//! retry a conflicting transaction, or back off from a throttle, never run.
//!
//! Throttles answer `ProvisionedThroughputExceededException` (the SDK retries
//! it with backoff); conflicts answer `TransactionCanceledException` with a
//! `TransactionConflict` reason for the first item and `None` for the others,
//! as DynamoDB does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::fault_proxy::{FaultPlan, FaultProxy, ProxiedRequest};

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The counted kind of an injected throttle.
pub const THROTTLED: &str = "throttled";
/// The counted kind of an injected transaction conflict.
pub const CONFLICT: &str = "conflict";

/// Shares of requests to answer with a fault, in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamoDbFaults {
    /// Of every request: answered as throttled.
    pub throttle_percent: u8,
    /// Of `TransactWriteItems` requests: cancelled by a conflict.
    pub conflict_percent: u8,
    pub seed: u64,
}

/// A proxy in front of the local DynamoDB injecting [`DynamoDbFaults`].
pub type FaultyDynamoDb = FaultProxy<DynamoDbFaults>;

impl FaultPlan for DynamoDbFaults {
    fn seed(&self) -> u64 {
        self.seed
    }

    fn draw(&self, request: &ProxiedRequest<'_>, rng: &mut fastrand::Rng) -> Option<(&'static str, Response)> {
        if self.throttle_percent > 0 && rng.u8(0..100) < self.throttle_percent {
            return Some((
                THROTTLED,
                error_response(json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "message": "The level of configured provisioned throughput for the table was exceeded (injected)",
                })),
            ));
        }
        let operation = request
            .headers
            .get("x-amz-target")
            .and_then(|target| target.to_str().ok())
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or_default();
        if operation == "TransactWriteItems" && self.conflict_percent > 0 && rng.u8(0..100) < self.conflict_percent {
            return Some((CONFLICT, conflict_response(request.body)));
        }
        None
    }
}

fn error_response(body: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", JSON_CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn conflict_response(request: &[u8]) -> Response {
    let items = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|request| request.get("TransactItems").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(1)
        .max(1);
    let reasons: Vec<Value> = (0..items)
        .map(|index| match index {
            0 => json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}),
            _ => json!({"Code": "None"}),
        })
        .collect();
    let codes: Vec<&str> = (0..items)
        .map(|index| if index == 0 { "TransactionConflict" } else { "None" })
        .collect();
    error_response(json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    }))
}
