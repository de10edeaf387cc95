//! The meter's own requests to the upstream, which it does not count: the
//! items before and after a write, and the tables' schemas.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::schema::TableSchema;
use super::{Item, Shared};

pub(super) const TARGET_PREFIX: &str = "DynamoDB_20120810";
pub(super) const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Why the meter could not price a request (it is still forwarded).
#[derive(Debug, thiserror::Error)]
pub(super) enum MeterError {
    #[error("the upstream did not answer: {0}")]
    Upstream(#[from] reqwest::Error),
    #[error("the upstream refused the meter's {operation}: {status} {body}")]
    Refused {
        operation: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{0}")]
    Shape(String),
}

pub(super) fn shape(what: impl Into<String>) -> MeterError {
    MeterError::Shape(what.into())
}
pub(super) async fn call(
    shared: &Shared,
    credentials: &HeaderMap,
    operation: &'static str,
    body: &Value,
) -> Result<Value, MeterError> {
    let answer = shared
        .client
        .post(format!("{}/", shared.upstream))
        .headers(credentials.clone())
        .header("x-amz-target", format!("{TARGET_PREFIX}.{operation}"))
        .header("content-type", JSON_CONTENT_TYPE)
        .body(body.to_string())
        .send()
        .await?;
    let status = answer.status();
    let bytes = answer.bytes().await?;
    if !status.is_success() {
        return Err(MeterError::Refused {
            operation,
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|error| shape(format!("{operation} answered no JSON: {error}")))
}

/// The whole item at `key`, if any.
pub(super) async fn get_item(
    shared: &Shared,
    credentials: &HeaderMap,
    table: &str,
    key: &Item,
) -> Result<Option<Item>, MeterError> {
    let answer = call(
        shared,
        credentials,
        "GetItem",
        &json!({"TableName": table, "Key": key, "ConsistentRead": true}),
    )
    .await?;
    Ok(answer.get("Item").and_then(Value::as_object).cloned())
}

pub(super) async fn schema(
    shared: &Shared,
    credentials: &HeaderMap,
    table: &str,
) -> Result<Arc<TableSchema>, MeterError> {
    if let Some(schema) = shared.schemas().get(table) {
        return Ok(schema.clone());
    }
    let described = call(shared, credentials, "DescribeTable", &json!({"TableName": table})).await?;
    let schema = Arc::new(TableSchema::parse(
        described
            .get("Table")
            .ok_or_else(|| shape("DescribeTable answered no Table"))?,
    )?);
    shared.schemas().insert(table.to_owned(), schema.clone());
    Ok(schema)
}
