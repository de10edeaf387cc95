use std::time::{Duration, Instant};

use airwave_protocol::MessageFrame;
use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::{sequence_number, stream_records};

use crate::coalesce::coalesce_for_api_gateway;
use crate::config::HistorySettings;
use crate::failures::{FailureSink, PoisonRecord};
use crate::fanout::FanOut;
use crate::history::ChannelHistory;
use crate::message::{Audience, MessageRecord};
use crate::store::{ConnectionStore, MessageStore, SubscriptionStore};
use crate::telemetry::metric;
use crate::time::epoch_millis_now;
use crate::Error;

/// What became of one stream record before its broadcast.
enum Prepared {
    /// Ready to send: decoded, with its position if it has one.
    Message(Box<ReadyMessage>),
    /// Deliberately not sent (not an INSERT).
    Done,
    /// Can never succeed (undecodable, oversized, a key DynamoDB refuses):
    /// reported once to the failure queue and skipped, because retrying it
    /// would only block the shard behind it.
    Poison { reason: String, message_id: Option<String> },
    /// Could succeed later (for example no position could be taken): Lambda
    /// must retry it.
    Retry,
}

struct ReadyMessage {
    record: MessageRecord,
    frame: MessageFrame,
}

/// Consecutive messages of a batch with the same audience: one listing of
/// their targets, and as few frames as API Gateway's message size allows.
struct Run {
    /// Where Lambda resumes if the run must be sent again.
    first_sequence_number: Option<String>,
    messages: Vec<ReadyMessage>,
}

impl Run {
    fn audience(&self) -> Option<Audience<'_>> {
        self.messages.first().and_then(|first| first.record.audience().ok())
    }
}

/// Stream-processor: broadcasts every message inserted into the messages table.
///
/// The event is decoded record by record, not as a whole, so one malformed
/// record cannot fail the batch. Records are handled in stream order, and
/// consecutive ones for the same audience are sent together: one listing of
/// the targets and, for each target, frames that hold several messages. At
/// the first record that must be retried the handler stops and reports its
/// sequence number (or that of the first record of its run) in
/// `batchItemFailures`: Lambda resumes the shard from there, so going on
/// would only deliver the later records twice and out of order.
///
/// A channel message first gets its position in the channel (see
/// [`crate::history`]); a retried record keeps the position it got before.
/// No post is started within [`FanOut::deadline_reserve`] of the
/// invocation's deadline: the records not yet sent are reported for retry
/// instead of the whole batch timing out and coming back.
pub async fn handle_stream_batch<
    S: ConnectionStore + SubscriptionStore + MessageStore + ChannelHistory,
    F: FailureSink,
>(
    store: &S,
    history: &HistorySettings,
    fanout: &FanOut,
    failures: &F,
    event: LambdaEvent<Value>,
) -> Result<DynamoDbEventResponse, Error> {
    let span = tracing::info_span!("stream_batch", request_id = %event.context.request_id);
    let stop_starting_at = stop_starting_at(event.context.deadline, fanout.deadline_reserve());
    async {
        let records = stream_records(event.payload)?;
        let total = records.len();
        let mut poison = 0usize;
        let mut run: Option<Run> = None;
        let mut sent = Sent::default();
        let mut retry_at: Option<Option<String>> = None;
        for raw in records {
            let sequence_number = sequence_number(&raw);
            let span = tracing::info_span!(
                "stream_record",
                sequence_number = sequence_number.as_deref().unwrap_or("<missing>"),
            );
            if crate::fanout::has_passed(stop_starting_at) {
                let _entered = span.enter();
                tracing::warn!("stopping before the invocation's deadline; the rest of the batch will be retried");
                retry_at = Some(sequence_number);
                break;
            }
            let ready = match prepare_record(store, history, &raw).instrument(span.clone()).await {
                Prepared::Message(ready) => ready,
                Prepared::Done => continue,
                Prepared::Poison { reason, message_id } => {
                    let report = PoisonRecord::new(
                        "stream-processor",
                        reason,
                        message_id,
                        sequence_number.clone(),
                        raw,
                    );
                    match failures.report_poison(&report).instrument(span).await {
                        Ok(()) => {
                            poison += 1;
                            continue;
                        }
                        // Never a silent drop: unreported, it is retried.
                        Err(error) => {
                            tracing::error!(error = %error, message_id = report.message_id.as_deref().unwrap_or_default(), "could not report a poison record; it will be retried");
                            retry_at = Some(sequence_number);
                            break;
                        }
                    }
                }
                Prepared::Retry => {
                    retry_at = Some(sequence_number);
                    break;
                }
            };
            let same_audience = run
                .as_ref()
                .and_then(Run::audience)
                .is_some_and(|audience| ready.record.audience().ok() == Some(audience));
            if !same_audience {
                if let Some(finished) = run.take() {
                    if let Err(first) = send_run(store, fanout, finished, stop_starting_at, &mut sent).await {
                        retry_at = Some(first);
                        break;
                    }
                }
            }
            run.get_or_insert_with(|| Run {
                first_sequence_number: sequence_number,
                messages: Vec::new(),
            })
            .messages
            .push(*ready);
        }
        // A record to retry comes after the run still open: the run is sent
        // first, or retried from its own first record.
        if let Some(finished) = run.take() {
            if let Err(first) = send_run(store, fanout, finished, stop_starting_at, &mut sent).await {
                retry_at = Some(first);
            }
        }
        let mut response = DynamoDbEventResponse::default();
        if let Some(sequence_number) = retry_at {
            let Some(sequence_number) = sequence_number else {
                // Without a sequence number Lambda cannot resume at this
                // record, so the whole batch has to be retried.
                return Err(Error::EventField {
                    field: "dynamodb.SequenceNumber of a record that must be retried".into(),
                });
            };
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            response.batch_item_failures.push(failure);
        }
        tracing::info!(
            records = total,
            poison,
            broadcasts = sent.broadcasts,
            messages_sent = sent.messages,
            retried = response.batch_item_failures.len(),
            "stream batch finished"
        );
        metrics::counter!(metric::STREAM_RECORDS_POISON).increment(poison as u64);
        metrics::counter!(metric::STREAM_RECORDS_RETRIED).increment(response.batch_item_failures.len() as u64);
        Ok(response)
    }
    .instrument(span)
    .await
}

/// Items a producer wrote without `expires_at` get the default retention once
/// sent, so the messages table never keeps them forever. A failure is logged
/// with the message id and not retried: the message was delivered, and
/// retrying the record would only send it again.
async fn apply_retention<S: MessageStore>(store: &S, run: &Run) {
    let now = crate::time::epoch_seconds_now();
    for ready in run.messages.iter().filter(|ready| ready.record.expires_at.is_none()) {
        let message_id = ready.record.message_id.as_str();
        match store.apply_message_retention(message_id, now).await {
            Ok(true) => metrics::counter!(metric::MESSAGES_RETENTION_APPLIED).increment(1),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                message_id,
                error = %error,
                "could not give a message item its retention; it stays until deleted"
            ),
        }
    }
}

/// When to stop starting posts, from the invocation's deadline (epoch
/// milliseconds; zero when the runtime gave none). A deadline already past on
/// arrival is not Lambda's (local emulators send a fixed one): it would make
/// every record look too late, so it is ignored.
fn stop_starting_at(deadline_ms: u64, reserve: Duration) -> Option<Instant> {
    let now_ms = epoch_millis_now().max(0) as u64;
    if deadline_ms == 0 {
        return None;
    }
    if deadline_ms <= now_ms {
        tracing::warn!(deadline_ms, "ignoring an invocation deadline that has already passed");
        return None;
    }
    let left = Duration::from_millis(deadline_ms - now_ms);
    Some(Instant::now() + left.saturating_sub(reserve))
}

/// What a batch sent, for its log line.
#[derive(Default)]
struct Sent {
    broadcasts: usize,
    messages: usize,
}

/// Broadcasts one run; on failure answers where Lambda must resume.
async fn send_run<S: ConnectionStore + SubscriptionStore + MessageStore>(
    store: &S,
    fanout: &FanOut,
    run: Run,
    stop_starting_at: Option<Instant>,
    sent: &mut Sent,
) -> Result<(), Option<String>> {
    let Some(audience) = run.audience() else {
        return Ok(());
    };
    let messages: Vec<MessageFrame> = run.messages.iter().map(|ready| ready.frame.clone()).collect();
    let frames = coalesce_for_api_gateway(&messages);
    let first_id = run
        .messages
        .first()
        .map(|ready| ready.record.message_id.as_str())
        .unwrap_or_default();
    let last_id = run
        .messages
        .last()
        .map(|ready| ready.record.message_id.as_str())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "broadcast",
        first_message_id = first_id,
        last_message_id = last_id,
        messages = messages.len(),
        frames = frames.len(),
    );
    let broadcast = fanout
        .broadcast_frames(store, audience, &frames, stop_starting_at)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match broadcast {
        Ok(report) if report.skipped > 0 => {
            tracing::warn!(
                skipped = report.skipped,
                "the circuit breaker stopped the broadcast; its records will be retried"
            );
            Err(run.first_sequence_number)
        }
        Ok(report) if report.incomplete() => {
            tracing::warn!(
                delivered = report.delivered,
                "the invocation's deadline stopped the broadcast; its records will be retried"
            );
            Err(run.first_sequence_number)
        }
        Ok(report) => {
            sent.broadcasts += 1;
            sent.messages += messages.len();
            apply_retention(store, &run).await;
            tracing::info!(
                channel = run.messages[0].record.channel.as_deref().unwrap_or_default(),
                to_user = run.messages[0].record.to_user.as_deref().unwrap_or_default(),
                delivered = report.delivered,
                failed = report.failed,
                posts = report.posts,
                "messages broadcast"
            );
            Ok(())
        }
        Err(error) => {
            tracing::error!(error = %error, "broadcast failed; its records will be retried");
            Err(run.first_sequence_number)
        }
    }
}

/// What a raw stream record of the messages table is.
#[derive(Debug)]
pub enum DecodedMessage {
    /// A new message that can be sent.
    Message(Box<MessageRecord>),
    /// Not a new message (a TTL delete, an update): nothing to send.
    NotNew,
    /// Can never be sent (undecodable, no valid audience, an invalid channel,
    /// too large); logged with its id and why.
    Poison { reason: String, message_id: Option<String> },
}

fn poison(reason: impl Into<String>, message_id: Option<&str>) -> DecodedMessage {
    DecodedMessage::Poison {
        reason: reason.into(),
        message_id: message_id.map(str::to_owned),
    }
}

/// Decodes one raw record as the stream-processor does before anything is
/// written, logging why a record is skipped.
pub fn decode_message_record(raw: &Value) -> DecodedMessage {
    let record = match EventRecord::deserialize(raw) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %error, "skipping a stream record that cannot be decoded");
            return poison(format!("the stream record cannot be decoded: {error}"), None);
        }
    };
    if record.event_name != "INSERT" {
        tracing::debug!(event_name = %record.event_name, "ignoring a change that is not a new message");
        return DecodedMessage::NotNew;
    }
    let message: MessageRecord = match serde_dynamo::from_item(record.change.new_image) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(
                event_id = %record.event_id,
                error = %error,
                "skipping a message item that cannot be decoded (it needs message_id and payload)"
            );
            return poison(
                format!("the message item cannot be decoded (it needs message_id and payload): {error}"),
                None,
            );
        }
    };
    if let Err(reason) = message.audience() {
        tracing::error!(message_id = %message.message_id, reason, "skipping a message with no valid audience");
        return poison(reason, Some(&message.message_id));
    }
    if let Some(Err(error)) = message.channel.as_deref().map(crate::channel::validate_channel_name) {
        // No client can subscribe to it, and DynamoDB would refuse to query it:
        // retrying would only block the shard.
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message for an invalid channel");
        return poison(error.to_string(), Some(&message.message_id));
    }
    // Checked before a position is taken, so no offset is spent on a message
    // that can never be sent (and recovery never replays one).
    if let Err(error) = message.check_frame_size() {
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message that cannot be sent");
        return poison(error.to_string(), Some(&message.message_id));
    }
    DecodedMessage::Message(Box::new(message))
}

async fn prepare_record<S: ChannelHistory>(store: &S, history: &HistorySettings, raw: &Value) -> Prepared {
    let message = match decode_message_record(raw) {
        DecodedMessage::Message(message) => *message,
        DecodedMessage::NotNew => return Prepared::Done,
        DecodedMessage::Poison { reason, message_id } => return Prepared::Poison { reason, message_id },
    };
    let position = match message.channel.as_deref() {
        Some(channel) if history.enabled() => {
            let now = crate::time::epoch_seconds_now();
            match store.assign_position(channel, &message, history.ttl_seconds, now).await {
                Ok(position) => {
                    metrics::counter!(metric::POSITIONS_ASSIGNED).increment(1);
                    Some(position)
                }
                // Retrying only helps a transient failure: one DynamoDB will
                // refuse every time is reported, not retried for an hour.
                Err(error) if error.is_permanent() => {
                    tracing::error!(message_id = %message.message_id, error = %error, "no position can ever be assigned; reporting the record");
                    return Prepared::Poison {
                        reason: error.to_string(),
                        message_id: Some(message.message_id),
                    };
                }
                Err(error) => {
                    tracing::error!(message_id = %message.message_id, error = %error, "no position could be assigned; the record will be retried");
                    return Prepared::Retry;
                }
            }
        }
        _ => None,
    };
    let frame = message.frame(position);
    Prepared::Message(Box::new(ReadyMessage { record: message, frame }))
}
