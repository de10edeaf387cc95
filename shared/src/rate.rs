//! The per-connection publish allowance: at most `limit` client publishes in
//! each fixed window, counted in the admission table.
//!
//! Each publish is one conditional increment of the connection's counter for
//! the current window, so concurrent publishes can never take it past the
//! limit: exactly `limit` of them succeed, and the rest are refused with
//! `rate_limited`. A refused publish does not count.

use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::config::PublishRate;
use crate::store::{condition_held, number, DynamoStore};
use crate::Error;

pub trait PublishAllowance: Send + Sync {
    /// Takes one publish from the allowance of `connection_id` in `window`;
    /// `false` when the window's allowance is used up.
    fn take_publish(
        &self,
        connection_id: &str,
        window: i64,
        limit: u64,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// The counter of `connection_id`'s publishes in `window`.
pub fn publish_key(connection_id: &str, window: i64) -> String {
    format!("publish#{connection_id}#{window}")
}

/// The fixed window `now` falls in, and when its counter may be deleted.
pub fn publish_window(rate: &PublishRate, now_epoch_seconds: i64) -> (i64, i64) {
    let length = i64::try_from(rate.window_seconds.max(1)).unwrap_or(i64::MAX);
    let window = now_epoch_seconds.div_euclid(length);
    (window, window.saturating_add(2).saturating_mul(length))
}

impl PublishAllowance for DynamoStore {
    async fn take_publish(&self, connection_id: &str, window: i64, limit: u64, expires_at: i64) -> Result<bool, Error> {
        let table = self.admission_table();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(publish_key(connection_id, window)))
            .update_expression("SET expires_at = :expires_at ADD publishes :one")
            .condition_expression("attribute_not_exists(publishes) OR publishes < :limit")
            .expression_attribute_values(":expires_at", number(expires_at))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()))
            .send()
            .await;
        condition_held(result, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_their_counters_outlive_them() {
        let rate = PublishRate {
            limit: 5,
            window_seconds: 10,
        };
        assert_eq!(publish_window(&rate, 109), (10, 120));
        assert_eq!(publish_window(&rate, 110), (11, 130));
        assert_ne!(publish_key("a=", 1), publish_key("a=", 2));
    }
}
