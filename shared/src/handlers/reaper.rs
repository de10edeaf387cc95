use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::{sequence_number, stream_records};

use crate::connection::ConnectionRecord;
use crate::store::AdmissionStore;
use crate::telemetry::metric;
use crate::time::epoch_seconds_now;
use crate::Error;

/// The principal DynamoDB's TTL deletes carry in a stream record.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// Reaper: gives back the cap slots of connection records that DynamoDB's TTL
/// deleted, fed by the connections table's stream (old images).
///
/// Every other way a record goes away gives its slots back in the same
/// transaction, so only TTL deletes are handled here; the event source mapping
/// filters on them and this checks again. A record that cannot be decoded is
/// logged and skipped; a store failure stops the batch at that record and
/// reports it in `batchItemFailures`, and a redelivered record is a no-op.
pub async fn handle_expired_connections<S: AdmissionStore>(
    store: &S,
    event: LambdaEvent<Value>,
) -> Result<DynamoDbEventResponse, Error> {
    let span = tracing::info_span!("reaper_batch", request_id = %event.context.request_id);
    async {
        let records = stream_records(event.payload)?;
        let mut response = DynamoDbEventResponse::default();
        let mut released = 0u64;
        for raw in records {
            let sequence_number = sequence_number(&raw);
            let span = tracing::info_span!(
                "reaper_record",
                sequence_number = sequence_number.as_deref().unwrap_or("<missing>"),
            );
            match release(store, raw).instrument(span).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(error = %error, "releasing slots failed; the record will be retried");
                    let Some(sequence_number) = sequence_number else {
                        return Err(error);
                    };
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(sequence_number);
                    response.batch_item_failures.push(failure);
                    break;
                }
            }
        }
        tracing::info!(released, "reaper batch finished");
        metrics::counter!(metric::SLOTS_RECLAIMED).increment(released);
        Ok(response)
    }
    .instrument(span)
    .await
}

/// The connection record a raw stream record of the connections table
/// deleted, if DynamoDB's TTL deleted it; `None` (logged when it is because
/// the record cannot be decoded) for anything else.
pub fn decode_expired_connection(raw: Value) -> Option<ConnectionRecord> {
    let record: EventRecord = match serde_json::from_value(raw) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %error, "skipping a stream record that cannot be decoded");
            return None;
        }
    };
    let deleted_by_ttl = record.event_name == "REMOVE"
        && record
            .user_identity
            .as_ref()
            .is_some_and(|identity| identity.principal_id == TTL_PRINCIPAL);
    if !deleted_by_ttl {
        tracing::debug!(event_name = %record.event_name, "ignoring a change that is not a TTL delete");
        return None;
    }
    match serde_dynamo::from_item(record.change.old_image) {
        Ok(connection) => Some(connection),
        Err(error) => {
            tracing::error!(
                event_id = %record.event_id,
                error = %error,
                "skipping a deleted connection whose old image cannot be decoded"
            );
            None
        }
    }
}

/// Answers whether slots were given back; `Err` only for a store failure.
async fn release<S: AdmissionStore>(store: &S, raw: Value) -> Result<bool, Error> {
    let Some(connection) = decode_expired_connection(raw) else {
        return Ok(false);
    };
    let released = store.release_slots_of_deleted(&connection, epoch_seconds_now()).await?;
    if released {
        tracing::info!(
            connection_id = %connection.connection_id,
            expires_at = connection.expires_at,
            "released the slots of a connection deleted by its TTL"
        );
    }
    Ok(released)
}
