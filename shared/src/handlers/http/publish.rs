//! `POST /v1/publish`: every message is checked, and the caller's right and
//! allowance taken, before the first is written; then each is written to the
//! messages table in order, as a producer's item, and streamed like one.

use std::collections::HashSet;

use airwave_protocol::http::{
    BodyError, HttpMessage, PublishBody, PublishResponse, PublishedMessage, MAX_BATCH, MAX_IDEMPOTENCY_KEY_BYTES,
};
use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use serde_json::Value;

use super::{error_response, json_response, Caller};
use crate::channel::{sha256_hex, validate_channel_name};
use crate::connection::ConnectionRecord;
use crate::message::MessageRecord;
use crate::permissions::may_publish;
use crate::rate::{publish_counters, publish_window, take_publish_allowance, PublishAllowance, PublishCounter};
use crate::store::MessageStore;
use crate::telemetry::metric;
use crate::time::Clocked;
use crate::{Config, Error};

/// What the publish route reads and writes: the messages, and the publish
/// allowance of client callers.
pub trait PublishRouteStore: MessageStore + PublishAllowance + Clocked {}

impl<S> PublishRouteStore for S where S: MessageStore + PublishAllowance + Clocked {}

/// DynamoDB refuses an item nested deeper than this.
const MAX_NESTING: usize = 32;

/// The id of the message an idempotency key publishes: the same for the
/// same caller and key, and unrelated across callers, so one caller's key
/// can never suppress another's message.
pub fn message_id_for_key(scope: &str, key: &str) -> String {
    let hex = sha256_hex(&format!("{scope}\n{key}"));
    format!("k-{}", &hex[..32])
}

type Refusal = ApiGatewayV2httpResponse;

pub(super) async fn publish<S: PublishRouteStore>(
    store: &S,
    config: &Config,
    caller: &Caller,
    body: &str,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let messages = match PublishBody::parse(body) {
        Ok(messages) => messages,
        Err(BodyError::NotJson(why)) => {
            return Ok(refused(400, "invalid_json", format!("the body is not JSON: {why}")))
        }
        Err(BodyError::Invalid(why)) => return Ok(refused(400, "invalid_request", why)),
    };
    if messages.is_empty() {
        return Ok(refused(400, "invalid_request", "the batch holds no message"));
    }
    if messages.len() > MAX_BATCH {
        return Ok(refused(
            413,
            "invalid_request",
            format!(
                "a batch holds at most {MAX_BATCH} messages; this one has {}",
                messages.len()
            ),
        ));
    }
    let now = store.clock().epoch_seconds();
    let scope = caller.scope();
    // A client's rights and allowances, as its socket's record would hold them; none for a server.
    let rights = caller.rights(now);
    let mut keys = HashSet::new();
    let mut records = Vec::with_capacity(messages.len());
    for (n, message) in messages.iter().enumerate() {
        let record = match checked_record(store, config, caller, rights.as_ref(), &scope, now, message) {
            Ok(record) => record,
            Err((status, code, why)) => return Ok(refused(status, code, format!("messages[{n}]: {why}"))),
        };
        if message.idempotency_key.is_some() && !keys.insert(record.message_id.clone()) {
            return Ok(refused(
                400,
                "invalid_request",
                format!("messages[{n}]: its idempotency key is used twice in this batch"),
            ));
        }
        records.push(record);
    }
    if let Some(refusal) = take_client_allowance(store, config, rights.as_ref(), records.len(), now).await? {
        return Ok(refusal);
    }
    let mut published = Vec::with_capacity(records.len());
    for (record, message) in records.iter().zip(&messages) {
        let written = match message.idempotency_key {
            Some(_) => store.put_new_message(record).await,
            None => store.put_message(record).await.map(|()| true),
        };
        match written {
            Ok(written) => published.push(PublishedMessage {
                message_id: record.message_id.clone(),
                duplicate: !written,
            }),
            // Checked above as far as DynamoDB's rules can be known here; an
            // item it still refuses is the caller's, and said as such.
            Err(Error::ItemRejected { message: why, .. }) => {
                return Ok(refused(
                    400,
                    "invalid_request",
                    format!(
                        "message {} cannot be stored ({} written before it): {why}",
                        record.message_id,
                        published.len()
                    ),
                ))
            }
            Err(error) => return Err(error),
        }
    }
    let fresh = published.iter().filter(|message| !message.duplicate).count();
    metrics::counter!(metric::HTTP_MESSAGES_PUBLISHED, "caller" => caller.kind()).increment(fresh as u64);
    tracing::info!(
        messages = published.len(),
        duplicates = published.len() - fresh,
        "http publish"
    );
    Ok(json_response(200, &PublishResponse { messages: published }))
}

fn refused(status: u16, code: &str, message: impl Into<String>) -> Refusal {
    let message = message.into();
    tracing::info!(status, code, reason = %message, "http publish refused");
    metrics::counter!(metric::CLIENT_ERRORS, "code" => code.to_owned()).increment(1);
    error_response(status, code, message)
}

type Check = (u16, &'static str, String);

/// One message as the item to write, or why it is refused.
fn checked_record<S: Clocked>(
    store: &S,
    config: &Config,
    caller: &Caller,
    rights: Option<&ConnectionRecord>,
    scope: &str,
    now: i64,
    message: &HttpMessage,
) -> Result<MessageRecord, Check> {
    let invalid = |why: String| (400, "invalid_request", why);
    if let Some(channel) = &message.channel {
        validate_channel_name(channel).map_err(|error| (400, "invalid_channel", error.to_string()))?;
    }
    if let Some(key) = &message.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"
            )));
        }
    }
    check_storable(&message.data, 1).map_err(invalid)?;
    if let Some(record) = rights {
        let forbidden = |why: &str| (403, "publish_forbidden", why.to_owned());
        if !config.allow_client_publish {
            return Err(forbidden(
                "clients may not publish here; a server publishes with `Authorization: Key <server key>`",
            ));
        }
        if record.user_id.is_none() && !config.allow_anonymous_publish {
            return Err(forbidden(
                "a caller without a token may not publish here (AIRWAVE_ALLOW_ANONYMOUS_PUBLISH)",
            ));
        }
        if message.user.is_some() {
            return Err(forbidden("only a server key may publish to a user"));
        }
        may_publish(record, message.channel.as_deref()).map_err(|refusal| forbidden(refusal.explain()))?;
    }
    let id = match &message.idempotency_key {
        Some(key) => message_id_for_key(scope, key),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let record = MessageRecord {
        message_id: id,
        channel: message.channel.clone(),
        payload: message.data.clone(),
        expires_at: Some(now + config.message_retention_seconds as i64),
        published_by: None,
        published_by_user: match caller {
            Caller::Client { identity, .. } => Some(identity.user_id.clone()),
            _ => None,
        },
        to_user: message.user.clone(),
        written_at_ms: Some(store.clock().epoch_millis()),
    };
    record.audience().map_err(|why| invalid(why.to_owned()))?;
    record
        .check_frame_size()
        .map_err(|error| (413, "message_too_large", error.to_string()))?;
    Ok(record)
}

/// What DynamoDB would refuse in a value: nesting past 32 levels, and
/// numbers outside its range (magnitudes from 1e-130 to below 1e126).
fn check_storable(value: &Value, depth: usize) -> Result<(), String> {
    match value {
        Value::Array(_) | Value::Object(_) if depth > MAX_NESTING => {
            Err(format!("data is nested deeper than DynamoDB's {MAX_NESTING} levels"))
        }
        Value::Array(items) => items.iter().try_for_each(|item| check_storable(item, depth + 1)),
        Value::Object(fields) => fields.values().try_for_each(|item| check_storable(item, depth + 1)),
        Value::Number(number) => match number.as_f64() {
            Some(float) if float != 0.0 && !(1e-130..1e126).contains(&float.abs()) => {
                Err(format!("data holds {number}, outside DynamoDB's number range"))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Takes one publish per message from a client caller's allowances; a batch
/// over any of them takes nothing and is refused whole.
async fn take_client_allowance<S: PublishAllowance>(
    store: &S,
    config: &Config,
    rights: Option<&ConnectionRecord>,
    messages: usize,
    now: i64,
) -> Result<Option<Refusal>, Error> {
    let Some(record) = rights else {
        return Ok(None);
    };
    let rate = &config.publish_rate;
    let (window, expires_at) = publish_window(rate, now);
    let counters = publish_counters(rate, record, window);
    // Message after message, each counter in turn, as separate publishes
    // would take them; a refusal gives back every unit taken before it.
    let units: Vec<PublishCounter> = (0..messages).flat_map(|_| counters.iter().cloned()).collect();
    let Some(counter) = take_publish_allowance(store, &units, expires_at).await? else {
        return Ok(None);
    };
    metrics::counter!(metric::PUBLISH_RATE_LIMITED).increment(1);
    Ok(Some(refused(
        429,
        "rate_limited",
        format!(
            "over the {} publish allowance of {} per {} s (a batch counts each message)",
            counter.scope.as_str(),
            counter.limit,
            rate.window_seconds
        ),
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_same_key_is_the_same_id_only_for_the_same_caller() {
        assert_eq!(message_id_for_key("server", "k1"), message_id_for_key("server", "k1"));
        assert_ne!(
            message_id_for_key("server", "k1"),
            message_id_for_key("user:alice", "k1")
        );
        assert_ne!(message_id_for_key("server", "k1"), message_id_for_key("server", "k2"));
    }

    #[test]
    fn what_dynamodb_would_refuse_is_found_before_writing() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        assert!(check_storable(&deep, 1).unwrap_err().contains("nested"));
        assert!(check_storable(&json!({"big": 1e200}), 1).unwrap_err().contains("range"));
        assert!(check_storable(&json!({"ok": [1, 2.5, 0, -3e10, "x", null]}), 1).is_ok());
    }
}
