use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Position;

/// A client's name for one request, repeated in its reply so replies pair with
/// requests exactly. Optional: a request without one still gets its reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    Number(u64),
    Text(String),
}

/// The longest text id the server repeats.
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// What a client asks for; API Gateway routes on `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Keeps the connection alive (API Gateway closes idle ones after 10
    /// minutes). API Gateway answers it itself: no function runs for it.
    Ping,
    /// Starts receiving a channel. With `since`, the last position the client
    /// saw, the reply also recovers what was published after it.
    Subscribe {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
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

impl Request {
    /// The `action` this request is sent as.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish { .. } => "publish",
            Request::Stats => "stats",
        }
    }
}

/// A request as it goes over the wire: the request's fields plus its `id`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ClientFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    #[serde(flatten)]
    pub request: Request,
}

impl ClientFrame {
    pub fn new(id: Option<RequestId>, request: Request) -> Self {
        ClientFrame { id, request }
    }

    /// The text frame to send.
    pub fn to_text(&self) -> String {
        // A map of strings and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a request. The `id` is taken out first, so that a malformed
    /// request can still be answered with its id (the `Err` keeps it).
    pub fn from_value(mut value: Value) -> Result<ClientFrame, (Option<RequestId>, String)> {
        let id = match value.as_object_mut().and_then(|fields| fields.remove("id")) {
            None => None,
            Some(raw) => match serde_json::from_value::<RequestId>(raw) {
                Ok(RequestId::Text(text)) if text.chars().count() > MAX_REQUEST_ID_CHARS => {
                    return Err((None, format!("\"id\" may be at most {MAX_REQUEST_ID_CHARS} characters")))
                }
                Ok(id) => Some(id),
                Err(_) => return Err((None, "\"id\" must be a string or a whole number".to_owned())),
            },
        };
        match serde_json::from_value::<Request>(value) {
            Ok(request) => Ok(ClientFrame { id, request }),
            Err(error) => Err((id, error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_serialise_to_the_documented_frames() {
        let frame =
            |id: Option<RequestId>, request: Request| serde_json::to_value(ClientFrame::new(id, request)).unwrap();
        assert_eq!(frame(None, Request::Ping), json!({"action": "ping"}));
        assert_eq!(
            frame(Some(RequestId::Number(7)), Request::Stats),
            json!({"action": "stats", "id": 7})
        );
        assert_eq!(
            frame(
                Some(RequestId::Text("a".into())),
                Request::Subscribe {
                    channel: "prices".into(),
                    since: Some(Position::new("e1", 41)),
                }
            ),
            json!({"action": "subscribe", "id": "a", "channel": "prices", "since": {"epoch": "e1", "offset": 41}})
        );
        // A broadcast has no channel key at all, not `"channel": null`.
        assert_eq!(
            frame(
                None,
                Request::Publish {
                    channel: None,
                    data: json!([1])
                }
            ),
            json!({"action": "publish", "data": [1]})
        );
    }

    #[test]
    fn a_request_reads_back_with_its_id_and_old_requests_have_none() {
        let read = ClientFrame::from_value(json!({"action": "subscribe", "channel": "c", "id": "x-1"})).unwrap();
        assert_eq!(read.id, Some(RequestId::Text("x-1".into())));
        assert_eq!(
            read.request,
            Request::Subscribe {
                channel: "c".into(),
                since: None
            }
        );
        let old = ClientFrame::from_value(json!({"action": "ping"})).unwrap();
        assert_eq!(old.id, None);
    }

    #[test]
    fn a_malformed_request_keeps_its_id_for_the_error_reply() {
        let (id, why) = ClientFrame::from_value(json!({"action": "subscribe", "id": 3})).unwrap_err();
        assert_eq!(id, Some(RequestId::Number(3)));
        assert!(why.contains("channel"), "{why}");
        let (id, why) = ClientFrame::from_value(json!({"action": "ping", "id": {"x": 1}})).unwrap_err();
        assert_eq!(id, None);
        assert!(why.contains("\"id\""), "{why}");
        let (_, why) = ClientFrame::from_value(json!({"action": "ping", "id": "x".repeat(65)})).unwrap_err();
        assert!(why.contains("64"), "{why}");
    }
}
