//! Channel positions and history: every channel message gets a position
//! (epoch + offset) exactly once, and a history entry a reconnecting client
//! can recover it from.
//!
//! History table (`channel` partition key, `entry` sort key), three kinds of item:
//! - `head`: the channel's `epoch` and latest `offset`. A new head (a new
//!   channel, or one whose head expired [`HEAD_TTL_SECONDS`] after its last
//!   message) gets a new epoch, which tells clients their offsets no longer apply.
//!   Only a publish writes it: a subscribe to a channel without one is
//!   answered with [`Position::not_started`] and writes nothing.
//! - `o#<offset, 20 digits>`: one message at that offset, kept for the history TTL.
//! - `m#<message_id>`: which position a message got, so a retried or
//!   re-delivered stream record keeps it.
//!
//! The three are written in one transaction conditioned on the head's offset,
//! so offsets have no gaps and no duplicates even when several stream shards
//! assign positions in one channel at once.

use std::future::Future;

use airwave_protocol::{MessageFrame, Position};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use crate::message::MessageRecord;
use crate::store::{conflict_backoff, number, read_number, DynamoStore, Item, Transaction};
use crate::Error;

/// A head lives this long after its channel's last message (or its start).
pub const HEAD_TTL_SECONDS: i64 = 30 * 86_400;
/// A position claim outlives every retry of its stream record (Lambda gives
/// up on a record after an hour; the stream keeps it 24 hours).
const CLAIM_TTL_SECONDS: i64 = 86_400;
/// Tries at assigning a position while other shards move the head.
const ASSIGN_ATTEMPTS: u32 = 20;
const HEAD: &str = "head";
/// The head may be (re)started: none, or one past its TTL that DynamoDB has not
/// deleted yet (or, written by hand, without one).
const HEAD_IS_GONE: &str = "attribute_not_exists(entry) OR attribute_not_exists(expires_at) OR expires_at <= :now";
/// History entries per page of a recovery's read.
const READ_PAGE_ITEMS: i32 = 50;

fn offset_entry(offset: u64) -> String {
    format!("o#{offset:020}")
}

/// Message ids up to this length name their claim as they are; longer ones
/// (a producer may write a 2,048-byte message id, while a sort key holds at
/// most 1,024 bytes) by their SHA-256, so DynamoDB never refuses the key and
/// a claim stays one write unit.
pub const MAX_PLAIN_CLAIM_ID_BYTES: usize = 200;

/// The claim's sort key: `m#<id>`, or `h#<sha-256 of the id, hex>` for a long
/// id. The prefixes differ, so a short id can never name a long one's claim.
fn claim_entry(message_id: &str) -> String {
    if message_id.len() <= MAX_PLAIN_CLAIM_ID_BYTES {
        return format!("m#{message_id}");
    }
    format!("h#{}", crate::channel::sha256_hex(message_id))
}

/// Characters in an epoch: random, so a channel started again never reuses one.
pub const EPOCH_CHARS: usize = 12;

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..EPOCH_CHARS].to_owned()
}

/// What a subscribe with `since` can be answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every message after `since` up to the head, in position order.
    Recovered(Vec<MessageFrame>),
    /// Not all of them can be given; the reason is for logs and metrics.
    Impossible(&'static str),
}

/// What to read for a recovery, decided from the head alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// Nothing was missed.
    UpToDate,
    /// Read offsets `from..=to`.
    Read {
        from: u64,
        to: u64,
    },
    Impossible(&'static str),
}

/// Decides a recovery from the client's last position and the channel's head
/// (either may be [`Position::not_started`]). A client that subscribed before
/// the channel's first message recovers from offset 1 of whatever epoch the
/// channel started with.
pub fn plan_recovery(since: &Position, head: &Position, history_size: u64) -> RecoveryPlan {
    let since_offset = if since.is_not_started() {
        0
    } else if since.epoch != head.epoch {
        return RecoveryPlan::Impossible("epoch_changed");
    } else {
        since.offset
    };
    if since_offset > head.offset {
        return RecoveryPlan::Impossible("position_ahead_of_channel");
    }
    let missed = head.offset - since_offset;
    if missed == 0 {
        RecoveryPlan::UpToDate
    } else if missed > history_size {
        RecoveryPlan::Impossible("more_missed_than_history_keeps")
    } else {
        RecoveryPlan::Read {
            from: since_offset + 1,
            to: head.offset,
        }
    }
}

pub trait ChannelHistory: Send + Sync {
    /// The position of `message` in `channel`: the one it already has, or the
    /// next one, recorded together with its history entry.
    fn assign_position(
        &self,
        channel: &str,
        message: &MessageRecord,
        history_ttl_seconds: u64,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Position, Error>> + Send;

    /// The channel's latest position; `None` for a channel nobody has
    /// published to (or whose head expired). Reading it writes nothing.
    fn channel_head(
        &self,
        channel: &str,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<Position>, Error>> + Send;

    /// The unexpired entries at offsets `from..=to` of `epoch`, in order;
    /// `None` as soon as their frames pass `max_bytes`, so a stale `since`
    /// cannot make one subscribe read more than one reply can carry.
    fn read_history(
        &self,
        channel: &str,
        epoch: &str,
        range: (u64, u64),
        max_bytes: usize,
        now_epoch_seconds: i64,
    ) -> impl Future<Output = Result<Option<Vec<MessageFrame>>, Error>> + Send;
}

/// Answers a subscribe that carried `since`, within `max_bytes` of frames.
pub async fn recover<H: ChannelHistory>(
    history: &H,
    channel: &str,
    since: &Position,
    head: &Position,
    history_size: u64,
    max_bytes: usize,
    now_epoch_seconds: i64,
) -> Result<Recovery, Error> {
    let (from, to) = match plan_recovery(since, head, history_size) {
        RecoveryPlan::UpToDate => return Ok(Recovery::Recovered(Vec::new())),
        RecoveryPlan::Impossible(reason) => return Ok(Recovery::Impossible(reason)),
        RecoveryPlan::Read { from, to } => (from, to),
    };
    let Some(entries) = history
        .read_history(channel, &head.epoch, (from, to), max_bytes, now_epoch_seconds)
        .await?
    else {
        return Ok(Recovery::Impossible("over_the_replay_bound"));
    };
    if entries.len() as u64 != to - from + 1 {
        return Ok(Recovery::Impossible("history_expired"));
    }
    Ok(Recovery::Recovered(entries))
}

impl DynamoStore {
    fn history_key(channel: &str, entry: &str) -> Item {
        Item::from([
            ("channel".to_owned(), AttributeValue::S(channel.to_owned())),
            ("entry".to_owned(), AttributeValue::S(entry.to_owned())),
        ])
    }

    /// The channel's head, unless there is none or it is past its TTL (which
    /// DynamoDB may not have deleted yet): either way the channel starts again.
    async fn live_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        match self.get_history_item(channel, HEAD).await? {
            Some(item) if is_live(&item, now) => self.decode_position(channel, &item).map(Some),
            _ => Ok(None),
        }
    }

    async fn get_history_item(&self, channel: &str, entry: &str) -> Result<Option<Item>, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.history_table)
            .set_key(Some(Self::history_key(channel, entry)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.history_table, error))?;
        Ok(output.item)
    }

    fn decode_position(&self, channel: &str, item: &Item) -> Result<Position, Error> {
        let epoch = match item.get("epoch") {
            Some(AttributeValue::S(epoch)) => Some(epoch.clone()),
            _ => None,
        };
        let offset = read_number(item, "offset").and_then(|offset| u64::try_from(offset).ok());
        match (epoch, offset) {
            (Some(epoch), Some(offset)) => Ok(Position::new(epoch, offset)),
            _ => Err(Error::DynamoDb {
                operation: "GetItem",
                table: self.history_table.clone(),
                message: format!("history item of channel {channel} has no epoch and offset"),
            }),
        }
    }

    /// A conditional put for a transaction. `offset` is a reserved word in
    /// DynamoDB expressions, so conditions name it `#offset`.
    fn history_put(
        &self,
        item: Item,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<TransactWriteItem, Error> {
        let mut put = Put::builder()
            .table_name(&self.history_table)
            .set_item(Some(item))
            .condition_expression(condition);
        if condition.contains("#offset") {
            put = put.expression_attribute_names("#offset", "offset");
        }
        for (name, value) in values {
            put = put.expression_attribute_values(*name, value.clone());
        }
        let put = put
            .build()
            .map_err(|error| self.build_error(&self.history_table, error))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// Whether a history item is still before its TTL (`expires_at`).
fn is_live(item: &Item, now: i64) -> bool {
    read_number(item, "expires_at").is_some_and(|expires| expires > now)
}

fn position_attributes(item: &mut Item, position: &Position, expires_at: i64) {
    item.insert("epoch".to_owned(), AttributeValue::S(position.epoch.clone()));
    item.insert("offset".to_owned(), AttributeValue::N(position.offset.to_string()));
    item.insert("expires_at".to_owned(), number(expires_at));
}

impl ChannelHistory for DynamoStore {
    async fn assign_position(
        &self,
        channel: &str,
        message: &MessageRecord,
        history_ttl_seconds: u64,
        now: i64,
    ) -> Result<Position, Error> {
        let claim_key = claim_entry(&message.message_id);
        let payload: AttributeValue =
            serde_dynamo::to_attribute_value(&message.payload).map_err(|source| Error::ItemFormat {
                table: self.history_table.clone(),
                key: message.message_id.clone(),
                source,
            })?;
        for attempt in 0..ASSIGN_ATTEMPTS {
            let head = self.live_head(channel, now).await?;
            let position = match &head {
                Some(head) => head.next(),
                None => Position::new(new_epoch(), 1),
            };
            let mut head_item = Self::history_key(channel, HEAD);
            position_attributes(&mut head_item, &position, now + HEAD_TTL_SECONDS);
            let head_write = match &head {
                Some(previous) => self.history_put(
                    head_item,
                    "epoch = :epoch AND #offset = :offset",
                    &[
                        (":epoch", AttributeValue::S(previous.epoch.clone())),
                        (":offset", AttributeValue::N(previous.offset.to_string())),
                    ],
                )?,
                None => self.history_put(head_item, HEAD_IS_GONE, &[(":now", number(now))])?,
            };
            let mut claim = Self::history_key(channel, &claim_key);
            position_attributes(
                &mut claim,
                &position,
                now + CLAIM_TTL_SECONDS.max(history_ttl_seconds as i64),
            );
            let claim_write = self.history_put(claim, "attribute_not_exists(entry)", &[])?;
            let mut entry = Self::history_key(channel, &offset_entry(position.offset));
            position_attributes(&mut entry, &position, now + history_ttl_seconds as i64);
            entry.insert("message_id".to_owned(), AttributeValue::S(message.message_id.clone()));
            entry.insert("payload".to_owned(), payload.clone());
            if let Some(publisher) = &message.published_by_user {
                entry.insert("publisher".to_owned(), AttributeValue::S(publisher.clone()));
            }
            // An entry left by an earlier epoch at this offset is replaced.
            let entry_write = self.history_put(
                entry,
                "attribute_not_exists(entry) OR epoch <> :epoch",
                &[(":epoch", AttributeValue::S(position.epoch.clone()))],
            )?;
            match self
                .transact(&self.history_table, vec![head_write, claim_write, entry_write])
                .await?
            {
                Transaction::Committed => return Ok(position),
                // Claimed before: a retry or a second delivery keeps its position.
                // (Checked first: on a busy channel the head has moved too.)
                Transaction::ConditionFailed { failed, .. } if failed.contains(&1) => {
                    let claim = self
                        .get_history_item(channel, &claim_key)
                        .await?
                        .ok_or_else(|| Error::DynamoDb {
                            operation: "GetItem",
                            table: self.history_table.clone(),
                            message: format!("the position claim of message {} vanished", message.message_id),
                        })?;
                    return self.decode_position(channel, &claim);
                }
                // Another shard moved the head first: read it again.
                Transaction::ConditionFailed { .. } => conflict_backoff(attempt).await,
            }
        }
        Err(Error::DynamoDb {
            operation: "TransactWriteItems",
            table: self.history_table.clone(),
            message: format!("channel {channel}'s head kept moving for {ASSIGN_ATTEMPTS} attempts"),
        })
    }

    async fn channel_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        self.live_head(channel, now).await
    }

    async fn read_history(
        &self,
        channel: &str,
        epoch: &str,
        (from, to): (u64, u64),
        max_bytes: usize,
        now: i64,
    ) -> Result<Option<Vec<MessageFrame>>, Error> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.history_table)
            .key_condition_expression("channel = :channel AND entry BETWEEN :from AND :to")
            .expression_attribute_values(":channel", AttributeValue::S(channel.to_owned()))
            .expression_attribute_values(":from", AttributeValue::S(offset_entry(from)))
            .expression_attribute_values(":to", AttributeValue::S(offset_entry(to)))
            .consistent_read(true)
            .limit(READ_PAGE_ITEMS)
            .into_paginator()
            .send();
        let mut frames = Vec::new();
        let mut bytes = 0usize;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| Error::dynamodb("Query", &self.history_table, error))?;
            for item in page.items.unwrap_or_default() {
                if !is_live(&item, now) {
                    continue;
                }
                let position = self.decode_position(channel, &item)?;
                if position.epoch != epoch {
                    continue;
                }
                let message_id = match item.get("message_id") {
                    Some(AttributeValue::S(id)) => id.clone(),
                    _ => continue,
                };
                let data = match item.get("payload") {
                    Some(payload) => {
                        serde_dynamo::from_attribute_value(payload.clone()).map_err(|source| Error::ItemFormat {
                            table: self.history_table.clone(),
                            key: format!("{channel}/{}", offset_entry(position.offset)),
                            source,
                        })?
                    }
                    None => serde_json::Value::Null,
                };
                let frame = MessageFrame {
                    id: message_id,
                    channel: Some(channel.to_owned()),
                    data,
                    position: Some(position),
                    publisher: match item.get("publisher") {
                        Some(AttributeValue::S(publisher)) => Some(publisher.clone()),
                        _ => None,
                    },
                    to_user: None,
                };
                bytes += frame.to_text().len();
                if bytes > max_bytes {
                    return Ok(None);
                }
                frames.push(frame);
            }
        }
        Ok(Some(frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_reads_exactly_what_was_missed_or_says_why_it_cannot() {
        let head = Position::new("e", 10);
        assert_eq!(
            plan_recovery(&Position::new("e", 10), &head, 100),
            RecoveryPlan::UpToDate
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 100),
            RecoveryPlan::Read { from: 5, to: 10 }
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 6),
            RecoveryPlan::Read { from: 5, to: 10 }
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 4), &head, 5),
            RecoveryPlan::Impossible("more_missed_than_history_keeps")
        );
        assert_eq!(
            plan_recovery(&Position::new("old", 4), &head, 100),
            RecoveryPlan::Impossible("epoch_changed")
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 11), &head, 100),
            RecoveryPlan::Impossible("position_ahead_of_channel")
        );
    }

    #[test]
    fn a_client_that_subscribed_before_the_first_message_recovers_from_the_first() {
        let not_started = Position::not_started();
        assert_eq!(plan_recovery(&not_started, &not_started, 100), RecoveryPlan::UpToDate);
        assert_eq!(
            plan_recovery(&not_started, &Position::new("e", 3), 100),
            RecoveryPlan::Read { from: 1, to: 3 }
        );
        assert_eq!(
            plan_recovery(&not_started, &Position::new("e", 3), 2),
            RecoveryPlan::Impossible("more_missed_than_history_keeps")
        );
        assert_eq!(
            plan_recovery(&Position::new("e", 3), &not_started, 100),
            RecoveryPlan::Impossible("epoch_changed"),
            "a head that expired took the channel's history with it"
        );
    }

    #[test]
    fn a_claim_key_stays_within_dynamodb_s_sort_key_limit_whatever_the_id() {
        assert_eq!(claim_entry("m-1"), "m#m-1");
        let long = "x".repeat(2_048);
        let key = claim_entry(&long);
        assert!(key.starts_with("h#") && key.len() == 66, "{key}");
        assert_ne!(claim_entry(&"x".repeat(2_047)), key, "distinct ids, distinct claims");
        assert_eq!(claim_entry(&long), key, "the same id always names the same claim");
    }

    #[test]
    fn offsets_sort_as_text_in_number_order() {
        assert!(offset_entry(9) < offset_entry(10));
        assert!(offset_entry(99_999) < offset_entry(100_000));
        assert!(offset_entry(u64::MAX).len() == 22);
    }
}
