//! The subscriptions table in memory, and the listings of a message's
//! targets. A subscription changes in the record's `channels` and in its
//! own item at once, as the DynamoDB adapter's transaction does.

use super::{page_of, target_of, MemoryStore};
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::Audience;
use crate::store::{SubscribeOutcome, SubscriptionStore, TargetCursor, TargetPage};
use crate::Error;

impl SubscriptionStore for MemoryStore {
    async fn subscribe(
        &self,
        record: &ConnectionRecord,
        channel: &str,
        max_channels: usize,
        now_epoch_seconds: i64,
    ) -> Result<SubscribeOutcome, Error> {
        let mut tables = self.tables();
        // The record as it is now, not as the caller read it: what the
        // DynamoDB adapter's retries on a changed record come to.
        let Some(current) = tables.connections.get_mut(&record.connection_id) else {
            return Ok(SubscribeOutcome::UnknownConnection);
        };
        if current.is_expired(now_epoch_seconds) {
            return Ok(SubscribeOutcome::UnknownConnection);
        }
        let listed = current.channels.iter().any(|listed| listed == channel);
        if !listed && current.channels.len() >= max_channels {
            return Ok(SubscribeOutcome::LimitReached);
        }
        if !listed {
            current.channels.push(channel.to_owned());
        }
        let expires_at = current.expires_at;
        tables
            .subscriptions
            .insert((channel.to_owned(), record.connection_id.clone()), expires_at);
        Ok(SubscribeOutcome::Subscribed)
    }

    async fn unsubscribe(&self, connection_id: &str, channel: &str) -> Result<(), Error> {
        let mut tables = self.tables();
        if let Some(record) = tables.connections.get_mut(connection_id) {
            record.channels.retain(|listed| listed != channel);
        }
        tables
            .subscriptions
            .remove(&(channel.to_owned(), connection_id.to_owned()));
        Ok(())
    }

    async fn list_targets_page(
        &self,
        audience: Audience<'_>,
        from: Option<TargetCursor>,
        limit: i32,
    ) -> Result<TargetPage, Error> {
        let tables = self.tables();
        let targets: Vec<ConnectionTarget> = match audience {
            Audience::Channel(channel) => tables
                .subscriptions
                .iter()
                .filter(|((listed, _), _)| listed == channel)
                .map(|((_, connection_id), expires_at)| ConnectionTarget {
                    connection_id: connection_id.clone(),
                    expires_at: *expires_at,
                })
                .collect(),
            Audience::User(user_id) => tables
                .connections
                .values()
                .filter(|record| record.user_id.as_deref() == Some(user_id))
                .map(target_of)
                .collect(),
            Audience::Everyone => tables.connections.values().map(target_of).collect(),
        };
        page_of(targets, from, limit)
    }

    async fn remove_leftover_subscriptions(&self, record: &ConnectionRecord) -> Result<Vec<String>, Error> {
        let mut tables = self.tables();
        Ok(record
            .channels
            .iter()
            .filter(|channel| {
                tables
                    .subscriptions
                    .remove(&((*channel).clone(), record.connection_id.clone()))
                    .is_some()
            })
            .cloned()
            .collect())
    }

    async fn leftover_subscriptions(&self, record: &ConnectionRecord) -> Result<Vec<String>, Error> {
        let tables = self.tables();
        Ok(record
            .channels
            .iter()
            .filter(|channel| {
                tables
                    .subscriptions
                    .contains_key(&((*channel).clone(), record.connection_id.clone()))
            })
            .cloned()
            .collect())
    }
}
