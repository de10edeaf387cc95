//! The messages table in memory: message items by id, with the position
//! claimed on each (see `history`).

use super::{MemoryStore, StoredMessage};
use crate::message::MessageRecord;
use crate::store::MessageStore;
use crate::Error;

impl MessageStore for MemoryStore {
    async fn put_message(&self, message: &MessageRecord) -> Result<(), Error> {
        // A put replaces the whole item, its claim too, as DynamoDB's does.
        self.tables().messages.insert(
            message.message_id.clone(),
            StoredMessage {
                record: message.clone(),
                claim: None,
            },
        );
        Ok(())
    }

    async fn put_new_message(&self, message: &MessageRecord) -> Result<bool, Error> {
        let mut tables = self.tables();
        if tables.messages.contains_key(&message.message_id) {
            return Ok(false);
        }
        tables.messages.insert(
            message.message_id.clone(),
            StoredMessage {
                record: message.clone(),
                claim: None,
            },
        );
        Ok(true)
    }

    async fn apply_message_retention(&self, message_id: &str, now_epoch_seconds: i64) -> Result<bool, Error> {
        let retention = self.message_retention_seconds;
        match self.tables().messages.get_mut(message_id) {
            Some(message) if message.record.expires_at.is_none() => {
                message.record.expires_at = Some(now_epoch_seconds.saturating_add(retention));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
