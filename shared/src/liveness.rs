//! Asking API Gateway which holders of a full cap are still connected.
//!
//! Nothing refreshes a record while its connection lives (a ping never
//! reaches a function), so a `$disconnect` that never arrived would hold its
//! slot until the record's expiry, up to two hours. When a cap is full, the
//! oldest holders of that cap are checked with `GET @connections/{id}`; each
//! one API Gateway answers 410 for is removed the way a `$disconnect` would
//! remove it, and its slot goes back. This costs nothing while caps have room.

use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::admission::Slot;
use crate::closer::Closer;
use crate::store::{number, read_number, ConnectionStore, DynamoStore};
use crate::Error;

/// Holders checked per full cap and connect: a user cap is usually smaller,
/// and a total or per-IP cap full of dead connections frees ten per connect.
pub const LIVENESS_CHECKS: i32 = 10;

/// One holder of a slot, from the cap's sparse index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub connection_id: String,
    pub connected_at_ms: i64,
}

pub trait SlotHolders: Send + Sync {
    /// Up to `limit` unexpired holders of `slot`, soonest expiry first (the
    /// oldest, since every record's expiry is set once at `$connect`, except
    /// those whose token ends first).
    fn oldest_holders(
        &self,
        slot: &Slot,
        now_epoch_seconds: i64,
        limit: i32,
    ) -> impl Future<Output = Result<Vec<Holder>, Error>> + Send;
}

impl SlotHolders for DynamoStore {
    async fn oldest_holders(&self, slot: &Slot, now_epoch_seconds: i64, limit: i32) -> Result<Vec<Holder>, Error> {
        let table = self.connections_table();
        let output = self
            .client
            .query()
            .table_name(table)
            .index_name(slot.scope.index_name())
            .key_condition_expression("#slot = :counter AND expires_at > :now")
            .expression_attribute_names("#slot", slot.scope.record_attribute())
            .expression_attribute_values(":counter", AttributeValue::S(slot.counter_key.clone()))
            .expression_attribute_values(":now", number(now_epoch_seconds))
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|error| Error::dynamodb("Query", table, error))?;
        let mut holders = Vec::new();
        for item in output.items.unwrap_or_default() {
            let Some(AttributeValue::S(connection_id)) = item.get("connection_id") else {
                tracing::error!(counter = %slot.counter_key, "skipping an index item without a connection id");
                continue;
            };
            holders.push(Holder {
                connection_id: connection_id.clone(),
                connected_at_ms: read_number(&item, "connected_at_ms").unwrap_or(0),
            });
        }
        Ok(holders)
    }
}

/// Removes the holders of `slot` that API Gateway says are gone, and answers
/// how many slots went back. A holder younger than `connecting_window` is
/// left alone: API Gateway answers 410 while a handshake is still in
/// progress too. A check that fails (throttled, forbidden) releases nothing
/// and is logged; the caller then refuses as it would have.
pub async fn release_gone_holders<S: SlotHolders + ConnectionStore>(
    store: &S,
    closer: &Closer,
    slot: &Slot,
    now_epoch_millis: i64,
    connecting_window: Duration,
) -> Result<usize, Error> {
    let connected_before_ms = now_epoch_millis.saturating_sub(connecting_window.as_millis() as i64);
    let holders = store
        .oldest_holders(slot, now_epoch_millis / 1_000, LIVENESS_CHECKS)
        .await?;
    // Asked all at once: a connect waits on one round trip, not ten.
    let candidates: Vec<&Holder> = holders
        .iter()
        .filter(|holder| holder.connected_at_ms <= connected_before_ms)
        .collect();
    let answers = futures::future::join_all(
        candidates
            .iter()
            .map(|holder| closer.is_connected(&holder.connection_id)),
    )
    .await;
    let mut released = 0;
    for (holder, answer) in candidates.into_iter().zip(answers) {
        match answer {
            Ok(true) => {}
            Ok(false) => {
                if store
                    .remove_gone_connection(&holder.connection_id, connected_before_ms)
                    .await?
                    .is_some()
                {
                    released += 1;
                    tracing::info!(
                        connection_id = %holder.connection_id,
                        scope = slot.scope.as_str(),
                        "released the slot of a connection API Gateway says is gone"
                    );
                }
            }
            Err(error) => tracing::warn!(
                connection_id = %holder.connection_id,
                error = %error,
                "could not ask API Gateway whether a slot's holder is connected"
            ),
        }
    }
    Ok(released)
}
