//! API Gateway's WebSocket proxy events (the v1 shape Lambda receives), the ids
//! in them and the time formats API Gateway uses.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Map, Value};

/// Ids in API Gateway's style (`B3kq8dGpoAMCJFQ=`): 11 random bytes in URL-safe
/// base64, so they are safe in the Management API's path.
pub(crate) fn new_id() -> String {
    // A v4 UUID is 122 random bits: its bytes outside the version and variant
    // nibbles are uniformly random, which spares a separate random crate.
    let uuid = uuid::Uuid::new_v4();
    let bytes = uuid.as_bytes();
    let mut random = [0u8; 11];
    random[..6].copy_from_slice(&bytes[..6]);
    random[6..].copy_from_slice(&bytes[9..14]);
    base64::engine::general_purpose::URL_SAFE.encode(random)
}

pub(crate) fn epoch_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

fn parts(epoch_ms: i64) -> Parts {
    let seconds = epoch_ms.div_euclid(1_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    Parts {
        year,
        month,
        day,
        hour: of_day / 3_600,
        minute: of_day % 3_600 / 60,
        second: of_day % 60,
        millis: epoch_ms.rem_euclid(1_000),
    }
}

/// `requestTime`: `22/Nov/2026:20:15:44 +0000`.
pub(crate) fn request_time(epoch_ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = parts(epoch_ms);
    let month = MONTHS.get(p.month as usize - 1).copied().unwrap_or("Jan");
    format!(
        "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
        p.day, p.year, p.hour, p.minute, p.second
    )
}

/// ISO 8601 as the Management API answers `GetConnection`: `2026-11-22T20:15:44.317Z`.
pub(crate) fn iso_8601(epoch_ms: i64) -> String {
    let p = parts(epoch_ms);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.millis
    )
}

/// What every event of one connection shares.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionContext {
    pub connection_id: String,
    pub connected_at: i64,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub domain_name: String,
    pub stage: String,
    pub api_id: String,
}

impl ConnectionContext {
    /// The `requestContext` for one request of this connection.
    fn request_context(&self, route_key: &str, event_type: &str, now_ms: i64) -> Map<String, Value> {
        let request_id = new_id();
        let mut identity = Map::new();
        identity.insert("sourceIp".into(), self.source_ip.clone().into());
        if let Some(user_agent) = &self.user_agent {
            identity.insert("userAgent".into(), user_agent.clone().into());
        }
        let context = json!({
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": request_time(now_ms),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": self.connected_at,
            "requestTimeEpoch": now_ms,
            "identity": identity,
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": self.connection_id,
            "apiId": self.api_id,
        });
        match context {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// The `$connect` event, with the handshake request's headers and query string.
    pub fn connect_event(&self, headers: &[(String, String)], query: &[(String, String)]) -> Value {
        let context = self.request_context("$connect", "CONNECT", epoch_millis_now());
        let mut event = Map::new();
        let (single, multi) = single_and_multi(headers);
        event.insert("headers".into(), single);
        event.insert("multiValueHeaders".into(), multi);
        // API Gateway leaves these out when the URL has no query string.
        if !query.is_empty() {
            let (single, multi) = single_and_multi(query);
            event.insert("queryStringParameters".into(), single);
            event.insert("multiValueQueryStringParameters".into(), multi);
        }
        event.insert("requestContext".into(), Value::Object(context));
        event.insert("isBase64Encoded".into(), false.into());
        Value::Object(event)
    }

    /// A `MESSAGE` event for `route_key`.
    pub fn message_event(&self, route_key: &str, body: &str) -> (Value, String) {
        let mut context = self.request_context(route_key, "MESSAGE", epoch_millis_now());
        let message_id = new_id();
        context.insert("messageId".into(), message_id.clone().into());
        let request_id = context
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let event = json!({
            "requestContext": context,
            "body": body,
            "isBase64Encoded": false,
        });
        (event, request_id)
    }

    /// The `$disconnect` event.
    pub fn disconnect_event(&self, status_code: u16, reason: &str) -> Value {
        let mut context = self.request_context("$disconnect", "DISCONNECT", epoch_millis_now());
        context.insert("disconnectStatusCode".into(), status_code.into());
        context.insert("disconnectReason".into(), reason.into());
        json!({
            "headers": {"Host": self.domain_name},
            "multiValueHeaders": {"Host": [self.domain_name]},
            "requestContext": context,
            "isBase64Encoded": false,
        })
    }
}

/// API Gateway's pair of maps: the last value of each name, and all of them.
fn single_and_multi(pairs: &[(String, String)]) -> (Value, Value) {
    let mut single = BTreeMap::new();
    let mut multi: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in pairs {
        single.insert(name.clone(), value.clone());
        multi.entry(name.clone()).or_default().push(value.clone());
    }
    (json!(single), json!(multi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_like_api_gateway() {
        assert_eq!(request_time(1_795_378_544_317), "22/Nov/2026:20:15:44 +0000");
        assert_eq!(iso_8601(1_795_378_544_317), "2026-11-22T20:15:44.317Z");
        assert_eq!(iso_8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ids_look_like_api_gateway_ids() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
        assert_ne!(id, new_id());
    }
}
