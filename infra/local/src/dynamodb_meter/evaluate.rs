//! What a query or scan evaluates: the request that makes the upstream
//! answer every item it evaluates, whole, and the partition a query reads.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::schema::{IndexSchema, Projection};
use super::upstream::{shape, MeterError};
use super::Item;

/// Whether a query or scan of a local index asks for attributes the index
/// does not project (DynamoDB then reads each whole item from the table).
pub(super) fn asks_beyond_projection(request: &Value, index: &IndexSchema, table_keys: &[String]) -> bool {
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
pub(super) fn sizing_request(request: &Value, on_index: bool) -> Result<Value, MeterError> {
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

/// The value a query's key condition gives `attribute`, the partition key,
/// which a key condition can only compare for equality: from
/// `KeyConditionExpression`, or the legacy `KeyConditions`.
pub(super) fn partition_value(request: &Value, attribute: &str) -> Option<Value> {
    let Some(expression) = request.get("KeyConditionExpression").and_then(Value::as_str) else {
        let condition = request.get("KeyConditions")?.get(attribute)?;
        if condition.get("ComparisonOperator").and_then(Value::as_str) != Some("EQ") {
            return None;
        }
        return condition.get("AttributeValueList")?.as_array()?.first().cloned();
    };
    let names = request.get("ExpressionAttributeNames").and_then(Value::as_object);
    let values = request.get("ExpressionAttributeValues").and_then(Value::as_object);
    let name_of = |operand: &str| {
        if operand.starts_with('#') {
            names
                .and_then(|names| names.get(operand))
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            Some(operand.to_owned())
        }
    };
    for (left, right) in equalities(expression) {
        for (name, value) in [(left, right), (right, left)] {
            if value.starts_with(':') && name_of(name).as_deref() == Some(attribute) {
                if let Some(value) = values.and_then(|values| values.get(value)) {
                    return Some(value.clone());
                }
            }
        }
    }
    None
}

/// The operands either side of each `=` of an expression (not of `<=`,
/// `>=` or `<>`): names, `#name` and `:value` placeholders.
fn equalities(expression: &str) -> Vec<(&str, &str)> {
    let operand = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '#' | ':');
    let mut found = Vec::new();
    for (at, character) in expression.char_indices() {
        if character != '=' {
            continue;
        }
        let (before, after) = (&expression[..at], &expression[at + 1..]);
        if before.ends_with(['<', '>']) {
            continue;
        }
        let before = before.trim_end();
        let left = &before[before.trim_end_matches(operand).len()..];
        let after = after.trim_start();
        let right = &after[..after.len() - after.trim_start_matches(operand).len()];
        if !left.is_empty() && !right.is_empty() {
            found.push((left, right));
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
            arn: None,
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

    #[test]
    fn the_partition_key_value_is_read_from_the_key_condition() {
        let query = |condition: &str| {
            json!({
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": {"#c": "channel", "#e": "entry"},
                "ExpressionAttributeValues": {":c": {"S": "room"}, ":e": {"S": "5"}},
            })
        };
        let room = Some(json!({"S": "room"}));
        assert_eq!(partition_value(&query("channel = :c"), "channel"), room);
        assert_eq!(partition_value(&query("#c=:c AND #e > :e"), "channel"), room);
        assert_eq!(partition_value(&query("#e <= :e AND (:c = #c)"), "channel"), room);
        assert_eq!(
            partition_value(&query("#c = :c AND begins_with(#e, :e)"), "channel"),
            room
        );
        assert_eq!(
            partition_value(&query("#c = :c AND #e = :e"), "entry"),
            Some(json!({"S": "5"}))
        );
        assert_eq!(partition_value(&query("#e >= :e"), "channel"), None);
        assert_eq!(partition_value(&query("#c = :missing"), "channel"), None);
        let legacy = json!({"KeyConditions": {"channel": {
            "ComparisonOperator": "EQ",
            "AttributeValueList": [{"S": "room"}],
        }}});
        assert_eq!(partition_value(&legacy, "channel"), room);
    }
}
