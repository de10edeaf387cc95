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
//! - admission: `pk` (partition key): per-IP attempt counters
//!   (`attempts#<ip>#<window>`), open-connection counters (`open#total`,
//!   `open#user#<id>`, `open#ip#<ip>`) and release markers (`released#<id>`).
//!   See [`crate::admission`].

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use crate::admission::{AdmissionCounts, AdmitOutcome, Slot};
use crate::connection::{ConnectionRecord, ConnectionTarget};
use crate::message::{Audience, MessageRecord};

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

/// Where the next page of a listing starts (DynamoDB's last evaluated key).
#[derive(Debug, Clone)]
pub struct TargetCursor(Item);

/// One page of a listing.
#[derive(Debug, Default)]
pub struct TargetPage {
    pub targets: Vec<ConnectionTarget>,
    /// `None` on the last page.
    pub next: Option<TargetCursor>,
}
use crate::{Config, Error};

pub(crate) type Item = HashMap<String, AttributeValue>;

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
    /// `expires_at`, or to its token's expiry when that comes first. `None`
    /// when the record is gone or already expired: an expired record is
    /// treated as gone, never revived.
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

    /// Like [`ConnectionStore::remove_connection`], for a connection API
    /// Gateway answered 410: only if it was accepted at or before `connected_before_ms`.
    /// API Gateway answers 410 to a connection whose handshake is still in
    /// progress too (its `$connect` wrote the record, the upgrade has not
    /// completed), and that one must stay.
    fn remove_gone_connection(
        &self,
        connection_id: &str,
        connected_before_ms: i64,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, Error>> + Send;

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

    /// Writes a message to the messages table, which streams it to every target.
    fn put_message(&self, message: &MessageRecord) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives a message item its writer left without `expires_at` the
    /// table's default retention from `now_epoch_seconds`, so DynamoDB's TTL
    /// deletes it. Answers whether it wrote (never over an expiry that is set).
    fn apply_message_retention(
        &self,
        message_id: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Counts one connection attempt from `source_ip` in fixed window
    /// `window` and answers the attempt's number in that window (1 for the first).
    fn count_connect_attempt(
        &self,
        source_ip: &str,
        window: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Writes `record` and takes one slot of each of `slots`, all or nothing,
    /// so concurrent admissions never take a counter past its cap. The record
    /// must name the slots' counters in its `slot_*` attributes.
    fn admit_connection(
        &self,
        record: &ConnectionRecord,
        slots: &[Slot],
    ) -> impl Future<Output = Result<AdmitOutcome, Error>> + Send;

    /// Removes the records in `slot`'s scope that expired by
    /// `now_epoch_seconds` and gives their slots back; answers how many.
    fn reclaim_expired_slots(
        &self,
        slot: &Slot,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<usize, Error>> + Send;

    /// Gives back the slots of a record that DynamoDB's TTL already deleted.
    /// Idempotent: a second call for the same connection changes nothing and
    /// answers `false`.
    fn release_slots_of_deleted(
        &self,
        record: &ConnectionRecord,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Counts for the stats read: live connections, distinct users, the total
    /// counter and every IP's attempts in `window`. Scans both tables: an
    /// operator's read, not a per-request one.
    fn admission_counts(
        &self,
        window: i64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<AdmissionCounts, Error>> + Send;
}

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

/// How many times a transaction that lost a race to another one is tried:
/// with the backoff below, about 4 s in all. A release that still fails leaves
/// the slot to the expiry reclaim, so it is worth trying hard.
const TRANSACTION_ATTEMPTS: u32 = 12;
/// How long a release marker is kept: longer than DynamoDB Streams keeps a record.
const RELEASE_MARKER_TTL_SECONDS: i64 = 3 * 86_400;
/// Reads and transactions a subscribe tries while the connection keeps
/// changing under it (pings, other subscribes).
const SUBSCRIBE_ATTEMPTS: u32 = 8;
/// Records released per reclaim: enough to free room without a long refusal path.
const RECLAIM_BATCH: i32 = 25;

/// Why a transaction was cancelled, from its per-item reasons.
enum Cancellation {
    /// Item `index` (the first) failed its condition; `failed` lists every one that did.
    ConditionFailed {
        index: usize,
        failed: Vec<usize>,
    },
    /// Another transaction touched the same items; trying again is right.
    Conflict,
    Other,
}

/// How a transaction ended when DynamoDB answered.
pub(crate) enum Transaction {
    Committed,
    /// Item `index` (the first) failed its condition, with every item in
    /// `failed` that did; nothing was written.
    ConditionFailed {
        index: usize,
        failed: Vec<usize>,
    },
}

fn cancellation<R>(error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> Option<Cancellation> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            let reasons = cancelled.cancellation_reasons();
            let failed: Vec<usize> = reasons
                .iter()
                .enumerate()
                .filter(|(_, reason)| reason.code() == Some("ConditionalCheckFailed"))
                .map(|(index, _)| index)
                .collect();
            if let Some(&index) = failed.first() {
                return Some(Cancellation::ConditionFailed { index, failed });
            }
            if reasons
                .iter()
                .any(|reason| reason.code() == Some("TransactionConflict"))
            {
                return Some(Cancellation::Conflict);
            }
            Some(Cancellation::Other)
        }
        _ => None,
    }
}

/// Full-jitter backoff between transaction attempts: up to 10 ms, 20 ms, ... 640 ms.
pub(crate) async fn conflict_backoff(attempt: u32) {
    let ceiling_ms = 10u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=ceiling_ms))).await;
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

/// The DynamoDB adapter of [`ConnectionStore`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    pub(crate) client: Client,
    connections_table: String,
    subscriptions_table: String,
    messages_table: String,
    admission_table: String,
    pub(crate) history_table: String,
    message_retention_seconds: i64,
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

    pub(crate) async fn delete_subscriptions_of(&self, record: &ConnectionRecord) -> Result<(), Error> {
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

    /// `SET expires_at` on a live record (and, with `within_token`, only up to
    /// its token's expiry). `Err` holds the record as it stood when a
    /// condition failed (`None`: no record).
    async fn set_expiry(
        &self,
        connection_id: &str,
        expires_at: i64,
        now_epoch_seconds: i64,
        within_token: bool,
    ) -> Result<Result<Option<ConnectionRecord>, Option<ConnectionRecord>>, Error> {
        let condition = if within_token {
            "attribute_exists(connection_id) AND expires_at > :now AND \
             (attribute_not_exists(token_expires_at) OR token_expires_at >= :expires_at)"
        } else {
            "attribute_exists(connection_id) AND expires_at > :now"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .update_expression("SET expires_at = :expires_at")
            .condition_expression(condition)
            .expression_attribute_values(":expires_at", number(expires_at))
            .expression_attribute_values(":now", number(now_epoch_seconds))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Ok(self.decode_returned(connection_id, output.attributes)?)),
            Err(error) if is_conditional_check_failure(&error) => {
                let old_item = match error.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(refusal) => refusal.item,
                    _ => None,
                };
                Ok(Err(self.decode_returned(connection_id, old_item)?))
            }
            Err(error) => Err(Error::dynamodb("UpdateItem", &self.connections_table, error)),
        }
    }

    fn admission_key(pk: &str) -> Item {
        HashMap::from([("pk".to_owned(), AttributeValue::S(pk.to_owned()))])
    }

    /// Runs a transaction, trying again (with jitter) when it loses a race to
    /// another transaction on the same items.
    pub(crate) async fn transact(&self, table: &str, items: Vec<TransactWriteItem>) -> Result<Transaction, Error> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Transaction::Committed),
                Err(error) => error,
            };
            match cancellation(&error) {
                Some(Cancellation::ConditionFailed { index, failed }) => {
                    return Ok(Transaction::ConditionFailed { index, failed })
                }
                Some(Cancellation::Conflict) if attempt + 1 < TRANSACTION_ATTEMPTS => conflict_backoff(attempt).await,
                _ => return Err(Error::dynamodb("TransactWriteItems", table, error)),
            }
        }
        Err(Error::DynamoDb {
            operation: "TransactWriteItems",
            table: table.to_owned(),
            message: format!("still conflicting with other transactions after {TRANSACTION_ATTEMPTS} attempts"),
        })
    }

    /// `ADD open_count :delta` on a counter, as a transaction item.
    pub(crate) fn counter_update(
        &self,
        counter_key: &str,
        delta: i64,
        cap: Option<u64>,
    ) -> Result<TransactWriteItem, Error> {
        let mut update = Update::builder()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(counter_key)))
            .update_expression("ADD open_count :delta")
            .expression_attribute_values(":delta", number(delta));
        if let Some(cap) = cap {
            update = update
                .condition_expression("attribute_not_exists(open_count) OR open_count < :cap")
                .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()));
        }
        let update = update
            .build()
            .map_err(|error| self.build_error(&self.admission_table, error))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(crate) fn build_error(&self, table: &str, error: impl std::fmt::Display) -> Error {
        Error::DynamoDb {
            operation: "TransactWriteItems",
            table: table.to_owned(),
            message: error.to_string(),
        }
    }

    async fn read_counter(&self, counter_key: &str) -> Result<u64, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(counter_key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.admission_table, error))?;
        Ok(output
            .item
            .and_then(|item| read_number(&item, "open_count"))
            .and_then(|open| u64::try_from(open).ok())
            .unwrap_or(0))
    }

    /// Deletes `record` and gives back its slots in one transaction, only if
    /// `only` still holds for it. Answers whether this call removed it (false:
    /// already gone, or refreshed meanwhile).
    async fn release_record(&self, record: &ConnectionRecord, only: RemoveIf) -> Result<bool, Error> {
        let mut delete = Delete::builder()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(&record.connection_id)));
        let mut condition = String::from("attribute_exists(connection_id)");
        if let Some((clause, name, value)) = only.clause() {
            condition.push_str(clause);
            delete = delete.expression_attribute_values(name, number(value));
        }
        delete = delete.condition_expression(condition);
        let delete = delete
            .build()
            .map_err(|error| self.build_error(&self.connections_table, error))?;
        self.give_slots_back(TransactWriteItem::builder().delete(delete).build(), record)
            .await
    }

    /// One transaction: `guard` (whose condition makes the release happen at
    /// most once) and a decrement of every counter `record` holds a slot in;
    /// then its subscriptions go. Answers whether the transaction committed.
    async fn give_slots_back(&self, guard: TransactWriteItem, record: &ConnectionRecord) -> Result<bool, Error> {
        let mut items = vec![guard];
        for counter_key in record.held_slots() {
            items.push(self.counter_update(counter_key, -1, None)?);
        }
        match self.transact(&self.admission_table, items).await? {
            Transaction::Committed => {
                self.delete_subscriptions_of(record).await?;
                Ok(true)
            }
            Transaction::ConditionFailed { .. } => Ok(false),
        }
    }

    /// Removes a connection: one conditional delete when it holds no slot,
    /// otherwise that delete (refused, but handing back the record) and a
    /// transaction that also gives its slots back.
    async fn remove_connection_if(
        &self,
        connection_id: &str,
        only: RemoveIf,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let mut condition = String::from(
            "attribute_exists(connection_id) AND attribute_not_exists(slot_total) \
             AND attribute_not_exists(slot_user) AND attribute_not_exists(slot_ip)",
        );
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.connections_table)
            .set_key(Some(Self::connection_key(connection_id)))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((clause, name, value)) = only.clause() {
            condition.push_str(clause);
            request = request.expression_attribute_values(name, number(value));
        }
        match request.condition_expression(condition).send().await {
            Ok(output) => {
                let record = self.decode_returned(connection_id, output.attributes)?;
                if let Some(record) = &record {
                    self.delete_subscriptions_of(record).await?;
                }
                Ok(record)
            }
            Err(error) if is_conditional_check_failure(&error) => {
                // Gone, not expired, or holding slots: only the last needs more
                // work. The refusal carries the record as it stood, which spares
                // a read; the release's own condition covers what changes after.
                let old_item = match error.into_service_error() {
                    DeleteItemError::ConditionalCheckFailedException(refusal) => refusal.item,
                    _ => None,
                };
                let Some(record) = self.decode_returned(connection_id, old_item)? else {
                    return Ok(None);
                };
                if record.held_slots().next().is_none() {
                    return Ok(None);
                }
                if self.release_record(&record, only).await? {
                    Ok(Some(record))
                } else {
                    Ok(None)
                }
            }
            Err(error) => Err(Error::dynamodb("DeleteItem", &self.connections_table, error)),
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
        // One write while the token outlives the new expiry; near the token's
        // end the refusal hands back the record, and a second write stops the
        // expiry at the token's.
        let record = match self
            .set_expiry(connection_id, expires_at, now_epoch_seconds, true)
            .await?
        {
            Ok(record) => record,
            Err(Some(old)) if !old.is_expired(now_epoch_seconds) => match old.token_expires_at {
                Some(token_expires_at) if token_expires_at < expires_at => self
                    .set_expiry(connection_id, token_expires_at, now_epoch_seconds, false)
                    .await?
                    .unwrap_or(None),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(record) = &record {
            let expires_at = record.expires_at;
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
        self.remove_connection_if(connection_id, RemoveIf::Present).await
    }

    async fn remove_expired_connection(
        &self,
        connection_id: &str,
        now_epoch_seconds: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        self.remove_connection_if(connection_id, RemoveIf::ExpiredBy(now_epoch_seconds))
            .await
    }

    async fn remove_gone_connection(
        &self,
        connection_id: &str,
        connected_before_ms: i64,
    ) -> Result<Option<ConnectionRecord>, Error> {
        self.remove_connection_if(connection_id, RemoveIf::ConnectedBefore(connected_before_ms))
            .await
    }

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

    async fn list_targets_page(
        &self,
        audience: Audience<'_>,
        from: Option<TargetCursor>,
        limit: i32,
    ) -> Result<TargetPage, Error> {
        // Only keys and the expiry are read; a projection would not make a
        // read of a whole record cheaper, so every listing reads a table or
        // an index whose items hold nothing else.
        let from = from.map(|cursor| cursor.0);
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
                    .set_exclusive_start_key(from)
                    .send()
                    .await
                    .map_err(|error| Error::dynamodb("Query", &self.connections_table, error))?;
                (&self.connections_table, page.items, page.last_evaluated_key)
            }
            Audience::Channel(channel) => {
                let page = self
                    .client
                    .query()
                    .table_name(&self.subscriptions_table)
                    .key_condition_expression("channel = :channel")
                    .expression_attribute_values(":channel", AttributeValue::S(channel.to_owned()))
                    .projection_expression("connection_id, expires_at")
                    // Consistent, so a subscription written before a subscribe
                    // read the channel's head is always listed for the messages
                    // after it (what recovery relies on). Twice the read units.
                    .consistent_read(true)
                    .limit(limit.max(1))
                    .set_exclusive_start_key(from)
                    .send()
                    .await
                    .map_err(|error| Error::dynamodb("Query", &self.subscriptions_table, error))?;
                (&self.subscriptions_table, page.items, page.last_evaluated_key)
            }
            Audience::Everyone => {
                let page = self
                    .client
                    .scan()
                    .table_name(&self.connections_table)
                    .index_name(EVERYONE_INDEX)
                    .limit(limit.max(1))
                    .set_exclusive_start_key(from)
                    .send()
                    .await
                    .map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
                (&self.connections_table, page.items, page.last_evaluated_key)
            }
        };
        let mut targets = Vec::new();
        self.decode_targets(table, items.unwrap_or_default(), &mut targets);
        Ok(TargetPage {
            targets,
            // DynamoDB answers an empty key map on some last pages.
            next: next.filter(|key| !key.is_empty()).map(TargetCursor),
        })
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

    async fn count_connect_attempt(&self, source_ip: &str, window: i64, expires_at: i64) -> Result<u64, Error> {
        // One unconditional ADD: every attempt gets its own number, so exactly
        // `limit` attempts per window see a number within the limit.
        let output = self
            .client
            .update_item()
            .table_name(&self.admission_table)
            .set_key(Some(Self::admission_key(&crate::admission::attempts_key(
                source_ip, window,
            ))))
            .update_expression("SET expires_at = :expires_at, window_index = :window ADD attempts :one")
            .expression_attribute_values(":expires_at", number(expires_at))
            .expression_attribute_values(":window", number(window))
            .expression_attribute_values(":one", number(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|error| Error::dynamodb("UpdateItem", &self.admission_table, error))?;
        output
            .attributes
            .as_ref()
            .and_then(|item| read_number(item, "attempts"))
            .and_then(|attempts| u64::try_from(attempts).ok())
            .ok_or_else(|| Error::DynamoDb {
                operation: "UpdateItem",
                table: self.admission_table.clone(),
                message: "the answer has no attempts count".to_owned(),
            })
    }

    async fn admit_connection(&self, record: &ConnectionRecord, slots: &[Slot]) -> Result<AdmitOutcome, Error> {
        if slots.is_empty() {
            self.put_connection(record).await?;
            return Ok(AdmitOutcome::Admitted);
        }
        let item = serde_dynamo::to_item(record).map_err(|source| Error::ItemFormat {
            table: self.connections_table.clone(),
            key: record.connection_id.clone(),
            source,
        })?;
        let put = Put::builder()
            .table_name(&self.connections_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(connection_id)")
            .build()
            .map_err(|error| self.build_error(&self.connections_table, error))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for slot in slots {
            items.push(self.counter_update(&slot.counter_key, 1, Some(slot.cap))?);
        }
        match self.transact(&self.admission_table, items).await? {
            Transaction::Committed => Ok(AdmitOutcome::Admitted),
            // The record exists: a repeated $connect of an admitted connection.
            Transaction::ConditionFailed { index: 0, .. } => Ok(AdmitOutcome::Admitted),
            Transaction::ConditionFailed { index, .. } => {
                let slot = slots.get(index - 1).ok_or_else(|| Error::DynamoDb {
                    operation: "TransactWriteItems",
                    table: self.admission_table.clone(),
                    message: format!("a condition failed on item {index}, which this transaction does not have"),
                })?;
                let open = self.read_counter(&slot.counter_key).await?;
                Ok(AdmitOutcome::CapReached {
                    slot: slot.clone(),
                    open,
                })
            }
        }
    }

    async fn reclaim_expired_slots(&self, slot: &Slot, now_epoch_seconds: i64) -> Result<usize, Error> {
        let attribute = slot.scope.record_attribute();
        let output = self
            .client
            .query()
            .table_name(&self.connections_table)
            .index_name(slot.scope.index_name())
            .key_condition_expression("#slot = :counter AND expires_at <= :now")
            .expression_attribute_names("#slot", attribute)
            .expression_attribute_values(":counter", AttributeValue::S(slot.counter_key.clone()))
            .expression_attribute_values(":now", number(now_epoch_seconds))
            .limit(RECLAIM_BATCH)
            .send()
            .await
            .map_err(|error| Error::dynamodb("Query", &self.connections_table, error))?;
        let mut released = 0;
        for item in output.items.unwrap_or_default() {
            let Some(AttributeValue::S(connection_id)) = item.get("connection_id") else {
                tracing::error!(counter = %slot.counter_key, "skipping an index item without a connection id");
                continue;
            };
            let connection_id = connection_id.clone();
            // Read whole: the index does not carry `channels` (a subscribe
            // would otherwise write to every index), and the release deletes
            // the subscriptions the record lists. The release re-checks the
            // expiry on the table, so a connection refreshed meanwhile stays.
            let record = match self.get_connection(&connection_id).await {
                Ok(Some(record)) if record.is_expired(now_epoch_seconds) => record,
                Ok(_) => continue,
                Err(Error::ItemFormat { source, .. }) => {
                    tracing::error!(connection_id = %connection_id, error = %source, "skipping a connection record that cannot be decoded");
                    continue;
                }
                Err(error) => return Err(error),
            };
            if self
                .release_record(&record, RemoveIf::ExpiredBy(now_epoch_seconds))
                .await?
            {
                released += 1;
                tracing::info!(
                    connection_id = %record.connection_id,
                    scope = slot.scope.as_str(),
                    expires_at = record.expires_at,
                    "released the slot of an expired connection"
                );
            }
        }
        Ok(released)
    }

    async fn release_slots_of_deleted(&self, record: &ConnectionRecord, now_epoch_seconds: i64) -> Result<bool, Error> {
        if record.held_slots().next().is_none() {
            return Ok(false);
        }
        // The marker makes a redelivered stream record a no-op.
        let mut marker = Self::admission_key(&format!("released#{}", record.connection_id));
        marker.insert(
            "expires_at".to_owned(),
            number(now_epoch_seconds + RELEASE_MARKER_TTL_SECONDS),
        );
        let put = Put::builder()
            .table_name(&self.admission_table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| self.build_error(&self.admission_table, error))?;
        self.give_slots_back(TransactWriteItem::builder().put(put).build(), record)
            .await
    }

    async fn admission_counts(&self, window: i64, now_epoch_seconds: i64) -> Result<AdmissionCounts, Error> {
        let mut counts = AdmissionCounts::default();
        let mut users = std::collections::HashSet::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.connections_table)
            .projection_expression("connection_id, user_id, expires_at")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Scan", &self.connections_table, error))?;
            for item in page.items.unwrap_or_default() {
                if read_number(&item, "expires_at").is_some_and(|expires_at| expires_at > now_epoch_seconds) {
                    counts.open_connections += 1;
                    if let Some(AttributeValue::S(user_id)) = item.get("user_id") {
                        users.insert(user_id.clone());
                    }
                }
            }
        }
        counts.distinct_users = users.len() as u64;
        let mut pages = self
            .client
            .scan()
            .table_name(&self.admission_table)
            .filter_expression("window_index = :window")
            .expression_attribute_values(":window", number(window))
            .select(Select::AllAttributes)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Scan", &self.admission_table, error))?;
            for item in page.items.unwrap_or_default() {
                if let Some(attempts) = read_number(&item, "attempts").and_then(|value| u64::try_from(value).ok()) {
                    counts.attempts_in_window.push(attempts);
                }
            }
        }
        counts.total_slots_taken = self.read_counter(&Slot::total(0).counter_key).await?;
        Ok(counts)
    }
}
