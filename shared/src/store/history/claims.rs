//! The position claims: which position a message got, recorded on its own
//! item of the messages table, so a retried or re-delivered stream record
//! keeps it (round trips 1 and 3 of a run).

use std::collections::HashMap;

use airwave_protocol::Position;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::history::CLAIM_ATTRIBUTES;
use crate::message::MessageRecord;
use crate::store::batch::{read_projected, Projection};
use crate::store::{is_conditional_check_failure, number, read_number, DynamoStore, Item};
use crate::Error;

/// The claim's attributes on a message item.
const CLAIM_EPOCH: &str = CLAIM_ATTRIBUTES[0];
const CLAIM_OFFSET: &str = CLAIM_ATTRIBUTES[1];

fn claimed_position(item: &Item) -> Option<Position> {
    let epoch = match item.get(CLAIM_EPOCH) {
        Some(AttributeValue::S(epoch)) => epoch.clone(),
        _ => return None,
    };
    let offset = read_number(item, CLAIM_OFFSET).and_then(|offset| u64::try_from(offset).ok())?;
    Some(Position::new(epoch, offset))
}

impl DynamoStore {
    /// The positions already claimed by any of `ids` (round trip 1).
    pub(super) async fn claimed_positions(&self, ids: &[&str]) -> Result<HashMap<String, Position>, Error> {
        let table = self.messages_table.as_str();
        let keys = ids.iter().map(|id| Self::message_key(id)).collect();
        let projection = Projection {
            expression: "message_id, #epoch, #offset",
            names: &[("#epoch", CLAIM_EPOCH), ("#offset", CLAIM_OFFSET)],
        };
        let items = read_projected(table, keys, &projection, |request| {
            self.client
                .batch_get_item()
                .request_items(&self.messages_table, request)
                .send()
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

    /// Records `position` on the message's own item, and gives an item
    /// without `expires_at` the messages table's retention. Answers the
    /// position the message has: `position`, or one an earlier try claimed
    /// meanwhile. A message item that is gone keeps no claim (a retry of its
    /// record would get a new position), which is logged.
    pub(super) async fn claim_position(
        &self,
        message: &MessageRecord,
        position: Position,
        now: i64,
    ) -> Result<Position, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_read_only_when_both_its_attributes_are_there() {
        let mut item = Item::from([(CLAIM_EPOCH.to_owned(), AttributeValue::S("e".into()))]);
        assert_eq!(claimed_position(&item), None);
        item.insert(CLAIM_OFFSET.to_owned(), AttributeValue::N("7".into()));
        assert_eq!(claimed_position(&item), Some(Position::new("e", 7)));
    }
}
