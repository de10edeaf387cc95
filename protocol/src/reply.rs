use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{MessageFrame, Position, RequestId};

/// The server's answer to one request, sent back on the same socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to `ping`, given by API Gateway itself (the `ping` route's
    /// mock integration): `{"type": "pong"}`, with no request id, since a
    /// route answered without a function cannot echo one.
    Pong,
    Subscribed {
        channel: String,
        /// The channel's latest position when the subscription took effect: the
        /// client's `since` for its next subscribe. Messages after it arrive as
        /// `message` frames.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<Position>,
        /// Present when the request carried `since`. `true`: `publications`
        /// holds every message after `since` up to `position`, in position
        /// order. `false`: they cannot be recovered (outside the history kept,
        /// over the replay bound, or a new epoch); the application should
        /// reload its state. Recovery is never partial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publications: Vec<MessageFrame>,
    },
    Unsubscribed {
        channel: String,
    },
    Published {
        /// The id every receiver sees in the message frame.
        message_id: String,
    },
    Stats(Stats),
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A reply as it goes over the wire: the reply's fields plus the request's `id`.
///
/// For a request sent without an `id`, a `published` reply carries the message
/// id as `id` too, as replies did before request ids existed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    #[serde(flatten)]
    pub reply: Reply,
}

impl ReplyFrame {
    /// The reply to a request that carried `id` (or none).
    pub fn answering(id: Option<RequestId>, reply: Reply) -> Self {
        let id = match (id, &reply) {
            (None, Reply::Published { message_id }) => Some(RequestId::Text(message_id.clone())),
            (id, _) => id,
        };
        ReplyFrame { id, reply }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Reply {
    /// The error code when this is an error reply.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            Reply::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The answer to `stats`: how full the door is. Caps of 0 mean no cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    /// Live connection records (past-TTL ones left out).
    pub open_connections: u64,
    /// Distinct authenticated users among them.
    pub distinct_users: u64,
    pub max_connections: u64,
    pub max_connections_per_user: u64,
    pub max_connections_per_ip: u64,
    /// Free slots under the total cap; `null` without one.
    pub free_slots: Option<u64>,
    pub connect_attempts_per_ip: u64,
    pub window_seconds: u64,
    /// Attempts refused by the per-IP throttle in the current window, all IPs.
    pub throttled_attempts_in_window: u64,
    /// When these figures were counted (epoch seconds). Counting scans the
    /// tables, so the server counts at most once per interval and answers
    /// every other request from that count.
    #[serde(default)]
    pub as_of: i64,
}

/// Why a request was refused. A client that meets a code it does not know
/// (from a newer server) reads it as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// No `action`, or one the server does not know.
    UnknownAction,
    /// The action's fields are wrong.
    InvalidRequest,
    /// The channel name is not a valid one.
    InvalidChannel,
    /// The connection already has as many channels as it may.
    ChannelLimit,
    /// The connection's record is gone; reconnect.
    UnknownConnection,
    /// Client publishing is off.
    PublishForbidden,
    /// The message would be over API Gateway's 128 KB.
    MessageTooLarge,
    /// The stats action is off.
    StatsForbidden,
    /// The connection may not subscribe to this channel: another user's
    /// personal channel, or one its token's claims do not allow.
    ChannelForbidden,
    /// The connection's token has expired: the server refuses its requests,
    /// stops sending it messages and closes it. Reconnect with a fresh token.
    TokenExpired,
    /// The connection publishes faster than its allowance; retry later.
    RateLimited,
    /// Sent in a `closing` frame: the user opened a connection past their cap,
    /// and this one, their oldest, was closed to make room. Do not reconnect
    /// on your own, or the two would evict each other in turn.
    Evicted,
    #[serde(untagged)]
    Other(String),
}

impl ErrorCode {
    /// Every code this protocol defines.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidChannel,
        ErrorCode::ChannelLimit,
        ErrorCode::UnknownConnection,
        ErrorCode::PublishForbidden,
        ErrorCode::MessageTooLarge,
        ErrorCode::StatsForbidden,
        ErrorCode::ChannelForbidden,
        ErrorCode::TokenExpired,
        ErrorCode::RateLimited,
        ErrorCode::Evicted,
    ];

    /// The wire name, also the metric label.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::ChannelLimit => "channel_limit",
            ErrorCode::UnknownConnection => "unknown_connection",
            ErrorCode::PublishForbidden => "publish_forbidden",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::StatsForbidden => "stats_forbidden",
            ErrorCode::ChannelForbidden => "channel_forbidden",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Evicted => "evicted",
            ErrorCode::Other(code) => code,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Fails to compile when a code is added without adding it to `ALL`.
    #[allow(dead_code)]
    fn listed(code: ErrorCode) {
        match code {
            ErrorCode::InvalidJson
            | ErrorCode::UnknownAction
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidChannel
            | ErrorCode::ChannelLimit
            | ErrorCode::UnknownConnection
            | ErrorCode::PublishForbidden
            | ErrorCode::MessageTooLarge
            | ErrorCode::StatsForbidden
            | ErrorCode::ChannelForbidden
            | ErrorCode::TokenExpired
            | ErrorCode::RateLimited
            | ErrorCode::Evicted
            | ErrorCode::Other(_) => {}
        }
    }

    #[test]
    fn every_error_code_goes_over_the_wire_as_its_name_and_unknown_ones_survive() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_value(&code).unwrap();
            assert_eq!(wire, json!(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(wire).unwrap(), code);
        }
        let newer: ErrorCode = serde_json::from_value(json!("slow_down")).unwrap();
        assert_eq!(newer, ErrorCode::Other("slow_down".into()));
        assert_eq!(newer.as_str(), "slow_down");
    }

    #[test]
    fn a_reply_repeats_the_request_id_and_an_old_publish_reply_keeps_its_message_id() {
        let reply = ReplyFrame::answering(Some(RequestId::Number(4)), Reply::Unsubscribed { channel: "c".into() });
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"type": "unsubscribed", "channel": "c", "id": 4})
        );
        let old = ReplyFrame::answering(
            None,
            Reply::Published {
                message_id: "m-1".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            json!({"type": "published", "message_id": "m-1", "id": "m-1"})
        );
        let new = ReplyFrame::answering(
            Some(RequestId::Text("r".into())),
            Reply::Published {
                message_id: "m-1".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&new).unwrap(),
            json!({"type": "published", "message_id": "m-1", "id": "r"})
        );
    }
}
