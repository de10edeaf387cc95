//! The HTTP API: `POST /v1/publish`, for backends that publish without the
//! AWS SDK and for clients that publish without a socket.
//!
//! The body is one message or a batch of at most [`MAX_BATCH`]. Each message
//! names a channel or a user (neither: every connection) and may carry an
//! idempotency key: the same key from the same caller publishes once, and a
//! repeat is answered with the first message's id and `duplicate: true`.
//! Every message of a batch is checked before any is written, so a bad batch
//! is refused whole and writes nothing.
//!
//! `POST /v1/poll` is the fallback transport's read side: for each channel,
//! the messages after the position the client has, from the channel's
//! history, as a resubscribe would give them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{MessageFrame, Position};

/// Where messages are published.
pub const PUBLISH_PATH: &str = "/v1/publish";
/// Messages in one request: each is at most 128 KB once framed, so a full
/// batch stays inside Lambda's 6 MB request.
pub const MAX_BATCH: usize = 25;
/// Where a client without a socket reads its channels.
pub const POLL_PATH: &str = "/v1/poll";
/// The most messages of one channel a poll answers; `more` says there are others.
pub const POLL_PAGE: u64 = 100;
/// An idempotency key's length limit, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// The scheme of a server key in the `Authorization` header; a client token
/// goes as `Bearer`.
pub const SERVER_KEY_SCHEME: &str = "Key";

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpMessage {
    /// The channel whose subscribers receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A user (a token's `sub`) whose every open connection receives it; not
    /// with `channel`. Only a server key may address a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Any JSON value; subscribers receive it as the message's `data`.
    pub data: Value,
    /// Publishes at most once per caller: 1 to 128 printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl HttpMessage {
    /// A message to a channel's subscribers, without an idempotency key.
    pub fn to_channel(channel: &str, data: Value) -> Self {
        HttpMessage {
            channel: Some(channel.to_owned()),
            user: None,
            data,
            idempotency_key: None,
        }
    }
}

/// Several messages in one request, published in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    pub messages: Vec<HttpMessage>,
}

/// The body of `POST /v1/publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PublishBody {
    Batch(PublishBatch),
    One(HttpMessage),
}

impl PublishBody {
    /// Reads a request body into its messages, or says what is wrong with it
    /// (naming the message and field). Limits are the server's to check.
    pub fn parse(body: &str) -> Result<Vec<HttpMessage>, BodyError> {
        let value: Value = serde_json::from_str(body).map_err(|error| BodyError::NotJson(error.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(BodyError::Invalid(
                "the body must be a JSON object: one message, or {\"messages\": [...]}".into(),
            ));
        };
        if object.contains_key("messages") {
            let batch: PublishBatch =
                serde_json::from_value(value).map_err(|error| BodyError::Invalid(format!("the batch: {error}")))?;
            return Ok(batch.messages);
        }
        let message: HttpMessage =
            serde_json::from_value(value).map_err(|error| BodyError::Invalid(format!("the message: {error}")))?;
        Ok(vec![message])
    }

    /// The messages, in order.
    pub fn messages(&self) -> &[HttpMessage] {
        match self {
            PublishBody::Batch(batch) => &batch.messages,
            PublishBody::One(message) => std::slice::from_ref(message),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (`invalid_json`).
    NotJson(String),
    /// JSON of the wrong shape (`invalid_request`).
    Invalid(String),
}

/// The body of `POST /v1/poll`: each channel, with the position the client
/// has (`null`: none yet, so only the channel's position is answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    pub channels: BTreeMap<String, Option<Position>>,
}

/// A 200 answer to `POST /v1/poll`: one entry per channel asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PollResponse {
    pub channels: BTreeMap<String, ChannelPoll>,
    /// The most channels one poll may name, as a connection may subscribe
    /// to: a client holds its subscriptions to it.
    #[serde(default)]
    pub max_channels: usize,
}

/// One channel's answer: its messages, or why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ChannelPoll {
    Refused {
        error: HttpError,
    },
    Read {
        /// Where the client is after these messages (the channel's head, or
        /// the last of a page); `null` where positions are off.
        position: Option<Position>,
        /// Whether every message since the given position is here (or, with
        /// `more`, on the next pages); `false`: some are gone, and the client
        /// continues from `position`. `null` when no position was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publications: Vec<MessageFrame>,
        /// More messages follow `position`: poll again at once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
}

/// What became of one message, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishedMessage {
    pub message_id: String,
    /// Its idempotency key was used before: nothing new was published, and
    /// `message_id` is the first message's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A 200 answer to `POST /v1/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishResponse {
    pub messages: Vec<PublishedMessage>,
}

/// Every non-200 answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpErrorBody {
    pub error: HttpError,
}

/// The error: a protocol error code (or a token's refusal reason, as in a
/// refused handshake) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_message_and_a_batch_read_the_same_way() {
        let one = PublishBody::parse(r#"{"channel":"news","data":{"a":1}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].channel.as_deref(), Some("news"));
        let batch = PublishBody::parse(
            r#"{"messages":[{"channel":"a","data":1},{"user":"bob","data":2,"idempotency_key":"k"}]}"#,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].user.as_deref(), Some("bob"));
        assert_eq!(batch[1].idempotency_key.as_deref(), Some("k"));
        let round_trip = serde_json::to_value(PublishBody::One(one[0].clone())).unwrap();
        assert_eq!(round_trip, json!({"channel":"news","data":{"a":1}}));
    }

    #[test]
    fn a_bad_body_says_what_is_wrong() {
        assert!(matches!(PublishBody::parse("{no"), Err(BodyError::NotJson(_))));
        for (body, needle) in [
            ("[1]", "JSON object"),
            (r#"{"channel":"a"}"#, "data"),
            (r#"{"channel":"a","data":1,"colour":"red"}"#, "colour"),
            (r#"{"messages":[{"data":1},{"chanel":"a","data":1}]}"#, "chanel"),
            (r#"{"messages":7}"#, "batch"),
        ] {
            match PublishBody::parse(body) {
                Err(BodyError::Invalid(why)) => assert!(why.contains(needle), "{body}: {why}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
