//! Planning a metered request before it is forwarded: the items it will
//! write or read (each written item as it is before), or the request that
//! sizes what a query or scan evaluates.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::Value;

use super::evaluate::{asks_beyond_projection, partition_value, sizing_request};
use super::limits::Partition;
use super::schema::TableSchema;
use super::upstream::{get_item, schema, shape, MeterError};
use super::{Item, Shared};

/// What a metered request needs priced once answered.
pub(super) enum Plan {
    Writes {
        writes: Vec<Write>,
        transaction: bool,
    },
    Gets {
        gets: Vec<Get>,
        /// The item as answered is whole (no projection) and can be sized as is.
        answered_whole: bool,
        transaction: bool,
    },
    Evaluates {
        operation: &'static str,
        table: String,
        consistent: bool,
        sizing: Value,
        /// Base-table items fetched by a local index query, sized with this schema.
        fetches: Option<Arc<TableSchema>>,
        /// The partition a query reads, with limits (a scan reads them all
        /// and is not limited).
        partition: Option<Partition>,
    },
}

pub(super) struct Write {
    pub(super) table: String,
    pub(super) key: Item,
    pub(super) kind: WriteKind,
    pub(super) schema: Arc<TableSchema>,
    pub(super) before: Option<Item>,
    /// The request as sent in a batch, to recognise it among unprocessed ones.
    pub(super) batch_request: Option<Value>,
    pub(super) partition: Option<Partition>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteKind {
    Put,
    Update,
    Delete,
    Check,
}

pub(super) struct Get {
    pub(super) table: String,
    pub(super) key: Item,
    pub(super) consistent: bool,
    /// With limits only: finding it may take a `DescribeTable`.
    pub(super) partition: Option<Partition>,
}

fn string_field<'a>(value: &'a Value, field: &str) -> Result<&'a str, MeterError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| shape(format!("no {field}")))
}

fn map_field<'a>(value: &'a Value, field: &str) -> Result<&'a Item, MeterError> {
    value
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| shape(format!("no {field}")))
}

fn consistent_read(value: &Value) -> bool {
    value.get("ConsistentRead").and_then(Value::as_bool).unwrap_or(false)
}

pub(super) async fn plan(
    shared: &Shared,
    credentials: &HeaderMap,
    operation: &str,
    request: &Value,
) -> Result<Plan, MeterError> {
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let kind = match operation {
                "PutItem" => WriteKind::Put,
                "UpdateItem" => WriteKind::Update,
                _ => WriteKind::Delete,
            };
            let write = write(shared, credentials, kind, request, None).await?;
            Ok(Plan::Writes {
                writes: vec![write],
                transaction: false,
            })
        }
        "BatchWriteItem" => {
            let mut writes = Vec::new();
            for (table, requests) in map_field(request, "RequestItems")? {
                for batch_request in requests.as_array().ok_or_else(|| shape("RequestItems not a list"))? {
                    let (kind, body) = if let Some(put) = batch_request.get("PutRequest") {
                        (WriteKind::Put, put)
                    } else if let Some(delete) = batch_request.get("DeleteRequest") {
                        (WriteKind::Delete, delete)
                    } else {
                        return Err(shape("a batch write neither put nor delete"));
                    };
                    let mut body = body.clone();
                    if let Some(body) = body.as_object_mut() {
                        body.insert("TableName".to_owned(), Value::String(table.clone()));
                    }
                    writes.push(write(shared, credentials, kind, &body, Some(batch_request.clone())).await?);
                }
            }
            Ok(Plan::Writes {
                writes,
                transaction: false,
            })
        }
        "TransactWriteItems" => {
            let mut writes = Vec::new();
            for item in request
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or_else(|| shape("no TransactItems"))?
            {
                let (kind, body) = [
                    ("Put", WriteKind::Put),
                    ("Update", WriteKind::Update),
                    ("Delete", WriteKind::Delete),
                    ("ConditionCheck", WriteKind::Check),
                ]
                .into_iter()
                .find_map(|(field, kind)| item.get(field).map(|body| (kind, body)))
                .ok_or_else(|| shape("a transaction item of no known kind"))?;
                writes.push(write(shared, credentials, kind, body, None).await?);
            }
            Ok(Plan::Writes {
                writes,
                transaction: true,
            })
        }
        "GetItem" => {
            let table = string_field(request, "TableName")?;
            let key = map_field(request, "Key")?;
            Ok(Plan::Gets {
                gets: vec![Get {
                    partition: partition(shared, credentials, table, key).await?,
                    table: table.to_owned(),
                    key: key.clone(),
                    consistent: consistent_read(request),
                }],
                answered_whole: request.get("ProjectionExpression").is_none()
                    && request.get("AttributesToGet").is_none(),
                transaction: false,
            })
        }
        "BatchGetItem" => {
            let mut gets = Vec::new();
            for (table, keys_and_attributes) in map_field(request, "RequestItems")? {
                let consistent = consistent_read(keys_and_attributes);
                for key in keys_and_attributes
                    .get("Keys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| shape("no Keys"))?
                {
                    let key = key.as_object().ok_or_else(|| shape("a key not a map"))?;
                    gets.push(Get {
                        partition: partition(shared, credentials, table, key).await?,
                        table: table.clone(),
                        key: key.clone(),
                        consistent,
                    });
                }
            }
            Ok(Plan::Gets {
                gets,
                answered_whole: false,
                transaction: false,
            })
        }
        "TransactGetItems" => {
            let mut gets = Vec::new();
            for item in request
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or_else(|| shape("no TransactItems"))?
            {
                let get = item
                    .get("Get")
                    .ok_or_else(|| shape("a transactional read without Get"))?;
                let table = string_field(get, "TableName")?;
                let key = map_field(get, "Key")?;
                gets.push(Get {
                    partition: partition(shared, credentials, table, key).await?,
                    table: table.to_owned(),
                    key: key.clone(),
                    consistent: true,
                });
            }
            Ok(Plan::Gets {
                gets,
                answered_whole: false,
                transaction: true,
            })
        }
        "Query" | "Scan" => {
            let operation = if operation == "Query" { "Query" } else { "Scan" };
            let table = string_field(request, "TableName")?.to_owned();
            let index_name = request.get("IndexName").and_then(Value::as_str);
            let mut fetches = None;
            if let Some(index_name) = index_name {
                let schema = schema(shared, credentials, &table).await?;
                let index = schema
                    .index(index_name)
                    .ok_or_else(|| shape(format!("no index {index_name} on {table}")))?;
                if index.local && asks_beyond_projection(request, index, &schema.keys) {
                    fetches = Some(schema.clone());
                }
            }
            let partition = if operation == "Query" && shared.limiter.is_some() {
                let schema = schema(shared, credentials, &table).await?;
                query_partition(&schema, &table, request)
            } else {
                None
            };
            Ok(Plan::Evaluates {
                operation,
                table,
                consistent: consistent_read(request),
                sizing: sizing_request(request, index_name.is_some())?,
                fetches,
                partition,
            })
        }
        _ => Err(shape("not a metered operation")),
    }
}

/// One item write of a request (`TableName` and `Key` or `Item` in `body`),
/// with the item as it is before.
pub(super) async fn write(
    shared: &Shared,
    credentials: &HeaderMap,
    kind: WriteKind,
    body: &Value,
    batch_request: Option<Value>,
) -> Result<Write, MeterError> {
    let table = string_field(body, "TableName")?.to_owned();
    let schema = schema(shared, credentials, &table).await?;
    let key = match kind {
        WriteKind::Put => schema
            .key_of(map_field(body, "Item")?)
            .ok_or_else(|| shape(format!("an item without the key of {table}")))?,
        WriteKind::Update | WriteKind::Delete | WriteKind::Check => map_field(body, "Key")?.clone(),
    };
    let before = get_item(shared, credentials, &table, &key).await?;
    Ok(Write {
        partition: schema.partition_of(&table, &key),
        table,
        key,
        kind,
        schema,
        before,
        batch_request,
    })
}

/// The partition of the item at `key`, with limits only: without, the meter
/// asks the upstream nothing more than it did before limits.
async fn partition(
    shared: &Shared,
    credentials: &HeaderMap,
    table: &str,
    key: &Item,
) -> Result<Option<Partition>, MeterError> {
    if shared.limiter.is_none() {
        return Ok(None);
    }
    Ok(schema(shared, credentials, table).await?.partition_of(table, key))
}

/// The partition a query reads: the value its key condition gives the
/// partition key of the table, of a local index (the table's), or of a
/// global index (a partition of the index). None when the meter cannot
/// read the condition: that query is not limited.
fn query_partition(schema: &TableSchema, table: &str, request: &Value) -> Option<Partition> {
    let (attribute, index) = match request.get("IndexName").and_then(Value::as_str) {
        Some(name) => {
            let index = schema.index(name)?;
            let index_name = (!index.local).then_some(name);
            (index.keys.first()?, index_name)
        }
        None => (schema.keys.first()?, None),
    };
    let value = partition_value(request, attribute)?;
    Some(Partition::new(table, index, &value))
}
