//! An in-memory adapter of every store trait, for fast tests of the logic:
//! no DynamoDB server, and the time of the store's [`Clock`] (a
//! [`crate::time::ManualClock`] in tests), so windows, TTLs and expiries are
//! reached by moving the clock, never by sleeping. One file per table, as
//! the DynamoDB adapter.
//!
//! What it keeps of DynamoDB's semantics, and where it differs:
//! - Every call runs under one lock: what the DynamoDB adapter does in one
//!   conditional write or one transaction is atomic here too. What it does
//!   in several steps (a record's removal, then its subscriptions) is
//!   atomic here as well, so the interleavings of concurrent calls are not
//!   reproduced: the races are proved against a DynamoDB-compatible server
//!   (`tests/it/races.rs`).
//! - Items past their `expires_at` stay until
//!   [`MemoryStore::delete_expired_items`], as DynamoDB's TTL deletes them
//!   late; every read that matters checks the expiry itself, as it must
//!   against DynamoDB.
//! - Listings are paged (in connection id order) and consistent; DynamoDB's
//!   indexes may lag a moment behind a write, which is not reproduced.
//! - No item size or nesting limit: what DynamoDB refuses as too large is
//!   stored.
//!
//! Built for this crate's own tests, or with the `memory-store` feature; the
//! function binaries never enable it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use airwave_protocol::Stats;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::admission::CapScope;
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::MessageRecord;
use crate::store::{TargetCursor, TargetPage};
use crate::time::{Clock, Clocked};
use crate::{Config, Error};

mod admission;
mod connections;
mod history;
mod messages;
mod subscriptions;

/// Every table in memory, with the clock its expiries are judged by.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Clock,
    message_retention_seconds: i64,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    connections: BTreeMap<String, ConnectionRecord>,
    /// (channel, connection id) -> the subscription's expiry. One key per
    /// channel: the shards of the DynamoDB adapter only spread its load.
    subscriptions: BTreeMap<(String, String), i64>,
    messages: HashMap<String, StoredMessage>,
    /// The admission table's counters, by key.
    counters: HashMap<String, Counter>,
    /// The admission table's release markers: connection id -> expiry.
    release_markers: HashMap<String, i64>,
    stats: Option<Stats>,
    stats_counting_until: Option<i64>,
    /// The history table: heads by channel, entries by (channel, offset).
    heads: HashMap<String, history::Head>,
    entries: BTreeMap<(String, u64), history::Entry>,
}

/// A message item: the record, and the position claimed on it.
#[derive(Debug, Clone)]
struct StoredMessage {
    record: MessageRecord,
    claim: Option<airwave_protocol::Position>,
}

/// One item of the admission table that counts: open connections, connect
/// attempts or publishes, each in its own attribute as in DynamoDB.
#[derive(Debug, Clone, Default)]
struct Counter {
    open_count: i64,
    attempts: u64,
    window_index: Option<i64>,
    publishes: u64,
    expires_at: Option<i64>,
}

impl MemoryStore {
    pub fn new(config: &Config, clock: Clock) -> Self {
        MemoryStore {
            clock,
            message_retention_seconds: i64::try_from(config.message_retention_seconds).unwrap_or(i64::MAX),
            tables: Mutex::new(Tables::default()),
        }
    }

    /// The tables, whatever a panicked holder of the lock left: every change
    /// is made whole before the lock is let go.
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes every item whose `expires_at` has passed by the clock, as
    /// DynamoDB's TTL eventually does, without giving anything back (that is
    /// the reaper's work). Answers the connection records deleted, which is
    /// what the connections table's stream carries to the reaper.
    pub fn delete_expired_items(&self) -> Vec<ConnectionRecord> {
        let now = self.clock.epoch_seconds();
        let mut tables = self.tables();
        let expired: Vec<String> = tables
            .connections
            .values()
            .filter(|record| record.is_expired(now))
            .map(|record| record.connection_id.clone())
            .collect();
        let removed = expired
            .iter()
            .filter_map(|connection_id| tables.connections.remove(connection_id))
            .collect();
        tables.subscriptions.retain(|_, expires_at| *expires_at > now);
        tables
            .messages
            .retain(|_, message| message.record.expires_at.is_none_or(|expires_at| expires_at > now));
        tables
            .counters
            .retain(|_, counter| counter.expires_at.is_none_or(|expires_at| expires_at > now));
        tables.release_markers.retain(|_, expires_at| *expires_at > now);
        tables.heads.retain(|_, head| head.expires_at > now);
        tables.entries.retain(|_, entry| entry.expires_at > now);
        removed
    }

    /// The value of an admission counter (`open#...`), if it was ever written.
    pub fn open_count(&self, counter_key: &str) -> Option<i64> {
        self.tables()
            .counters
            .get(counter_key)
            .map(|counter| counter.open_count)
    }

    /// Every subscription item, as (channel, connection id), in order.
    pub fn subscription_items(&self) -> Vec<(String, String)> {
        self.tables().subscriptions.keys().cloned().collect()
    }

    /// The message item of `message_id`, if it is there.
    pub fn message(&self, message_id: &str) -> Option<MessageRecord> {
        self.tables()
            .messages
            .get(message_id)
            .map(|message| message.record.clone())
    }
}

impl Clocked for MemoryStore {
    fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Tables {
    fn counter(&mut self, key: &str) -> &mut Counter {
        self.counters.entry(key.to_owned()).or_default()
    }

    fn open_count(&self, key: &str) -> i64 {
        self.counters.get(key).map_or(0, |counter| counter.open_count)
    }

    fn drop_subscriptions_of(&mut self, record: &ConnectionRecord) {
        for channel in &record.channels {
            self.subscriptions
                .remove(&(channel.clone(), record.connection_id.clone()));
        }
    }

    /// Removes a record as every removal of the DynamoDB adapter does: the
    /// record, its slots given back, and its subscriptions.
    fn release(&mut self, connection_id: &str) -> Option<ConnectionRecord> {
        let record = self.connections.remove(connection_id)?;
        for counter_key in record.held_slots() {
            self.counter(counter_key).open_count -= 1;
        }
        self.drop_subscriptions_of(&record);
        Some(record)
    }

    /// The records that hold a slot of `scope` in `counter_key`, soonest
    /// expiry first (the order of the cap's sparse index).
    fn holders(&self, scope: CapScope, counter_key: &str) -> Vec<&ConnectionRecord> {
        let mut holders: Vec<&ConnectionRecord> = self
            .connections
            .values()
            .filter(|record| slot_of(record, scope) == Some(counter_key))
            .collect();
        holders.sort_by_key(|record| record.expires_at);
        holders
    }
}

/// The counter `record` holds a slot in for `scope`.
fn slot_of(record: &ConnectionRecord, scope: CapScope) -> Option<&str> {
    match scope {
        CapScope::Total => record.slot_total.as_deref(),
        CapScope::User => record.slot_user.as_deref(),
        CapScope::Ip => record.slot_ip.as_deref(),
    }
}

/// One page of `targets` (sorted by connection id) after `from`.
fn page_of(targets: Vec<ConnectionTarget>, from: Option<TargetCursor>, limit: i32) -> Result<TargetPage, Error> {
    let after = match from {
        None => None,
        Some(TargetCursor::After(key)) => match key.get("connection_id") {
            Some(AttributeValue::S(connection_id)) => Some(connection_id.clone()),
            _ => return Err(Error::CursorMismatch),
        },
        Some(TargetCursor::Shards(_)) => return Err(Error::CursorMismatch),
    };
    let limit = usize::try_from(limit.max(1)).unwrap_or(1);
    let mut rest = targets
        .into_iter()
        .filter(|target| {
            after
                .as_deref()
                .is_none_or(|after| target.connection_id.as_str() > after)
        })
        .peekable();
    let page: Vec<ConnectionTarget> = rest.by_ref().take(limit).collect();
    let next = match (rest.peek(), page.last()) {
        (Some(_), Some(last)) => Some(TargetCursor::After(HashMap::from([(
            "connection_id".to_owned(),
            AttributeValue::S(last.connection_id.clone()),
        )]))),
        _ => None,
    };
    Ok(TargetPage { targets: page, next })
}

fn target_of(record: &ConnectionRecord) -> ConnectionTarget {
    ConnectionTarget {
        connection_id: record.connection_id.clone(),
        expires_at: record.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Audience;
    use crate::store::{ConnectionStore, SubscriptionStore};
    use crate::time::ManualClock;

    #[tokio::test]
    async fn a_listing_in_pages_gives_every_target_once_in_order() {
        let config = Config::from_lookup(|_| None).unwrap();
        let store = MemoryStore::new(&config, ManualClock::at_epoch_seconds(1_000).clock());
        for n in 0..5 {
            let record: ConnectionRecord = serde_json::from_value(serde_json::json!({
                "connection_id": format!("c{n}="), "source_ip": "198.51.100.1",
                "connected_at_ms": 0, "expires_at": 2_000,
            }))
            .unwrap();
            store.put_connection(&record).await.unwrap();
        }
        let mut listed = Vec::new();
        let mut from = None;
        loop {
            let page = store.list_targets_page(Audience::Everyone, from, 2).await.unwrap();
            assert!(page.targets.len() <= 2);
            listed.extend(page.targets.into_iter().map(|target| target.connection_id));
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, ["c0=", "c1=", "c2=", "c3=", "c4="]);
    }
}
