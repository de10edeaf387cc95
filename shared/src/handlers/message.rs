//! The `$default` route: everything a client sends after connecting.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use super::route_response;
use crate::channel::validate_channel_name;
use crate::message::MessageRecord;
use crate::store::{ConnectionStore, SubscribeOutcome};
use crate::telemetry::metric;
use crate::time::epoch_seconds_now;
use crate::{Config, Error};

/// How long a client-published message stays in the messages table.
pub const PUBLISHED_MESSAGE_TTL_SECONDS: i64 = 86_400;

const ACTIONS: &str = "ping, subscribe, unsubscribe, publish, stats";

/// What a client sends; API Gateway routes on `action` (`$request.body.action`).
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum ClientRequest {
    Ping,
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        #[serde(default)]
        channel: Option<String>,
        data: Value,
    },
    Stats,
}

/// What the client gets back on the same socket (the route response).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    Pong { expires_at: i64 },
    Subscribed { channel: String },
    Unsubscribed { channel: String },
    Published { id: String },
    Stats(Stats),
    Error { code: ErrorCode, message: String },
}

/// The answer to `stats`: how full the door is. Caps of 0 mean no cap.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Live connection records (past-TTL ones left out).
    pub open_connections: u64,
    /// Distinct authenticated users among them.
    pub distinct_users: u64,
    pub max_connections: u64,
    pub max_connections_per_user: u64,
    pub max_connections_per_ip: u64,
    /// Free slots under the total cap; `None` without one.
    pub free_slots: Option<u64>,
    pub connect_attempts_per_ip: u64,
    pub window_seconds: u64,
    /// Attempts refused by the per-IP throttle in the current window, all IPs.
    pub throttled_attempts_in_window: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownAction,
    InvalidRequest,
    InvalidChannel,
    ChannelLimit,
    UnknownConnection,
    PublishForbidden,
    MessageTooLarge,
    StatsForbidden,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
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
        }
    }
}

fn error_reply(code: ErrorCode, message: impl Into<String>) -> Reply {
    let message = message.into();
    tracing::info!(code = code.as_str(), reason = %message, "request refused");
    metrics::counter!(metric::CLIENT_ERRORS, "code" => code.as_str()).increment(1);
    Reply::Error { code, message }
}

/// `$default`: answers `ping` with `pong` and a refreshed TTL, manages channel
/// subscriptions, and (when allowed) publishes to the messages table.
///
/// A client mistake gets an `error` frame that says what was wrong and changes
/// nothing; the connection stays open. A store failure is returned as an error
/// so Lambda counts it, and API Gateway tells the client "Internal server error".
pub async fn handle_message<S: ConnectionStore>(
    store: &S,
    config: &Config,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    let context = &event.payload.request_context;
    let span = tracing::info_span!(
        "message",
        request_id = %event.context.request_id,
        connection_id = context.connection_id.as_deref().unwrap_or_default(),
        route_key = context.route_key.as_deref().unwrap_or_default(),
        action = tracing::field::Empty,
    );
    async {
        let Some(connection_id) = context.connection_id.as_deref() else {
            tracing::warn!(reason = "missing_connection_id", "message ignored");
            return Ok(route_response(400, "missing requestContext.connectionId"));
        };
        let reply = match parse_request(event.payload.body.as_deref().unwrap_or_default()) {
            Ok(request) => execute(store, config, connection_id, request).await?,
            Err(reply) => reply,
        };
        let body = serde_json::to_string(&reply)?;
        Ok(route_response(200, &body))
    }
    .instrument(span)
    .await
}

fn parse_request(body: &str) -> Result<ClientRequest, Reply> {
    let value: Value = serde_json::from_str(body)
        .map_err(|error| error_reply(ErrorCode::InvalidJson, format!("the message is not JSON: {error}")))?;
    let Some(action) = value.get("action").and_then(Value::as_str).map(str::to_owned) else {
        return Err(error_reply(
            ErrorCode::UnknownAction,
            format!("the message needs an \"action\" field, one of: {ACTIONS}"),
        ));
    };
    if !matches!(
        action.as_str(),
        "ping" | "subscribe" | "unsubscribe" | "publish" | "stats"
    ) {
        return Err(error_reply(
            ErrorCode::UnknownAction,
            format!("unknown action {action:?}; expected one of: {ACTIONS}"),
        ));
    }
    tracing::Span::current().record("action", action.as_str());
    // serde ignores deny_unknown_fields on a tagged unit variant, so these are checked here.
    if matches!(action.as_str(), "ping" | "stats") && value.as_object().is_some_and(|fields| fields.len() > 1) {
        return Err(error_reply(
            ErrorCode::InvalidRequest,
            format!("invalid {action} request: {action} takes no fields besides \"action\""),
        ));
    }
    serde_json::from_value(value)
        .map_err(|error| error_reply(ErrorCode::InvalidRequest, format!("invalid {action} request: {error}")))
}

async fn execute<S: ConnectionStore>(
    store: &S,
    config: &Config,
    connection_id: &str,
    request: ClientRequest,
) -> Result<Reply, Error> {
    let now = epoch_seconds_now();
    let reply = match request {
        ClientRequest::Ping => {
            let expires_at = now + config.connection_ttl_seconds as i64;
            match store.refresh_connection(connection_id, expires_at, now).await? {
                Some(_) => Reply::Pong { expires_at },
                None => unknown_connection(),
            }
        }
        ClientRequest::Subscribe { channel } => {
            if let Err(error) = validate_channel_name(&channel) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            match store
                .subscribe(connection_id, &channel, config.max_channels_per_connection, now)
                .await?
            {
                SubscribeOutcome::Subscribed => Reply::Subscribed { channel },
                SubscribeOutcome::LimitReached => error_reply(
                    ErrorCode::ChannelLimit,
                    format!(
                        "a connection may subscribe to at most {} channels",
                        config.max_channels_per_connection
                    ),
                ),
                SubscribeOutcome::UnknownConnection => unknown_connection(),
            }
        }
        ClientRequest::Unsubscribe { channel } => {
            if let Err(error) = validate_channel_name(&channel) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            store.unsubscribe(connection_id, &channel).await?;
            Reply::Unsubscribed { channel }
        }
        ClientRequest::Publish { channel, data } => {
            if !config.allow_client_publish {
                return Ok(error_reply(
                    ErrorCode::PublishForbidden,
                    "clients may not publish here; producers write to the messages table",
                ));
            }
            if let Some(Err(error)) = channel.as_deref().map(validate_channel_name) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            let message = MessageRecord {
                message_id: uuid::Uuid::new_v4().to_string(),
                channel,
                payload: data,
                expires_at: Some(now + PUBLISHED_MESSAGE_TTL_SECONDS),
                published_by: Some(connection_id.to_owned()),
            };
            // Refuse here what API Gateway would refuse to deliver later.
            if let Err(error) = message.to_frame() {
                return Ok(error_reply(ErrorCode::MessageTooLarge, error.to_string()));
            }
            match store.put_message(&message).await {
                Ok(()) => Reply::Published { id: message.message_id },
                Err(Error::ItemRejected { message: reason, .. }) => error_reply(
                    ErrorCode::InvalidRequest,
                    format!("the data cannot be stored: {reason}"),
                ),
                Err(error) => return Err(error),
            }
        }
        ClientRequest::Stats => {
            if !config.allow_stats {
                return Ok(error_reply(
                    ErrorCode::StatsForbidden,
                    "the stats action is off here (AIRWAVE_ALLOW_STATS)",
                ));
            }
            Reply::Stats(read_stats(store, config, now).await?)
        }
    };
    Ok(reply)
}

async fn read_stats<S: ConnectionStore>(store: &S, config: &Config, now: i64) -> Result<Stats, Error> {
    let limits = &config.admission;
    let window = crate::admission::window_of(now.saturating_mul(1_000), limits.window_seconds);
    let counts = store.admission_counts(window, now).await?;
    let throttled = if limits.attempts_per_ip == 0 {
        0
    } else {
        counts
            .attempts_in_window
            .iter()
            .map(|attempts| attempts.saturating_sub(limits.attempts_per_ip))
            .sum()
    };
    Ok(Stats {
        open_connections: counts.open_connections,
        distinct_users: counts.distinct_users,
        max_connections: limits.max_connections,
        max_connections_per_user: limits.max_connections_per_user,
        max_connections_per_ip: limits.max_connections_per_ip,
        free_slots: (limits.max_connections > 0)
            .then(|| limits.max_connections.saturating_sub(counts.total_slots_taken)),
        connect_attempts_per_ip: limits.attempts_per_ip,
        window_seconds: limits.window_seconds,
        throttled_attempts_in_window: throttled,
    })
}

fn unknown_connection() -> Reply {
    error_reply(
        ErrorCode::UnknownConnection,
        "this connection is no longer registered; reconnect",
    )
}

#[cfg(test)]
mod tests {
    use airwave_client::{parse_frame, Incoming};
    use serde_json::json;

    use super::*;

    const EVERY_ERROR_CODE: [ErrorCode; 9] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidChannel,
        ErrorCode::ChannelLimit,
        ErrorCode::UnknownConnection,
        ErrorCode::PublishForbidden,
        ErrorCode::MessageTooLarge,
        ErrorCode::StatsForbidden,
    ];

    /// Fails to compile when a code is added without adding it above.
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
            | ErrorCode::StatsForbidden => {}
        }
    }

    #[test]
    fn the_metric_label_of_every_error_code_is_its_wire_name() {
        for code in EVERY_ERROR_CODE {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn every_request_the_client_sends_is_one_this_route_accepts() {
        use airwave_client::Request;
        let requests = [
            Request::Ping,
            Request::Subscribe {
                channel: "prices".into(),
            },
            Request::Unsubscribe {
                channel: "prices".into(),
            },
            Request::Publish {
                channel: Some("prices".into()),
                data: json!({"price": 1}),
            },
            Request::Publish {
                channel: None,
                data: json!(null),
            },
            Request::Stats,
        ];
        for request in requests {
            let frame = serde_json::to_string(&request).unwrap();
            assert!(parse_request(&frame).is_ok(), "refused: {frame}");
        }
    }

    #[test]
    fn every_reply_this_route_sends_is_read_by_the_client_unchanged() {
        let mut replies = vec![
            Reply::Pong {
                expires_at: 1_700_000_000,
            },
            Reply::Subscribed {
                channel: "prices".into(),
            },
            Reply::Unsubscribed {
                channel: "prices".into(),
            },
            Reply::Published { id: "m-1".into() },
            Reply::Stats(Stats {
                open_connections: 3,
                distinct_users: 2,
                max_connections: 10,
                max_connections_per_user: 5,
                max_connections_per_ip: 0,
                free_slots: Some(7),
                connect_attempts_per_ip: 120,
                window_seconds: 60,
                throttled_attempts_in_window: 1,
            }),
        ];
        replies.extend(EVERY_ERROR_CODE.map(|code| Reply::Error {
            code,
            message: "why".into(),
        }));
        for reply in replies {
            let sent = serde_json::to_value(&reply).unwrap();
            let read = match parse_frame(&sent.to_string()).unwrap() {
                Incoming::Reply(read) => read,
                other => panic!("the client did not read {sent} as a reply: {other:?}"),
            };
            assert_eq!(serde_json::to_value(&read).unwrap(), sent);
            if let Reply::Error { code, .. } = reply {
                assert_eq!(read.error_code(), Some(code.as_str()));
            }
        }
    }
}
