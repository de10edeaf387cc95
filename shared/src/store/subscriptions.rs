//! Subscriptions, and who a message goes to. A subscription lives twice: in
//! its connection's `channels` (so a removal finds it) and as an item of the
//! subscriptions table (so a channel's subscribers are one key query); both
//! change in one transaction. Listing a message's targets reads that table,
//! or the connections table's indexes for a user or everyone.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};

use super::batch::{read_projected, Projection};
use super::shards::{channel_of_partition, subscription_partition, ShardCursors};
use super::{conflict_backoff, number, ConnectionStore, DynamoStore, Item, Transaction};
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::Audience;
use crate::Error;

/// The connections table's keys-only index of authenticated connections by user.
pub const USER_INDEX: &str = "by_user";
/// The connections table's keys-only index of every connection (its id and
/// expiry): a broadcast to everyone scans it, so its read units follow the
/// number of connections, not the size of their records.
pub const EVERYONE_INDEX: &str = "everyone";
/// Targets per listing request, at most: about 45 KB of keys, one DynamoDB
/// round trip, and far longer to post (1,000 posts take 300 ms at 64 in
/// flight and 20 ms each) than to read.
pub const TARGET_PAGE_SIZE: i32 = 1_000;
/// The first page of a broadcast is smaller, since the first post waits for
/// it; each page after it doubles, up to [`TARGET_PAGE_SIZE`], while the
/// earlier ones are posted.
pub const FIRST_TARGET_PAGE_SIZE: i32 = 125;

/// Where the next page of a listing starts.
#[derive(Debug, Clone)]
pub enum TargetCursor {
    /// DynamoDB's last evaluated key of a one-key listing.
    After(Item),
    /// Each shard of a channel still to read, with where it goes on.
    Shards(ShardCursors),
}

impl TargetCursor {
    fn into_key(self) -> Option<Item> {
        match self {
            TargetCursor::After(key) => Some(key),
            TargetCursor::Shards(_) => None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct TargetPage {
    pub targets: Vec<ConnectionTarget>,
    /// `None` on the last page.
    pub next: Option<TargetCursor>,
}

/// The answer to a subscribe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Subscribed,
    /// The connection already has the maximum number of channels.
    LimitReached,
    /// No live record for this connection (removed, or past its TTL).
    UnknownConnection,
}

/// Reads and transactions a subscribe tries while the connection keeps
/// changing under it (pings, other subscribes).
const SUBSCRIBE_ATTEMPTS: u32 = 8;

/// A connection's channels and the subscribers of each.
pub trait SubscriptionStore: Send + Sync {
    /// Adds `channel` to the subscriptions of the live connection `record`
    /// (as just read), unless that would take it past `max_channels`.
    /// Subscribing twice is a success. The record's channel set and the
    /// subscription item change together or not at all, against pings,
    /// unsubscribes and disconnects running at the same time.
    fn subscribe(
        &self,
        record: &ConnectionRecord,
        channel: &str,
        max_channels: usize,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<SubscribeOutcome, Error>> + Send;

    /// Removes `channel` from a connection's subscriptions; idempotent.
    fn unsubscribe(&self, connection_id: &str, channel: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// The targets of a message: the subscribers of a channel (one key
    /// query), the connections of one user (one query of the `by_user`
    /// index), or every connection. Expired ones are included so the caller
    /// can prune them; items that cannot be decoded are logged and left out.
    ///
    /// One page of at most `limit` targets per call, from `from` (`None`
    /// for the first page): a broadcast posts to one page while it reads
    /// the next ones.
    fn list_targets_page(
        &self,
        audience: Audience<'_>,
        from: Option<TargetCursor>,
        limit: i32,
    ) -> impl Future<Output = Result<TargetPage, Error>> + Send;

    /// Deletes the subscription items of `record` (a connection record that
    /// is already gone) that are still there, and answers their channels.
    /// Airwave's own removals delete them right after the record, so
    /// leftovers mean the record went another way (an operator's delete, a
    /// removal cut short). Consistent reads of the keys, then one delete per
    /// leftover: a connection with nothing left costs reads only.
    fn remove_leftover_subscriptions(
        &self,
        record: &ConnectionRecord,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// The channels of `record` whose subscription items are still there
    /// (consistent reads of the keys), deleting nothing.
    fn leftover_subscriptions(
        &self,
        record: &ConnectionRecord,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Every target at once: for tests and tools, not for a broadcast.
    fn list_targets(
        &self,
        audience: Audience<'_>,
    ) -> impl Future<Output = Result<Vec<ConnectionTarget>, Error>> + Send {
        async move {
            let mut targets = Vec::new();
            let mut from = None;
            loop {
                let page = self.list_targets_page(audience, from, TARGET_PAGE_SIZE).await?;
                targets.extend(page.targets);
                match page.next {
                    Some(next) => from = Some(next),
                    None => return Ok(targets),
                }
            }
        }
    }
}

impl DynamoStore {
    /// A subscription's key: its channel's shard for this connection (see
    /// [`super::shards`]), and the connection.
    fn subscription_key(channel: &str, connection_id: &str) -> Item {
        HashMap::from([
            (
                "channel".to_owned(),
                AttributeValue::S(subscription_partition(channel, connection_id)),
            ),
            ("connection_id".to_owned(), AttributeValue::S(connection_id.to_owned())),
        ])
    }

    async fn delete_subscription(&self, channel: &str, connection_id: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.subscriptions_table)
            .set_key(Some(Self::subscription_key(channel, connection_id)))
            .send()
            .await
            .map_err(|error| Error::dynamodb("DeleteItem", &self.subscriptions_table, error))?;
        Ok(())
    }

    pub(crate) async fn delete_subscriptions_of(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let deletions = record
            .channels
            .iter()
            .map(|channel| self.delete_subscription(channel, &record.connection_id));
        futures::future::try_join_all(deletions).await?;
        Ok(())
    }

    /// The channels among `channels` that still have an item for `connection_id`.
    async fn existing_subscriptions(&self, connection_id: &str, channels: &[String]) -> Result<Vec<String>, Error> {
        let table = self.subscriptions_table.as_str();
        let keys = channels
            .iter()
            .map(|channel| Self::subscription_key(channel, connection_id))
            .collect();
        let projection = Projection {
            expression: "#channel",
            names: &[("#channel", "channel")],
        };
        let items = read_projected(table, keys, &projection, |request| {
            self.client
                .batch_get_item()
                .request_items(&self.subscriptions_table, request)
                .send()
        })
        .await?;
        Ok(items
            .into_iter()
            .filter_map(|item| match item.get("channel") {
                Some(AttributeValue::S(partition)) => Some(channel_of_partition(partition).to_owned()),
                _ => None,
            })
            .collect())
    }

    /// One page of the keys-only `everyone` index: every connection's id and expiry.
    pub(super) async fn scan_everyone_page(&self, from: Option<TargetCursor>, limit: i32) -> Result<TargetPage, Error> {
        let page = self
            .client
            .scan()
            .table_name(&self.connections_table)
            .index_name(EVERYONE_INDEX)
            .limit(limit.max(1))
            .set_exclusive_start_key(from.and_then(TargetCursor::into_key))
            .send()
            .await
            .map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
        let mut targets = Vec::new();
        self.decode_targets(&self.connections_table, page.items.unwrap_or_default(), &mut targets);
        Ok(TargetPage {
            targets,
            next: page
                .last_evaluated_key
                .filter(|key| !key.is_empty())
                .map(TargetCursor::After),
        })
    }

    pub(super) fn decode_targets(&self, table: &str, items: Vec<Item>, targets: &mut Vec<ConnectionTarget>) {
        for item in items {
            let connection_id = match item.get("connection_id") {
                Some(AttributeValue::S(id)) => id.clone(),
                _ => "<missing>".to_owned(),
            };
            match serde_dynamo::from_item::<_, ConnectionTarget>(item) {
                Ok(target) => targets.push(target),
                Err(error) => tracing::error!(
                    table,
                    connection_id = %connection_id,
                    error = %error,
                    "skipping a connection item that cannot be decoded"
                ),
            }
        }
    }
}

impl SubscriptionStore for DynamoStore {
    async fn subscribe(
        &self,
        record: &ConnectionRecord,
        channel: &str,
        max_channels: usize,
        now_epoch_seconds: i64,
    ) -> Result<SubscribeOutcome, Error> {
        // The channel set and the subscription item change in one
        // transaction, and only while the record keeps the expiry it was read
        // with: a ping in between would leave the item with the old expiry,
        // a disconnect an orphan. Either cancels it, and it is tried again on
        // a fresh read (conflicts with other transactions are retried inside
        // `transact`).
        let connection_id = record.connection_id.as_str();
        let mut seen = Some(record.clone());
        for attempt in 0..SUBSCRIBE_ATTEMPTS {
            let record = match seen.take() {
                Some(record) => record,
                None => match self.get_connection(connection_id).await? {
                    Some(record) => record,
                    None => return Ok(SubscribeOutcome::UnknownConnection),
                },
            };
            if record.is_expired(now_epoch_seconds) {
                return Ok(SubscribeOutcome::UnknownConnection);
            }
            let listed = record.channels.iter().any(|listed| listed == channel);
            if !listed && record.channels.len() >= max_channels {
                return Ok(SubscribeOutcome::LimitReached);
            }
            let add = Update::builder()
                .table_name(&self.connections_table)
                .set_key(Some(Self::connection_key(connection_id)))
                .update_expression("ADD channels :channel_set")
                .condition_expression(
                    "attribute_exists(connection_id) AND expires_at = :seen AND \
                     (attribute_not_exists(channels) OR contains(channels, :channel) OR size(channels) < :max)",
                )
                .expression_attribute_values(":channel_set", AttributeValue::Ss(vec![channel.to_owned()]))
                .expression_attribute_values(":channel", AttributeValue::S(channel.to_owned()))
                .expression_attribute_values(":seen", number(record.expires_at))
                .expression_attribute_values(":max", AttributeValue::N(max_channels.to_string()))
                .build()
                .map_err(|error| self.build_error(&self.connections_table, error))?;
            let mut item = Self::subscription_key(channel, connection_id);
            item.insert("expires_at".to_owned(), number(record.expires_at));
            let put = Put::builder()
                .table_name(&self.subscriptions_table)
                .set_item(Some(item))
                .build()
                .map_err(|error| self.build_error(&self.subscriptions_table, error))?;
            let items = vec![
                TransactWriteItem::builder().update(add).build(),
                TransactWriteItem::builder().put(put).build(),
            ];
            match self.transact(&self.connections_table, items).await? {
                Transaction::Committed => return Ok(SubscribeOutcome::Subscribed),
                // Pinged, removed or filled up since the read: read again.
                Transaction::ConditionFailed { .. } => conflict_backoff(attempt).await,
            }
        }
        // One last read says whether the connection went away or filled up
        // meanwhile; only a connection still changing is an error.
        match self.get_connection(connection_id).await? {
            Some(record) if !record.is_expired(now_epoch_seconds) => {
                if record.channels.len() >= max_channels && !record.channels.iter().any(|listed| listed == channel) {
                    return Ok(SubscribeOutcome::LimitReached);
                }
                Err(Error::DynamoDb {
                    operation: "TransactWriteItems",
                    table: self.connections_table.clone(),
                    message: format!("the connection kept changing under {SUBSCRIBE_ATTEMPTS} subscribe attempts"),
                })
            }
            _ => Ok(SubscribeOutcome::UnknownConnection),
        }
    }

    async fn unsubscribe(&self, connection_id: &str, channel: &str) -> Result<(), Error> {
        // Both in one transaction, so a concurrent subscribe of the same
        // channel lands wholly before or wholly after.
        let remove = Update::builder()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .update_expression("DELETE channels :channel_set")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":channel_set", AttributeValue::Ss(vec![channel.to_owned()]))
            .build()
            .map_err(|error| self.build_error(&self.connections_table, error))?;
        let delete = Delete::builder()
            .table_name(&self.subscriptions_table)
            .set_key(Some(Self::subscription_key(channel, connection_id)))
            .build()
            .map_err(|error| self.build_error(&self.subscriptions_table, error))?;
        let items = vec![
            TransactWriteItem::builder().update(remove).build(),
            TransactWriteItem::builder().delete(delete).build(),
        ];
        match self.transact(&self.connections_table, items).await? {
            Transaction::Committed => Ok(()),
            // No record (disconnected, or pruned): only an item it may have
            // left behind remains to delete.
            Transaction::ConditionFailed { .. } => self.delete_subscription(channel, connection_id).await,
        }
    }

    async fn leftover_subscriptions(&self, record: &ConnectionRecord) -> Result<Vec<String>, Error> {
        self.existing_subscriptions(&record.connection_id, &record.channels)
            .await
    }

    async fn remove_leftover_subscriptions(&self, record: &ConnectionRecord) -> Result<Vec<String>, Error> {
        let connection_id = record.connection_id.as_str();
        let leftover = self.existing_subscriptions(connection_id, &record.channels).await?;
        let deletions = leftover
            .iter()
            .map(|channel| self.delete_subscription(channel, connection_id));
        futures::future::try_join_all(deletions).await?;
        Ok(leftover)
    }

    async fn list_targets_page(
        &self,
        audience: Audience<'_>,
        from: Option<TargetCursor>,
        limit: i32,
    ) -> Result<TargetPage, Error> {
        // Only keys and the expiry are read; a projection would not make a
        // read of a whole record cheaper, so every listing reads a table or
        // an index whose items hold nothing else.
        let (table, items, next) = match audience {
            Audience::User(user_id) => {
                // Eventually consistent, like every index: a connection
                // admitted a moment ago may be missed.
                let page = self
                    .client
                    .query()
                    .table_name(&self.connections_table)
                    .index_name(USER_INDEX)
                    .key_condition_expression("user_id = :user")
                    .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
                    .limit(limit.max(1))
                    .set_exclusive_start_key(from.and_then(TargetCursor::into_key))
                    .send()
                    .await
                    .map_err(|error| Error::dynamodb("Query", &self.connections_table, error))?;
                (&self.connections_table, page.items, page.last_evaluated_key)
            }
            Audience::Channel(channel) => {
                let from = match from {
                    None => None,
                    Some(TargetCursor::Shards(shards)) => Some(shards),
                    // Restarting would list the channel again from its start.
                    Some(TargetCursor::After(_)) => return Err(Error::CursorMismatch),
                };
                return self.list_channel_page(channel, from, limit).await;
            }
            Audience::Everyone => return self.scan_everyone_page(from, limit).await,
        };
        let mut targets = Vec::new();
        self.decode_targets(table, items.unwrap_or_default(), &mut targets);
        Ok(TargetPage {
            targets,
            // DynamoDB answers an empty key map on some last pages.
            next: next.filter(|key| !key.is_empty()).map(TargetCursor::After),
        })
    }
}
