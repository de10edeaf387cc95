//! Stream records in Lambda's DynamoDB event shape: the record, its images
//! and their attribute values in DynamoDB JSON.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use base64::Engine;
use serde_json::{json, Map, Value};

pub(super) fn sequence_number(record: &Value) -> Option<&str> {
    record.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str)
}

/// One stream record in Lambda's DynamoDB event shape.
pub fn record_to_json(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut change = Map::new();
    if let Some(stream_record) = &record.dynamodb {
        if let Some(created) = stream_record.approximate_creation_date_time {
            change.insert("ApproximateCreationDateTime".into(), created.secs().into());
        }
        for (name, image) in [
            ("Keys", &stream_record.keys),
            ("NewImage", &stream_record.new_image),
            ("OldImage", &stream_record.old_image),
        ] {
            if let Some(image) = image {
                change.insert(name.into(), item_to_json(image));
            }
        }
        if let Some(sequence) = &stream_record.sequence_number {
            change.insert("SequenceNumber".into(), sequence.clone().into());
        }
        if let Some(size) = stream_record.size_bytes {
            change.insert("SizeBytes".into(), size.into());
        }
        if let Some(view_type) = &stream_record.stream_view_type {
            change.insert("StreamViewType".into(), view_type.as_str().into());
        }
    }
    let mut event = json!({
        "eventID": record.event_id.clone().unwrap_or_default(),
        "eventName": record.event_name.as_ref().map(|name| name.as_str()).unwrap_or_default(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region.clone().unwrap_or_else(|| region.to_owned()),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    });
    // TTL deletions carry the service's identity, which handlers may check.
    if let Some(identity) = &record.user_identity {
        event["userIdentity"] = json!({
            "type": identity.r#type.clone().unwrap_or_default(),
            "principalId": identity.principal_id.clone().unwrap_or_default(),
        });
    }
    event
}

fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(name, value)| (name.clone(), attribute_to_json(value)))
            .collect(),
    )
}

/// An attribute value in DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, binary as base64).
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match value {
        AttributeValue::S(text) => json!({ "S": text }),
        AttributeValue::N(number) => json!({ "N": number }),
        AttributeValue::B(blob) => json!({ "B": base64(blob.as_ref()) }),
        AttributeValue::Ss(texts) => json!({ "SS": texts }),
        AttributeValue::Ns(numbers) => json!({ "NS": numbers }),
        AttributeValue::Bs(blobs) => {
            json!({ "BS": blobs.iter().map(|blob| base64(blob.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(map) => json!({ "M": item_to_json(map) }),
        AttributeValue::L(list) => json!({ "L": list.iter().map(attribute_to_json).collect::<Vec<_>>() }),
        AttributeValue::Null(is_null) => json!({ "NULL": is_null }),
        AttributeValue::Bool(value) => json!({ "BOOL": value }),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_are_dynamodb_json() {
        let value = AttributeValue::M(HashMap::from([(
            "price".to_owned(),
            AttributeValue::N("12.5".to_owned()),
        )]));
        assert_eq!(attribute_to_json(&value), json!({"M": {"price": {"N": "12.5"}}}));
    }
}
