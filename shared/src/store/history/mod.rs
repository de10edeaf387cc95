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
//!
//! The adapter is one file per piece: `head` (the offsets), `entries` (the
//! history entries), `claims` (the positions recorded on the messages).

use std::collections::HashMap;

use airwave_protocol::{MessageFrame, Position};
use aws_sdk_dynamodb::types::AttributeValue;

use super::{read_number, DynamoStore, Item};
use crate::history::{first_of_each_id, positions_in_order, ChannelHistory, Reservation};
use crate::message::MessageRecord;
use crate::Error;

mod claims;
mod entries;
mod head;

/// The sort key of the channel's head item.
const HEAD: &str = "head";
/// When the head's epoch started, epoch seconds.
const EPOCH_STARTED_AT: &str = "started_at";
/// History entries per page of a recovery's read.
const READ_PAGE_ITEMS: i32 = 50;

fn offset_entry(offset: u64) -> String {
    format!("o#{offset:020}")
}

/// A new epoch id: a channel that starts (again) gets one, so clients can
/// tell that their offsets no longer apply.
pub(crate) fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..airwave_protocol::EPOCH_CHARS].to_owned()
}

/// Whether a history item is still before its TTL (`expires_at`).
fn is_live(item: &Item, now: i64) -> bool {
    read_number(item, "expires_at").is_some_and(|expires| expires > now)
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
        let unique = first_of_each_id(messages);
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
        let positions = positions_in_order(channel, messages, &by_id)?;
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
        positions_in_order(channel, messages, &by_id)
    }

    async fn epoch_started_at(&self, channel: &str, now: i64) -> Result<Option<i64>, Error> {
        Ok(self
            .live_head_item(channel, true, now)
            .await?
            .and_then(|item| read_number(&item, EPOCH_STARTED_AT)))
    }

    async fn channel_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        self.live_head(channel, true, now).await
    }

    async fn recent_channel_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        self.live_head(channel, false, now).await
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
}
