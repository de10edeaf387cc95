use airwave_protocol::ErrorCode;
use aws_lambda_events::dynamodb::EventRecord;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::{sequence_number, stream_records, sweep_expired_connections};

use crate::closer::Closer;
use crate::connection::ConnectionRecord;
use crate::store::{AdmissionStore, ConnectionStore, SubscriptionStore};
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::Error;

/// The principal DynamoDB's TTL deletes carry in a stream record.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// What a connection whose record was removed behind Airwave's back is told
/// in its `closing` frame before its socket is closed.
pub const RECORD_REMOVED_MESSAGE: &str = "this connection's record was removed; reconnect";

/// How long a removal's leftover subscriptions may take to go before they
/// count as orphans: Airwave's own removals delete them within milliseconds
/// of the record.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection record the connections table's stream says was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedConnection {
    pub record: ConnectionRecord,
    /// Deleted by DynamoDB's TTL, not by a request.
    pub by_ttl: bool,
}

/// What the reaper did with one removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaped {
    Nothing,
    /// A TTL delete's cap slots were given back.
    SlotsReleased,
    /// A record removed some other way left subscriptions: they were
    /// deleted and the socket closed.
    OrphanClosed,
}

/// Reaper: follows the deletes of the connections table's stream (old images).
///
/// - **TTL deletes** give back the record's cap slots. Every other way
///   Airwave removes a record gives them back in the same transaction.
/// - **Any other delete of a record with channels** (an operator's delete, a
///   removal cut short after the record went) is checked for subscription
///   items left behind. Airwave's own removals delete them right after the
///   record, so there are normally none and the check costs only reads. If
///   some are left, they are deleted, and the socket gets a `closing` frame
///   (`unknown_connection`) and is closed, so that its client reconnects and
///   recovers what it missed. The stream's batching window bounds how long
///   that takes (see the README's guarantees).
///
/// A record that cannot be decoded is logged and skipped; a store failure
/// stops the batch at that record and reports it in `batchItemFailures`; a
/// redelivered record is a no-op.
pub async fn handle_connection_removals<S: AdmissionStore + SubscriptionStore + Clocked>(
    store: &S,
    closer: Option<&Closer>,
    event: LambdaEvent<Value>,
) -> Result<DynamoDbEventResponse, Error> {
    let span = tracing::info_span!("reaper_batch", request_id = %event.context.request_id);
    async {
        let records = stream_records(event.payload)?;
        let mut response = DynamoDbEventResponse::default();
        let (mut released, mut closed) = (0u64, 0u64);
        for raw in records {
            let sequence_number = sequence_number(&raw);
            let span = tracing::info_span!(
                "reaper_record",
                sequence_number = sequence_number.as_deref().unwrap_or("<missing>"),
            );
            match reap(store, closer, raw).instrument(span).await {
                Ok(Reaped::SlotsReleased) => released += 1,
                Ok(Reaped::OrphanClosed) => closed += 1,
                Ok(Reaped::Nothing) => {}
                Err(error) => {
                    tracing::error!(error = %error, "reaping a removed connection failed; the record will be retried");
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
        tracing::info!(released, closed, "reaper batch finished");
        metrics::counter!(metric::SLOTS_RECLAIMED).increment(released);
        metrics::counter!(metric::ORPHANS_CLOSED).increment(closed);
        Ok(response)
    }
    .instrument(span)
    .await
}

/// The reaper's two inputs: the connections table's stream (`Records`), and
/// the schedule that runs the sweep (EventBridge's `Scheduled Event`).
/// Anything else is refused with what was expected.
pub async fn handle_reaper_event<S: AdmissionStore + SubscriptionStore + ConnectionStore + Clocked>(
    store: &S,
    closer: Option<&Closer>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let scheduled = event.payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if scheduled {
        let span = tracing::info_span!("sweep", request_id = %event.context.request_id);
        // Stop listing 10 s before Lambda's deadline, so the run ends cleanly.
        let stop_listing_at = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .ok()
            .map(|left| std::time::Instant::now() + left.saturating_sub(std::time::Duration::from_secs(10)));
        let report = sweep_expired_connections(store, closer, store.clock().epoch_seconds(), stop_listing_at)
            .instrument(span)
            .await?;
        return Ok(serde_json::to_value(report).unwrap_or_default());
    }
    if event.payload.get("Records").is_none() {
        return Err(Error::EventField {
            field: "Records (a DynamoDB stream event) or detail-type \"Scheduled Event\"".into(),
        });
    }
    let response = handle_connection_removals(store, closer, event).await?;
    Ok(serde_json::to_value(response)?)
}

/// The connection record a raw stream record of the connections table
/// deleted; `None` (logged when it is because the record cannot be decoded)
/// for anything that is not a delete.
pub fn decode_removed_connection(raw: Value) -> Option<RemovedConnection> {
    let record: EventRecord = match serde_json::from_value(raw) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %error, "skipping a stream record that cannot be decoded");
            return None;
        }
    };
    if record.event_name != "REMOVE" {
        tracing::debug!(event_name = %record.event_name, "ignoring a change that is not a delete");
        return None;
    }
    let by_ttl = record
        .user_identity
        .as_ref()
        .is_some_and(|identity| identity.principal_id == TTL_PRINCIPAL);
    match serde_dynamo::from_item(record.change.old_image) {
        Ok(connection) => Some(RemovedConnection {
            record: connection,
            by_ttl,
        }),
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

/// `Err` only for a store failure.
async fn reap<S: AdmissionStore + SubscriptionStore + Clocked>(
    store: &S,
    closer: Option<&Closer>,
    raw: Value,
) -> Result<Reaped, Error> {
    let Some(RemovedConnection { record, by_ttl }) = decode_removed_connection(raw) else {
        return Ok(Reaped::Nothing);
    };
    if by_ttl {
        let released = store
            .release_slots_of_deleted(&record, store.clock().epoch_seconds())
            .await?;
        if !released {
            return Ok(Reaped::Nothing);
        }
        tracing::info!(
            connection_id = %record.connection_id,
            expires_at = record.expires_at,
            "released the slots of a connection deleted by its TTL"
        );
        return Ok(Reaped::SlotsReleased);
    }
    if record.channels.is_empty() {
        // Nothing can reach a connection without a record or a subscription.
        return Ok(Reaped::Nothing);
    }
    // Airwave's own removals delete the record, then its subscriptions: a
    // check that lands in between sees leftovers that are about to go, and
    // must not close the socket in the middle of that removal (with the
    // wrong reason). Leftovers still there after a grace are orphans.
    if store.leftover_subscriptions(&record).await?.is_empty() {
        return Ok(Reaped::Nothing);
    }
    store.clock().sleep(ORPHAN_GRACE).await;
    let leftover = store.remove_leftover_subscriptions(&record).await?;
    if leftover.is_empty() {
        return Ok(Reaped::Nothing);
    }
    tracing::warn!(
        connection_id = %record.connection_id,
        channels = leftover.len(),
        "a connection record was removed behind Airwave's back; removed its subscriptions and closing its socket"
    );
    if let Some(closer) = closer {
        // The subscriptions are gone, so nothing more reaches the socket
        // either way: a failed close is logged, not retried.
        if let Err(error) = closer
            .close(
                &record.connection_id,
                &[],
                ErrorCode::UnknownConnection,
                RECORD_REMOVED_MESSAGE,
            )
            .await
        {
            tracing::error!(connection_id = %record.connection_id, error = %error, "could not close the socket of a removed connection");
        }
    }
    Ok(Reaped::OrphanClosed)
}
