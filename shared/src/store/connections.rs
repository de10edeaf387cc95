//! Connection records: written once at `$connect` (nothing refreshes them), removed on
//! `$disconnect`, when they expire or when API Gateway reports them gone.
//! A removal takes the record's subscriptions and cap slots with it.

use std::future::Future;

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::subscriptions::{TargetCursor, TargetPage};
use super::{is_conditional_check_failure, number, DynamoStore, Item, RemoveIf};
use crate::connection::ConnectionRecord;
use crate::Error;

/// The connections table, one record per open connection.
pub trait ConnectionStore: Send + Sync {
    /// Writes (or overwrites) one connection record.
    fn put_connection(&self, record: &ConnectionRecord) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reads one record, expired or not; `None` when there is no item.
    fn get_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Deletes a connection and its subscriptions; deleting an id that is
    /// already gone succeeds. Answers the record that was there.
    fn remove_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// One page of every connection's id and expiry (the keys-only
    /// `everyone` index), expired ones included: what the sweep reads.
    fn list_connections_page(
        &self,
        from: Option<TargetCursor>,
        limit: i32,
    ) -> impl Future<Output = Result<TargetPage, Error>> + Send;

    /// Like [`ConnectionStore::remove_connection`], but only if the record is
    /// still expired at `now_epoch_seconds` on the table, so a record a
    /// listing saw stale is left alone. Says which of the three it found, from the
    /// delete's own answer (no read).
    fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<ExpiredRemoval, Error>> + Send;

    /// Like [`ConnectionStore::remove_connection`], for a connection API
    /// Gateway answered 410: only if it was accepted at or before `connected_before_ms`.
    /// API Gateway answers 410 to a connection whose handshake is still in
    /// progress too (its `$connect` wrote the record, the upgrade has not
    /// completed), and that one must stay.
    fn remove_gone_connection(
        &self,
        connection_id: &str,
        connected_before_ms: i64,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;
}

impl DynamoStore {
    fn decode_record(&self, connection_id: &str, item: Item) -> Result<ConnectionRecord, Error> {
        serde_dynamo::from_item(item).map_err(|source| Error::ItemFormat {
            table: self.connections_table.clone(),
            key: connection_id.to_owned(),
            source,
        })
    }

    /// Decodes an old or new image returned by a write; empty means no item.
    fn decode_returned(&self, connection_id: &str, item: Option<Item>) -> Result<Option<ConnectionRecord>, Error> {
        match item {
            Some(item) if !item.is_empty() => self.decode_record(connection_id, item).map(Some),
            _ => Ok(None),
        }
    }

    /// Removes a connection: one conditional delete when it holds no slot,
    /// otherwise that delete (refused, but handing back the record) and a
    /// transaction that also gives its slots back.
    async fn remove_connection_if(&self, connection_id: &str, only: RemoveIf) -> Result<Removal, Error> {
        let mut condition = String::from(
            "attribute_exists(connection_id) AND attribute_not_exists(slot_total) \
             AND attribute_not_exists(slot_user) AND attribute_not_exists(slot_ip)",
        );
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((clause, name, value)) = only.clause() {
            condition.push_str(clause);
            request = request.expression_attribute_values(name, number(value));
        }
        match request.condition_expression(condition).send().await {
            Ok(output) => match self.decode_returned(connection_id, output.attributes)? {
                Some(record) => {
                    self.delete_subscriptions_of(&record).await?;
                    Ok(Removal::Removed(Box::new(record)))
                }
                None => Ok(Removal::Absent),
            },
            Err(error) if is_conditional_check_failure(&error) => {
                // Gone, not expired, or holding slots: only the last needs more
                // work. The refusal carries the record as it stood, which spares
                // a read; the release's own condition covers what changes after.
                let old_item = match error.into_service_error() {
                    DeleteItemError::ConditionalCheckFailedException(refusal) => refusal.item,
                    _ => None,
                };
                let Some(record) = self.decode_returned(connection_id, old_item)? else {
                    return Ok(Removal::Absent);
                };
                if record.held_slots().next().is_none() {
                    return Ok(Removal::Kept);
                }
                if self.release_record(&record, only).await? {
                    Ok(Removal::Removed(Box::new(record)))
                } else {
                    Ok(Removal::Kept)
                }
            }
            Err(error) => Err(Error::dynamodb("DeleteItem", &self.connections_table, error)),
        }
    }
}

/// What [`ConnectionStore::remove_expired_connection`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpiredRemoval {
    /// Still expired: removed, with its subscriptions.
    Removed(Box<ConnectionRecord>),
    /// The record is not expired (a listing's copy of its expiry was
    /// stale): it stays.
    NotExpired,
    /// No record at all: a connection without one gets nothing.
    Absent,
}

/// What a conditional removal found.
enum Removal {
    Removed(Box<ConnectionRecord>),
    /// The record is there, but the condition kept it.
    Kept,
    Absent,
}

impl Removal {
    fn removed(self) -> Option<ConnectionRecord> {
        match self {
            Removal::Removed(record) => Some(*record),
            Removal::Kept | Removal::Absent => None,
        }
    }
}

impl ConnectionStore for DynamoStore {
    async fn list_connections_page(&self, from: Option<TargetCursor>, limit: i32) -> Result<TargetPage, Error> {
        self.scan_everyone_page(from, limit).await
    }

    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let item = serde_dynamo::to_item(record).map_err(|source| Error::ItemFormat {
            table: self.connections_table.clone(),
            key: record.connection_id.clone(),
            source,
        })?;
        self.client
            .put_item()
            .table_name(&self.connections_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| Error::dynamodb("PutItem", &self.connections_table, error))?;
        Ok(())
    }

    async fn get_connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.connections_table, error))?;
        self.decode_returned(connection_id, output.item)
    }

    // The record goes first, then its subscriptions. If a subscription delete
    // fails in between, the orphan still carries the connection's expiry, and
    // the next message on that channel finds the id gone (410) and removes it.
    async fn remove_connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        self.remove_connection_if(connection_id, RemoveIf::Present)
            .await
            .map(Removal::removed)
    }

    async fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> Result<ExpiredRemoval, Error> {
        Ok(
            match self
                .remove_connection_if(connection_id, RemoveIf::ExpiredBy(now_epoch_seconds))
                .await?
            {
                Removal::Removed(record) => ExpiredRemoval::Removed(record),
                Removal::Kept => ExpiredRemoval::NotExpired,
                Removal::Absent => ExpiredRemoval::Absent,
            },
        )
    }

    async fn remove_gone_connection(
        &self,
        connection_id: &str,
        connected_before_ms: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        self.remove_connection_if(connection_id, RemoveIf::ConnectedBefore(connected_before_ms))
            .await
            .map(Removal::removed)
    }
}
