//! The `$default` route: everything a client sends after connecting.

use airwave_protocol::{ClientFrame, Position, ReplyFrame, Request, RequestId};
pub use airwave_protocol::{ErrorCode, Reply, Stats};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::route_response;
use crate::channel::validate_channel_name;
use crate::connection::ConnectionRecord;
use crate::history::{recover, ChannelHistory, Recovery};
use crate::message::{MessageRecord, MAX_FRAME_BYTES};
use crate::permissions::{may_publish, may_subscribe};
use crate::store::{ConnectionStore, SubscribeOutcome};
use crate::telemetry::metric;
use crate::time::epoch_seconds_now;
use crate::{Config, Error};

/// How long a client-published message stays in the messages table.
pub const PUBLISHED_MESSAGE_TTL_SECONDS: i64 = 86_400;

const ACTIONS: &str = "ping, subscribe, unsubscribe, publish, stats";
/// Room kept in a `subscribed` reply for everything but the recovered
/// messages, so the reply stays under API Gateway's 128 KB.
const REPLY_OVERHEAD_BYTES: usize = 4 * 1024;

fn error_reply(code: ErrorCode, message: impl Into<String>) -> Reply {
    let message = message.into();
    tracing::info!(code = code.as_str(), reason = %message, "request refused");
    metrics::counter!(metric::CLIENT_ERRORS, "code" => code.as_str().to_owned()).increment(1);
    Reply::Error { code, message }
}

/// `$default`: answers `ping` with `pong` and a refreshed TTL, manages channel
/// subscriptions, and (when allowed) publishes to the messages table.
///
/// A client mistake gets an `error` frame that says what was wrong and changes
/// nothing; the connection stays open. A store failure is returned as an error
/// so Lambda counts it, and API Gateway tells the client "Internal server error".
pub async fn handle_message<S: ConnectionStore + ChannelHistory>(
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
            Ok(ClientFrame { id, request }) => {
                ReplyFrame::answering(id, execute(store, config, connection_id, request).await?)
            }
            Err(reply) => reply,
        };
        Ok(route_response(200, &reply.to_text()))
    }
    .instrument(span)
    .await
}

fn parse_request(body: &str) -> Result<ClientFrame, ReplyFrame> {
    let refuse = |id: Option<RequestId>, code, message| Err(ReplyFrame::answering(id, error_reply(code, message)));
    let value: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(error) => {
            return refuse(
                None,
                ErrorCode::InvalidJson,
                format!("the message is not JSON: {error}"),
            )
        }
    };
    // The id is read first, so that every refusal below can carry it.
    let id = value
        .get("id")
        .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    let Some(action) = value.get("action").and_then(Value::as_str).map(str::to_owned) else {
        return refuse(
            id,
            ErrorCode::UnknownAction,
            format!("the message needs an \"action\" field, one of: {ACTIONS}"),
        );
    };
    if !matches!(
        action.as_str(),
        "ping" | "subscribe" | "unsubscribe" | "publish" | "stats"
    ) {
        return refuse(
            id,
            ErrorCode::UnknownAction,
            format!("unknown action {action:?}; expected one of: {ACTIONS}"),
        );
    }
    tracing::Span::current().record("action", action.as_str());
    // serde ignores deny_unknown_fields on a tagged unit variant, so these are checked here.
    let fields = value
        .as_object()
        .map(|fields| fields.keys().filter(|key| *key != "id").count())
        .unwrap_or(0);
    if matches!(action.as_str(), "ping" | "stats") && fields > 1 {
        return refuse(
            id,
            ErrorCode::InvalidRequest,
            format!("invalid {action} request: {action} takes no fields besides \"action\" and \"id\""),
        );
    }
    ClientFrame::from_value(value).or_else(|(id, why)| {
        refuse(
            id,
            ErrorCode::InvalidRequest,
            format!("invalid {action} request: {why}"),
        )
    })
}

async fn execute<S: ConnectionStore + ChannelHistory>(
    store: &S,
    config: &Config,
    connection_id: &str,
    request: Request,
) -> Result<Reply, Error> {
    let now = epoch_seconds_now();
    let reply = match request {
        Request::Ping => {
            let expires_at = now + config.connection_ttl_seconds as i64;
            match store.refresh_connection(connection_id, expires_at, now).await? {
                Some(_) => Reply::Pong { expires_at },
                None => unknown_connection(),
            }
        }
        Request::Subscribe { channel, since } => {
            if let Err(error) = validate_channel_name(&channel) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            // Checked on the record, before anything is written: who the
            // connection is and what its token allows were stored at $connect.
            let Some(record) = live_record(store, connection_id, now).await? else {
                return Ok(unknown_connection());
            };
            if let Err(refusal) = may_subscribe(&record, &channel) {
                return Ok(error_reply(ErrorCode::ChannelForbidden, refusal.explain()));
            }
            match store
                .subscribe(connection_id, &channel, config.max_channels_per_connection, now)
                .await?
            {
                SubscribeOutcome::Subscribed => subscribed(store, config, channel, since, now).await?,
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
        Request::Unsubscribe { channel } => {
            if let Err(error) = validate_channel_name(&channel) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            store.unsubscribe(connection_id, &channel).await?;
            Reply::Unsubscribed { channel }
        }
        Request::Publish { channel, data } => {
            if !config.allow_client_publish {
                return Ok(error_reply(
                    ErrorCode::PublishForbidden,
                    "clients may not publish here; producers write to the messages table",
                ));
            }
            if let Some(Err(error)) = channel.as_deref().map(validate_channel_name) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            let Some(record) = live_record(store, connection_id, now).await? else {
                return Ok(unknown_connection());
            };
            if let Err(refusal) = may_publish(&record, channel.as_deref()) {
                return Ok(error_reply(ErrorCode::PublishForbidden, refusal.explain()));
            }
            let message = MessageRecord {
                message_id: uuid::Uuid::new_v4().to_string(),
                channel,
                payload: data,
                expires_at: Some(now + PUBLISHED_MESSAGE_TTL_SECONDS),
                published_by: Some(connection_id.to_owned()),
                published_by_user: record.user_id.clone(),
            };
            // Refuse here what API Gateway would refuse to deliver later.
            if let Err(error) = message.check_frame_size() {
                return Ok(error_reply(ErrorCode::MessageTooLarge, error.to_string()));
            }
            match store.put_message(&message).await {
                Ok(()) => Reply::Published {
                    message_id: message.message_id,
                },
                Err(Error::ItemRejected { message: reason, .. }) => error_reply(
                    ErrorCode::InvalidRequest,
                    format!("the data cannot be stored: {reason}"),
                ),
                Err(error) => return Err(error),
            }
        }
        Request::Stats => {
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
        as_of: now,
    })
}

/// The reply to a subscribe that took effect: the channel's position and,
/// when the client said where it left off, what it missed. The subscription
/// item is written before the head is read, so every message after the head
/// reaches this connection through the fan-out.
async fn subscribed<H: ChannelHistory>(
    history: &H,
    config: &Config,
    channel: String,
    since: Option<Position>,
    now: i64,
) -> Result<Reply, Error> {
    if !config.history.enabled() {
        return Ok(Reply::Subscribed {
            channel,
            position: None,
            recovered: since.map(|_| false),
            publications: Vec::new(),
        });
    }
    let head = history.channel_head(&channel, now).await?;
    let (recovered, publications) = match since {
        None => (None, Vec::new()),
        Some(since) => {
            let budget = MAX_FRAME_BYTES - REPLY_OVERHEAD_BYTES;
            match recover(history, &channel, &since, &head, config.history.size, budget, now).await? {
                Recovery::Recovered(publications) => {
                    metrics::counter!(metric::RECOVERIES, "outcome" => "recovered").increment(1);
                    tracing::info!(channel, missed = publications.len(), "subscription recovered");
                    (Some(true), publications)
                }
                Recovery::Impossible(reason) => {
                    metrics::counter!(metric::RECOVERIES, "outcome" => reason).increment(1);
                    tracing::info!(
                        channel,
                        reason,
                        since_offset = since.offset,
                        head_offset = head.offset,
                        "recovery impossible"
                    );
                    (Some(false), Vec::new())
                }
            }
        }
    };
    Ok(Reply::Subscribed {
        channel,
        position: Some(head),
        recovered,
        publications,
    })
}

/// The connection's record, unless it is gone or past its TTL.
async fn live_record<S: ConnectionStore>(
    store: &S,
    connection_id: &str,
    now: i64,
) -> Result<Option<ConnectionRecord>, Error> {
    Ok(store
        .get_connection(connection_id)
        .await?
        .filter(|record| !record.is_expired(now)))
}

fn unknown_connection() -> Reply {
    error_reply(
        ErrorCode::UnknownConnection,
        "this connection is no longer registered; reconnect",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_request_a_client_can_build_is_one_this_route_accepts() {
        let requests = [
            Request::Ping,
            Request::Subscribe {
                channel: "prices".into(),
                since: None,
            },
            Request::Subscribe {
                channel: "prices".into(),
                since: Some(Position::new("e", 3)),
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
        for (n, request) in requests.into_iter().enumerate() {
            for id in [
                None,
                Some(RequestId::Number(n as u64)),
                Some(RequestId::Text(format!("r{n}"))),
            ] {
                let frame = ClientFrame::new(id.clone(), request.clone()).to_text();
                let read = parse_request(&frame).unwrap_or_else(|reply| panic!("refused {frame}: {reply:?}"));
                assert_eq!(read, ClientFrame::new(id, request.clone()));
            }
        }
    }

    #[test]
    fn a_refused_request_is_answered_with_its_id() {
        for (body, code) in [
            (r#"{"action":"subscribe","id":"s-1"}"#, ErrorCode::InvalidRequest),
            (r#"{"action":"dance","id":"s-1"}"#, ErrorCode::UnknownAction),
            (r#"{"action":"ping","id":"s-1","extra":1}"#, ErrorCode::InvalidRequest),
            (r#"{"id":"s-1"}"#, ErrorCode::UnknownAction),
        ] {
            let reply = parse_request(body).unwrap_err();
            assert_eq!(reply.id, Some(RequestId::Text("s-1".into())), "{body}");
            assert_eq!(reply.reply.error_code(), Some(&code), "{body}");
        }
        let unreadable = parse_request("{not json").unwrap_err();
        assert_eq!(unreadable.id, None);
        assert_eq!(unreadable.reply.error_code(), Some(&ErrorCode::InvalidJson));
    }
}
