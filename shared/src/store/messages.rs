//! The messages table: what a client publishes is written here, and the
//! table's stream feeds the stream-processor, which gives an item left
//! without an expiry the default retention once it is sent.

use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{has_error_code, is_conditional_check_failure, number, DynamoStore};
use crate::message::MessageRecord;
use crate::Error;

/// The messages table, one item per message.
pub trait MessageStore: Send + Sync {
    /// Writes a message to the messages table, which streams it to every target.
    fn put_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), Error>> + Send;

    /// Writes a message unless one with its id is there already (an
    /// idempotency key's second use): answers whether it wrote. A refused
    /// write costs what a write does and streams nothing.
    fn put_new_message(&self, message: &MessageRecord) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Gives a message item its writer left without `expires_at` the
    /// table's default retention from `now_epoch_seconds`, so DynamoDB's TTL
    /// deletes it. Answers whether it wrote (never over an expiry that is set).
    fn apply_message_retention(
        &self,
        message_id: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

impl MessageStore for DynamoStore {
    async fn put_message(&self, message: &MessageRecord) -> Result<(), Error> {
        self.put_message_item(message, false).await.map(|_| ())
    }

    async fn put_new_message(&self, message: &MessageRecord) -> Result<bool, Error> {
        self.put_message_item(message, true).await
    }

    async fn apply_message_retention(&self, message_id: &str, now_epoch_seconds: i64) -> Result<bool, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.messages_table)
            .key("message_id", AttributeValue::S(message_id.to_owned()))
            .update_expression("SET expires_at = :expires_at")
            .condition_expression("attribute_exists(message_id) AND attribute_not_exists(expires_at)")
            .expression_attribute_values(
                ":expires_at",
                number(now_epoch_seconds.saturating_add(self.message_retention_seconds)),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_conditional_check_failure(&error) => Ok(false),
            Err(error) => Err(Error::dynamodb("UpdateItem", &self.messages_table, error)),
        }
    }
}

impl DynamoStore {
    async fn put_message_item(&self, message: &MessageRecord, only_new: bool) -> Result<bool, Error> {
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
            .set_condition_expression(only_new.then(|| "attribute_not_exists(message_id)".to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if only_new && is_conditional_check_failure(&error) => Ok(false),
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
