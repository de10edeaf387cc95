//! The admission table's counters: the per-IP attempt throttle, and the cap
//! slots a connection takes in the same transaction as its record and gives
//! back in the same transaction as its removal (see [`crate::admission`]).

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, Select, TransactWriteItem, Update};

use super::{number, read_number, ConnectionStore, DynamoStore, Item, RemoveIf, Transaction};
use crate::admission::{AdmissionCounts, AdmitOutcome, Slot};
use crate::connection::ConnectionRecord;
use crate::Error;

/// How long a release marker is kept: longer than DynamoDB Streams keeps a record.
pub(crate) const RELEASE_MARKER_TTL_SECONDS: i64 = 3 * 86_400;
/// Records released per reclaim: enough to free room without a long refusal path.
pub(crate) const RECLAIM_BATCH: i32 = 25;

/// The throttle and the caps of `$connect`, and the release of slots.
pub trait AdmissionStore: Send + Sync {
    /// Counts one connection attempt from `source_ip` in fixed window
    /// `window` and answers the attempt's number in that window (1 for the first).
    fn count_connect_attempt(
        &self,
        source_ip: &str,
        window: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Writes `record` and takes one slot of each of `slots`, all or nothing,
    /// so concurrent admissions never take a counter past its cap. The record
    /// must name the slots' counters in its `slot_*` attributes.
    fn admit_connection(
        &self,
        record: &ConnectionRecord,
        slots: &[Slot],
    ) -> impl Future<Output = Result<AdmitOutcome, Error>> + Send;

    /// Removes the records in `slot`'s scope that expired by
    /// `now_epoch_seconds` and gives their slots back; answers how many.
    fn reclaim_expired_slots(
        &self,
        slot: &Slot,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<usize, Error>> + Send;

    /// Gives back the slots of a record that DynamoDB's TTL already deleted.
    /// Idempotent: a second call for the same connection changes nothing and
    /// answers `false`.
    fn release_slots_of_deleted(
        &self,
        record: &ConnectionRecord,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Counts for the stats read: live connections, distinct users, the total
    /// counter and every IP's attempts in `window`. Scans both tables: an
    /// operator's read, not a per-request one.
    fn admission_counts(
        &self,
        window: i64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<AdmissionCounts, Error>> + Send;
}

impl DynamoStore {
    fn admission_key(pk: &str) -> Item {
        HashMap::from([("pk".to_owned(), AttributeValue::S(pk.to_owned()))])
    }

    /// `ADD open_count :delta` on a counter, as a transaction item.
    pub(crate) fn counter_update(
        &self,
        counter_key: &str,
        delta: i64,
        cap: Option<u64>,
    ) -> Result<TransactWriteItem, Error> {
        let mut update = Update::builder()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(counter_key)))
            .update_expression("ADD open_count :delta")
            .expression_attribute_values(":delta", number(delta));
        if let Some(cap) = cap {
            update = update
                .condition_expression("attribute_not_exists(open_count) OR open_count < :cap")
                .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()));
        }
        let update = update
            .build()
            .map_err(|error| self.build_error(&self.admission_table, error))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn read_counter(&self, counter_key: &str) -> Result<u64, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(counter_key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.admission_table, error))?;
        Ok(output
            .item
            .and_then(|item| read_number(&item, "open_count"))
            .and_then(|open| u64::try_from(open).ok())
            .unwrap_or(0))
    }

    /// Deletes `record` and gives back its slots in one transaction, only if
    /// `only` still holds for it. Answers whether this call removed it (false:
    /// already gone, or no longer matching `only`).
    pub(super) async fn release_record(&self, record: &ConnectionRecord, only: RemoveIf) -> Result<bool, Error> {
        let mut delete = Delete::builder()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(&record.connection_id)));
        let mut condition = String::from("attribute_exists(connection_id)");
        if let Some((clause, name, value)) = only.clause() {
            condition.push_str(clause);
            delete = delete.expression_attribute_values(name, number(value));
        }
        delete = delete.condition_expression(condition);
        let delete = delete
            .build()
            .map_err(|error| self.build_error(&self.connections_table, error))?;
        self.give_slots_back(TransactWriteItem::builder().delete(delete).build(), record)
            .await
    }

    /// One transaction: `guard` (whose condition makes the release happen at
    /// most once) and a decrement of every counter `record` holds a slot in;
    /// then its subscriptions go. Answers whether the transaction committed.
    async fn give_slots_back(&self, guard: TransactWriteItem, record: &ConnectionRecord) -> Result<bool, Error> {
        let mut items = vec![guard];
        for counter_key in record.held_slots() {
            items.push(self.counter_update(counter_key, -1, None)?);
        }
        match self.transact(&self.admission_table, items).await? {
            Transaction::Committed => {
                self.delete_subscriptions_of(record).await?;
                Ok(true)
            }
            Transaction::ConditionFailed { .. } => Ok(false),
        }
    }
}

impl AdmissionStore for DynamoStore {
    async fn count_connect_attempt(&self, source_ip: &str, window: i64, expires_at: i64) -> Result<u64, Error> {
        // One unconditional ADD: every attempt gets its own number, so exactly
        // `limit` attempts per window see a number within the limit.
        let output = self
            .client
            .update_item()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(&crate::admission::attempts_key(
                source_ip, window,
            ))))
            .update_expression("SET expires_at = :expires_at, window_index = :window ADD attempts :one")
            .expression_attribute_values(":expires_at", number(expires_at))
            .expression_attribute_values(":window", number(window))
            .expression_attribute_values(":one", number(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|error| Error::dynamodb("UpdateItem", &self.admission_table, error))?;
        output
            .attributes
            .as_ref()
            .and_then(|item| read_number(item, "attempts"))
            .and_then(|attempts| u64::try_from(attempts).ok())
            .ok_or_else(|| Error::DynamoDb {
                operation: "UpdateItem",
                table: self.admission_table.clone(),
                message: "the answer has no attempts count".to_owned(),
            })
    }

    async fn admit_connection(&self, record: &ConnectionRecord, slots: &[Slot]) -> Result<AdmitOutcome, Error> {
        if slots.is_empty() {
            self.put_connection(record).await?;
            return Ok(AdmitOutcome::Admitted);
        }
        let item = serde_dynamo::to_item(record).map_err(|source| Error::ItemFormat {
            table: self.connections_table.clone(),
            key: record.connection_id.clone(),
            source,
        })?;
        let put = Put::builder()
            .table_name(&self.connections_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(connection_id)")
            .build()
            .map_err(|error| self.build_error(&self.connections_table, error))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for slot in slots {
            items.push(self.counter_update(&slot.counter_key, 1, Some(slot.cap))?);
        }
        match self.transact(&self.admission_table, items).await? {
            Transaction::Committed => Ok(AdmitOutcome::Admitted),
            // The record exists: a repeated $connect of an admitted connection.
            Transaction::ConditionFailed { index: 0, .. } => Ok(AdmitOutcome::Admitted),
            Transaction::ConditionFailed { index, .. } => {
                let slot = slots.get(index - 1).ok_or_else(|| Error::DynamoDb {
                    operation: "TransactWriteItems",
                    table: self.admission_table.clone(),
                    message: format!("a condition failed on item {index}, which this transaction does not have"),
                })?;
                let open = self.read_counter(&slot.counter_key).await?;
                Ok(AdmitOutcome::CapReached {
                    slot: slot.clone(),
                    open,
                })
            }
        }
    }

    async fn reclaim_expired_slots(&self, slot: &Slot, now_epoch_seconds: i64) -> Result<usize, Error> {
        let attribute = slot.scope.record_attribute();
        let output = self
            .client
            .query()
            .table_name(&self.connections_table)
            .index_name(slot.scope.index_name())
            .key_condition_expression("#slot = :counter AND expires_at <= :now")
            .expression_attribute_names("#slot", attribute)
            .expression_attribute_values(":counter", AttributeValue::S(slot.counter_key.clone()))
            .expression_attribute_values(":now", number(now_epoch_seconds))
            .limit(RECLAIM_BATCH)
            .send()
            .await
            .map_err(|error| Error::dynamodb("Query", &self.connections_table, error))?;
        let mut released = 0;
        for item in output.items.unwrap_or_default() {
            let Some(AttributeValue::S(connection_id)) = item.get("connection_id") else {
                tracing::error!(counter = %slot.counter_key, "skipping an index item without a connection id");
                continue;
            };
            let connection_id = connection_id.clone();
            // Read whole: the index does not carry `channels` (a subscribe
            // would otherwise write to every index), and the release deletes
            // the subscriptions the record lists. The release re-checks the
            // expiry on the table, so a listing's stale copy removes nothing live.
            let record = match self.get_connection(&connection_id).await {
                Ok(Some(record)) if record.is_expired(now_epoch_seconds) => record,
                Ok(_) => continue,
                Err(Error::ItemFormat { source, .. }) => {
                    tracing::error!(connection_id = %connection_id, error = %source, "skipping a connection record that cannot be decoded");
                    continue;
                }
                Err(error) => return Err(error),
            };
            if self
                .release_record(&record, RemoveIf::ExpiredBy(now_epoch_seconds))
                .await?
            {
                released += 1;
                tracing::info!(
                    connection_id = %record.connection_id,
                    scope = slot.scope.as_str(),
                    expires_at = record.expires_at,
                    "released the slot of an expired connection"
                );
            }
        }
        Ok(released)
    }

    async fn release_slots_of_deleted(&self, record: &ConnectionRecord, now_epoch_seconds: i64) -> Result<bool, Error> {
        if record.held_slots().next().is_none() {
            return Ok(false);
        }
        // The marker makes a redelivered stream record a no-op.
        let mut marker = Self::admission_key(&format!("released#{}", record.connection_id));
        marker.insert(
            "expires_at".to_owned(),
            number(now_epoch_seconds + RELEASE_MARKER_TTL_SECONDS),
        );
        let put = Put::builder()
            .table_name(&self.admission_table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| self.build_error(&self.admission_table, error))?;
        self.give_slots_back(TransactWriteItem::builder().put(put).build(), record)
            .await
    }

    async fn admission_counts(&self, window: i64, now_epoch_seconds: i64) -> Result<AdmissionCounts, Error> {
        let mut counts = AdmissionCounts::default();
        let mut users = std::collections::HashSet::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.connections_table)
            .projection_expression("connection_id, user_id, expires_at")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
            for item in page.items.unwrap_or_default() {
                if read_number(&item, "expires_at").is_some_and(|expires_at| expires_at > now_epoch_seconds) {
                    counts.open_connections += 1;
                    if let Some(AttributeValue::S(user_id)) = item.get("user_id") {
                        users.insert(user_id.clone());
                    }
                }
            }
        }
        counts.distinct_users = users.len() as u64;
        let mut pages = self
            .client
            .scan()
            .table_name(&self.admission_table)
            .filter_expression("window_index = :window")
            .expression_attribute_values(":window", number(window))
            .select(Select::AllAttributes)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Scan", &self.admission_table, error))?;
            for item in page.items.unwrap_or_default() {
                if let Some(attempts) = read_number(&item, "attempts").and_then(|value| u64::try_from(value).ok()) {
                    counts.attempts_in_window.push(attempts);
                }
            }
        }
        counts.total_slots_taken = self.read_counter(&Slot::total(0).counter_key).await?;
        Ok(counts)
    }
}
