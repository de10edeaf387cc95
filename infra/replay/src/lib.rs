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
//!
//! The parts: `plan` reads a queue message and finds the items it stands
//! for; `stream` reads a batch back from its stream; `write_back` writes an
//! item so the stream carries it again; `item` converts items between
//! DynamoDB JSON, the streams SDK and the DynamoDB SDK.

mod item;
mod plan;
mod stream;
mod write_back;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use plan::plan;
use write_back::write_back;

pub use item::{item_from_json, item_from_stream};
pub use stream::table_of_stream;

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
