//! Where connection records, subscriptions, admission counters and messages
//! live. Each concern has its own trait, and every handler is bound only on the
//! ones it uses, so its bounds say which parts of the store it touches, as its
//! function's IAM policy in `template.yaml` does:
//!
//! - [`ConnectionStore`]: connection records, from `$connect` to their removal.
//! - [`SubscriptionStore`]: which channels a connection is subscribed to, and
//!   the listing of a message's targets.
//! - [`AdmissionStore`]: the per-IP throttle and the caps on open connections.
//! - [`MessageStore`]: the messages table the stream-processor is fed from.
//!
//! [`DynamoStore`] implements them all, one file per trait; `MemoryStore`
//! (`crate::memory_store`, for tests: built for this crate's tests or with the
//! `memory-store` feature) implements them over tables in memory. It sits
//! beside this module rather than in it: it uses the domain modules (eviction,
//! liveness, rates, stats) that use these traits, and a module inside `store`
//! doing so would make `store` and those modules import each other. This module holds
//! what they share (table names, keys, numbers, error codes) and `transaction`
//! the retried transactions several of them write with.
//!
//! Tables:
//! - connections: `connection_id` (partition key), one item per open connection,
//!   with the string set `channels` it is subscribed to.
//! - subscriptions: `channel` (partition key: the channel's shard for the
//!   connection, see `shards`) + `connection_id` (sort key), so a channel's
//!   subscribers are one query per shard, never a scan of every connection.
//!   Every subscription item's channel is also in its connection's `channels`,
//!   which is how removing a connection finds its subscriptions.
//! - messages: `message_id` (partition key), streamed to the stream-processor.
//! - admission: `pk` (partition key): per-IP attempt counters
//!   (`attempts#<ip>#<window>`), open-connection counters (`open#total`,
//!   `open#user#<id>`, `open#ip#<ip>`), release markers (`released#<id>`)
//!   and publish allowances (`publish#<connection>#<window>`,
//!   `publish-user#<id>#<window>`, `publish-ip#<ip>#<window>`). See
//!   [`crate::admission`] and [`crate::rate`].

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::time::{Clock, Clocked};
use crate::{Config, Error};

mod admission;
mod batch;
mod connections;
mod history;
mod messages;
mod shards;
mod subscriptions;
mod transaction;

pub use admission::AdmissionStore;
pub use connections::{ConnectionStore, ExpiredRemoval};
pub use messages::MessageStore;
pub use shards::{channel_of_partition, subscription_partition, SUBSCRIPTION_SHARDS};
pub use subscriptions::{
    SubscribeOutcome, SubscriptionStore, TargetCursor, TargetPage, EVERYONE_INDEX, FIRST_TARGET_PAGE_SIZE,
    TARGET_PAGE_SIZE, USER_INDEX,
};
pub(crate) use transaction::{conflict_backoff, Transaction};

// What the in-memory store (`crate::memory_store`) shares with these adapters.
#[cfg(any(test, feature = "memory-store"))]
pub(crate) use admission::{RECLAIM_BATCH, RELEASE_MARKER_TTL_SECONDS};
#[cfg(any(test, feature = "memory-store"))]
pub(crate) use history::new_epoch;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Which records a removal may take.
#[derive(Debug, Clone, Copy)]
enum RemoveIf {
    Present,
    /// Only one still expired at this time (epoch seconds).
    ExpiredBy(i64),
    /// Only one accepted at or before this time (epoch milliseconds).
    ConnectedBefore(i64),
}

impl RemoveIf {
    /// What this adds to a delete's condition: the clause, its placeholder and value.
    fn clause(self) -> Option<(&'static str, &'static str, i64)> {
        match self {
            RemoveIf::Present => None,
            RemoveIf::ExpiredBy(now) => Some((" AND expires_at <= :now", ":now", now)),
            RemoveIf::ConnectedBefore(cutoff_ms) => Some((" AND connected_at_ms <= :cutoff", ":cutoff", cutoff_ms)),
        }
    }
}

pub(crate) fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn read_number(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

/// The DynamoDB adapter of every store trait.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    pub(crate) client: Client,
    connections_table: String,
    subscriptions_table: String,
    pub(crate) messages_table: String,
    admission_table: String,
    pub(crate) history_table: String,
    pub(crate) message_retention_seconds: i64,
    /// The system's clock: what the handlers read the time from.
    clock: Clock,
}

impl DynamoStore {
    pub fn new(client: Client, config: &Config) -> Self {
        DynamoStore {
            client,
            connections_table: config.connections_table.clone(),
            subscriptions_table: config.subscriptions_table.clone(),
            messages_table: config.messages_table.clone(),
            admission_table: config.admission_table.clone(),
            history_table: config.history.table.clone(),
            message_retention_seconds: i64::try_from(config.message_retention_seconds).unwrap_or(i64::MAX),
            clock: Clock::System,
        }
    }

    pub(crate) fn admission_table(&self) -> &str {
        &self.admission_table
    }

    pub(crate) fn connections_table(&self) -> &str {
        &self.connections_table
    }

    pub(crate) fn connection_key(connection_id: &str) -> Item {
        HashMap::from([("connection_id".to_owned(), AttributeValue::S(connection_id.to_owned()))])
    }

    pub(crate) fn build_error(&self, table: &str, error: impl std::fmt::Display) -> Error {
        Error::DynamoDb {
            operation: "TransactWriteItems",
            table: table.to_owned(),
            message: error.to_string(),
        }
    }
}

impl Clocked for DynamoStore {
    fn clock(&self) -> &Clock {
        &self.clock
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

pub(crate) fn is_conditional_check_failure<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    has_error_code(error, "ConditionalCheckFailedException")
}

/// The answer to a conditional update: `true` when it was applied, `false`
/// when its condition did not hold; any other failure is an error.
pub(crate) fn condition_held<T, E, R>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    table: &str,
) -> Result<bool, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if is_conditional_check_failure(&error) => Ok(false),
        Err(error) => Err(Error::dynamodb("UpdateItem", table, error)),
    }
}
