//! History entries: one per message at its offset, kept for the history
//! TTL, written 25 a batch with the run's claims (round trip 3), and written
//! again by a retry where an earlier try left them out.

use std::collections::HashSet;

use airwave_protocol::Position;
use aws_sdk_dynamodb::types::AttributeValue;

use super::offset_entry;
use crate::message::MessageRecord;
use crate::store::batch::{puts, read_projected, unprocessed_writes, write_in_batches, Projection};
use crate::store::{is_conditional_check_failure, number, DynamoStore, Item};
use crate::Error;

impl DynamoStore {
    /// Writes history entries, 25 a `BatchWriteItem`, all at once.
    pub(super) async fn write_entries(&self, entries: Vec<Item>) -> Result<(), Error> {
        let table = self.history_table.as_str();
        write_in_batches(table, puts(table, entries)?, |requests| async {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.history_table, requests)
                .send()
                .await
                .map_err(|error| Error::dynamodb("BatchWriteItem", table, error))?;
            Ok(unprocessed_writes(output, table))
        })
        .await
    }

    pub(super) fn history_entry(
        &self,
        channel: &str,
        message: &MessageRecord,
        position: &Position,
        expires_at: i64,
    ) -> Result<Item, Error> {
        let payload = self.entry_payload(message)?;
        let mut entry = Self::history_key(channel, &offset_entry(position.offset));
        entry.insert("epoch".to_owned(), AttributeValue::S(position.epoch.clone()));
        entry.insert("offset".to_owned(), AttributeValue::N(position.offset.to_string()));
        entry.insert("expires_at".to_owned(), number(expires_at));
        entry.insert("message_id".to_owned(), AttributeValue::S(message.message_id.clone()));
        entry.insert("payload".to_owned(), payload);
        if let Some(publisher) = &message.published_by_user {
            entry.insert("publisher".to_owned(), AttributeValue::S(publisher.clone()));
        }
        Ok(entry)
    }

    /// A message's payload as its history entry holds it.
    pub(super) fn entry_payload(&self, message: &MessageRecord) -> Result<AttributeValue, Error> {
        serde_dynamo::to_attribute_value(&message.payload).map_err(|source| Error::ItemFormat {
            table: self.history_table.clone(),
            key: message.message_id.clone(),
            source,
        })
    }

    /// The entries of positions an earlier try claimed, written again where
    /// they are missing: that try may have written its claims and failed
    /// its entries. Only a retry gets here; it costs a consistent read of
    /// the entries' keys, and a conditional put for each one missing.
    pub(super) async fn repair_entries(
        &self,
        channel: &str,
        earlier: &[(&MessageRecord, &Position)],
        expires_at: i64,
    ) -> Result<(), Error> {
        if earlier.is_empty() {
            return Ok(());
        }
        let table = self.history_table.as_str();
        let keys = earlier
            .iter()
            .map(|(_, position)| Self::history_key(channel, &offset_entry(position.offset)))
            .collect();
        let projection = Projection {
            expression: "#entry",
            names: &[("#entry", "entry")],
        };
        let found: HashSet<String> = read_projected(table, keys, &projection, |request| {
            self.client
                .batch_get_item()
                .request_items(&self.history_table, request)
                .send()
        })
        .await?
        .into_iter()
        .filter_map(|item| match item.get("entry") {
            Some(AttributeValue::S(entry)) => Some(entry.clone()),
            _ => None,
        })
        .collect();
        let missing = earlier
            .iter()
            .filter(|(_, position)| !found.contains(&offset_entry(position.offset)));
        let puts = missing.map(|(message, position)| async move {
            tracing::warn!(message_id = %message.message_id, offset = position.offset, "writing a history entry an earlier try left out");
            let entry = self.history_entry(channel, message, position, expires_at)?;
            let put = self
                .client
                .put_item()
                .table_name(&self.history_table)
                .set_item(Some(entry))
                // Never over an entry written since (a new epoch's).
                .condition_expression("attribute_not_exists(entry)")
                .send()
                .await;
            match put {
                Ok(_) => Ok(()),
                Err(error) if is_conditional_check_failure(&error) => Ok(()),
                Err(error) => Err(Error::dynamodb("PutItem", table, error)),
            }
        });
        futures::future::try_join_all(puts).await?;
        Ok(())
    }
}
