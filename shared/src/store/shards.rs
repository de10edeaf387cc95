//! A channel's subscriptions, spread over [`SUBSCRIPTION_SHARDS`] partition
//! keys and listed from all of them at once.
//!
//! DynamoDB serves one partition-key value at most 3,000 read and 1,000 write
//! units a second. Under one key, a million subscribers are one serial query
//! chain (about 15,000 read units, five seconds at best), and a crowd that
//! subscribes at once is throttled at 1,000 a second. Spread over eight
//! keys, the listing reads eight chains at once and subscribes spread too.
//!
//! A subscription's key is `<channel>` for shard 0 and `<channel>#<shard>`
//! for the others; `#` is not allowed in a channel name, so no key of one
//! channel can be another channel's. The shard is a fixed function of the
//! connection id, so whoever removes a subscription finds its key from the
//! channel and the connection alone, as before: subscribing, unsubscribing and
//! a disconnect's cleanup write the same items, in the same transactions.
//! Subscriptions written before the shards existed are all under `<channel>`,
//! which is shard 0, so they are still listed.
//!
//! A listing costs one query per shard per page instead of one: at least
//! eight read units per broadcast run (consistent reads of at least 4 KB
//! each), about $0.000001.

use aws_sdk_dynamodb::types::AttributeValue;

use super::subscriptions::{TargetCursor, TargetPage};
use super::{DynamoStore, Item};
use crate::Error;

/// How many partition keys one channel's subscriptions are spread over.
pub const SUBSCRIPTION_SHARDS: u8 = 8;

/// The shard of a connection's subscriptions: a fixed function of its id.
pub(crate) fn shard_of(connection_id: &str) -> u8 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, connection_id.as_bytes());
    digest.as_ref().first().copied().unwrap_or(0) % SUBSCRIPTION_SHARDS
}

/// The partition key of `shard` of `channel`.
pub(crate) fn shard_key(channel: &str, shard: u8) -> String {
    if shard == 0 {
        channel.to_owned()
    } else {
        format!("{channel}#{shard}")
    }
}

/// The partition key of one connection's subscription to `channel`.
pub fn subscription_partition(channel: &str, connection_id: &str) -> String {
    shard_key(channel, shard_of(connection_id))
}

/// The channel a subscription's partition key belongs to.
pub fn channel_of_partition(partition: &str) -> &str {
    partition.split_once('#').map_or(partition, |(channel, _)| channel)
}

/// Where each shard's listing goes on: `None` to start it.
pub(crate) type ShardCursors = Vec<(u8, Option<Item>)>;

impl DynamoStore {
    /// One page of `channel`'s subscribers: every shard still to read, read at
    /// once, about `limit / shards` each.
    pub(super) async fn list_channel_page(
        &self,
        channel: &str,
        from: Option<ShardCursors>,
        limit: i32,
    ) -> Result<TargetPage, Error> {
        let shards = from.unwrap_or_else(|| (0..SUBSCRIPTION_SHARDS).map(|shard| (shard, None)).collect());
        // `limit` split over the shards, the first ones one more, none below 1.
        let count = shards.len().max(1);
        let limit = (limit.max(1) as usize).max(count);
        let pages = shards.into_iter().enumerate().map(|(index, (shard, start))| {
            let share = (limit / count + usize::from(index < limit % count)) as i32;
            async move { self.query_shard(channel, shard, start, share).await }
        });
        let mut targets = Vec::new();
        let mut next = Vec::new();
        for (shard, items, last) in futures::future::try_join_all(pages).await? {
            self.decode_targets(&self.subscriptions_table, items, &mut targets);
            // DynamoDB answers an empty key map on some last pages.
            if let Some(last) = last.filter(|key| !key.is_empty()) {
                next.push((shard, Some(last)));
            }
        }
        Ok(TargetPage {
            targets,
            next: (!next.is_empty()).then_some(TargetCursor::Shards(next)),
        })
    }

    async fn query_shard(
        &self,
        channel: &str,
        shard: u8,
        start: Option<Item>,
        limit: i32,
    ) -> Result<(u8, Vec<Item>, Option<Item>), Error> {
        let page = self
            .client
            .query()
            .table_name(&self.subscriptions_table)
            .key_condition_expression("channel = :channel")
            .expression_attribute_values(":channel", AttributeValue::S(shard_key(channel, shard)))
            .projection_expression("connection_id, expires_at")
            // Consistent, so a subscription written before a subscribe read
            // the channel's head is always listed for the messages after it
            // (what recovery relies on). Twice the read units.
            .consistent_read(true)
            .limit(limit.max(1))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| Error::dynamodb("Query", &self.subscriptions_table, error))?;
        Ok((shard, page.items.unwrap_or_default(), page.last_evaluated_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_of_a_channel_names_that_channel_and_no_other() {
        for shard in 0..SUBSCRIPTION_SHARDS {
            let key = shard_key("room:42", shard);
            assert_eq!(channel_of_partition(&key), "room:42");
            assert!(
                crate::channel::validate_channel_name(&key).is_ok() == (shard == 0),
                "{key}"
            );
        }
        assert_eq!(shard_key("prices", 0), "prices", "shard 0 is the key before shards");
    }

    #[test]
    fn connections_spread_over_every_shard_and_each_always_lands_on_the_same() {
        let mut counts = [0usize; SUBSCRIPTION_SHARDS as usize];
        for n in 0..8_000 {
            let id = format!("Zx{n:06}AbCdEfG=");
            assert_eq!(shard_of(&id), shard_of(&id));
            counts[shard_of(&id) as usize] += 1;
        }
        assert!(counts.iter().all(|&count| (800..1_200).contains(&count)), "{counts:?}");
    }
}
