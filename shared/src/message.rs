//! Messages as producers write them to the messages table, and the frame every
//! client receives for one.

use airwave_protocol::{MessageFrame, Position, EPOCH_CHARS};
use serde::{Deserialize, Serialize};

use crate::Error;

/// API Gateway refuses to post a WebSocket message larger than 128 KB.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// One item of the messages table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message_id: String,
    /// A message without a channel goes to every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Any DynamoDB value; it reaches clients as the equivalent JSON.
    pub payload: serde_json::Value,
    /// TTL attribute of the messages table, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The connection that published it, when a client did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by: Option<String>,
    /// That connection's user id, when it had one: receivers see it as `publisher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by_user: Option<String>,
    /// Addresses the message to one user instead of a channel: every open
    /// connection of that user receives it. A message has a channel or a
    /// user, never both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
    /// When the message was written, epoch milliseconds: where the
    /// write-to-delivery latency is measured from. Airwave's own publish
    /// sets it; a producer may. Without it the stream record's creation
    /// time is used, which DynamoDB Streams rounds down to the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at_ms: Option<i64>,
}

/// Who a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// The channel's subscribers.
    Channel(&'a str),
    /// Every open connection of one user.
    User(&'a str),
    /// Every connection.
    Everyone,
}

impl<'a> Audience<'a> {
    pub fn channel(self) -> Option<&'a str> {
        match self {
            Audience::Channel(channel) => Some(channel),
            _ => None,
        }
    }
}

impl MessageRecord {
    /// A producer's message to `channel`, with nothing else set: what a
    /// backend writes most often.
    pub fn to_channel(message_id: &str, channel: &str, payload: serde_json::Value) -> Self {
        MessageRecord {
            message_id: message_id.to_owned(),
            channel: Some(channel.to_owned()),
            payload,
            expires_at: None,
            published_by: None,
            published_by_user: None,
            to_user: None,
            written_at_ms: None,
        }
    }

    /// Who the message goes to, or why it can go to no one.
    pub fn audience(&self) -> Result<Audience<'_>, &'static str> {
        match (self.channel.as_deref(), self.to_user.as_deref()) {
            (Some(_), Some(_)) => Err("a message names a channel or a to_user, not both"),
            (None, Some(user)) if user.is_empty() || user.len() > 256 => {
                Err("to_user must be a user id (the token's sub) of 1 to 256 bytes")
            }
            (None, Some(user)) => Ok(Audience::User(user)),
            (Some(channel), None) => Ok(Audience::Channel(channel)),
            (None, None) => Ok(Audience::Everyone),
        }
    }

    /// What a client receives for this message: the id lets it drop the
    /// duplicates at-least-once delivery allows, the position orders it.
    pub fn frame(&self, position: Option<Position>) -> MessageFrame {
        MessageFrame {
            id: self.message_id.clone(),
            channel: self.channel.clone(),
            data: self.payload.clone(),
            position,
            publisher: self.published_by_user.clone(),
            to_user: self.to_user.clone(),
        }
    }

    /// The frame to post, or an error if API Gateway would refuse its size.
    pub fn to_frame(&self, position: Option<Position>) -> Result<Vec<u8>, Error> {
        let bytes = self.frame(position).to_text().into_bytes();
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(Error::FrameTooLarge {
                message_id: self.message_id.clone(),
                size: bytes.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Checks the size the frame will have once the stream-processor gives
    /// it a position, at publish time, before anything is stored.
    pub fn check_frame_size(&self) -> Result<(), Error> {
        let widest = self
            .channel
            .as_ref()
            .map(|_| Position::new("e".repeat(EPOCH_CHARS), u64::MAX));
        self.to_frame(widest).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_frame_carries_the_message_id_channel_and_payload() {
        let record = MessageRecord {
            message_id: "m-1".into(),
            channel: Some("prices".into()),
            payload: json!({"symbol": "ABC", "price": 12.5}),
            expires_at: None,
            published_by: Some("conn-1".into()),
            published_by_user: Some("alice".into()),
            to_user: None,
            written_at_ms: None,
        };
        let frame: serde_json::Value =
            serde_json::from_slice(&record.to_frame(Some(Position::new("e1", 7))).unwrap()).unwrap();
        assert_eq!(
            frame,
            json!({"type": "message", "id": "m-1", "channel": "prices", "data": {"symbol": "ABC", "price": 12.5},
                   "position": {"epoch": "e1", "offset": 7}, "publisher": "alice"})
        );
    }

    #[test]
    fn a_frame_over_128_kb_is_refused_before_any_post() {
        let record = MessageRecord {
            message_id: "big".into(),
            channel: None,
            payload: json!("x".repeat(MAX_FRAME_BYTES)),
            expires_at: None,
            published_by: None,
            published_by_user: None,
            to_user: None,
            written_at_ms: None,
        };
        match record.to_frame(None) {
            Err(Error::FrameTooLarge {
                message_id,
                size,
                limit,
            }) => {
                assert_eq!(message_id, "big");
                assert!(size > limit);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }
}
