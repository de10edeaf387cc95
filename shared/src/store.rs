//! Where connection records live. Handlers and the fan-out talk to the
//! [`ConnectionStore`] trait; [`DynamoStore`] is its DynamoDB adapter.

use std::future::Future;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::{Config, Error};

pub trait ConnectionStore: Send + Sync {
    /// Writes (or overwrites) one connection record.
    fn put_connection(&self, record: &ConnectionRecord) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reads one record, expired or not; `None` when there is no item.
    fn get_connection(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

    /// Deletes a record; deleting an id that is already gone succeeds.
    /// Answers whether a record was there.
    fn delete_connection(&self, connection_id: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Deletes a record only if it is still expired at `now_epoch_seconds`, so a
    /// connection whose TTL was refreshed meanwhile is left alone.
    /// Answers whether it was deleted.
    fn delete_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Every connection id with its expiry, expired ones included so the caller
    /// can prune them. Records that cannot be decoded are logged and left out.
    fn list_targets(&self) -> impl Future<Output = Result<Vec<ConnectionTarget>, Error>> + Send;
}

/// The DynamoDB adapter of [`ConnectionStore`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    connections_table: String,
}

impl DynamoStore {
    pub fn new(client: Client, config: &Config) -> Self {
        DynamoStore {
            client,
            connections_table: config.connections_table.clone(),
        }
    }

    pub fn connections_table(&self) -> &str {
        &self.connections_table
    }

    fn key(connection_id: &str) -> (String, AttributeValue) {
        ("connection_id".to_owned(), AttributeValue::S(connection_id.to_owned()))
    }

    fn decode_record(
        &self,
        connection_id: &str,
        item: std::collections::HashMap<String, AttributeValue>,
    ) -> Result<ConnectionRecord, Error> {
        serde_dynamo::from_item(item).map_err(|source| Error::ItemDecode {
            table: self.connections_table.clone(),
            key: connection_id.to_owned(),
            source,
        })
    }
}

impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let item = serde_dynamo::to_item(record).map_err(|source| Error::ItemDecode {
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
        let (name, value) = Self::key(connection_id);
        let output = self
            .client
            .get_item()
            .table_name(&self.connections_table)
            .key(name, value)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.connections_table, error))?;
        output
            .item
            .map(|item| self.decode_record(connection_id, item))
            .transpose()
    }

    async fn delete_connection(&self, connection_id: &str) -> Result<bool, Error> {
        let (name, value) = Self::key(connection_id);
        let output = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .key(name, value)
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| Error::dynamodb("DeleteItem", &self.connections_table, error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn delete_expired_connection(&self, connection_id: &str, now_epoch_seconds: i64) -> Result<bool, Error> {
        let (name, value) = Self::key(connection_id);
        let result = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .key(name, value)
            .condition_expression("expires_at <= :now")
            .expression_attribute_values(":now", AttributeValue::N(now_epoch_seconds.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service_error| service_error.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(Error::dynamodb("DeleteItem", &self.connections_table, error)),
        }
    }

    async fn list_targets(&self) -> Result<Vec<ConnectionTarget>, Error> {
        // Only the key and the expiry: a scan's cost is per 4 KB read, so reading
        // whole records to broadcast one message would multiply it.
        let mut pages = self
            .client
            .scan()
            .table_name(&self.connections_table)
            .projection_expression("connection_id, expires_at")
            .into_paginator()
            .send();
        let mut targets = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
            for item in page.items.unwrap_or_default() {
                let connection_id = match item.get("connection_id") {
                    Some(AttributeValue::S(id)) => id.clone(),
                    _ => "<missing>".to_owned(),
                };
                match serde_dynamo::from_item::<_, ConnectionTarget>(item) {
                    Ok(target) => targets.push(target),
                    Err(error) => tracing::error!(
                        table = %self.connections_table,
                        connection_id = %connection_id,
                        error = %error,
                        "skipping a connection record that cannot be decoded"
                    ),
                }
            }
        }
        Ok(targets)
    }
}
