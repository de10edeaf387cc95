use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::{sequence_number, stream_records};

use crate::config::HistorySettings;
use crate::fanout::FanOut;
use crate::history::ChannelHistory;
use crate::message::MessageRecord;
use crate::store::ConnectionStore;
use crate::telemetry::metric;
use crate::time::epoch_millis_now;

/// Time kept back before the invocation's deadline: a record is only started
/// with at least this much left, since a broadcast to thousands of connections
/// takes seconds.
pub const DEADLINE_RESERVE_MS: u64 = 20_000;
use crate::Error;

/// What became of one stream record.
enum RecordOutcome {
    /// Broadcast, or deliberately not (not an INSERT).
    Done,
    /// Can never succeed (undecodable, oversized): logged and skipped, because
    /// retrying it would only block the shard behind it.
    Poison,
    /// Could succeed later (for example the listing failed): Lambda must retry it.
    Retry,
}

/// Stream-processor: broadcasts every message inserted into the messages table.
///
/// The event is decoded record by record, not as a whole, so one malformed
/// record cannot fail the batch. Records are handled in stream order; at the
/// first one that must be retried the handler stops and reports its sequence
/// number in `batchItemFailures`: Lambda resumes the shard from there, so
/// going on would only deliver the later records twice and out of order.
///
/// A channel message first gets its position in the channel (see
/// [`crate::history`]); a retried record keeps the position it got before.
pub async fn handle_stream_batch<S: ConnectionStore + ChannelHistory>(
    store: &S,
    history: &HistorySettings,
    fanout: &FanOut,
    event: LambdaEvent<Value>,
) -> Result<DynamoDbEventResponse, Error> {
    let span = tracing::info_span!("stream_batch", request_id = %event.context.request_id);
    // Zero when the runtime gave none. A deadline already past on arrival is
    // not Lambda's (local emulators send a fixed one): it would make every
    // record look too late, so it is ignored.
    let deadline_ms = match event.context.deadline {
        deadline if deadline > 0 && deadline <= epoch_millis_now().max(0) as u64 => {
            tracing::warn!(
                deadline_ms = deadline,
                "ignoring an invocation deadline that has already passed"
            );
            0
        }
        deadline => deadline,
    };
    async {
        let records = stream_records(event.payload)?;
        let mut response = DynamoDbEventResponse::default();
        let total = records.len();
        let mut poison = 0usize;
        for raw in records {
            let sequence_number = sequence_number(&raw);
            let span = tracing::info_span!(
                "stream_record",
                sequence_number = sequence_number.as_deref().unwrap_or("<missing>"),
            );
            let near_deadline =
                deadline_ms > 0 && (epoch_millis_now().max(0) as u64) + DEADLINE_RESERVE_MS >= deadline_ms;
            let outcome = if near_deadline {
                let _entered = span.enter();
                tracing::warn!("stopping before the invocation's deadline; the rest of the batch will be retried");
                RecordOutcome::Retry
            } else {
                handle_record(store, history, fanout, raw).instrument(span).await
            };
            match outcome {
                RecordOutcome::Done => {}
                RecordOutcome::Poison => poison += 1,
                RecordOutcome::Retry => {
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
                    break;
                }
            }
        }
        tracing::info!(
            records = total,
            poison,
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

async fn handle_record<S: ConnectionStore + ChannelHistory>(
    store: &S,
    history: &HistorySettings,
    fanout: &FanOut,
    raw: Value,
) -> RecordOutcome {
    let record: EventRecord = match serde_json::from_value(raw) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %error, "skipping a stream record that cannot be decoded");
            return RecordOutcome::Poison;
        }
    };
    if record.event_name != "INSERT" {
        tracing::debug!(event_name = %record.event_name, "ignoring a change that is not a new message");
        return RecordOutcome::Done;
    }
    let message: MessageRecord = match serde_dynamo::from_item(record.change.new_image) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(
                event_id = %record.event_id,
                error = %error,
                "skipping a message item that cannot be decoded (it needs message_id and payload)"
            );
            return RecordOutcome::Poison;
        }
    };
    let audience = match message.audience() {
        Ok(audience) => audience,
        Err(reason) => {
            tracing::error!(message_id = %message.message_id, reason, "skipping a message with no valid audience");
            return RecordOutcome::Poison;
        }
    };
    if let Some(Err(error)) = message.channel.as_deref().map(crate::channel::validate_channel_name) {
        // No client can subscribe to it, and DynamoDB would refuse to query it:
        // retrying would only block the shard.
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message for an invalid channel");
        return RecordOutcome::Poison;
    }
    // Checked before a position is taken, so no offset is spent on a message
    // that can never be sent (and recovery never replays one).
    if let Err(error) = message.check_frame_size() {
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message that cannot be sent");
        return RecordOutcome::Poison;
    }
    let position = match message.channel.as_deref() {
        Some(channel) if history.enabled() => {
            let now = crate::time::epoch_seconds_now();
            match store.assign_position(channel, &message, history.ttl_seconds, now).await {
                Ok(position) => {
                    metrics::counter!(metric::POSITIONS_ASSIGNED).increment(1);
                    Some(position)
                }
                Err(error) => {
                    tracing::error!(message_id = %message.message_id, error = %error, "no position could be assigned; the record will be retried");
                    return RecordOutcome::Retry;
                }
            }
        }
        _ => None,
    };
    let offset = position.as_ref().map(|position| position.offset);
    let frame = match message.to_frame(position) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::error!(message_id = %message.message_id, error = %error, "skipping a message that cannot be sent");
            return RecordOutcome::Poison;
        }
    };
    match fanout.broadcast(store, audience, &frame).await {
        Ok(report) if report.skipped > 0 => {
            tracing::warn!(
                message_id = %message.message_id,
                skipped = report.skipped,
                "the circuit breaker stopped the broadcast; the record will be retried"
            );
            RecordOutcome::Retry
        }
        Ok(report) => {
            tracing::info!(
                message_id = %message.message_id,
                channel = message.channel.as_deref().unwrap_or_default(),
                to_user = message.to_user.as_deref().unwrap_or_default(),
                offset,
                delivered = report.delivered,
                failed = report.failed,
                "message broadcast"
            );
            RecordOutcome::Done
        }
        Err(error) => {
            tracing::error!(message_id = %message.message_id, error = %error, "broadcast failed; the record will be retried");
            RecordOutcome::Retry
        }
    }
}
