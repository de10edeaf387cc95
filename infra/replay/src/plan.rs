//! What a queue message stands for: a poison record's item (from the report,
//! or read from the table when the report carried only keys), or the
//! `INSERT`s of a batch Lambda gave up on, read back from the stream.

use airwave_shared::failures::{PoisonRecord, POISON_RECORD_KIND};
use serde_json::Value;

use crate::item::{item_from_json, item_from_stream};
use crate::stream::{read_stream, table_of_stream};
use crate::{Clients, Item, Kind, ReplayOptions};

/// What a queue message is, a line about it, and the items to write back
/// (or why there are none).
pub(crate) async fn plan(
    clients: &Clients,
    options: &ReplayOptions,
    body: &str,
) -> (Kind, String, Result<Vec<Item>, String>) {
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(error) => {
            return (
                Kind::Unknown,
                "a message that is not JSON".to_owned(),
                Err(format!(
                    "not a poison record nor Lambda's on-failure record: not JSON ({error})"
                )),
            )
        }
    };
    if value.get("kind").and_then(Value::as_str) == Some(POISON_RECORD_KIND) {
        return plan_poison_record(clients, options, value).await;
    }
    if let Some(info) = value.get("DDBStreamBatchInfo") {
        let condition = value
            .pointer("/requestContext/condition")
            .and_then(Value::as_str)
            .unwrap_or("unknown condition");
        return plan_lambda_batch(clients, options, info, condition).await;
    }
    (
        Kind::Unknown,
        "a message of unknown shape".to_owned(),
        Err(format!(
            "not a poison record (\"kind\": \"{POISON_RECORD_KIND}\") nor Lambda's on-failure record (DDBStreamBatchInfo)"
        )),
    )
}

async fn plan_poison_record(
    clients: &Clients,
    options: &ReplayOptions,
    value: Value,
) -> (Kind, String, Result<Vec<Item>, String>) {
    let kind = Kind::PoisonRecord;
    let record: PoisonRecord = match serde_json::from_value(value) {
        Ok(record) => record,
        Err(error) => {
            return (
                kind,
                "a poison record".to_owned(),
                Err(format!("the poison record does not decode: {error}")),
            )
        }
    };
    let summary = format!(
        "{} gave up on message {} (sequence number {}): {}",
        record.function,
        record.message_id.as_deref().unwrap_or("without an id"),
        record.sequence_number.as_deref().unwrap_or("unknown"),
        record.reason
    );
    let table = record
        .record
        .get("eventSourceARN")
        .and_then(Value::as_str)
        .and_then(table_of_stream);
    if let Some(table) = table.filter(|table| *table != options.messages_table) {
        return (
            kind,
            summary,
            Err(format!(
                "a record of table {table}'s stream, not of the messages table {}",
                options.messages_table
            )),
        );
    }
    let change = record.record.get("dynamodb");
    if let Some(image) = change.and_then(|change| change.get("NewImage")) {
        let items = item_from_json(image)
            .map(|item| vec![item])
            .map_err(|error| format!("its NewImage cannot be read: {error}"));
        return (kind, summary, items);
    }
    let Some(keys) = change.and_then(|change| change.get("Keys")) else {
        return (
            kind,
            summary,
            Err("the report carries neither the item (NewImage) nor its keys".to_owned()),
        );
    };
    let items = match item_from_json(keys) {
        Ok(key) => current_item(&clients.dynamodb, &options.messages_table, key).await,
        Err(error) => Err(format!("its Keys cannot be read: {error}")),
    };
    (kind, summary, items)
}

/// The item as the table holds it now, for a report that carried only keys.
async fn current_item(dynamodb: &aws_sdk_dynamodb::Client, table: &str, key: Item) -> Result<Vec<Item>, String> {
    let found = dynamodb
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|error| {
            format!(
                "reading the item (the report carries only its keys) failed: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(error)
            )
        })?;
    match found.item {
        Some(item) => Ok(vec![item]),
        None => Err("the report carries only the item's keys, and the item is no longer in the table".to_owned()),
    }
}

async fn plan_lambda_batch(
    clients: &Clients,
    options: &ReplayOptions,
    info: &Value,
    condition: &str,
) -> (Kind, String, Result<Vec<Item>, String>) {
    let kind = Kind::LambdaBatch;
    let field = |name: &str| info.get(name).and_then(Value::as_str).filter(|value| !value.is_empty());
    let (Some(shard_id), Some(start), Some(end), Some(stream_arn)) = (
        field("shardId"),
        field("startSequenceNumber"),
        field("endSequenceNumber"),
        field("streamArn"),
    ) else {
        return (
            kind,
            "a batch Lambda gave up on".to_owned(),
            Err("DDBStreamBatchInfo lacks shardId, startSequenceNumber, endSequenceNumber or streamArn".to_owned()),
        );
    };
    let size = info.get("batchSize").and_then(Value::as_u64).unwrap_or_default();
    let summary = format!("Lambda gave up on {size} records of shard {shard_id}, {start} to {end} ({condition})");
    match table_of_stream(stream_arn) {
        Some(table) if table == options.messages_table => {}
        Some(table) => {
            return (
                kind,
                summary,
                Err(format!(
                    "a batch of table {table}'s stream, not of the messages table {}: not replayed (for the \
                     connections table, the reaper's batch: see the README)",
                    options.messages_table
                )),
            )
        }
        None => return (kind, summary, Err(format!("streamArn {stream_arn} names no table"))),
    }
    let records = match read_stream(&clients.streams, stream_arn, shard_id, start, end).await {
        Ok(records) => records,
        Err(reason) => return (kind, summary, Err(reason)),
    };
    let mut items = Vec::new();
    for record in &records {
        let inserted = record.event_name().map(|name| name.as_str()) == Some("INSERT");
        let Some(image) = record
            .dynamodb()
            .and_then(|change| change.new_image())
            .filter(|_| inserted)
        else {
            continue;
        };
        match item_from_stream(image) {
            Ok(item) => items.push(item),
            Err(error) => {
                return (
                    kind,
                    summary,
                    Err(format!("a NewImage of the batch cannot be read: {error}")),
                )
            }
        }
    }
    if items.is_empty() {
        return (
            kind,
            summary,
            Err(format!("the stream holds no INSERT from {start} to {end}")),
        );
    }
    (kind, summary, Ok(items))
}
