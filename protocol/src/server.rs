use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorCode, Position, Reply, ReplyFrame, RequestId};

/// A message pushed to subscribers. `id` is the message's own id, the same in
/// every delivery of it, so a client drops the duplicates that at-least-once
/// delivery allows. A channel message carries its `position`; a message to
/// every connection (no `channel`) has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageFrame {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The user id of the connection that published it, when a client with
    /// one did (absent for producers' messages and anonymous publishers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Set when a producer addressed the message to one user rather than a
    /// channel: every open connection of that user gets it, and no other.
    /// Such a message has no channel and no position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
}

/// Every frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ServerFrame {
    /// `{"type": "message", ...}`.
    Message(TaggedMessage),
    /// `{"type": "batch", "messages": [...]}`: several messages in one frame,
    /// in order; read exactly as if each had come alone.
    Batch(TaggedBatch),
    /// The reply to a request.
    Reply(ReplyFrame),
    /// `{"type": "closing", "code": ..., "message": ...}`: the server is about
    /// to close this connection, and why (`token_expired`, `evicted`).
    Closing(Closing),
    /// API Gateway's own answer when a route's function failed:
    /// `{"message": "Internal server error", "connectionId": ..., "requestId": ...}`.
    /// It has no `type` and carries no request id.
    GatewayError(GatewayError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename = "message")]
pub struct TaggedMessage {
    #[serde(flatten)]
    pub message: MessageFrame,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename = "batch")]
pub struct TaggedBatch {
    pub messages: Vec<MessageFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename = "closing")]
pub struct Closing {
    pub code: ErrorCode,
    pub message: String,
}

impl Closing {
    pub fn to_text(&self) -> String {
        serde_json::to_string(&ServerFrame::Closing(self.clone())).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayError {
    pub message: String,
    #[serde(default, rename = "connectionId", skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, rename = "requestId", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl MessageFrame {
    /// The text frame to post.
    pub fn to_text(&self) -> String {
        serde_json::to_string(&ServerFrame::Message(TaggedMessage { message: self.clone() })).unwrap_or_default()
    }

    /// One frame holding `messages` in order.
    pub fn batch_text(messages: Vec<MessageFrame>) -> String {
        serde_json::to_string(&ServerFrame::Batch(TaggedBatch { messages })).unwrap_or_default()
    }
}

/// A server frame as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// One or more pushed messages (a `batch` frame gives several), in order.
    Messages(Vec<MessageFrame>),
    Reply {
        id: Option<RequestId>,
        reply: Reply,
    },
    /// API Gateway's "Internal server error": some request failed on the
    /// server; which one is not said.
    GatewayError {
        message: String,
    },
    /// The server is closing this connection, and says why.
    Closing {
        code: ErrorCode,
        message: String,
    },
    /// A well-formed JSON object of a type this client does not know, kept for
    /// logging, so a newer server can add frames without breaking older clients.
    Other(Value),
}

/// Reads one text frame from the server.
pub fn parse_server_frame(text: &str) -> Result<Incoming, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    let kind = value.get("type").and_then(Value::as_str).map(str::to_owned);
    match kind.as_deref() {
        Some("message") => Ok(Incoming::Messages(vec![serde_json::from_value(value)?])),
        Some("batch") => {
            let batch: TaggedBatch = serde_json::from_value(value)?;
            Ok(Incoming::Messages(batch.messages))
        }
        Some("pong" | "subscribed" | "unsubscribed" | "published" | "stats" | "error") => {
            let frame: ReplyFrame = serde_json::from_value(value)?;
            Ok(Incoming::Reply {
                id: frame.id,
                reply: frame.reply,
            })
        }
        Some("closing") => {
            let closing: Closing = serde_json::from_value(value)?;
            Ok(Incoming::Closing {
                code: closing.code,
                message: closing.message,
            })
        }
        None if value.get("message").is_some_and(Value::is_string) => {
            let error: GatewayError = serde_json::from_value(value)?;
            Ok(Incoming::GatewayError { message: error.message })
        }
        _ => Ok(Incoming::Other(value)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ErrorCode;

    fn message(id: &str, offset: u64) -> MessageFrame {
        MessageFrame {
            id: id.into(),
            channel: Some("prices".into()),
            data: json!({"price": offset}),
            position: Some(Position::new("e", offset)),
            publisher: None,
            to_user: None,
        }
    }

    #[test]
    fn a_message_frame_carries_its_id_channel_data_and_position() {
        let text = message("m-1", 3).to_text();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"type": "message", "id": "m-1", "channel": "prices", "data": {"price": 3}, "position": {"epoch": "e", "offset": 3}})
        );
        assert_eq!(
            parse_server_frame(&text).unwrap(),
            Incoming::Messages(vec![message("m-1", 3)])
        );
    }

    #[test]
    fn a_large_number_reads_back_exactly_after_a_round_trip() {
        // Found by the server_frame fuzz target: without exact float parsing
        // the last digit of such a number changed from one read to the next.
        let text = r#"{"type":"message","id":"1u","to_user":"alice","data":{"n":8888888882888888888888888888888888777777777777762}}"#;
        let Ok(Incoming::Messages(first)) = parse_server_frame(text) else {
            panic!("a message");
        };
        let Ok(Incoming::Messages(again)) = parse_server_frame(&first[0].to_text()) else {
            panic!("a message");
        };
        assert_eq!(again, first);
    }

    #[test]
    fn a_batch_reads_as_its_messages_in_order() {
        let text = MessageFrame::batch_text(vec![message("a", 1), message("b", 2)]);
        assert_eq!(
            parse_server_frame(&text).unwrap(),
            Incoming::Messages(vec![message("a", 1), message("b", 2)])
        );
    }

    #[test]
    fn replies_read_with_their_request_id() {
        let frame = r#"{"type":"error","code":"invalid_channel","message":"bad","id":9}"#;
        assert_eq!(
            parse_server_frame(frame).unwrap(),
            Incoming::Reply {
                id: Some(RequestId::Number(9)),
                reply: Reply::Error {
                    code: ErrorCode::InvalidChannel,
                    message: "bad".into()
                }
            }
        );
        let subscribed = r#"{"type":"subscribed","channel":"c","position":{"epoch":"e","offset":2},"recovered":true,
            "publications":[{"id":"a","channel":"c","data":1,"position":{"epoch":"e","offset":2}}]}"#;
        let Incoming::Reply {
            reply:
                Reply::Subscribed {
                    recovered,
                    publications,
                    ..
                },
            ..
        } = parse_server_frame(subscribed).unwrap()
        else {
            panic!("subscribed is a reply");
        };
        assert_eq!(recovered, Some(true));
        assert_eq!(publications.len(), 1);
    }

    #[test]
    fn api_gateways_own_error_frame_is_recognised() {
        let frame = r#"{"message": "Internal server error", "connectionId":"abc=", "requestId":"r"}"#;
        assert_eq!(
            parse_server_frame(frame).unwrap(),
            Incoming::GatewayError {
                message: "Internal server error".into()
            }
        );
    }

    #[test]
    fn a_closing_frame_says_why() {
        let text = Closing {
            code: ErrorCode::TokenExpired,
            message: "expired".into(),
        }
        .to_text();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"type": "closing", "code": "token_expired", "message": "expired"})
        );
        assert_eq!(
            parse_server_frame(&text).unwrap(),
            Incoming::Closing {
                code: ErrorCode::TokenExpired,
                message: "expired".into()
            }
        );
    }

    #[test]
    fn unknown_frames_are_kept_and_broken_ones_refused() {
        assert!(matches!(
            parse_server_frame(r#"{"type":"future_thing"}"#).unwrap(),
            Incoming::Other(_)
        ));
        assert!(parse_server_frame("not json").is_err());
        assert!(parse_server_frame(r#"{"type":"published"}"#).is_err());
    }
}
