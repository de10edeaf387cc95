//! A channel's head: its epoch and latest offset, moved once per run to
//! take a block of offsets no other run can get (round trip 2 of a run).

use airwave_protocol::Position;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{is_live, new_epoch, EPOCH_STARTED_AT, HEAD};
use crate::history::HEAD_TTL_SECONDS;
use crate::store::{is_conditional_check_failure, number, DynamoStore, Item};
use crate::Error;

/// Tries at taking a block of offsets while other runs start the channel.
const ASSIGN_ATTEMPTS: u32 = 20;
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

impl DynamoStore {
    /// The head's item, read consistently, unless there is none or it is
    /// past its TTL.
    pub(super) async fn live_head_item(
        &self,
        channel: &str,
        consistent: bool,
        now: i64,
    ) -> Result<Option<Item>, Error> {
        let output = self
            .client
            .get_item()
            .table_name(&self.history_table)
            .set_key(Some(Self::history_key(channel, HEAD)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", &self.history_table, error))?;
        Ok(output.item.filter(|item| is_live(item, now)))
    }

    /// The channel's head, unless there is none or it is past its TTL (which
    /// DynamoDB may not have deleted yet): either way the channel starts again.
    pub(super) async fn live_head(&self, channel: &str, consistent: bool, now: i64) -> Result<Option<Position>, Error> {
        match self.live_head_item(channel, consistent, now).await? {
            Some(item) => self.decode_position(channel, &item).map(Some),
            None => Ok(None),
        }
    }

    /// Takes `count` offsets for `channel` with one head update (round trip
    /// 2), starting the channel with a new epoch when it has no live head;
    /// answers the first position of the block.
    pub(super) async fn reserve_offsets(&self, channel: &str, count: u64, now: i64) -> Result<Position, Error> {
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
}
