//! The proxy: every request forwarded, the metered ones one at a time
//! between a plan of what they touch and the settling of what they cost;
//! with limits, a throttled one is answered here, or goes without its batch
//! items in debt.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::plan::plan;
use super::pricing::Charges;
use super::settle::settle;
use super::throttle::{admit, Admission};
use super::upstream::TARGET_PREFIX;
use super::Shared;

/// The operation a request without `X-Amz-Target` is counted under.
const UNKNOWN_OPERATION: &str = "(unknown)";

/// An answer from the upstream, kept whole to be returned unchanged.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub(super) fn outcome(&self) -> Outcome {
        if self.status.is_success() {
            return Outcome::Success;
        }
        let kind = self
            .json()
            .and_then(|body| body.get("__type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if kind.ends_with("ConditionalCheckFailedException") {
            Outcome::ConditionFailed
        } else if kind.ends_with("TransactionCanceledException") {
            Outcome::TransactionCanceled
        } else {
            Outcome::Refused
        }
    }

    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

pub(super) enum Outcome {
    Success,
    ConditionFailed,
    TransactionCanceled,
    /// Any other error: nothing was read or written.
    Refused,
}

pub(super) async fn meter(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
    let target = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .unwrap_or_default();
    let (service, operation) = target.rsplit_once('.').unwrap_or(("", target));
    let operation = if operation.is_empty() {
        UNKNOWN_OPERATION
    } else {
        operation
    };
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let tables = request.as_ref().map(tables_named).unwrap_or_default();
    let metered = service == TARGET_PREFIX && METERED.contains(&operation);

    let mut charges = Charges::default();
    let mut throttled = BTreeSet::new();
    let answer = match (metered, &request) {
        (true, Some(request)) => {
            let _one_at_a_time = shared.one_at_a_time.lock().await;
            let metered = metered_request(&shared, method, &path, &headers, body, operation, request).await;
            (charges, throttled) = (metered.charges, metered.throttled);
            metered.answer
        }
        (true, None) => {
            tracing::warn!(
                operation,
                body_bytes = body.len(),
                "DynamoDB meter: request body is not JSON; not priced"
            );
            forward(&shared, method, &path, &headers, body).await
        }
        (false, _) => {
            if UNMETERED_BILLABLE.contains(&operation) {
                tracing::warn!(operation, "DynamoDB meter: PartiQL is not priced");
            }
            forward(&shared, method, &path, &headers, body).await
        }
    };
    if matches!(operation, "CreateTable" | "DeleteTable" | "UpdateTable") {
        let mut schemas = shared.schemas();
        for table in &tables {
            schemas.remove(table);
            if let Some(limiter) = &shared.limiter {
                limiter.forget(table);
            }
        }
    }
    shared.record(operation, &tables, charges, &throttled);
    match answer {
        Some(answer) => answer.into_response(),
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A metered request's answer, what it cost and the tables it was
/// throttled on.
struct Metered {
    answer: Option<Answer>,
    charges: Charges,
    throttled: BTreeSet<String>,
}

/// Plans, admits (with limits), forwards and settles a metered request;
/// the caller holds the meter's turn.
async fn metered_request(
    shared: &Shared,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    operation: &str,
    request: &Value,
) -> Metered {
    let credentials = credentials(headers);
    let mut plan = plan(shared, &credentials, operation, request).await;
    let admission = match &mut plan {
        Ok(plan) => admit(shared, operation, request, plan),
        // Unplanned, the request's partitions are unknown: it goes ahead.
        Err(_) => Admission::Forward,
    };
    let (body, held_back, throttled) = match admission {
        Admission::Forward => (body, None, BTreeSet::new()),
        Admission::Refuse { answer, throttled } => {
            return Metered {
                answer: Some(answer),
                charges: Charges::default(),
                throttled,
            };
        }
        // The signature no longer covers the body; the local servers do not
        // check it.
        Admission::Part {
            body,
            held_back,
            throttled,
        } => (body, Some(held_back), throttled),
    };
    let answer = forward(shared, method, path, headers, body).await;
    let mut charges = Charges::default();
    match (plan, &answer) {
        (Ok(plan), Some(answer)) => match settle(shared, &credentials, plan, answer).await {
            Ok(settled) => charges = settled,
            Err(error) => tracing::warn!(operation, error = %error, "DynamoDB meter: request not priced"),
        },
        // A request DynamoDB refuses costs nothing: no need to price it.
        (Err(error), Some(answer)) if !matches!(answer.outcome(), Outcome::Refused) => {
            tracing::warn!(operation, error = %error, "DynamoDB meter: request not priced");
        }
        _ => {}
    }
    if let Some(limiter) = &shared.limiter {
        limiter.charge(&charges.partitions, std::time::Instant::now());
    }
    let answer = match (answer, held_back) {
        (Some(answer), Some(held_back)) => Some(held_back.add_to(answer)),
        (answer, _) => answer,
    };
    Metered {
        answer,
        charges,
        throttled,
    }
}

/// Operations priced by the meter.
const METERED: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "GetItem",
    "BatchGetItem",
    "TransactGetItems",
    "Query",
    "Scan",
];

/// Operations that consume units but that the meter does not price.
const UNMETERED_BILLABLE: &[&str] = &["ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"];

async fn forward(shared: &Shared, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> Option<Answer> {
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in headers {
        // A signature covers the host the SDK was given; the local servers do not check it.
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error, "the upstream did not answer");
            return None;
        }
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response_headers.append(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(body) => Some(Answer {
            status,
            headers: response_headers,
            body,
        }),
        Err(error) => {
            tracing::warn!(error = %error, "the upstream's answer broke off");
            None
        }
    }
}

/// The headers the meter's own requests carry: the caller's credentials, so
/// the upstream places them in the same account and region.
pub(super) fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        if let Some(value) = headers.get(name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

/// The tables a request names.
fn tables_named(request: &Value) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    if let Some(table) = request.get("TableName").and_then(Value::as_str) {
        tables.insert(table.to_owned());
    }
    if let Some(batch) = request.get("RequestItems").and_then(Value::as_object) {
        tables.extend(batch.keys().cloned());
    }
    for item in request
        .get("TransactItems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(action) = item.as_object() {
            for action in action.values() {
                if let Some(table) = action.get("TableName").and_then(Value::as_str) {
                    tables.insert(table.to_owned());
                }
            }
        }
    }
    // Streams name a table through their ARN: `...:table/NAME/stream/LABEL`.
    if let Some(arn) = request.get("StreamArn").and_then(Value::as_str) {
        if let Some(table) = arn.split_once(":table/").and_then(|(_, rest)| rest.split('/').next()) {
            tables.insert(table.to_owned());
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_are_found_wherever_a_request_names_them() {
        let named = tables_named(&json!({
            "TransactItems": [
                {"Put": {"TableName": "a", "Item": {}}},
                {"ConditionCheck": {"TableName": "b", "Key": {}}},
            ]
        }));
        assert_eq!(named, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        let named = tables_named(&json!({
            "StreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/messages/stream/2024-01-01T00:00:00.000"
        }));
        assert_eq!(named, BTreeSet::from(["messages".to_owned()]));
        assert_eq!(
            tables_named(&json!({"RequestItems": {"c": [], "d": []}})),
            BTreeSet::from(["c".to_owned(), "d".to_owned()])
        );
    }
}
