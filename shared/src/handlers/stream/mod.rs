use std::time::{Duration, Instant};

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::{sequence_number, stream_records};

use crate::config::HistorySettings;
use crate::failures::FailureSink;
use crate::fanout::FanOut;
use crate::history::ChannelHistory;
use crate::store::{ConnectionStore, MessageStore, SubscriptionStore};
use crate::telemetry::metric;
use crate::time::{epoch_millis_now, Clocked};
use crate::Error;

mod decode;
mod run;

pub use decode::{decode_message_record, DecodedMessage};
use run::{report_poison, Pending, Run, Sender, Sent};

/// Stream-processor: broadcasts every message inserted into the messages table.
///
/// The event is decoded record by record, not as a whole, so one malformed
/// record cannot fail the batch. Records are handled in stream order, and
/// consecutive ones for the same audience form a run: for a channel, one
/// update of its head gives the whole run its positions (see
/// [`crate::history`]) while the first page of its subscribers is read;
/// then one listing of the targets and, for each target, frames that hold
/// several messages. A retried record keeps the position it got before.
///
/// At the first record that must be retried the handler stops and reports
/// its sequence number (or that of the first record of its run) in
/// `batchItemFailures`: Lambda resumes the shard from there, so going on
/// would only deliver the later records twice and out of order. A record
/// that can never succeed is reported once to the failure queue and skipped.
/// No post is started within [`FanOut::deadline_reserve`] of the
/// invocation's deadline: the records not yet sent are reported for retry
/// instead of the whole batch timing out and coming back.
pub async fn handle_stream_batch<
    S: ConnectionStore + SubscriptionStore + MessageStore + ChannelHistory + Clocked,
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
    let sender = Sender {
        store,
        history,
        fanout,
        failures,
        stop_starting_at,
    };
    async {
        let records = stream_records(event.payload)?;
        let total = records.len();
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
            let decoded = {
                let _entered = span.enter();
                decode_message_record(&raw)
            };
            let record = match decoded {
                DecodedMessage::Message(record) => *record,
                DecodedMessage::NotNew => continue,
                DecodedMessage::Poison { reason, message_id } => {
                    let reported = report_poison(failures, reason, message_id, sequence_number.clone(), raw)
                        .instrument(span)
                        .await;
                    if reported.is_err() {
                        retry_at = Some(sequence_number);
                        break;
                    }
                    sent.poison += 1;
                    continue;
                }
            };
            let same_audience = run
                .as_ref()
                .and_then(Run::audience)
                .is_some_and(|audience| record.audience().ok() == Some(audience));
            if !same_audience {
                if let Some(finished) = run.take() {
                    if let Err(first) = sender.send_run(finished, &mut sent).await {
                        retry_at = Some(first);
                        break;
                    }
                }
            }
            run.get_or_insert_with(|| Run {
                first_sequence_number: sequence_number.clone(),
                messages: Vec::new(),
            })
            .messages
            .push(Pending {
                record,
                sequence_number,
                raw,
            });
        }
        // A record to retry comes after the run still open: the run is sent
        // first, or retried from its own first record.
        if let Some(finished) = run.take() {
            if let Err(first) = sender.send_run(finished, &mut sent).await {
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
            poison = sent.poison,
            broadcasts = sent.broadcasts,
            messages_sent = sent.messages,
            retried = response.batch_item_failures.len(),
            "stream batch finished"
        );
        metrics::counter!(metric::STREAM_RECORDS_POISON).increment(sent.poison as u64);
        metrics::counter!(metric::STREAM_RECORDS_RETRIED).increment(response.batch_item_failures.len() as u64);
        Ok(response)
    }
    .instrument(span)
    .await
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
