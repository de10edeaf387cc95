//! The connections table in memory: records by connection id. Every
//! removal takes the record's slots and subscriptions with it, as the
//! DynamoDB adapter's do.

use super::{page_of, target_of, MemoryStore};
use crate::connection::ConnectionRecord;
use crate::store::{ConnectionStore, ExpiredRemoval, TargetCursor, TargetPage};
use crate::Error;

impl ConnectionStore for MemoryStore {
    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), Error> {
        self.tables()
            .connections
            .insert(record.connection_id.clone(), record.clone());
        Ok(())
    }

    async fn get_connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        Ok(self.tables().connections.get(connection_id).cloned())
    }

    async fn remove_connection(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        Ok(self.tables().release(connection_id))
    }

    async fn list_connections_page(&self, from: Option<TargetCursor>, limit: i32) -> Result<TargetPage, Error> {
        let targets = self.tables().connections.values().map(target_of).collect();
        page_of(targets, from, limit)
    }

    async fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> Result<ExpiredRemoval, Error> {
        let mut tables = self.tables();
        Ok(match tables.connections.get(connection_id) {
            None => ExpiredRemoval::Absent,
            Some(record) if !record.is_expired(now_epoch_seconds) => ExpiredRemoval::NotExpired,
            Some(_) => match tables.release(connection_id) {
                Some(record) => ExpiredRemoval::Removed(Box::new(record)),
                None => ExpiredRemoval::Absent,
            },
        })
    }

    async fn remove_gone_connection(
        &self,
        connection_id: &str,
        connected_before_ms: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let mut tables = self.tables();
        match tables.connections.get(connection_id) {
            Some(record) if record.connected_at_ms <= connected_before_ms => Ok(tables.release(connection_id)),
            _ => Ok(None),
        }
    }
}

impl MemoryStore {
    /// Deletes a record alone, as an operator's delete in the console does:
    /// its slots and subscriptions stay.
    pub fn delete_record_only(&self, connection_id: &str) -> Option<ConnectionRecord> {
        self.tables().connections.remove(connection_id)
    }
}
