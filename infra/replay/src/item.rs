//! Items between their three shapes: DynamoDB JSON (as Lambda's stream
//! events and the poison reports carry them), the streams SDK's attribute
//! values, and the DynamoDB SDK's, which the write back takes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::Value;

use crate::Item;

/// An item in DynamoDB JSON, as Lambda's stream events carry it
/// (`{"message_id": {"S": "m-1"}, ...}`, binary values in base64).
pub fn item_from_json(value: &Value) -> Result<Item, String> {
    value
        .as_object()
        .ok_or_else(|| "an item is a JSON object".to_owned())?
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                attribute_from_json(value).map_err(|e| format!("{name}: {e}"))?,
            ))
        })
        .collect()
}

fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    let object = value.as_object().filter(|object| object.len() == 1);
    let Some((tag, inner)) = object.and_then(|object| object.iter().next()) else {
        return Err(format!("{value} is not one typed value such as {{\"S\": \"text\"}}"));
    };
    let text = |inner: &Value| {
        inner
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{tag} takes a string"))
    };
    let texts = |inner: &Value| {
        inner
            .as_array()
            .ok_or_else(|| format!("{tag} takes a list of strings"))?
            .iter()
            .map(text)
            .collect::<Result<Vec<_>, _>>()
    };
    let blob = |inner: &Value| {
        let encoded = text(inner)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(aws_sdk_dynamodb::primitives::Blob::new)
            .map_err(|error| format!("{tag} is not base64: {error}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(text(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "SS" => AttributeValue::Ss(texts(inner)?),
        "NS" => AttributeValue::Ns(texts(inner)?),
        "BS" => AttributeValue::Bs(
            inner
                .as_array()
                .ok_or_else(|| "BS takes a list".to_owned())?
                .iter()
                .map(blob)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(|| "L takes a list".to_owned())?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "NULL" => AttributeValue::Null(inner.as_bool().ok_or("NULL takes a boolean")?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL takes a boolean")?),
        other => return Err(format!("unknown type {other}")),
    })
}

/// An item as DynamoDB Streams' `GetRecords` answers it.
pub fn item_from_stream(
    image: &HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> Result<Item, String> {
    image
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                attribute_from_stream(value).map_err(|e| format!("{name}: {e}"))?,
            ))
        })
        .collect()
}

fn attribute_from_stream(value: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Result<AttributeValue, String> {
    use aws_sdk_dynamodbstreams::types::AttributeValue as Stream;
    let blob = |blob: &aws_sdk_dynamodbstreams::primitives::Blob| {
        aws_sdk_dynamodb::primitives::Blob::new(blob.as_ref().to_vec())
    };
    Ok(match value {
        Stream::S(text) => AttributeValue::S(text.clone()),
        Stream::N(number) => AttributeValue::N(number.clone()),
        Stream::B(bytes) => AttributeValue::B(blob(bytes)),
        Stream::Ss(texts) => AttributeValue::Ss(texts.clone()),
        Stream::Ns(numbers) => AttributeValue::Ns(numbers.clone()),
        Stream::Bs(blobs) => AttributeValue::Bs(blobs.iter().map(blob).collect()),
        Stream::M(map) => AttributeValue::M(item_from_stream(map)?),
        Stream::L(list) => AttributeValue::L(list.iter().map(attribute_from_stream).collect::<Result<_, _>>()?),
        Stream::Null(null) => AttributeValue::Null(*null),
        Stream::Bool(value) => AttributeValue::Bool(*value),
        _ => return Err("a type this SDK does not know".to_owned()),
    })
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dynamodb_json_becomes_attribute_values() {
        let item = item_from_json(&json!({
            "message_id": {"S": "m-1"},
            "payload": {"M": {"price": {"N": "12.5"}, "tags": {"L": [{"S": "a"}, {"BOOL": true}, {"NULL": true}]}}},
            "raw": {"B": "AQI="},
        }))
        .unwrap();
        assert_eq!(item["message_id"], AttributeValue::S("m-1".into()));
        assert_eq!(
            item["raw"],
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![1, 2]))
        );
        let AttributeValue::M(payload) = &item["payload"] else {
            panic!("payload is a map")
        };
        assert_eq!(payload["price"], AttributeValue::N("12.5".into()));
        assert!(item_from_json(&json!({"x": {"S": 1}})).is_err());
        assert!(item_from_json(&json!({"x": {"Q": "1"}})).is_err());
        assert!(item_from_json(&json!({"x": "plain"})).is_err());
    }
}
