//! Settling a metered request once answered: what it consumed, from the
//! plan and the items as they are after it.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::item_size::item_size;

use super::plan::{Get, Plan, WriteKind};
use super::pricing::{read_blocks, read_rate, size_of, write_units, Charges};
use super::proxy::{Answer, Outcome};
use super::upstream::{call, get_item, shape, MeterError};
use super::{Item, Shared};

pub(super) async fn settle(
    shared: &Shared,
    credentials: &HeaderMap,
    plan: Plan,
    answer: &Answer,
) -> Result<Charges, MeterError> {
    let mut charges = Charges::default();
    let outcome = answer.outcome();
    match plan {
        Plan::Writes { writes, transaction } => {
            let rate = if transaction { 2 } else { 1 };
            match outcome {
                Outcome::Success => {
                    let unprocessed = unprocessed(answer, "UnprocessedItems", |requests| requests.as_array());
                    for write in writes {
                        if let Some(request) = &write.batch_request {
                            if unprocessed.contains(&(write.table.clone(), request.clone())) {
                                continue;
                            }
                        }
                        let before = write.before.as_ref();
                        let after = match write.kind {
                            WriteKind::Put | WriteKind::Update => {
                                get_item(shared, credentials, &write.table, &write.key).await?
                            }
                            WriteKind::Delete => None,
                            WriteKind::Check => write.before.clone(),
                        };
                        let size = size_of(before).max(size_of(after.as_ref()));
                        let index = match write.kind {
                            WriteKind::Check => 0,
                            _ => write.schema.index_write_units(before, after.as_ref()),
                        };
                        charges.write(&write.table, write.partition.as_ref(), rate * write_units(size), index);
                    }
                }
                // A failed condition still costs the existing item's size,
                // or one unit for an absent one.
                Outcome::ConditionFailed => {
                    for write in &writes {
                        let units = write_units(size_of(write.before.as_ref()));
                        charges.write(&write.table, write.partition.as_ref(), units, 0);
                    }
                }
                // What a cancelled transaction consumes is not documented.
                // DynamoDB writes every item of a transaction twice, once to
                // prepare and once to commit; a cancelled one is counted as
                // having prepared every item (sized like a failed
                // conditional write) and committed none, with no index
                // writes.
                Outcome::TransactionCanceled => {
                    for write in &writes {
                        let units = write_units(size_of(write.before.as_ref()));
                        charges.write(&write.table, write.partition.as_ref(), units, 0);
                    }
                }
                Outcome::Refused => {}
            }
        }
        Plan::Gets {
            gets,
            answered_whole,
            transaction,
        } => {
            let rate = |get: &Get| if transaction { 2.0 } else { read_rate(get.consistent) };
            match outcome {
                Outcome::Success => {
                    let unprocessed = unprocessed(answer, "UnprocessedKeys", |request| {
                        request.get("Keys").and_then(Value::as_array)
                    });
                    for get in gets {
                        if unprocessed.contains(&(get.table.clone(), Value::Object(get.key.clone()))) {
                            continue;
                        }
                        let size = if answered_whole {
                            answer
                                .json()
                                .and_then(|body| body.get("Item").and_then(Value::as_object).map(item_size))
                                .unwrap_or(0)
                        } else {
                            size_of(get_item(shared, credentials, &get.table, &get.key).await?.as_ref())
                        };
                        charges.read(
                            &get.table,
                            get.partition.as_ref(),
                            read_blocks(size) as f64 * rate(&get),
                        );
                    }
                }
                // As for writes: the prepare half of every read.
                Outcome::TransactionCanceled if transaction => {
                    for get in gets {
                        let size = size_of(get_item(shared, credentials, &get.table, &get.key).await?.as_ref());
                        charges.read(&get.table, get.partition.as_ref(), read_blocks(size) as f64);
                    }
                }
                _ => {}
            }
        }
        Plan::Evaluates {
            operation,
            table,
            consistent,
            sizing,
            fetches,
            partition,
        } => {
            if matches!(outcome, Outcome::Success) {
                let evaluated = call(shared, credentials, operation, &sizing).await?;
                let items: Vec<&Item> = evaluated
                    .get("Items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .collect();
                let total: usize = items.iter().map(|item| item_size(item)).sum();
                let mut blocks = read_blocks(total);
                if let Some(schema) = fetches {
                    for entry in &items {
                        let key = schema
                            .key_of(entry)
                            .ok_or_else(|| shape("an index entry without the table's key"))?;
                        blocks += read_blocks(size_of(get_item(shared, credentials, &table, &key).await?.as_ref()));
                    }
                }
                charges.read(&table, partition.as_ref(), blocks as f64 * read_rate(consistent));
            }
        }
    }
    Ok(charges)
}

/// The `(table, request)` pairs a batch answer leaves unprocessed.
pub(super) fn unprocessed(
    answer: &Answer,
    field: &str,
    list: impl Fn(&Value) -> Option<&Vec<Value>>,
) -> Vec<(String, Value)> {
    let Some(body) = answer.json() else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (table, requests) in body.get(field).and_then(Value::as_object).into_iter().flatten() {
        for request in list(requests).into_iter().flatten() {
            pairs.push((table.clone(), request.clone()));
        }
    }
    pairs
}
