//! The JSON frames of the Airwave client protocol.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A frame the client sends; serialises to `{"action":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
    /// No `channel` publishes to every connection.
    Publish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        data: Value,
    },
    Stats,
}

/// The server's answer to one [`Request`]; serialises back to the `{"type":...}` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        expires_at: i64,
    },
    Subscribed {
        channel: String,
    },
    Unsubscribed {
        channel: String,
    },
    Published {
        id: String,
    },
    /// Whatever counters the server reports, kept as they came.
    Stats {
        #[serde(flatten)]
        fields: Map<String, Value>,
    },
    Error {
        code: String,
        message: String,
    },
}

impl Reply {
    /// Whether this reply can be the answer to `request`. Used to pair replies with requests,
    /// since the protocol has no request ids: an error answers anything.
    pub fn answers(&self, request: &Request) -> bool {
        match (self, request) {
            (Reply::Error { .. }, _) => true,
            (Reply::Pong { .. }, Request::Ping) => true,
            (Reply::Subscribed { channel: a }, Request::Subscribe { channel: b }) => a == b,
            (Reply::Unsubscribed { channel: a }, Request::Unsubscribe { channel: b }) => a == b,
            (Reply::Published { .. }, Request::Publish { .. }) => true,
            (Reply::Stats { .. }, Request::Stats) => true,
            _ => false,
        }
    }

    /// The error code when this is an error reply.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A message pushed to the client: `{"type":"message","id":...,"channel":...,"data":...}`.
/// `channel` is `None` for a broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// Any frame the server may send.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Message),
    Reply(Reply),
    /// A well-formed JSON object of a type this client does not know (kept for logging).
    Other(Value),
}

/// Parses one text frame from the server. Unknown `type`s are not an error, so a newer server
/// can add frames without breaking older clients.
pub fn parse_frame(text: &str) -> Result<Incoming, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    match value.get("type").and_then(Value::as_str) {
        Some("message") => Ok(Incoming::Message(serde_json::from_value(value)?)),
        Some("pong" | "subscribed" | "unsubscribed" | "published" | "stats" | "error") => {
            Ok(Incoming::Reply(serde_json::from_value(value)?))
        }
        _ => Ok(Incoming::Other(value)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_serialise_to_the_documented_frames() {
        let frame = |r: Request| serde_json::to_value(r).unwrap();
        assert_eq!(frame(Request::Ping), json!({"action": "ping"}));
        assert_eq!(frame(Request::Stats), json!({"action": "stats"}));
        assert_eq!(
            frame(Request::Subscribe {
                channel: "prices".into()
            }),
            json!({"action": "subscribe", "channel": "prices"})
        );
        assert_eq!(
            frame(Request::Unsubscribe {
                channel: "prices".into()
            }),
            json!({"action": "unsubscribe", "channel": "prices"})
        );
        assert_eq!(
            frame(Request::Publish {
                channel: Some("c".into()),
                data: json!({"x": 1})
            }),
            json!({"action": "publish", "channel": "c", "data": {"x": 1}})
        );
        // A broadcast has no channel key at all, not `"channel": null`.
        assert_eq!(
            frame(Request::Publish {
                channel: None,
                data: json!([1])
            }),
            json!({"action": "publish", "data": [1]})
        );
    }

    #[test]
    fn server_frames_parse_into_messages_replies_and_unknowns() {
        assert_eq!(
            parse_frame(r#"{"type":"message","id":"m1","channel":null,"data":{"a":1}}"#).unwrap(),
            Incoming::Message(Message {
                id: "m1".into(),
                channel: None,
                data: json!({"a": 1})
            })
        );
        assert_eq!(
            parse_frame(r#"{"type":"pong","expires_at":1700000000}"#).unwrap(),
            Incoming::Reply(Reply::Pong {
                expires_at: 1_700_000_000
            })
        );
        assert_eq!(
            parse_frame(r#"{"type":"error","code":"invalid_channel","message":"bad"}"#).unwrap(),
            Incoming::Reply(Reply::Error {
                code: "invalid_channel".into(),
                message: "bad".into()
            })
        );
        let Incoming::Reply(stats) = parse_frame(r#"{"type":"stats","connections":3,"channels":{"a":1}}"#).unwrap()
        else {
            panic!("stats is a reply");
        };
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({"type": "stats", "connections": 3, "channels": {"a": 1}})
        );
        assert!(matches!(
            parse_frame(r#"{"type":"future_thing"}"#).unwrap(),
            Incoming::Other(_)
        ));
        assert!(parse_frame("not json").is_err());
        assert!(parse_frame(r#"{"type":"published"}"#).is_err());
    }

    #[test]
    fn replies_answer_only_their_own_kind_of_request() {
        let sub_a = Request::Subscribe { channel: "a".into() };
        assert!(Reply::Subscribed { channel: "a".into() }.answers(&sub_a));
        assert!(!Reply::Subscribed { channel: "b".into() }.answers(&sub_a));
        assert!(!Reply::Pong { expires_at: 1 }.answers(&sub_a));
        assert!(Reply::Error {
            code: "x".into(),
            message: String::new()
        }
        .answers(&Request::Stats));
        assert!(Reply::Published { id: "1".into() }.answers(&Request::Publish {
            channel: None,
            data: Value::Null
        }));
        assert!(!Reply::Published { id: "1".into() }.answers(&Request::Stats));
    }
}
