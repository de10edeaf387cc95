//! The `$default` route: everything a client sends after connecting.

use airwave_protocol::{ClientFrame, Position, ReplyFrame, Request, RequestId};
pub use airwave_protocol::{ErrorCode, Reply, Stats};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use super::route_response;
use crate::channel::validate_channel_name;
use crate::closer::TOKEN_EXPIRED_MESSAGE;
use crate::connection::ConnectionRecord;
use crate::history::{recover, ChannelHistory, Recovery};
use crate::message::{MessageRecord, MAX_FRAME_BYTES};
use crate::permissions::{may_publish, may_subscribe};
use crate::rate::{publish_counters, publish_window, take_publish_allowance, PublishAllowance, PublishScope};
use crate::stats::{cached_stats, StatsSnapshots};
use crate::store::{AdmissionStore, ConnectionStore, MessageStore, SubscribeOutcome, SubscriptionStore};
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::Closer;
use crate::{Config, Error};

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

/// Everything the `$default` route reads and writes: the connection and its
/// subscriptions, publishing, the stats' cap counters, channel history, the
/// publish allowance and the stats snapshot.
pub trait DefaultRouteStore:
    ConnectionStore
    + SubscriptionStore
    + MessageStore
    + AdmissionStore
    + ChannelHistory
    + PublishAllowance
    + StatsSnapshots
    + Clocked
{
}

impl<S> DefaultRouteStore for S where
    S: ConnectionStore
        + SubscriptionStore
        + MessageStore
        + AdmissionStore
        + ChannelHistory
        + PublishAllowance
        + StatsSnapshots
        + Clocked
{
}

/// `$default`: manages channel subscriptions, and (when allowed) publishes to the messages table.
///
/// A client mistake gets an `error` frame that says what was wrong and changes
/// nothing; the connection stays open. A store failure is returned as an error
/// so Lambda counts it, and API Gateway tells the client "Internal server error".
///
/// A connection whose token has expired is refused with `token_expired`,
/// removed, told why in a `closing` frame and closed through `closer`.
pub async fn handle_message<S: DefaultRouteStore>(
    store: &S,
    closer: Option<&Closer>,
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
        let reply = match parse_client_frame(event.payload.body.as_deref().unwrap_or_default()) {
            Ok(ClientFrame { id, request }) => {
                ReplyFrame::answering(id, execute(store, config, connection_id, request).await?)
            }
            Err(reply) => reply,
        };
        if reply.reply.error_code() == Some(&ErrorCode::TokenExpired) {
            close_expired(store, closer, connection_id, &reply).await?;
        }
        Ok(route_response(200, &reply.to_text()))
    }
    .instrument(span)
    .await
}

/// Reads a client's message: the request, or the error reply that says what
/// is wrong with it (carrying the request's id when it had a readable one).
pub fn parse_client_frame(body: &str) -> Result<ClientFrame, ReplyFrame> {
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

/// Removes a connection whose token expired (giving its slots back) and closes
/// it. The reply goes out before the `closing` frame: once the connection is
/// closed, API Gateway has nowhere to send the route's response.
async fn close_expired<S: ConnectionStore>(
    store: &S,
    closer: Option<&Closer>,
    connection_id: &str,
    reply: &ReplyFrame,
) -> Result<(), Error> {
    store.remove_connection(connection_id).await?;
    let Some(closer) = closer else {
        tracing::warn!("no Management API endpoint (AIRWAVE_MANAGEMENT_ENDPOINT): the expired connection stays open until API Gateway closes it");
        return Ok(());
    };
    if let Err(error) = closer
        .close(
            connection_id,
            &[reply.to_text()],
            ErrorCode::TokenExpired,
            TOKEN_EXPIRED_MESSAGE,
        )
        .await
    {
        // Its record is gone, so it receives nothing and its next request is
        // refused; the client reconnects then.
        tracing::error!(error = %error, "could not close a connection whose token expired");
    }
    Ok(())
}

async fn execute<S: DefaultRouteStore>(
    store: &S,
    config: &Config,
    connection_id: &str,
    request: Request,
) -> Result<Reply, Error> {
    let now = store.clock().epoch_seconds();
    let reply = match request {
        // The `ping` route's mock answers pings without this function; one
        // that reaches `$default` (a stack deployed without that route) gets
        // the same answer, and costs no read or write either.
        Request::Ping => Reply::Pong,
        Request::Subscribe { channel, since } => {
            if let Err(error) = validate_channel_name(&channel) {
                return Ok(error_reply(ErrorCode::InvalidChannel, error.to_string()));
            }
            // Checked on the record, before anything is written: who the
            // connection is and what its token allows were stored at $connect.
            let record = match live_record(store, connection_id, now).await? {
                Ok(record) => record,
                Err(refusal) => return Ok(refusal),
            };
            if let Err(refusal) = may_subscribe(&record, &channel) {
                return Ok(error_reply(ErrorCode::ChannelForbidden, refusal.explain()));
            }
            match store
                .subscribe(&record, &channel, config.max_channels_per_connection, now)
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
            let record = match live_record(store, connection_id, now).await? {
                Ok(record) => record,
                Err(refusal) => return Ok(refusal),
            };
            if record.user_id.is_none() && !config.allow_anonymous_publish {
                return Ok(error_reply(
                    ErrorCode::PublishForbidden,
                    "a connection without a user may not publish here (AIRWAVE_ALLOW_ANONYMOUS_PUBLISH); connect with a token",
                ));
            }
            if let Err(refusal) = may_publish(&record, channel.as_deref()) {
                return Ok(error_reply(ErrorCode::PublishForbidden, refusal.explain()));
            }
            let message = MessageRecord {
                message_id: uuid::Uuid::new_v4().to_string(),
                channel,
                payload: data,
                expires_at: Some(now + config.message_retention_seconds as i64),
                published_by: Some(connection_id.to_owned()),
                published_by_user: record.user_id.clone(),
                to_user: None,
                written_at_ms: Some(store.clock().epoch_millis()),
            };
            // Refuse here what API Gateway would refuse to deliver later,
            // before it takes anything from an allowance.
            if let Err(error) = message.check_frame_size() {
                return Ok(error_reply(ErrorCode::MessageTooLarge, error.to_string()));
            }
            let rate = &config.publish_rate;
            let (window, counter_expires_at) = publish_window(rate, now);
            let counters = publish_counters(rate, &record, window);
            if let Some(refused) = take_publish_allowance(store, &counters, counter_expires_at).await? {
                metrics::counter!(metric::PUBLISH_RATE_LIMITED).increment(1);
                tracing::info!(
                    scope = refused.scope.as_str(),
                    limit = refused.limit,
                    window_seconds = rate.window_seconds,
                    "publish over its allowance"
                );
                let whose = match refused.scope {
                    PublishScope::Connection => "a connection",
                    PublishScope::User => "a user, over all of its connections,",
                    PublishScope::Ip => "one address, over all of its connections,",
                };
                return Ok(error_reply(
                    ErrorCode::RateLimited,
                    format!(
                        "{whose} may publish {} times per {} s; try again in the next window",
                        refused.limit, rate.window_seconds
                    ),
                ));
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
            let record = match live_record(store, connection_id, now).await? {
                Ok(record) => record,
                Err(refusal) => return Ok(refusal),
            };
            // With authentication on, every connection has a user; only an
            // operator's token may read the stats then.
            if record.user_id.is_some() && !record.operator {
                return Ok(error_reply(
                    ErrorCode::StatsForbidden,
                    "the stats action needs a token with the operator right (AIRWAVE_OPERATOR_CLAIM)",
                ));
            }
            match cached_stats(store, config, now).await? {
                Some(stats) => Reply::Stats(stats),
                None => error_reply(
                    ErrorCode::RateLimited,
                    "the stats are being counted for another request; try again in a few seconds",
                ),
            }
        }
    };
    Ok(reply)
}

/// The reply to a subscribe that took effect: the channel's position and,
/// when the client said where it left off, what it missed. The subscription
/// item is written before the head is read, so every message after the head
/// reaches this connection through the fan-out.
async fn subscribed<H: ChannelHistory + Clocked>(
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
    // A channel nobody has published to is not started by a subscribe: the
    // reply says so, and a recovery from it starts at the first message.
    let head = history
        .channel_head(&channel, now)
        .await?
        .unwrap_or_else(Position::not_started);
    let (recovered, publications) = match since {
        None => (None, Vec::new()),
        Some(since) => {
            let budget = MAX_FRAME_BYTES - REPLY_OVERHEAD_BYTES;
            match recover(history, &channel, &since, &head, &config.history, budget, now).await? {
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

/// The connection's record, or the refusal for a connection without a live
/// one: `token_expired` when its token ran out, `unknown_connection` otherwise.
async fn live_record<S: ConnectionStore>(
    store: &S,
    connection_id: &str,
    now: i64,
) -> Result<Result<ConnectionRecord, Reply>, Error> {
    Ok(match store.get_connection(connection_id).await? {
        Some(record) if !record.is_expired(now) => Ok(record),
        Some(record) if record.token_expired(now) => Err(error_reply(ErrorCode::TokenExpired, TOKEN_EXPIRED_MESSAGE)),
        _ => Err(unknown_connection()),
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
                let read = parse_client_frame(&frame).unwrap_or_else(|reply| panic!("refused {frame}: {reply:?}"));
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
            let reply = parse_client_frame(body).unwrap_err();
            assert_eq!(reply.id, Some(RequestId::Text("s-1".into())), "{body}");
            assert_eq!(reply.reply.error_code(), Some(&code), "{body}");
        }
        let unreadable = parse_client_frame("{not json").unwrap_err();
        assert_eq!(unreadable.id, None);
        assert_eq!(unreadable.reply.error_code(), Some(&ErrorCode::InvalidJson));
    }
}
