//! What the meter does, with limits, with a request that touches a
//! partition in debt: what DynamoDB does. A single-item request or a query
//! is refused with `ProvisionedThroughputExceededException`, which the AWS
//! SDKs retry as a throttle; a transaction is cancelled with a
//! `ThrottlingError` reason for each item in debt; a batch goes ahead
//! without its items in debt, which come back unprocessed, or is refused
//! whole when every item is in debt. A refused request is not forwarded and
//! costs nothing.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::limits::{Direction, Limiter, Partition};
use super::plan::Plan;
use super::proxy::Answer;
use super::upstream::JSON_CONTENT_TYPE;
use super::Shared;

const ERROR_NAMESPACE: &str = "com.amazonaws.dynamodb.v20120810";
/// DynamoDB's message when an on-demand table throttles.
const THROTTLED: &str = "Throughput exceeds the current capacity of your table or index.";

/// Whether a metered request goes ahead.
pub(super) enum Admission {
    Forward,
    /// Answered without forwarding.
    Refuse {
        answer: Answer,
        /// The tables with a partition in debt.
        throttled: BTreeSet<String>,
    },
    /// A batch that goes ahead without its items in debt.
    Part {
        /// The request without them.
        body: Bytes,
        /// To add to the answer's unprocessed items.
        held_back: HeldBack,
        throttled: BTreeSet<String>,
    },
}

/// Batch items held back, as the answer lists unprocessed ones.
pub(super) struct HeldBack {
    /// `UnprocessedItems` or `UnprocessedKeys`.
    field: &'static str,
    /// By table: write requests, or a `KeysAndAttributes`.
    items: Map<String, Value>,
}

/// Whether the request planned as `plan` goes ahead; a batch's plan loses
/// the items held back.
pub(super) fn admit(shared: &Shared, operation: &str, request: &Value, plan: &mut Plan) -> Admission {
    let Some(limiter) = &shared.limiter else {
        return Admission::Forward;
    };
    let now = Instant::now();
    let (direction, partitions, transaction): (_, Vec<Option<&Partition>>, _) = match plan {
        Plan::Writes { writes, transaction } => (
            Direction::Write,
            writes.iter().map(|write| write.partition.as_ref()).collect(),
            *transaction,
        ),
        Plan::Gets { gets, transaction, .. } => (
            Direction::Read,
            gets.iter().map(|get| get.partition.as_ref()).collect(),
            *transaction,
        ),
        Plan::Evaluates { partition, .. } => (Direction::Read, vec![partition.as_ref()], false),
    };
    // The request's items in order, whether each is in debt.
    let flags: Vec<bool> = partitions
        .iter()
        .map(|partition| partition.is_some_and(|partition| limiter.in_debt(partition, direction, now)))
        .collect();
    let in_debt = || {
        partitions
            .iter()
            .zip(&flags)
            .filter(|(_, debt)| **debt)
            .filter_map(|(partition, _)| *partition)
    };
    let Some(first) = in_debt().next() else {
        return Admission::Forward;
    };
    let throttled: BTreeSet<String> = in_debt().map(|partition| partition.table.clone()).collect();
    tracing::debug!(
        operation,
        table = %first.table,
        partition_key = %first.key,
        "DynamoDB meter: a partition in debt throttles the request"
    );
    if transaction {
        return Admission::Refuse {
            answer: transaction_canceled(&flags),
            throttled,
        };
    }
    let answer = throughput_exceeded(shared, limiter, first, direction);
    if !flags.contains(&false) {
        return Admission::Refuse { answer, throttled };
    }
    let part = match operation {
        "BatchWriteItem" => hold_back_writes(request, plan, &flags),
        "BatchGetItem" => hold_back_keys(request, plan, &flags),
        _ => None,
    };
    match part {
        Some((body, held_back)) => Admission::Part {
            body,
            held_back,
            throttled,
        },
        // A batch the meter cannot take apart is refused whole.
        None => Admission::Refuse { answer, throttled },
    }
}

/// The batch write without its writes in debt, which the plan loses.
fn hold_back_writes(request: &Value, plan: &mut Plan, flags: &[bool]) -> Option<(Bytes, HeldBack)> {
    let Plan::Writes { writes, .. } = plan else {
        return None;
    };
    let mut left = request.clone();
    let batch = left.get_mut("RequestItems")?.as_object_mut()?;
    let mut items = Map::new();
    for (write, _) in writes.iter().zip(flags).filter(|(_, debt)| **debt) {
        let request = write.batch_request.as_ref()?;
        let requests = batch.get_mut(&write.table)?.as_array_mut()?;
        let at = requests.iter().position(|sent| sent == request)?;
        requests.remove(at);
        push(&mut items, &write.table, request.clone())?;
    }
    batch.retain(|_, requests| requests.as_array().is_none_or(|requests| !requests.is_empty()));
    let mut flags = flags.iter();
    writes.retain(|_| !flags.next().copied().unwrap_or(false));
    let held_back = HeldBack {
        field: "UnprocessedItems",
        items,
    };
    Some((Bytes::from(left.to_string()), held_back))
}

/// The batch read without its keys in debt, which the plan loses.
fn hold_back_keys(request: &Value, plan: &mut Plan, flags: &[bool]) -> Option<(Bytes, HeldBack)> {
    let Plan::Gets { gets, .. } = plan else {
        return None;
    };
    let mut left = request.clone();
    let batch = left.get_mut("RequestItems")?.as_object_mut()?;
    let mut items = Map::new();
    for (get, _) in gets.iter().zip(flags).filter(|(_, debt)| **debt) {
        let wanted = batch.get_mut(&get.table)?.as_object_mut()?;
        let keys = wanted.get_mut("Keys")?.as_array_mut()?;
        let key = Value::Object(get.key.clone());
        let at = keys.iter().position(|sent| *sent == key)?;
        keys.remove(at);
        if !items.contains_key(&get.table) {
            // The same projection and consistency for the keys held back.
            let mut held = wanted.clone();
            held.insert("Keys".to_owned(), json!([]));
            items.insert(get.table.clone(), Value::Object(held));
        }
        push_key(&mut items, &get.table, key)?;
    }
    batch.retain(|_, wanted| {
        wanted
            .get("Keys")
            .and_then(Value::as_array)
            .is_none_or(|keys| !keys.is_empty())
    });
    let mut flags = flags.iter();
    gets.retain(|_| !flags.next().copied().unwrap_or(false));
    let held_back = HeldBack {
        field: "UnprocessedKeys",
        items,
    };
    Some((Bytes::from(left.to_string()), held_back))
}

fn push(items: &mut Map<String, Value>, table: &str, request: Value) -> Option<()> {
    items
        .entry(table.to_owned())
        .or_insert_with(|| json!([]))
        .as_array_mut()?
        .push(request);
    Some(())
}

fn push_key(items: &mut Map<String, Value>, table: &str, key: Value) -> Option<()> {
    items.get_mut(table)?.get_mut("Keys")?.as_array_mut()?.push(key);
    Some(())
}

impl HeldBack {
    /// The batch's answer with the items held back among its unprocessed
    /// ones. An answer that is not a success, or not JSON, is left as is.
    pub(super) fn add_to(self, answer: Answer) -> Answer {
        if !answer.status.is_success() {
            return answer;
        }
        let Some(mut body) = answer.json() else {
            return answer;
        };
        let merged = body
            .as_object_mut()
            .and_then(|body| body.entry(self.field).or_insert_with(|| json!({})).as_object_mut())
            .map(|unprocessed| merge(unprocessed, self.items));
        if merged.is_none() {
            return answer;
        }
        let mut headers = answer.headers;
        // The checksum covered the upstream's body.
        headers.remove("x-amz-crc32");
        Answer {
            status: answer.status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }
}

fn merge(unprocessed: &mut Map<String, Value>, held_back: Map<String, Value>) {
    for (table, held) in held_back {
        match (unprocessed.get_mut(&table), held) {
            (Some(Value::Array(requests)), Value::Array(held)) => requests.extend(held),
            (Some(Value::Object(wanted)), Value::Object(mut held)) => {
                let held_keys = held.remove("Keys");
                if let (Some(Value::Array(keys)), Some(Value::Array(held_keys))) = (wanted.get_mut("Keys"), held_keys) {
                    keys.extend(held_keys);
                }
            }
            (_, held) => {
                unprocessed.insert(table, held);
            }
        }
    }
}

/// `ProvisionedThroughputExceededException`, with the reason DynamoDB
/// gives a hot partition (`TableWriteKeyRangeThroughputExceeded` and the
/// like) and the table's or index's ARN when the meter knows it.
fn throughput_exceeded(shared: &Shared, limiter: &Limiter, partition: &Partition, direction: Direction) -> Answer {
    let (what, limit) = match direction {
        Direction::Read => ("Read", limiter.limits().read_units_per_second),
        Direction::Write => ("Write", limiter.limits().write_units_per_second),
    };
    let resource = if partition.index.is_some() { "Index" } else { "Table" };
    let mut reason = json!({"reason": format!("{resource}{what}KeyRangeThroughputExceeded")});
    let schema = shared.schemas().get(&partition.table).cloned();
    let arn = match &partition.index {
        Some(index) => schema.and_then(|schema| schema.index(index).and_then(|index| index.arn.clone())),
        None => schema.and_then(|schema| schema.arn.clone()),
    };
    if let (Some(arn), Some(reason)) = (arn, reason.as_object_mut()) {
        reason.insert("resource".to_owned(), Value::String(arn));
    }
    let on = match &partition.index {
        Some(index) => format!("index {index} of table {}", partition.table),
        None => format!("table {}", partition.table),
    };
    let message = format!(
        "{THROTTLED} The partition key value {} of {on} took more than {limit} {} units a second (a partition's \
         limit); spread the load over more partition key values.",
        partition.key,
        what.to_lowercase(),
    );
    refusal(json!({
        "__type": format!("{ERROR_NAMESPACE}#ProvisionedThroughputExceededException"),
        "message": message,
        "ThrottlingReasons": [reason],
    }))
}

/// `TransactionCanceledException` with a `ThrottlingError` for each item in
/// debt and `None` for the others, in the order of the request's items.
fn transaction_canceled(flags: &[bool]) -> Answer {
    let codes: Vec<&str> = flags
        .iter()
        .map(|debt| if *debt { "ThrottlingError" } else { "None" })
        .collect();
    let reasons: Vec<Value> = codes
        .iter()
        .map(|code| match *code {
            "None" => json!({"Code": "None"}),
            code => json!({
                "Code": code,
                "Message": format!(
                    "{THROTTLED} This item's partition key value took more than a partition's limit; spread the \
                     load over more partition key values."
                ),
            }),
        })
        .collect();
    refusal(json!({
        "__type": format!("{ERROR_NAMESPACE}#TransactionCanceledException"),
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    }))
}

/// A 400 with `body`, as DynamoDB answers an error.
fn refusal(body: Value) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(JSON_CONTENT_TYPE));
    let request_id: String = (0..52).map(|_| fastrand::alphanumeric().to_ascii_uppercase()).collect();
    if let Ok(request_id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", request_id);
    }
    Answer {
        status: StatusCode::BAD_REQUEST,
        headers,
        body: Bytes::from(body.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn items_held_back_join_those_the_upstream_left_unprocessed() {
        let mut unprocessed = map(json!({
            "a": [{"PutRequest": {"Item": {"id": {"S": "1"}}}}],
            "k": {"Keys": [{"id": {"S": "1"}}], "ConsistentRead": true},
        }));
        merge(
            &mut unprocessed,
            map(json!({
                "a": [{"PutRequest": {"Item": {"id": {"S": "2"}}}}],
                "b": [{"DeleteRequest": {"Key": {"id": {"S": "3"}}}}],
                "k": {"Keys": [{"id": {"S": "2"}}], "ConsistentRead": true},
            })),
        );
        assert_eq!(
            Value::Object(unprocessed),
            json!({
                "a": [
                    {"PutRequest": {"Item": {"id": {"S": "1"}}}},
                    {"PutRequest": {"Item": {"id": {"S": "2"}}}},
                ],
                "b": [{"DeleteRequest": {"Key": {"id": {"S": "3"}}}}],
                "k": {"Keys": [{"id": {"S": "1"}}, {"id": {"S": "2"}}], "ConsistentRead": true},
            })
        );
    }

    #[test]
    fn a_transaction_names_the_reason_of_each_item_in_order() {
        let answer = transaction_canceled(&[false, true]);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let body = answer.json().unwrap_or_default();
        assert_eq!(
            body["__type"],
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
        );
        assert_eq!(body["CancellationReasons"][0], json!({"Code": "None"}));
        assert_eq!(body["CancellationReasons"][1]["Code"], "ThrottlingError");
        assert!(body["Message"]
            .as_str()
            .is_some_and(|message| message.ends_with("[None, ThrottlingError]")));
    }
}
