//! What a raw stream record of the messages table is, decided before
//! anything is written.

use aws_lambda_events::dynamodb::EventRecord;
use serde::Deserialize;
use serde_json::Value;

use crate::message::MessageRecord;

/// What a raw stream record of the messages table is.
#[derive(Debug)]
pub enum DecodedMessage {
    /// A new message that can be sent.
    Message(Box<MessageRecord>),
    /// Not a new message (a TTL delete, an update): nothing to send.
    NotNew,
    /// Can never be sent (undecodable, no valid audience, an invalid channel,
    /// too large); logged with its id and why.
    Poison { reason: String, message_id: Option<String> },
}

fn poison(reason: impl Into<String>, message_id: Option<&str>) -> DecodedMessage {
    DecodedMessage::Poison {
        reason: reason.into(),
        message_id: message_id.map(str::to_owned),
    }
}

/// Decodes one raw record as the stream-processor does before anything is
/// written, logging why a record is skipped.
pub fn decode_message_record(raw: &Value) -> DecodedMessage {
    let record = match EventRecord::deserialize(raw) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %error, "skipping a stream record that cannot be decoded");
            return poison(format!("the stream record cannot be decoded: {error}"), None);
        }
    };
    if record.event_name != "INSERT" {
        tracing::debug!(event_name = %record.event_name, "ignoring a change that is not a new message");
        return DecodedMessage::NotNew;
    }
    let mut message: MessageRecord = match serde_dynamo::from_item(record.change.new_image) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(
                event_id = %record.event_id,
                error = %error,
                "skipping a message item that cannot be decoded (it needs message_id and payload)"
            );
            return poison(
                format!("the message item cannot be decoded (it needs message_id and payload): {error}"),
                None,
            );
        }
    };
    if let Err(reason) = message.audience() {
        tracing::error!(message_id = %message.message_id, reason, "skipping a message with no valid audience");
        return poison(reason, Some(&message.message_id));
    }
    if let Some(Err(error)) = message.channel.as_deref().map(crate::channel::validate_channel_name) {
        // No client can subscribe to it, and DynamoDB would refuse to query it:
        // retrying would only block the shard.
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message for an invalid channel");
        return poison(error.to_string(), Some(&message.message_id));
    }
    // Checked before a position is taken, so no offset is spent on a message
    // that can never be sent (and recovery never replays one).
    if let Err(error) = message.check_frame_size() {
        tracing::error!(message_id = %message.message_id, error = %error, "skipping a message that cannot be sent");
        return poison(error.to_string(), Some(&message.message_id));
    }
    if message.written_at_ms.is_none() {
        // 0 when the record has no creation time: no latency is measured then.
        let created_ms = record.change.approximate_creation_date_time.timestamp_millis();
        message.written_at_ms = Some(created_ms).filter(|created_ms| *created_ms > 0);
    }
    DecodedMessage::Message(Box::new(message))
}
