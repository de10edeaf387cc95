//! The history table and the position claims: the DynamoDB side of
//! [`crate::history`].
//!
//! History table (`channel` partition key, `entry` sort key), two kinds of item:
//! - `head`: the channel's `epoch`, its latest `offset` and `expires_at`.
//! - `o#<offset, 20 digits>`: one message at that offset, kept for the history TTL.
//!
//! A run of `k` messages of one channel costs, before its first post, three
//! DynamoDB round trips:
//! 1. one consistent `BatchGetItem` of the messages' own items (up to 100
//!    keys), for positions claimed by an earlier try of the same records;
//! 2. one `UpdateItem` of the head: `ADD offset k`, conditioned on a live
//!    head, which answers the new offset and so a block of `k` offsets no
//!    other run can get (runs of several stream shards interleave whole
//!    blocks, with no gap and no retry);
//! 3. at once: the history entries, 25 per `BatchWriteItem`, and one
//!    conditional `UpdateItem` per message on its item in the messages table
//!    (the claim, which also gives an item without `expires_at` its retention).
//!
//! Write units: one per KB of each entry and of each message item, plus one
//! head update per run: for messages under 1 KB, 2 + 1/k per message. The
//! only write on the channel's own key is the head's, once per run.

use std::collections::{HashMap, HashSet};

use airwave_protocol::{MessageFrame, Position};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::batch::{puts, read_in_batches, unprocessed_writes, write_in_batches, BatchRead, Projection};
use super::{is_conditional_check_failure, number, read_number, DynamoStore, Item};
use crate::history::{ChannelHistory, Reservation, CLAIM_ATTRIBUTES, HEAD_TTL_SECONDS};
use crate::message::MessageRecord;
use crate::Error;

/// Tries at taking a block of offsets while other runs start the channel.
const ASSIGN_ATTEMPTS: u32 = 20;
const HEAD: &str = "head";
/// A head that is live: an epoch (a string), an offset and an expiry
/// (numbers), and before its TTL.
const HEAD_IS_LIVE: &str = "attribute_type(epoch, :string) AND attribute_type(#offset, :number) \
                            AND attribute_type(expires_at, :number) AND expires_at > :now";
/// The head may be (re)started: none, one past its TTL that DynamoDB has not
/// deleted yet, or one written by hand without an expiry, epoch or offset of
/// the right type (which would otherwise fail every run of the channel).
const HEAD_IS_GONE: &str = "attribute_not_exists(entry) OR expires_at <= :now \
                            OR NOT attribute_type(expires_at, :number) OR NOT attribute_type(epoch, :string) \
                            OR NOT attribute_type(#offset, :number)";
/// When the head's epoch started, epoch seconds.
const EPOCH_STARTED_AT: &str = "started_at";
/// History entries per page of a recovery's read.
const READ_PAGE_ITEMS: i32 = 50;
/// The claim's attributes on a message item.
const CLAIM_EPOCH: &str = CLAIM_ATTRIBUTES[0];
const CLAIM_OFFSET: &str = CLAIM_ATTRIBUTES[1];

fn offset_entry(offset: u64) -> String {
    format!("o#{offset:020}")
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..airwave_protocol::EPOCH_CHARS].to_owned()
}

/// Whether a history item is still before its TTL (`expires_at`).
fn is_live(item: &Item, now: i64) -> bool {
    read_number(item, "expires_at").is_some_and(|expires| expires > now)
}

fn claimed_position(item: &Item) -> Option<Position> {
    let epoch = match item.get(CLAIM_EPOCH) {
        Some(AttributeValue::S(epoch)) => epoch.clone(),
        _ => return None,
    };
    let offset = read_number(item, CLAIM_OFFSET).and_then(|offset| u64::try_from(offset).ok())?;
    Some(Position::new(epoch, offset))
}

impl DynamoStore {
    fn history_key(channel: &str, entry: &str) -> Item {
        Item::from([
            ("channel".to_owned(), AttributeValue::S(channel.to_owned())),
            ("entry".to_owned(), AttributeValue::S(entry.to_owned())),
        ])
    }

    fn message_key(message_id: &str) -> Item {
        Item::from([("message_id".to_owned(), AttributeValue::S(message_id.to_owned()))])
    }

    /// The channel's head, unless there is none or it is past its TTL (which
    /// DynamoDB may not have deleted yet): either way the channel starts again.
    async fn live_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.history_table)
            .set_key(Some(Self::history_key(channel, HEAD)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.history_table, error))?;
        match output.item {
            Some(item) if is_live(&item, now) => self.decode_position(channel, &item).map(Some),
            _ => Ok(None),
        }
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

    /// The positions already claimed by any of `ids` (round trip 1).
    async fn claimed_positions(&self, ids: &[&str]) -> Result<HashMap<String, Position>, Error> {
        let table = self.messages_table.as_str();
        let keys = ids.iter().map(|id| Self::message_key(id)).collect();
        let projection = Projection {
            expression: "message_id, #epoch, #offset",
            names: &[("#epoch", CLAIM_EPOCH), ("#offset", CLAIM_OFFSET)],
        };
        let items = read_in_batches(table, keys, |keys| async {
            let request = projection.read_request(table, keys)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.messages_table, request)
                .send()
                .await
                .map_err(|error| Error::dynamodb("BatchGetItem", table, error))?;
            Ok(BatchRead::from_output(output, table))
        })
        .await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get("message_id") {
                Some(AttributeValue::S(id)) => claimed_position(item).map(|position| (id.clone(), position)),
                _ => None,
            })
            .collect())
    }

    /// Writes history entries, 25 a `BatchWriteItem`, all at once.
    async fn write_entries(&self, entries: Vec<Item>) -> Result<(), Error> {
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

    /// Takes `count` offsets for `channel` with one head update (round trip
    /// 2), starting the channel with a new epoch when it has no live head;
    /// answers the first position of the block.
    async fn reserve_offsets(&self, channel: &str, count: u64, now: i64) -> Result<Position, Error> {
        let table = self.history_table.as_str();
        for _ in 0..ASSIGN_ATTEMPTS {
            let moved = self
                .client
                .update_item()
                .table_name(table)
                .set_key(Some(Self::history_key(channel, HEAD)))
                .update_expression("SET expires_at = :expires_at ADD #offset :count")
                .condition_expression(HEAD_IS_LIVE)
                .expression_attribute_names("#offset", "offset")
                .expression_attribute_values(":string", AttributeValue::S("S".into()))
                .expression_attribute_values(":number", AttributeValue::S("N".into()))
                .expression_attribute_values(":expires_at", number(now + HEAD_TTL_SECONDS))
                .expression_attribute_values(":count", AttributeValue::N(count.to_string()))
                .expression_attribute_values(":now", number(now))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match moved {
                Ok(output) => {
                    let head = self.decode_position(channel, &output.attributes.unwrap_or_default())?;
                    return Ok(Position::new(head.epoch, head.offset.saturating_sub(count) + 1));
                }
                Err(error) if is_conditional_check_failure(&error) => {}
                Err(error) => return Err(Error::dynamodb("UpdateItem", table, error)),
            }
            // No live head: start the channel. Another run may start it
            // first, and then the block comes from its head.
            let epoch = new_epoch();
            let mut head = Self::history_key(channel, HEAD);
            head.insert("epoch".to_owned(), AttributeValue::S(epoch.clone()));
            head.insert("offset".to_owned(), AttributeValue::N(count.to_string()));
            head.insert("expires_at".to_owned(), number(now + HEAD_TTL_SECONDS));
            head.insert(EPOCH_STARTED_AT.to_owned(), number(now));
            let started = self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(head))
                .condition_expression(HEAD_IS_GONE)
                .expression_attribute_names("#offset", "offset")
                .expression_attribute_values(":string", AttributeValue::S("S".into()))
                .expression_attribute_values(":number", AttributeValue::S("N".into()))
                .expression_attribute_values(":now", number(now))
                .send()
                .await;
            match started {
                Ok(_) => return Ok(Position::new(epoch, 1)),
                Err(error) if is_conditional_check_failure(&error) => {}
                Err(error) => return Err(Error::dynamodb("PutItem", table, error)),
            }
        }
        Err(Error::DynamoDb {
            operation: "UpdateItem",
            table: table.to_owned(),
            message: format!("channel {channel}'s head was started and gone again {ASSIGN_ATTEMPTS} times"),
        })
    }

    fn history_entry(
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
    fn entry_payload(&self, message: &MessageRecord) -> Result<AttributeValue, Error> {
        serde_dynamo::to_attribute_value(&message.payload).map_err(|source| Error::ItemFormat {
            table: self.history_table.clone(),
            key: message.message_id.clone(),
            source,
        })
    }

    fn positions_in_order(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        by_id: &HashMap<String, Position>,
    ) -> Result<Vec<Position>, Error> {
        messages
            .iter()
            .map(|message| {
                by_id
                    .get(&message.message_id)
                    .cloned()
                    .ok_or_else(|| Error::PositionMissing {
                        channel: channel.to_owned(),
                        message_id: message.message_id.clone(),
                    })
            })
            .collect()
    }

    /// The entries of positions an earlier try claimed, written again where
    /// they are missing: that try may have written its claims and failed
    /// its entries. Only a retry gets here; it costs a consistent read of
    /// the entries' keys, and a conditional put for each one missing.
    async fn repair_entries(
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
        let found: HashSet<String> = read_in_batches(table, keys, |keys| async {
            let request = projection.read_request(table, keys)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.history_table, request)
                .send()
                .await
                .map_err(|error| Error::dynamodb("BatchGetItem", table, error))?;
            Ok(BatchRead::from_output(output, table))
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

    /// Records `position` on the message's own item, and gives an item
    /// without `expires_at` the messages table's retention. Answers the
    /// position the message has: `position`, or one an earlier try claimed
    /// meanwhile. A message item that is gone keeps no claim (a retry of its
    /// record would get a new position), which is logged.
    async fn claim_position(&self, message: &MessageRecord, position: Position, now: i64) -> Result<Position, Error> {
        let table = self.messages_table.as_str();
        let claimed = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(Self::message_key(&message.message_id)))
            .update_expression(
                "SET #epoch = :epoch, #offset = :offset, expires_at = if_not_exists(expires_at, :expires_at)",
            )
            .condition_expression("attribute_exists(message_id) AND attribute_not_exists(#offset)")
            .expression_attribute_names("#epoch", CLAIM_EPOCH)
            .expression_attribute_names("#offset", CLAIM_OFFSET)
            .expression_attribute_values(":epoch", AttributeValue::S(position.epoch.clone()))
            .expression_attribute_values(":offset", AttributeValue::N(position.offset.to_string()))
            .expression_attribute_values(
                ":expires_at",
                number(now.saturating_add(self.message_retention_seconds)),
            )
            .send()
            .await;
        match claimed {
            Ok(_) => return Ok(position),
            Err(error) if is_conditional_check_failure(&error) => {}
            Err(error) => {
                let error = Error::dynamodb("UpdateItem", table, error);
                if !error.is_permanent() {
                    return Err(error);
                }
                // The item cannot take the claim (at DynamoDB's item size
                // limit): the message keeps the position it has an entry at,
                // without a claim, like a message whose item is gone.
                tracing::error!(message_id = %message.message_id, offset = position.offset, error = %error, "the message's item refused its position claim");
                return Ok(position);
            }
        }
        let earlier = self
            .claimed_positions(&[message.message_id.as_str()])
            .await?
            .remove(&message.message_id);
        match earlier {
            Some(earlier) => {
                // Only two tries of one record at once get here; the offset
                // this one took keeps an entry no client is sent live.
                tracing::warn!(
                    message_id = %message.message_id,
                    kept_offset = earlier.offset,
                    unused_offset = position.offset,
                    "another try claimed this message's position first; keeping that one"
                );
                Ok(earlier)
            }
            None => {
                tracing::warn!(
                    message_id = %message.message_id,
                    offset = position.offset,
                    "the message's item is gone, so its position is not recorded on it"
                );
                Ok(position)
            }
        }
    }
}

impl ChannelHistory for DynamoStore {
    async fn reserve_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        now: i64,
    ) -> Result<Reservation, Error> {
        if messages.is_empty() {
            return Ok(Reservation::default());
        }
        // Each id once: a batch read refuses a key asked twice (an id deleted
        // and written again within one batch).
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (index, message) in messages.iter().enumerate() {
            first_of.entry(message.message_id.as_str()).or_insert(index);
        }
        let mut unique: Vec<(&str, usize)> = first_of.into_iter().collect();
        unique.sort_by_key(|(_, index)| *index);
        let ids: Vec<&str> = unique.iter().map(|(id, _)| *id).collect();
        let mut by_id = self.claimed_positions(&ids).await?;
        let (claimed_before, taken): (Vec<usize>, Vec<usize>) = unique
            .iter()
            .map(|(_, index)| *index)
            .partition(|index| by_id.contains_key(&messages[*index].message_id));
        // What could fail for good is checked before the head moves, so no
        // offset is taken for a message whose entry can never be written.
        for index in &taken {
            self.entry_payload(messages[*index])?;
        }
        if !taken.is_empty() {
            let first = self.reserve_offsets(channel, taken.len() as u64, now).await?;
            for (block_index, index) in taken.iter().enumerate() {
                by_id.insert(
                    messages[*index].message_id.clone(),
                    Position::new(first.epoch.clone(), first.offset + block_index as u64),
                );
            }
        }
        let positions = self.positions_in_order(channel, messages, &by_id)?;
        Ok(Reservation {
            positions,
            taken,
            claimed_before,
        })
    }

    async fn record_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        reservation: Reservation,
        history_ttl_seconds: u64,
        now: i64,
    ) -> Result<Vec<Position>, Error> {
        let expires_at = now + history_ttl_seconds as i64;
        let mut by_id: HashMap<String, Position> = messages
            .iter()
            .zip(&reservation.positions)
            .map(|(message, position)| (message.message_id.clone(), position.clone()))
            .collect();
        let entries = reservation
            .taken
            .iter()
            .map(|index| self.history_entry(channel, messages[*index], &reservation.positions[*index], expires_at))
            .collect::<Result<Vec<_>, Error>>()?;
        let claims = reservation
            .taken
            .iter()
            .map(|index| self.claim_position(messages[*index], reservation.positions[*index].clone(), now));
        let earlier: Vec<(&MessageRecord, &Position)> = reservation
            .claimed_before
            .iter()
            .map(|index| (messages[*index], &reservation.positions[*index]))
            .collect();
        let (written, claimed, repaired) = futures::join!(
            self.write_entries(entries),
            futures::future::try_join_all(claims),
            self.repair_entries(channel, &earlier, expires_at)
        );
        written?;
        repaired?;
        for (index, position) in reservation.taken.iter().zip(claimed?) {
            by_id.insert(messages[*index].message_id.clone(), position);
        }
        self.positions_in_order(channel, messages, &by_id)
    }

    async fn epoch_started_at(&self, channel: &str, now: i64) -> Result<Option<i64>, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.history_table)
            .set_key(Some(Self::history_key(channel, HEAD)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.history_table, error))?;
        Ok(output
            .item
            .filter(|item| is_live(item, now))
            .and_then(|item| read_number(&item, EPOCH_STARTED_AT)))
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
    fn offsets_sort_as_text_in_number_order() {
        assert!(offset_entry(9) < offset_entry(10));
        assert!(offset_entry(99_999) < offset_entry(100_000));
        assert!(offset_entry(u64::MAX).len() == 22);
    }

    #[test]
    fn a_claim_is_read_only_when_both_its_attributes_are_there() {
        let mut item = Item::from([(CLAIM_EPOCH.to_owned(), AttributeValue::S("e".into()))]);
        assert_eq!(claimed_position(&item), None);
        item.insert(CLAIM_OFFSET.to_owned(), AttributeValue::N("7".into()));
        assert_eq!(claimed_position(&item), Some(Position::new("e", 7)));
    }
}
