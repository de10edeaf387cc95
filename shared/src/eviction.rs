//! Making room under a full per-user cap by evicting that user's oldest
//! connection (`AIRWAVE_USER_CAP_MODE=evict_oldest`).
//!
//! The new record and the old record swap in one transaction: the old one is
//! deleted on the condition that it still exists and still holds the user's
//! slot, and the new one is written. The user's counter is not touched, since
//! one slot changes hands, so concurrent connects can never take the user past
//! the cap: each eviction removes exactly one record that held a slot. If two
//! connects pick the same oldest record, one transaction wins and the other
//! moves on to the next oldest.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use crate::admission::Slot;
use crate::connection::ConnectionRecord;
use crate::store::{number, read_number, ConnectionStore, DynamoStore, Transaction};
use crate::Error;

/// Candidates tried per connect before giving up: more only happens when
/// many connects of one user race each other.
const CANDIDATES_TRIED: usize = 5;

/// What an eviction attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictOutcome {
    /// The new record is in; this one was removed and must be closed.
    Evicted(Box<ConnectionRecord>),
    /// The new record was already there (a repeated `$connect`).
    AlreadyAdmitted,
    /// No live connection of the user could be evicted (all gone meanwhile):
    /// the cap may have room again.
    NoCandidate,
    /// Another of the new record's caps is full.
    CapReached { slot: Slot },
}

pub trait Eviction: Send + Sync {
    /// Writes `record` (taking `slots`) in place of the oldest live
    /// connection that holds `user_slot`.
    fn admit_by_evicting(
        &self,
        record: &ConnectionRecord,
        slots: &[Slot],
        user_slot: &Slot,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<EvictOutcome, Error>> + Send;
}

impl DynamoStore {
    /// The live holders of `counter_key`, oldest first, from the sparse index
    /// (which carries `connected_at_ms`).
    async fn holders_oldest_first(&self, user_slot: &Slot, now: i64) -> Result<Vec<String>, Error> {
        let table = self.connections_table();
        let mut pages = self
            .client
            .query()
            .table_name(table)
            .index_name(user_slot.scope.index_name())
            .key_condition_expression("#slot = :counter AND expires_at > :now")
            .expression_attribute_names("#slot", user_slot.scope.record_attribute())
            .expression_attribute_values(":counter", AttributeValue::S(user_slot.counter_key.clone()))
            .expression_attribute_values(":now", number(now))
            .into_paginator()
            .send();
        let mut holders = BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Query", table, error))?;
            for item in page.items.unwrap_or_default() {
                let Some(AttributeValue::S(connection_id)) = item.get("connection_id") else {
                    tracing::error!(counter = %user_slot.counter_key, "skipping an index item without a connection id");
                    continue;
                };
                let connected_at = read_number(&item, "connected_at_ms").unwrap_or(0);
                holders.insert((connected_at, connection_id.clone()), ());
            }
        }
        Ok(holders.into_keys().map(|(_, connection_id)| connection_id).collect())
    }

    /// The counter changes of swapping `old` for `record`: +1 (under its cap)
    /// for each slot only the new record takes, -1 for each only the old holds.
    fn swap_counters(
        &self,
        old: &ConnectionRecord,
        slots: &[Slot],
    ) -> Result<Vec<(TransactWriteItem, Option<Slot>)>, Error> {
        let mut items = Vec::new();
        for slot in slots {
            if !old.held_slots().any(|held| held == slot.counter_key) {
                items.push((
                    self.counter_update(&slot.counter_key, 1, Some(slot.cap))?,
                    Some(slot.clone()),
                ));
            }
        }
        for held in old.held_slots() {
            if !slots.iter().any(|slot| slot.counter_key == held) {
                items.push((self.counter_update(held, -1, None)?, None));
            }
        }
        Ok(items)
    }
}

impl Eviction for DynamoStore {
    async fn admit_by_evicting(
        &self,
        record: &ConnectionRecord,
        slots: &[Slot],
        user_slot: &Slot,
        now_epoch_seconds: i64,
    ) -> Result<EvictOutcome, Error> {
        let table = self.connections_table().to_owned();
        let new_item: crate::store::Item = serde_dynamo::to_item(record).map_err(|source| Error::ItemFormat {
            table: table.clone(),
            key: record.connection_id.clone(),
            source,
        })?;
        let holders = self.holders_oldest_first(user_slot, now_epoch_seconds).await?;
        for connection_id in holders.iter().take(CANDIDATES_TRIED) {
            // Read whole (the index has no channels) so its subscriptions go too.
            let Some(old) = self.get_connection(connection_id).await? else {
                continue;
            };
            if old.slot_user.as_deref() != Some(user_slot.counter_key.as_str()) || old.is_expired(now_epoch_seconds) {
                continue;
            }
            let delete = Delete::builder()
                .table_name(&table)
                .set_key(Some(DynamoStore::connection_key(connection_id)))
                .condition_expression("attribute_exists(connection_id) AND slot_user = :counter")
                .expression_attribute_values(":counter", AttributeValue::S(user_slot.counter_key.clone()))
                .build()
                .map_err(|error| self.build_error(&table, error))?;
            let put = Put::builder()
                .table_name(&table)
                .set_item(Some(new_item.clone()))
                .condition_expression("attribute_not_exists(connection_id)")
                .build()
                .map_err(|error| self.build_error(&table, error))?;
            let counters = self.swap_counters(&old, slots)?;
            let mut items = vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().put(put).build(),
            ];
            let counter_slots: Vec<Option<Slot>> = counters.iter().map(|(_, slot)| slot.clone()).collect();
            items.extend(counters.into_iter().map(|(item, _)| item));
            match self.transact(&table, items).await? {
                Transaction::Committed => {
                    self.delete_subscriptions_of(&old).await?;
                    return Ok(EvictOutcome::Evicted(Box::new(old)));
                }
                // Removed or changed meanwhile: try the next oldest.
                Transaction::ConditionFailed { index: 0, .. } => continue,
                Transaction::ConditionFailed { index: 1, .. } => return Ok(EvictOutcome::AlreadyAdmitted),
                Transaction::ConditionFailed { index, .. } => {
                    let slot = counter_slots
                        .get(index - 2)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| Error::DynamoDb {
                            operation: "TransactWriteItems",
                            table: table.clone(),
                            message: format!("a condition failed on item {index}, which has no cap"),
                        })?;
                    return Ok(EvictOutcome::CapReached { slot });
                }
            }
        }
        Ok(EvictOutcome::NoCandidate)
    }
}
