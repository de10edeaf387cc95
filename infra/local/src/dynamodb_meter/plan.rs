//! Planning a metered request before it is forwarded: the items it will
//! write or read (each written item as it is before), or the request that
//! sizes what a query or scan evaluates.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::schema::{IndexSchema, Projection, TableSchema};
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
        "GetItem" => Ok(Plan::Gets {
            gets: vec![Get {
                table: string_field(request, "TableName")?.to_owned(),
                key: map_field(request, "Key")?.clone(),
                consistent: consistent_read(request),
            }],
            answered_whole: request.get("ProjectionExpression").is_none() && request.get("AttributesToGet").is_none(),
            transaction: false,
        }),
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
                gets.push(Get {
                    table: string_field(get, "TableName")?.to_owned(),
                    key: map_field(get, "Key")?.clone(),
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
            Ok(Plan::Evaluates {
                operation,
                table,
                consistent: consistent_read(request),
                sizing: sizing_request(request, index_name.is_some())?,
                fetches,
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
        table,
        key,
        kind,
        schema,
        before,
        batch_request,
    })
}

/// Whether a query or scan of a local index asks for attributes the index
/// does not project (DynamoDB then reads each whole item from the table).
fn asks_beyond_projection(request: &Value, index: &IndexSchema, table_keys: &[String]) -> bool {
    if matches!(index.projection, Projection::All) {
        return false;
    }
    if request.get("Select").and_then(Value::as_str) == Some("ALL_ATTRIBUTES") {
        return true;
    }
    let names = request.get("ExpressionAttributeNames").and_then(Value::as_object);
    let mut asked: Vec<String> = request
        .get("AttributesToGet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if let Some(projection) = request.get("ProjectionExpression").and_then(Value::as_str) {
        for path in projection.split(',') {
            let top = path.trim().split(['.', '[']).next().unwrap_or_default();
            let name = match names.and_then(|names| names.get(top)).and_then(Value::as_str) {
                Some(name) => name,
                None => top,
            };
            asked.push(name.to_owned());
        }
    }
    asked.iter().any(|name| !index.projects(table_keys, name))
}

/// The request that makes the upstream answer every item `request`
/// evaluates, whole: no filter, no projection, and only the expression
/// names and values the key condition uses.
fn sizing_request(request: &Value, on_index: bool) -> Result<Value, MeterError> {
    let mut sizing = request.as_object().ok_or_else(|| shape("request not a map"))?.clone();
    for field in [
        "ProjectionExpression",
        "FilterExpression",
        "Select",
        "AttributesToGet",
        "QueryFilter",
        "ScanFilter",
        "ConditionalOperator",
        "ReturnConsumedCapacity",
    ] {
        sizing.remove(field);
    }
    let key_condition = sizing
        .get("KeyConditionExpression")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for (field, sigil) in [("ExpressionAttributeNames", '#'), ("ExpressionAttributeValues", ':')] {
        let used = placeholders(&key_condition, sigil);
        let kept: Item = sizing
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(name, _)| used.contains(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if kept.is_empty() {
            sizing.remove(field);
        } else {
            sizing.insert(field.to_owned(), Value::Object(kept));
        }
    }
    if on_index {
        sizing.insert("Select".to_owned(), json!("ALL_PROJECTED_ATTRIBUTES"));
    }
    Ok(Value::Object(sizing))
}

/// The `#name` or `:value` placeholders of an expression.
fn placeholders(expression: &str, sigil: char) -> BTreeSet<&str> {
    let mut found = BTreeSet::new();
    for (start, character) in expression.char_indices() {
        if character != sigil {
            continue;
        }
        let rest = &expression[start + 1..];
        let length = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if length > 0 {
            found.insert(&expression[start..start + 1 + length]);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sizing_request_keeps_only_what_the_key_condition_uses() {
        let request = json!({
            "TableName": "t",
            "IndexName": "by_owner",
            "KeyConditionExpression": "#o = :o AND #at > :from",
            "FilterExpression": "#x = :x",
            "ProjectionExpression": "#x",
            "Select": "SPECIFIC_ATTRIBUTES",
            "ExpressionAttributeNames": {"#o": "owner", "#at": "at", "#x": "x"},
            "ExpressionAttributeValues": {":o": {"S": "o"}, ":from": {"N": "1"}, ":x": {"S": "1"}},
            "Limit": 10,
            "ScanIndexForward": false,
        });
        assert_eq!(
            sizing_request(&request, true).unwrap(),
            json!({
                "TableName": "t",
                "IndexName": "by_owner",
                "KeyConditionExpression": "#o = :o AND #at > :from",
                "Select": "ALL_PROJECTED_ATTRIBUTES",
                "ExpressionAttributeNames": {"#o": "owner", "#at": "at"},
                "ExpressionAttributeValues": {":o": {"S": "o"}, ":from": {"N": "1"}},
                "Limit": 10,
                "ScanIndexForward": false,
            })
        );
        let scan = json!({
            "TableName": "t",
            "FilterExpression": "#x = :x",
            "ExpressionAttributeNames": {"#x": "x"},
            "ExpressionAttributeValues": {":x": {"S": "1"}},
        });
        assert_eq!(sizing_request(&scan, false).unwrap(), json!({"TableName": "t"}));
    }

    #[test]
    fn a_local_index_asked_for_more_than_it_projects_fetches_from_the_table() {
        let index = IndexSchema {
            name: "lsi".to_owned(),
            local: true,
            keys: vec!["id".to_owned(), "at".to_owned()],
            projection: Projection::Include(vec!["x".to_owned()]),
        };
        let keys = ["id".to_owned()];
        assert!(!asks_beyond_projection(&json!({}), &index, &keys));
        assert!(asks_beyond_projection(
            &json!({"Select": "ALL_ATTRIBUTES"}),
            &index,
            &keys
        ));
        assert!(!asks_beyond_projection(
            &json!({"ProjectionExpression": "id, x"}),
            &index,
            &keys
        ));
        assert!(asks_beyond_projection(
            &json!({"ProjectionExpression": "#y.z", "ExpressionAttributeNames": {"#y": "y"}}),
            &index,
            &keys
        ));
    }
}
