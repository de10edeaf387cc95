//! Writing a message item back so the stream carries a new `INSERT` of it:
//! a delete of the very copy stored (and nothing a producer wrote since),
//! then a put where no item is, carrying the channel position claim over.

use std::collections::HashMap;

use airwave_shared::history::CLAIM_ATTRIBUTES;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::Item;

/// Writes a message item back so the stream carries a new `INSERT` of it;
/// answers its message id, or why it was not written.
pub(crate) async fn write_back(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    item: &Item,
) -> Result<String, String> {
    let Some(AttributeValue::S(message_id)) = item.get("message_id") else {
        return Err("the item has no message_id".to_owned());
    };
    // The stored copy of this very message, whatever expiry the
    // stream-processor gave it, is removed; another message under the same
    // id is not.
    let mut names = HashMap::from([("#id".to_owned(), "message_id".to_owned())]);
    let mut values = HashMap::new();
    let mut same = Vec::new();
    let set_by_the_stream_processor = |name: &str| name == "expires_at" || CLAIM_ATTRIBUTES.contains(&name);
    for (index, (name, value)) in item
        .iter()
        .filter(|(name, _)| !set_by_the_stream_processor(name))
        .enumerate()
    {
        names.insert(format!("#a{index}"), name.clone());
        values.insert(format!(":v{index}"), value.clone());
        same.push(format!("#a{index} = :v{index}"));
    }
    let deleted = dynamodb
        .delete_item()
        .table_name(table)
        .key("message_id", AttributeValue::S(message_id.clone()))
        .condition_expression(format!("attribute_not_exists(#id) OR ({})", same.join(" AND ")))
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await;
    let deleted = match deleted {
        Ok(deleted) => deleted,
        Err(error) => {
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_conditional_check_failed_exception())
            {
                return Err(format!(
                    "the table holds another message under id {message_id} (a producer reused it); left as it is"
                ));
            }
            return Err(format!(
                "DeleteItem of {message_id} failed: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(error)
            ));
        }
    };
    // The position it was given goes back with it, and the retention the
    // stream-processor gave it along with the claim (a message that keeps
    // its claim is not given one again).
    let mut item = item.clone();
    let old = deleted.attributes.unwrap_or_default();
    for name in CLAIM_ATTRIBUTES.iter().copied().chain(["expires_at"]) {
        if let (Some(value), false) = (old.get(name), item.contains_key(name)) {
            item.insert(name.to_owned(), value.clone());
        }
    }
    let put = dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#id)")
        .expression_attribute_names("#id", "message_id")
        .send()
        .await;
    match put {
        Ok(_) => Ok(message_id.clone()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service_error| service_error.is_conditional_check_failed_exception()) =>
        {
            Err(format!(
                "a producer wrote message {message_id} while it was being replayed; that write was kept"
            ))
        }
        Err(error) => Err(format!(
            "PutItem of {message_id} failed after its stored copy was removed ({}); replay again to write it",
            aws_sdk_dynamodb::error::DisplayErrorContext(error)
        )),
    }
}
