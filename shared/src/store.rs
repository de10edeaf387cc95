//! Where connection records, subscriptions and messages live. Handlers and the
//! fan-out talk to the [`ConnectionStore`] trait; [`DynamoStore`] is its
//! DynamoDB adapter.
//!
//! Tables:
//! - connections: `connection_id` (partition key), one item per open connection,
//!   with the string set `channels` it is subscribed to.
//! - subscriptions: `channel` (partition key) + `connection_id` (sort key), so a
//!   channel's subscribers are one key query, never a scan of every connection.
//!   Every subscription item's channel is also in its connection's `channels`,
//!   which is how removing a connection finds its subscriptions.
//! - messages: `message_id` (partition key), streamed to the stream-processor.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::MessageRecord;
use crate::{Config, Error};

type Item = HashMap<String, AttributeValue>;

/// The answer to a subscribe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Subscribed,
    /// The connection already has the maximum number of channels.
    LimitReached,
    /// No live record for this connection (removed, or past its TTL).
    UnknownConnection,
}

pub trait ConnectionStore: Send + Sync {
    /// Writes (or overwrites) one connection record.
    fn put_connection(&self, record: &ConnectionRecord) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reads one record, expired or not; `None` when there is no item.
    fn get_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Moves a live connection's expiry (and its subscriptions') to
    /// `expires_at`. `None` when the record is gone or already expired: an
    /// expired record is treated as gone, never revived.
    fn refresh_connection(
        &self,
        connection_id: &str,
        expires_at: i64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Deletes a connection and its subscriptions; deleting an id that is
    /// already gone succeeds. Answers the record that was there.
    fn remove_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Like [`ConnectionStore::remove_connection`], but only if the record is
    /// still expired at `now_epoch_seconds`, so a connection refreshed
    /// meanwhile is left alone.
    fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Adds `channel` to a live connection's subscriptions, unless that would
    /// take it past `max_channels`. Subscribing twice is a success.
    fn subscribe(
        &self,
        connection_id: &str,
        channel: &str,
        max_channels: usize,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<SubscribeOutcome, Error>> + Send;

    /// Removes `channel` from a connection's subscriptions; idempotent.
    fn unsubscribe(&self, connection_id: &str, channel: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// The targets of a message: the subscribers of `channel`, or every
    /// connection when there is none. Expired ones are included so the caller
    /// can prune them; items that cannot be decoded are logged and left out.
    fn list_targets(&self, channel: Option<&str>) -> impl Future<Output = Result<Vec<ConnectionTarget>, Error>> + Send;

    /// Writes a message to the messages table, which streams it to every target.
    fn put_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The DynamoDB adapter of [`ConnectionStore`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    connections_table: String,
    subscriptions_table: String,
    messages_table: String,
}

impl DynamoStore {
    pub fn new(client: Client, config: &Config) -> Self {
        DynamoStore {
            client,
            connections_table: config.connections_table.clone(),
            subscriptions_table: config.subscriptions_table.clone(),
            messages_table: config.messages_table.clone(),
        }
    }

    fn connection_key(connection_id: &str) -> Item {
        HashMap::from([("connection_id".to_owned(), AttributeValue::S(connection_id.to_owned()))])
    }

    fn subscription_key(channel: &str, connection_id: &str) -> Item {
        HashMap::from([
            ("channel".to_owned(), AttributeValue::S(channel.to_owned())),
            ("connection_id".to_owned(), AttributeValue::S(connection_id.to_owned())),
        ])
    }

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

    async fn delete_subscriptions(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let deletions = record
            .channels
            .iter()
            .map(|channel| self.delete_subscription(channel, &record.connection_id));
        futures::future::try_join_all(deletions).await?;
        Ok(())
    }

    async fn refresh_subscription(&self, channel: &str, connection_id: &str, expires_at: i64) -> Result<(), Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.subscriptions_table)
            .set_key(Some(Self::subscription_key(channel, connection_id)))
            .update_expression("SET expires_at = :expires_at")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":expires_at", AttributeValue::N(expires_at.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_check_failure(&error) => Ok(()),
            Err(error) => Err(Error::dynamodb("UpdateItem", &self.subscriptions_table, error)),
        }
    }

    fn decode_targets(&self, table: &str, items: Vec<Item>, targets: &mut Vec<ConnectionTarget>) {
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

/// Whether DynamoDB answered with the service error `code`.
fn has_error_code<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>, code: &str) -> bool
where
    E: ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|service_error| service_error.code())
        .is_some_and(|answered| answered == code)
}

fn is_conditional_check_failure<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    has_error_code(error, "ConditionalCheckFailedException")
}

impl ConnectionStore for DynamoStore {
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

    async fn refresh_connection(
        &self,
        connection_id: &str,
        expires_at: i64,
        now_epoch_seconds: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .update_expression("SET expires_at = :expires_at")
            .condition_expression("attribute_exists(connection_id) AND expires_at > :now")
            .expression_attribute_values(":expires_at", AttributeValue::N(expires_at.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_epoch_seconds.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let record = match result {
            Ok(output) => self.decode_returned(connection_id, output.attributes)?,
            Err(error) if is_conditional_check_failure(&error) => return Ok(None),
            Err(error) => return Err(Error::dynamodb("UpdateItem", &self.connections_table, error)),
        };
        if let Some(record) = &record {
            let refreshes = record
                .channels
                .iter()
                .map(|channel| self.refresh_subscription(channel, connection_id, expires_at));
            futures::future::try_join_all(refreshes).await?;
        }
        Ok(record)
    }

    // The record goes first, then its subscriptions. If a subscription delete
    // fails in between, the orphan still carries the connection's expiry, and
    // the next message on that channel finds the id gone (410) and removes it.
    async fn remove_connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| Error::dynamodb("DeleteItem", &self.connections_table, error))?;
        let record = self.decode_returned(connection_id, output.attributes)?;
        if let Some(record) = &record {
            self.delete_subscriptions(record).await?;
        }
        Ok(record)
    }

    async fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .condition_expression("expires_at <= :now")
            .expression_attribute_values(":now", AttributeValue::N(now_epoch_seconds.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let record = match result {
            Ok(output) => self.decode_returned(connection_id, output.attributes)?,
            Err(error) if is_conditional_check_failure(&error) => return Ok(None),
            Err(error) => return Err(Error::dynamodb("DeleteItem", &self.connections_table, error)),
        };
        if let Some(record) = &record {
            self.delete_subscriptions(record).await?;
        }
        Ok(record)
    }

    async fn subscribe(
        &self,
        connection_id: &str,
        channel: &str,
        max_channels: usize,
        now_epoch_seconds: i64,
    ) -> Result<SubscribeOutcome, Error> {
        // The connection's channel set is updated first, under the cap, so the
        // subscription item below is always findable from the connection.
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .update_expression("ADD channels :channel_set")
            .condition_expression(
                "attribute_exists(connection_id) AND expires_at > :now AND \
                 (attribute_not_exists(channels) OR contains(channels, :channel) OR size(channels) < :max)",
            )
            .expression_attribute_values(":channel_set", AttributeValue::Ss(vec![channel.to_owned()]))
            .expression_attribute_values(":channel", AttributeValue::S(channel.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now_epoch_seconds.to_string()))
            .expression_attribute_values(":max", AttributeValue::N(max_channels.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let record = match result {
            Ok(output) => self.decode_returned(connection_id, output.attributes)?,
            Err(error) if is_conditional_check_failure(&error) => {
                // Rare path: read once to say which condition failed.
                return Ok(match self.get_connection(connection_id).await? {
                    Some(record) if !record.is_expired(now_epoch_seconds) => SubscribeOutcome::LimitReached,
                    _ => SubscribeOutcome::UnknownConnection,
                });
            }
            Err(error) => return Err(Error::dynamodb("UpdateItem", &self.connections_table, error)),
        };
        let Some(record) = record else {
            return Ok(SubscribeOutcome::UnknownConnection);
        };
        let mut item = Self::subscription_key(channel, connection_id);
        item.insert(
            "expires_at".to_owned(),
            AttributeValue::N(record.expires_at.to_string()),
        );
        self.client
            .put_item()
            .table_name(&self.subscriptions_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| Error::dynamodb("PutItem", &self.subscriptions_table, error))?;
        Ok(SubscribeOutcome::Subscribed)
    }

    async fn unsubscribe(&self, connection_id: &str, channel: &str) -> Result<(), Error> {
        // Subscription first, so a failure in between never leaves an item the
        // connection no longer points to.
        self.delete_subscription(channel, connection_id).await?;
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .update_expression("DELETE channels :channel_set")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":channel_set", AttributeValue::Ss(vec![channel.to_owned()]))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_check_failure(&error) => Ok(()),
            Err(error) => Err(Error::dynamodb("UpdateItem", &self.connections_table, error)),
        }
    }

    async fn list_targets(&self, channel: Option<&str>) -> Result<Vec<ConnectionTarget>, Error> {
        // Only the key and the expiry are read: the cost of a read is per 4 KB,
        // and the fan-out needs nothing else.
        let mut targets = Vec::new();
        match channel {
            Some(channel) => {
                let mut pages = self
                    .client
                    .query()
                    .table_name(&self.subscriptions_table)
                    .key_condition_expression("channel = :channel")
                    .expression_attribute_values(":channel", AttributeValue::S(channel.to_owned()))
                    .projection_expression("connection_id, expires_at")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|error| Error::dynamodb("Query", &self.subscriptions_table, error))?;
                    self.decode_targets(&self.subscriptions_table, page.items.unwrap_or_default(), &mut targets);
                }
            }
            None => {
                let mut pages = self
                    .client
                    .scan()
                    .table_name(&self.connections_table)
                    .projection_expression("connection_id, expires_at")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
                    self.decode_targets(&self.connections_table, page.items.unwrap_or_default(), &mut targets);
                }
            }
        }
        Ok(targets)
    }

    async fn put_message(&self, message: &MessageRecord) -> Result<(), Error> {
        let item = serde_dynamo::to_item(message).map_err(|source| Error::ItemFormat {
            table: self.messages_table.clone(),
            key: message.message_id.clone(),
            source,
        })?;
        let result = self
            .client
            .put_item()
            .table_name(&self.messages_table)
            .set_item(Some(item))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The item itself is at fault (too deeply nested, a number out of
            // DynamoDB's range): the caller's input, not an outage.
            Err(error) if has_error_code(&error, "ValidationException") => Err(Error::ItemRejected {
                table: self.messages_table.clone(),
                key: message.message_id.clone(),
                message: aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string(),
            }),
            Err(error) => Err(Error::dynamodb("PutItem", &self.messages_table, error)),
        }
    }
}
