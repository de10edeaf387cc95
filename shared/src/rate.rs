//! The publish allowances: at most so many client publishes in each fixed
//! window per connection, per user (a token's `sub`, over all of its
//! connections) and per source IP (over all of its connections), each counted
//! in the admission table, beside the per-IP connect throttle's counters.
//! Opening a second socket therefore does not give a user, or an address,
//! a second allowance.
//!
//! Each allowance is one counter item per (connection, user or IP; window),
//! and taking a publish from it is one conditional increment, so concurrent
//! publishes can never take it past its limit. The counters of one publish
//! are taken one after the other, the narrowest first (connection, user, IP):
//! a connection over its own allowance never touches the shared ones. When a
//! broader one refuses, the ones already taken are given back, so a refused
//! publish does not count (meanwhile a concurrent publish may be refused by
//! a unit that is about to be given back: never over a limit, at worst
//! briefly under it). The refusal is `rate_limited`.
//!
//! What it costs, in DynamoDB write units (every counter item is far under
//! 1 KB, so one unit per write): an admitted publish writes its message item
//! and one `UpdateItem` per counter it is counted in. A counter that a
//! broader one already implies is not written: when a connection's user (or,
//! without a user, its IP) has a limit no larger than the connection's, the
//! connection's publishes can never exceed it, so only the broader one is
//! counted. With the defaults (20 per connection, 20 per user, 200 per IP) an
//! authenticated publish is the message plus 2 units (user and IP), an
//! anonymous one the message plus 2 (connection and IP). A refused publish
//! costs the refusing write (DynamoDB charges a failed condition as a write)
//! plus one unit per counter given back. One partition key takes at most
//! 1,000 write units a second; each (user or IP, window) counter is its own
//! key, so only one address sending over 1,000 publishes a second, refusals
//! included, is throttled by DynamoDB, and only on its own counter.

use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::config::PublishRate;
use crate::connection::ConnectionRecord;
use crate::store::{condition_held, number, DynamoStore};
use crate::Error;

pub trait PublishAllowance: Send + Sync {
    /// Takes one publish from the allowance counted in `counter_key`, whose
    /// window allows `limit`; `false` when it is used up.
    fn take_publish(
        &self,
        counter_key: &str,
        limit: u64,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Gives back one publish taken from `counter_key` for a publish that a
    /// later allowance refused.
    fn give_back_publish(&self, counter_key: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Whose allowance a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishScope {
    Connection,
    User,
    Ip,
}

impl PublishScope {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishScope::Connection => "connection",
            PublishScope::User => "user",
            PublishScope::Ip => "ip",
        }
    }
}

/// One allowance a publish is counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishCounter {
    pub scope: PublishScope,
    /// The counter's key in the admission table.
    pub key: String,
    pub limit: u64,
}

/// The counter of `connection_id`'s publishes in `window`.
pub fn publish_key(connection_id: &str, window: i64) -> String {
    format!("publish#{connection_id}#{window}")
}

/// The counter of `user_id`'s publishes in `window`, over all its connections.
/// A user id is at most 256 bytes (see [`crate::auth`]), so the key is bounded.
pub fn user_publish_key(user_id: &str, window: i64) -> String {
    format!("publish-user#{user_id}#{window}")
}

/// The counter of the publishes from `source_ip` in `window`.
pub fn ip_publish_key(source_ip: &str, window: i64) -> String {
    format!("publish-ip#{source_ip}#{window}")
}

/// The fixed window `now` falls in, and when its counters may be deleted.
pub fn publish_window(rate: &PublishRate, now_epoch_seconds: i64) -> (i64, i64) {
    let length = i64::try_from(rate.window_seconds.max(1)).unwrap_or(i64::MAX);
    let window = now_epoch_seconds.div_euclid(length);
    (window, window.saturating_add(2).saturating_mul(length))
}

/// The counters a publish of `record`'s connection is counted in, narrowest
/// first; empty when every limit is off.
pub fn publish_counters(rate: &PublishRate, record: &ConnectionRecord, window: i64) -> Vec<PublishCounter> {
    let user = record
        .user_id
        .as_deref()
        .filter(|_| rate.per_user > 0)
        .map(|user_id| PublishCounter {
            scope: PublishScope::User,
            key: user_publish_key(user_id, window),
            limit: rate.per_user,
        });
    let ip = (rate.per_ip > 0).then(|| PublishCounter {
        scope: PublishScope::Ip,
        key: ip_publish_key(&record.source_ip, window),
        limit: rate.per_ip,
    });
    // The connection's publishes are also its user's and its IP's: a broader
    // limit no larger than the connection's already holds it.
    let implied = [&user, &ip]
        .into_iter()
        .flatten()
        .any(|broader| broader.limit <= rate.limit);
    let connection = (rate.limit > 0 && !implied).then(|| PublishCounter {
        scope: PublishScope::Connection,
        key: publish_key(&record.connection_id, window),
        limit: rate.limit,
    });
    [connection, user, ip].into_iter().flatten().collect()
}

/// Takes one publish from each of `counters`, in order. Answers the counter
/// that refused, after giving back the ones already taken; `None` when the
/// publish may go ahead.
pub async fn take_publish_allowance<S: PublishAllowance>(
    store: &S,
    counters: &[PublishCounter],
    expires_at: i64,
) -> Result<Option<PublishCounter>, Error> {
    for (taken, counter) in counters.iter().enumerate() {
        if store.take_publish(&counter.key, counter.limit, expires_at).await? {
            continue;
        }
        for earlier in counters.iter().take(taken) {
            if let Err(error) = store.give_back_publish(&earlier.key).await {
                // The unit stays counted until its window ends: the limit
                // errs on the refusing side.
                tracing::warn!(counter = %earlier.key, error = %error, "a publish allowance could not be given back");
            }
        }
        return Ok(Some(counter.clone()));
    }
    Ok(None)
}

impl PublishAllowance for DynamoStore {
    async fn take_publish(&self, counter_key: &str, limit: u64, expires_at: i64) -> Result<bool, Error> {
        let table = self.admission_table();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(counter_key.to_owned()))
            .update_expression("SET expires_at = :expires_at ADD publishes :one")
            .condition_expression("attribute_not_exists(publishes) OR publishes < :limit")
            .expression_attribute_values(":expires_at", number(expires_at))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()))
            .send()
            .await;
        condition_held(result, table)
    }

    async fn give_back_publish(&self, counter_key: &str) -> Result<(), Error> {
        let table = self.admission_table();
        // Only while the counter has something to give back: never below zero,
        // and never an item without its `expires_at`.
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(counter_key.to_owned()))
            .update_expression("ADD publishes :minus_one")
            .condition_expression("publishes > :zero")
            .expression_attribute_values(":minus_one", number(-1))
            .expression_attribute_values(":zero", number(0))
            .send()
            .await;
        condition_held(result, table).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user_id: Option<&str>) -> ConnectionRecord {
        let mut record = serde_json::json!({
            "connection_id": "c1=", "source_ip": "198.51.100.7", "connected_at_ms": 0, "expires_at": 0,
        });
        if let Some(user_id) = user_id {
            record["user_id"] = user_id.into();
        }
        serde_json::from_value(record).unwrap()
    }

    fn scopes(rate: PublishRate, user_id: Option<&str>) -> Vec<(PublishScope, u64)> {
        publish_counters(&rate, &record(user_id), 7)
            .into_iter()
            .map(|counter| (counter.scope, counter.limit))
            .collect()
    }

    #[test]
    fn windows_are_fixed_and_their_counters_outlive_them() {
        let rate = PublishRate {
            limit: 5,
            window_seconds: 10,
            ..PublishRate::default()
        };
        assert_eq!(publish_window(&rate, 109), (10, 120));
        assert_eq!(publish_window(&rate, 110), (11, 130));
        assert_ne!(publish_key("a=", 1), publish_key("a=", 2));
    }

    #[test]
    fn each_scope_has_its_own_key_so_a_user_cannot_share_a_connections_or_an_ips_counter() {
        let keys = [
            publish_key("198.51.100.7", 3),
            user_publish_key("198.51.100.7", 3),
            ip_publish_key("198.51.100.7", 3),
        ];
        assert_eq!(keys.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    }

    #[test]
    fn a_publish_is_counted_narrowest_first_and_not_where_a_broader_limit_implies_it() {
        use PublishScope::*;
        let rate = |limit, per_user, per_ip| PublishRate {
            limit,
            per_user,
            per_ip,
            window_seconds: 10,
        };
        // The defaults: the user's limit holds its connections.
        assert_eq!(scopes(PublishRate::default(), Some("u")), [(User, 20), (Ip, 200)]);
        // Without a user, the connection's own limit counts.
        assert_eq!(scopes(PublishRate::default(), None), [(Connection, 20), (Ip, 200)]);
        assert_eq!(
            scopes(rate(5, 20, 200), Some("u")),
            [(Connection, 5), (User, 20), (Ip, 200)]
        );
        assert_eq!(scopes(rate(50, 0, 10), None), [(Ip, 10)]);
        assert_eq!(scopes(rate(50, 0, 0), Some("u")), [(Connection, 50)]);
        assert_eq!(scopes(rate(0, 0, 0), Some("u")), []);
        assert_eq!(scopes(rate(0, 3, 0), Some("u")), [(User, 3)]);
    }
}
