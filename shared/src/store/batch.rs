//! DynamoDB's batch calls, with what every caller needs around them: the
//! per-request key limits, and the items DynamoDB leaves unprocessed when it
//! throttles, which are sent again with backoff (a batch is not atomic, and
//! never fails as a whole for a throttle). The callers make the calls
//! themselves, each naming its own table, which is what the template's
//! grants are checked against.

use std::future::Future;

use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};

use super::{conflict_backoff, Item};
use crate::Error;

/// Keys per `BatchGetItem`, DynamoDB's limit.
pub(crate) const BATCH_GET_KEYS: usize = 100;
/// Items per `BatchWriteItem`, DynamoDB's limit.
pub(crate) const BATCH_WRITE_ITEMS: usize = 25;
/// Tries at what a batch left unprocessed (throttled), with the full-jitter
/// backoff of [`conflict_backoff`] between them: at most about 1.3 s of
/// pauses in all.
const BATCH_ATTEMPTS: u32 = 8;

/// What a consistent batch read asks for besides the keys.
pub(crate) struct Projection<'a> {
    /// A projection expression, its names written `#name`.
    pub expression: &'a str,
    /// Each `#name` of `expression` and the attribute it stands for.
    pub names: &'a [(&'a str, &'a str)],
}

impl Projection<'_> {
    /// A consistent read of `keys` with this projection.
    pub fn read_request(&self, table: &str, keys: Vec<Item>) -> Result<KeysAndAttributes, Error> {
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression(self.expression);
        for (name, attribute) in self.names {
            request = request.expression_attribute_names(*name, *attribute);
        }
        request.build().map_err(|error| Error::DynamoDb {
            operation: "BatchGetItem",
            table: table.to_owned(),
            message: error.to_string(),
        })
    }
}

/// One `BatchGetItem`'s answer for one table.
pub(crate) struct BatchRead {
    pub found: Vec<Item>,
    pub unprocessed: Vec<Item>,
}

impl BatchRead {
    pub fn from_output(output: BatchGetItemOutput, table: &str) -> Self {
        BatchRead {
            found: output
                .responses
                .and_then(|mut responses| responses.remove(table))
                .unwrap_or_default(),
            unprocessed: output
                .unprocessed_keys
                .and_then(|mut unprocessed| unprocessed.remove(table))
                .map(|left| left.keys)
                .unwrap_or_default(),
        }
    }
}

/// What one `BatchWriteItem` left unprocessed in `table`.
pub(crate) fn unprocessed_writes(output: BatchWriteItemOutput, table: &str) -> Vec<WriteRequest> {
    output
        .unprocessed_items
        .and_then(|mut unprocessed| unprocessed.remove(table))
        .unwrap_or_default()
}

/// Put requests for `items`.
pub(crate) fn puts(table: &str, items: Vec<Item>) -> Result<Vec<WriteRequest>, Error> {
    items
        .into_iter()
        .map(|item| {
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map(|put| WriteRequest::builder().put_request(put).build())
                .map_err(|error| Error::DynamoDb {
                    operation: "BatchWriteItem",
                    table: table.to_owned(),
                    message: error.to_string(),
                })
        })
        .collect()
}

fn unprocessed(table: &str, operation: &'static str, left: usize) -> Error {
    Error::DynamoDb {
        operation,
        table: table.to_owned(),
        message: format!("{left} items still unprocessed after {BATCH_ATTEMPTS} attempts"),
    }
}

/// Consistent reads of `keys` of `table` with `projection`: `send` makes one
/// `BatchGetItem` (the caller names its table, which is what the template's
/// grants are checked against), 100 keys a request, one request after
/// another; the items found, in no order.
pub(crate) async fn read_projected<F, Fut, E>(
    table: &str,
    keys: Vec<Item>,
    projection: &Projection<'_>,
    send: F,
) -> Result<Vec<Item>, Error>
where
    F: Fn(KeysAndAttributes) -> Fut,
    Fut: Future<Output = Result<BatchGetItemOutput, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    read_in_batches(table, keys, |keys| async {
        let request = projection.read_request(table, keys)?;
        let output = send(request)
            .await
            .map_err(|error| Error::dynamodb("BatchGetItem", table, error))?;
        Ok(BatchRead::from_output(output, table))
    })
    .await
}

/// Reads `keys` of `table` with `read` (one `BatchGetItem`), 100 keys a
/// request, one request after another; the items found, in no order.
async fn read_in_batches<F, Fut>(table: &str, keys: Vec<Item>, read: F) -> Result<Vec<Item>, Error>
where
    F: Fn(Vec<Item>) -> Fut,
    Fut: Future<Output = Result<BatchRead, Error>>,
{
    let mut found = Vec::new();
    for chunk in keys.chunks(BATCH_GET_KEYS) {
        let mut keys = chunk.to_vec();
        for attempt in 0..BATCH_ATTEMPTS {
            let answer = read(std::mem::take(&mut keys)).await?;
            found.extend(answer.found);
            keys = answer.unprocessed;
            if keys.is_empty() || attempt + 1 == BATCH_ATTEMPTS {
                break;
            }
            conflict_backoff(attempt).await;
        }
        if !keys.is_empty() {
            return Err(unprocessed(table, "BatchGetItem", keys.len()));
        }
    }
    Ok(found)
}

/// Writes `requests` to `table` with `write` (one `BatchWriteItem`, answering
/// what it left unprocessed), 25 a request, every request at once.
pub(crate) async fn write_in_batches<F, Fut>(table: &str, requests: Vec<WriteRequest>, write: F) -> Result<(), Error>
where
    F: Fn(Vec<WriteRequest>) -> Fut,
    Fut: Future<Output = Result<Vec<WriteRequest>, Error>>,
{
    let chunks = requests.chunks(BATCH_WRITE_ITEMS).map(|chunk| {
        let write = &write;
        let mut left = chunk.to_vec();
        async move {
            for attempt in 0..BATCH_ATTEMPTS {
                left = write(std::mem::take(&mut left)).await?;
                if left.is_empty() {
                    return Ok(());
                }
                if attempt + 1 < BATCH_ATTEMPTS {
                    conflict_backoff(attempt).await;
                }
            }
            Err(unprocessed(table, "BatchWriteItem", left.len()))
        }
    });
    futures::future::try_join_all(chunks).await?;
    Ok(())
}
