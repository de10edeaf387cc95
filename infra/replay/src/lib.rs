//! Replays the stream failure queue into the messages table, once an operator
//! has fixed what made its records fail.
//!
//! The queue holds two kinds of messages:
//!
//! - **poison records** (`"kind": "airwave.poison_record"`, see
//!   [`airwave_shared::failures::PoisonRecord`]): a record the stream-processor
//!   gave up on at once. The item to write back is the stream record's
//!   `dynamodb.NewImage`; a report too large for the queue carries only the
//!   keys, and the item is then read from the table.
//! - **Lambda's on-failure records** (`DDBStreamBatchInfo`): a batch a stream
//!   mapping gave up on (too old, or out of retries). The records are read back
//!   from the stream (`GetShardIterator` `AT_SEQUENCE_NUMBER` on the shard, then
//!   `GetRecords` up to `endSequenceNumber`) and the `NewImage` of every
//!   `INSERT` among them is written back. DynamoDB Streams keeps records 24
//!   hours: an older batch cannot be read any more, and says so. A batch of
//!   another table's stream (the reaper's, on the connections table) is not
//!   replayed: it is listed and stays.
//!
//! Writing an item back is a delete, then a put: the messages mapping only
//! passes `INSERT`s to the stream-processor, and a put over an existing item
//! is a `MODIFY`. The delete only removes the stored copy of that very message
//! (every attribute of the image equal, `expires_at` aside, which the
//! stream-processor sets), and the put only writes where no item is, so a
//! producer that reused the message id, before or during the replay, keeps
//! its message. The stream-processor claims a channel message's position on
//! its item; the put carries that claim over from the deleted copy, so a
//! replayed channel message keeps the position it had.
//!
//! A queue message is deleted only once all of its items were written back;
//! anything else stays in the queue (visible again at the end of the run) and
//! is listed with the reason.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use airwave_shared::failures::{PoisonRecord, POISON_RECORD_KIND};
use airwave_shared::history::CLAIM_ATTRIBUTES;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use base64::Engine;
use serde_json::Value;

/// An item as the SDK writes it.
pub type Item = HashMap<String, AttributeValue>;

/// What stops a replay as a whole (the queue cannot be read); a queue message
/// that cannot be replayed is not an error but an [`Outcome::Kept`].
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("SQS {operation} on {queue} failed: {message}")]
    Sqs {
        operation: &'static str,
        queue: String,
        message: String,
    },
    #[error("invalid option: {0}")]
    Options(String),
}

/// The clients a replay uses; one endpoint override serves all three.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
}

impl Clients {
    pub fn new(sdk_config: &aws_config::SdkConfig) -> Self {
        Clients {
            sqs: aws_sdk_sqs::Client::new(sdk_config),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk_config),
            streams: aws_sdk_dynamodbstreams::Client::new(sdk_config),
        }
    }
}

/// What a replay reads and where it writes.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub queue_url: String,
    pub messages_table: String,
    /// List what would be replayed; write and delete nothing.
    pub dry_run: bool,
    /// Handle at most this many queue messages.
    pub max: Option<usize>,
    /// How long one receive waits for messages (SQS long polling, at most
    /// 20 s); the replay ends at the first receive that gets none.
    pub wait: Duration,
    /// How long a received message stays hidden from other readers while the
    /// run lasts; the messages that stay are made visible again at its end.
    pub visibility_timeout: Duration,
}

impl ReplayOptions {
    pub fn new(queue_url: &str, messages_table: &str) -> Self {
        ReplayOptions {
            queue_url: queue_url.to_owned(),
            messages_table: messages_table.to_owned(),
            dry_run: false,
            max: None,
            wait: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(300),
        }
    }
}

/// What a queue message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A record the stream-processor reported as poison.
    PoisonRecord,
    /// Lambda's description of a batch a stream mapping gave up on.
    LambdaBatch,
    /// Neither: not replayable.
    Unknown,
}

/// What became of a queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its items were written back and it was deleted from the queue.
    Replayed,
    /// A dry run: its items would be written back.
    WouldReplay,
    /// It stays in the queue, for this reason.
    Kept(String),
}

/// One queue message handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub queue_message_id: String,
    pub kind: Kind,
    /// What it describes, for people.
    pub summary: String,
    /// The message ids written back (in a dry run: that would be).
    pub message_ids: Vec<String>,
    pub outcome: Outcome,
}

/// Every queue message a replay handled, in the order it got them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: Vec<Entry>,
}

impl Report {
    /// The messages that stay in the queue.
    pub fn kept(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|entry| matches!(entry.outcome, Outcome::Kept(_)))
    }
}

/// Reads the queue until it is empty (or `max` messages were handled) and
/// replays what it can; see the module documentation.
pub async fn replay(clients: &Clients, options: &ReplayOptions) -> Result<Report, ReplayError> {
    if options.wait > Duration::from_secs(20) {
        return Err(ReplayError::Options("SQS waits at most 20 s for messages".into()));
    }
    let mut report = Report::default();
    let mut seen = HashSet::new();
    // Receipt handles of the messages that stay: visible again at the end.
    let mut release = Vec::new();
    let outcome = receive_and_replay(clients, options, &mut report, &mut seen, &mut release).await;
    for receipt in release {
        let visible = clients
            .sqs
            .change_message_visibility()
            .queue_url(&options.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
        if let Err(error) = visible {
            // It becomes visible anyway once its visibility timeout passes.
            tracing::warn!(
                queue = %options.queue_url,
                error = %aws_sdk_sqs::error::DisplayErrorContext(error),
                "a message that stays could not be made visible again at once"
            );
        }
    }
    outcome.map(|()| report)
}

async fn receive_and_replay(
    clients: &Clients,
    options: &ReplayOptions,
    report: &mut Report,
    seen: &mut HashSet<String>,
    release: &mut Vec<String>,
) -> Result<(), ReplayError> {
    loop {
        let remaining = options.max.map(|max| max.saturating_sub(report.entries.len()));
        if remaining == Some(0) {
            return Ok(());
        }
        let wanted = remaining.unwrap_or(10).min(10) as i32;
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&options.queue_url)
            .max_number_of_messages(wanted)
            .visibility_timeout(options.visibility_timeout.as_secs().min(43_200) as i32)
            .wait_time_seconds(options.wait.as_secs() as i32)
            .send()
            .await
            .map_err(|error| ReplayError::Sqs {
                operation: "ReceiveMessage",
                queue: options.queue_url.clone(),
                message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
            })?;
        let messages = received.messages();
        if messages.is_empty() {
            return Ok(());
        }
        let mut came_back = false;
        for message in messages {
            let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
                continue;
            };
            let id = message.message_id().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) {
                // Handled earlier in this run and visible again: the run took
                // longer than the visibility timeout. Stop rather than loop.
                came_back = true;
                release.push(receipt);
                continue;
            }
            let mut entry = replay_one(clients, options, &id, message.body().unwrap_or_default()).await;
            match entry.outcome {
                Outcome::Replayed => {
                    let deleted = clients
                        .sqs
                        .delete_message()
                        .queue_url(&options.queue_url)
                        .receipt_handle(&receipt)
                        .send()
                        .await;
                    if let Err(error) = deleted {
                        entry.outcome = Outcome::Kept(format!(
                            "written back, but not deleted from the queue ({}); a second replay writes it back again, \
                             and clients drop the copy by its id",
                            aws_sdk_sqs::error::DisplayErrorContext(error)
                        ));
                        release.push(receipt);
                    }
                }
                Outcome::WouldReplay | Outcome::Kept(_) => release.push(receipt),
            }
            tracing::info!(
                queue_message_id = %entry.queue_message_id,
                kind = ?entry.kind,
                outcome = ?entry.outcome,
                "queue message handled"
            );
            report.entries.push(entry);
        }
        if came_back {
            return Ok(());
        }
    }
}

/// Handles one queue message: what it is, and what was (or would be) done.
async fn replay_one(clients: &Clients, options: &ReplayOptions, queue_message_id: &str, body: &str) -> Entry {
    let (kind, summary, items) = plan(clients, options, body).await;
    let mut entry = Entry {
        queue_message_id: queue_message_id.to_owned(),
        kind,
        summary,
        message_ids: Vec::new(),
        outcome: Outcome::Replayed,
    };
    let items = match items {
        Ok(items) => items,
        Err(reason) => {
            entry.outcome = Outcome::Kept(reason);
            return entry;
        }
    };
    if options.dry_run {
        entry.message_ids = items.iter().map(message_id_of).collect();
        entry.outcome = Outcome::WouldReplay;
        return entry;
    }
    for item in &items {
        match write_back(&clients.dynamodb, &options.messages_table, item).await {
            Ok(message_id) => entry.message_ids.push(message_id),
            Err(reason) => {
                let done = if entry.message_ids.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} written back before it: {})",
                        entry.message_ids.len(),
                        entry.message_ids.join(", ")
                    )
                };
                entry.outcome = Outcome::Kept(format!("{reason}{done}"));
                return entry;
            }
        }
    }
    entry
}

fn message_id_of(item: &Item) -> String {
    match item.get("message_id") {
        Some(AttributeValue::S(id)) => id.clone(),
        _ => "(no message_id)".to_owned(),
    }
}

/// What a queue message is, a line about it, and the items to write back
/// (or why there are none).
async fn plan(clients: &Clients, options: &ReplayOptions, body: &str) -> (Kind, String, Result<Vec<Item>, String>) {
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

/// The records of one shard from `start` to `end` (sequence numbers), in order.
async fn read_stream(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
    start: &str,
    end: &str,
) -> Result<Vec<Record>, String> {
    const GONE: &str = "the stream no longer holds these records (DynamoDB Streams keeps them 24 hours)";
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(start)
        .send()
        .await
        .map_err(|error| {
            let gone = error.as_service_error().is_some_and(|service_error| {
                service_error.is_trimmed_data_access_exception() || service_error.is_resource_not_found_exception()
            });
            let detail = aws_sdk_dynamodbstreams::error::DisplayErrorContext(error);
            if gone {
                format!("{GONE}: {detail}")
            } else {
                format!("GetShardIterator failed: {detail}")
            }
        })?;
    let mut iterator = iterator.shard_iterator().map(str::to_owned);
    let mut records = Vec::new();
    let mut empty_pages = 0;
    while let Some(current) = iterator.take() {
        let page = streams
            .get_records()
            .shard_iterator(current)
            .limit(1_000)
            .send()
            .await
            .map_err(|error| {
                let trimmed = error
                    .as_service_error()
                    .is_some_and(|service_error| service_error.is_trimmed_data_access_exception());
                let detail = aws_sdk_dynamodbstreams::error::DisplayErrorContext(error);
                if trimmed {
                    format!("{GONE}: {detail}")
                } else {
                    format!("GetRecords failed: {detail}")
                }
            })?;
        // An open shard answers empty pages once it is read to its end.
        empty_pages = if page.records().is_empty() { empty_pages + 1 } else { 0 };
        for record in page.records() {
            let sequence = record
                .dynamodb()
                .and_then(|change| change.sequence_number())
                .unwrap_or_default();
            if sequence_order(sequence, end) == std::cmp::Ordering::Greater {
                return check_range(records, start, end);
            }
            records.push(record.clone());
        }
        if empty_pages >= 3 {
            break;
        }
        iterator = page.next_shard_iterator().map(str::to_owned);
    }
    check_range(records, start, end)
}

/// The batch is whole: its first and last records are among those read.
fn check_range(records: Vec<Record>, start: &str, end: &str) -> Result<Vec<Record>, String> {
    let sequence = |record: Option<&Record>| {
        record
            .and_then(|record| record.dynamodb())
            .and_then(|change| change.sequence_number())
            .map(str::to_owned)
    };
    if sequence(records.first()).as_deref() != Some(start) {
        return Err(format!("the stream no longer holds record {start}, the batch's first"));
    }
    if sequence(records.last()).as_deref() != Some(end) {
        return Err(format!(
            "the stream holds the batch's records only up to {}, not to {end}",
            sequence(records.last()).unwrap_or_default()
        ));
    }
    Ok(records)
}

/// Sequence numbers are decimal numbers of up to 40 digits.
fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The table a stream ARN belongs to: `arn:aws:dynamodb:{region}:{account}:table/{name}/stream/{label}`.
pub fn table_of_stream(stream_arn: &str) -> Option<&str> {
    let (_, rest) = stream_arn.split_once(":table/")?;
    let (table, _) = rest.split_once("/stream/")?;
    (!table.is_empty()).then_some(table)
}

/// Writes a message item back so the stream carries a new `INSERT` of it;
/// answers its message id, or why it was not written.
async fn write_back(dynamodb: &aws_sdk_dynamodb::Client, table: &str, item: &Item) -> Result<String, String> {
    let Some(AttributeValue::S(message_id)) = item.get("message_id") else {
        return Err("the item has no message_id".to_owned());
    };
    // The stored copy of this very message, whatever expiry the
    // stream-processor gave it, is removed; another message under the same
    // id is not.
    let mut names = HashMap::from([("#id".to_owned(), "message_id".to_owned())]);
    let mut values = HashMap::new();
    let mut same = Vec::new();
    let set_by_the_stream_processor = |name: &str| name == "expires_at" || CLAIM_ATTRIBUTES.contains(&name);
    for (index, (name, value)) in item
        .iter()
        .filter(|(name, _)| !set_by_the_stream_processor(name))
        .enumerate()
    {
        names.insert(format!("#a{index}"), name.clone());
        values.insert(format!(":v{index}"), value.clone());
        same.push(format!("#a{index} = :v{index}"));
    }
    let deleted = dynamodb
        .delete_item()
        .table_name(table)
        .key("message_id", AttributeValue::S(message_id.clone()))
        .condition_expression(format!("attribute_not_exists(#id) OR ({})", same.join(" AND ")))
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await;
    let deleted = match deleted {
        Ok(deleted) => deleted,
        Err(error) => {
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_conditional_check_failed_exception())
            {
                return Err(format!(
                    "the table holds another message under id {message_id} (a producer reused it); left as it is"
                ));
            }
            return Err(format!(
                "DeleteItem of {message_id} failed: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(error)
            ));
        }
    };
    // The position it was given goes back with it, and the retention the
    // stream-processor gave it along with the claim (a message that keeps
    // its claim is not given one again).
    let mut item = item.clone();
    let old = deleted.attributes.unwrap_or_default();
    for name in CLAIM_ATTRIBUTES.iter().copied().chain(["expires_at"]) {
        if let (Some(value), false) = (old.get(name), item.contains_key(name)) {
            item.insert(name.to_owned(), value.clone());
        }
    }
    let put = dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#id)")
        .expression_attribute_names("#id", "message_id")
        .send()
        .await;
    match put {
        Ok(_) => Ok(message_id.clone()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_conditional_check_failed_exception()) =>
        {
            Err(format!(
                "a producer wrote message {message_id} while it was being replayed; that write was kept"
            ))
        }
        Err(error) => Err(format!(
            "PutItem of {message_id} failed after its stored copy was removed ({}); replay again to write it",
            aws_sdk_dynamodb::error::DisplayErrorContext(error)
        )),
    }
}

/// An item in DynamoDB JSON, as Lambda's stream events carry it
/// (`{"message_id": {"S": "m-1"}, ...}`, binary values in base64).
pub fn item_from_json(value: &Value) -> Result<Item, String> {
    value
        .as_object()
        .ok_or_else(|| "an item is a JSON object".to_owned())?
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                attribute_from_json(value).map_err(|e| format!("{name}: {e}"))?,
            ))
        })
        .collect()
}

fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    let object = value.as_object().filter(|object| object.len() == 1);
    let Some((tag, inner)) = object.and_then(|object| object.iter().next()) else {
        return Err(format!("{value} is not one typed value such as {{\"S\": \"text\"}}"));
    };
    let text = |inner: &Value| {
        inner
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{tag} takes a string"))
    };
    let texts = |inner: &Value| {
        inner
            .as_array()
            .ok_or_else(|| format!("{tag} takes a list of strings"))?
            .iter()
            .map(text)
            .collect::<Result<Vec<_>, _>>()
    };
    let blob = |inner: &Value| {
        let encoded = text(inner)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(aws_sdk_dynamodb::primitives::Blob::new)
            .map_err(|error| format!("{tag} is not base64: {error}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(text(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "SS" => AttributeValue::Ss(texts(inner)?),
        "NS" => AttributeValue::Ns(texts(inner)?),
        "BS" => AttributeValue::Bs(
            inner
                .as_array()
                .ok_or_else(|| "BS takes a list".to_owned())?
                .iter()
                .map(blob)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(|| "L takes a list".to_owned())?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "NULL" => AttributeValue::Null(inner.as_bool().ok_or("NULL takes a boolean")?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL takes a boolean")?),
        other => return Err(format!("unknown type {other}")),
    })
}

/// An item as DynamoDB Streams' `GetRecords` answers it.
pub fn item_from_stream(
    image: &HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> Result<Item, String> {
    image
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                attribute_from_stream(value).map_err(|e| format!("{name}: {e}"))?,
            ))
        })
        .collect()
}

fn attribute_from_stream(value: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Result<AttributeValue, String> {
    use aws_sdk_dynamodbstreams::types::AttributeValue as Stream;
    let blob = |blob: &aws_sdk_dynamodbstreams::primitives::Blob| {
        aws_sdk_dynamodb::primitives::Blob::new(blob.as_ref().to_vec())
    };
    Ok(match value {
        Stream::S(text) => AttributeValue::S(text.clone()),
        Stream::N(number) => AttributeValue::N(number.clone()),
        Stream::B(bytes) => AttributeValue::B(blob(bytes)),
        Stream::Ss(texts) => AttributeValue::Ss(texts.clone()),
        Stream::Ns(numbers) => AttributeValue::Ns(numbers.clone()),
        Stream::Bs(blobs) => AttributeValue::Bs(blobs.iter().map(blob).collect()),
        Stream::M(map) => AttributeValue::M(item_from_stream(map)?),
        Stream::L(list) => AttributeValue::L(list.iter().map(attribute_from_stream).collect::<Result<_, _>>()?),
        Stream::Null(null) => AttributeValue::Null(*null),
        Stream::Bool(value) => AttributeValue::Bool(*value),
        _ => return Err("a type this SDK does not know".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_arns_name_their_table() {
        assert_eq!(
            table_of_stream(
                "arn:aws:dynamodb:us-east-1:123456789012:table/airwave-messages/stream/2026-11-22T20:15:44.317"
            ),
            Some("airwave-messages")
        );
        assert_eq!(table_of_stream("arn:aws:sqs:us-east-1:123456789012:queue"), None);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering;
        assert_eq!(sequence_order("900", "1000"), Ordering::Less);
        assert_eq!(sequence_order("1000", "1000"), Ordering::Equal);
        assert_eq!(
            sequence_order("49000000000000000000000000001", "4900000000000000000000000000"),
            Ordering::Greater
        );
    }

    #[test]
    fn dynamodb_json_becomes_attribute_values() {
        let item = item_from_json(&json!({
            "message_id": {"S": "m-1"},
            "payload": {"M": {"price": {"N": "12.5"}, "tags": {"L": [{"S": "a"}, {"BOOL": true}, {"NULL": true}]}}},
            "raw": {"B": "AQI="},
        }))
        .unwrap();
        assert_eq!(item["message_id"], AttributeValue::S("m-1".into()));
        assert_eq!(
            item["raw"],
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![1, 2]))
        );
        let AttributeValue::M(payload) = &item["payload"] else {
            panic!("payload is a map")
        };
        assert_eq!(payload["price"], AttributeValue::N("12.5".into()));
        assert!(item_from_json(&json!({"x": {"S": 1}})).is_err());
        assert!(item_from_json(&json!({"x": {"Q": "1"}})).is_err());
        assert!(item_from_json(&json!({"x": "plain"})).is_err());
    }
}
