//! The history table in memory: each channel's head and its entries, and
//! the position claims on the message items, with the semantics of the
//! DynamoDB adapter's run (offsets taken in one move of the head, claims
//! that keep a retried message's position, entries a retry writes again).
//! A head written by hand with attributes of the wrong types cannot exist
//! here; that case is proved against a DynamoDB-compatible server.

use std::collections::HashMap;

use airwave_protocol::{MessageFrame, Position};

use super::{MemoryStore, Tables};
use crate::history::{first_of_each_id, positions_in_order, ChannelHistory, Reservation, HEAD_TTL_SECONDS};
use crate::message::MessageRecord;
use crate::store::new_epoch;
use crate::Error;

/// A channel's head: its epoch, latest offset and expiry.
#[derive(Debug, Clone)]
pub(super) struct Head {
    epoch: String,
    offset: u64,
    pub(super) expires_at: i64,
    started_at: i64,
}

/// One message at its offset.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    epoch: String,
    message_id: String,
    payload: serde_json::Value,
    publisher: Option<String>,
    pub(super) expires_at: i64,
}

impl Entry {
    fn of(message: &MessageRecord, position: &Position, expires_at: i64) -> Self {
        Entry {
            epoch: position.epoch.clone(),
            message_id: message.message_id.clone(),
            payload: message.payload.clone(),
            publisher: message.published_by_user.clone(),
            expires_at,
        }
    }
}

impl Tables {
    fn head_if_live(&self, channel: &str, now: i64) -> Option<&Head> {
        self.heads.get(channel).filter(|head| head.expires_at > now)
    }

    /// Takes `count` offsets: the next ones of a live head, or the first of a
    /// new epoch. Answers the first position of the block.
    fn take_offsets(&mut self, channel: &str, count: u64, now: i64) -> Position {
        if let Some(head) = self.heads.get_mut(channel).filter(|head| head.expires_at > now) {
            head.offset += count;
            head.expires_at = now + HEAD_TTL_SECONDS;
            return Position::new(head.epoch.clone(), head.offset - count + 1);
        }
        let epoch = new_epoch();
        self.heads.insert(
            channel.to_owned(),
            Head {
                epoch: epoch.clone(),
                offset: count,
                expires_at: now + HEAD_TTL_SECONDS,
                started_at: now,
            },
        );
        Position::new(epoch, 1)
    }
}

impl MemoryStore {
    /// Deletes the history entry at `offset` of `channel`, as a try that
    /// took the offset and stopped before writing it leaves it.
    pub fn forget_history_entry(&self, channel: &str, offset: u64) {
        self.tables().entries.remove(&(channel.to_owned(), offset));
    }
}

impl ChannelHistory for MemoryStore {
    async fn reserve_positions(
        &self,
        channel: &str,
        messages: &[&MessageRecord],
        now: i64,
    ) -> Result<Reservation, Error> {
        let mut tables = self.tables();
        let unique = first_of_each_id(messages);
        let mut by_id: HashMap<String, Position> = unique
            .iter()
            .filter_map(|(id, _)| {
                let claim = tables.messages.get(*id)?.claim.clone()?;
                Some(((*id).to_owned(), claim))
            })
            .collect();
        let (claimed_before, taken): (Vec<usize>, Vec<usize>) = unique
            .iter()
            .map(|(_, index)| *index)
            .partition(|index| by_id.contains_key(&messages[*index].message_id));
        if !taken.is_empty() {
            let first = tables.take_offsets(channel, taken.len() as u64, now);
            for (block_index, index) in taken.iter().enumerate() {
                by_id.insert(
                    messages[*index].message_id.clone(),
                    Position::new(first.epoch.clone(), first.offset + block_index as u64),
                );
            }
        }
        Ok(Reservation {
            positions: positions_in_order(channel, messages, &by_id)?,
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
        let expires_at = now + i64::try_from(history_ttl_seconds).unwrap_or(i64::MAX / 2);
        let retention = self.message_retention_seconds;
        let mut tables = self.tables();
        let mut by_id: HashMap<String, Position> = messages
            .iter()
            .zip(&reservation.positions)
            .map(|(message, position)| (message.message_id.clone(), position.clone()))
            .collect();
        for index in &reservation.taken {
            let (message, position) = (messages[*index], &reservation.positions[*index]);
            tables.entries.insert(
                (channel.to_owned(), position.offset),
                Entry::of(message, position, expires_at),
            );
            // The claim: the first try's position wins; an item that is
            // gone keeps none, and the message keeps the position it took.
            if let Some(stored) = tables.messages.get_mut(&message.message_id) {
                match &stored.claim {
                    Some(earlier) => {
                        by_id.insert(message.message_id.clone(), earlier.clone());
                    }
                    None => {
                        stored.claim = Some(position.clone());
                        stored.record.expires_at.get_or_insert(now.saturating_add(retention));
                    }
                }
            }
        }
        // The entries an earlier try claimed and may have left unwritten,
        // never over one written since.
        for index in &reservation.claimed_before {
            let (message, position) = (messages[*index], &reservation.positions[*index]);
            tables
                .entries
                .entry((channel.to_owned(), position.offset))
                .or_insert_with(|| Entry::of(message, position, expires_at));
        }
        positions_in_order(channel, messages, &by_id)
    }

    async fn epoch_started_at(&self, channel: &str, now: i64) -> Result<Option<i64>, Error> {
        Ok(self.tables().head_if_live(channel, now).map(|head| head.started_at))
    }

    async fn channel_head(&self, channel: &str, now: i64) -> Result<Option<Position>, Error> {
        Ok(self
            .tables()
            .head_if_live(channel, now)
            .map(|head| Position::new(head.epoch.clone(), head.offset)))
    }

    async fn read_history(
        &self,
        channel: &str,
        epoch: &str,
        (from, to): (u64, u64),
        max_bytes: usize,
        now: i64,
    ) -> Result<Option<Vec<MessageFrame>>, Error> {
        let tables = self.tables();
        let mut frames = Vec::new();
        let mut bytes = 0usize;
        let range = (channel.to_owned(), from)..=(channel.to_owned(), to);
        for ((_, offset), entry) in tables.entries.range(range) {
            if entry.expires_at <= now || entry.epoch != epoch {
                continue;
            }
            let frame = MessageFrame {
                id: entry.message_id.clone(),
                channel: Some(channel.to_owned()),
                data: entry.payload.clone(),
                position: Some(Position::new(entry.epoch.clone(), *offset)),
                publisher: entry.publisher.clone(),
                to_user: None,
            };
            bytes += frame.to_text().len();
            if bytes > max_bytes {
                return Ok(None);
            }
            frames.push(frame);
        }
        Ok(Some(frames))
    }
}
