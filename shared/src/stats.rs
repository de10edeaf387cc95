//! The `stats` answer, counted at most once per `AIRWAVE_STATS_MAX_AGE_SECONDS`.
//!
//! Counting scans the connections and admission tables, which costs in
//! proportion to their size. So one count is kept in the admission table and
//! every request within its age is answered from it; when it is stale, one
//! request (the one that wins a conditional lease) counts again, and the others
//! are answered from the stale count meanwhile. However often clients ask,
//! the tables are scanned at most once per interval.

use std::collections::HashMap;
use std::future::Future;

use airwave_protocol::Stats;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::{condition_held, number, read_number, AdmissionStore, DynamoStore};
use crate::{Config, Error};

/// The admission-table item that holds the last count.
pub const SNAPSHOT_KEY: &str = "stats#snapshot";
/// How long a request that took the lease may take to count before another may.
const LEASE_SECONDS: i64 = 30;

pub trait StatsSnapshots: Send + Sync {
    /// The last count kept, if any.
    fn stats_snapshot(&self) -> impl Future<Output = Result<Option<Stats>, Error>> + Send;

    /// Takes the right to count until `until`; `false` while another request holds it.
    fn claim_stats_count(&self, now_epoch_seconds: i64, until: i64)
        -> impl Future<Output = Result<bool, Error>> + Send;

    /// Keeps `stats` as the last count and gives the lease back.
    fn save_stats_snapshot(&self, stats: &Stats) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The stats, from the kept count when it is fresh enough. `None` only when
/// no count exists yet and another request is making the first one.
pub async fn cached_stats<S: AdmissionStore + StatsSnapshots>(
    store: &S,
    config: &Config,
    now: i64,
) -> Result<Option<Stats>, Error> {
    let snapshot = store.stats_snapshot().await?;
    let max_age = i64::try_from(config.stats_max_age_seconds).unwrap_or(i64::MAX);
    if snapshot
        .as_ref()
        .is_some_and(|stats| now < stats.as_of.saturating_add(max_age))
    {
        return Ok(snapshot);
    }
    if !store.claim_stats_count(now, now + LEASE_SECONDS).await? {
        return Ok(snapshot);
    }
    let stats = count_stats(store, config, now).await?;
    store.save_stats_snapshot(&stats).await?;
    tracing::info!(open_connections = stats.open_connections, "counted the stats");
    Ok(Some(stats))
}

/// Counts the stats now: two scans and a read.
async fn count_stats<S: AdmissionStore>(store: &S, config: &Config, now: i64) -> Result<Stats, Error> {
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

fn snapshot_key() -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), AttributeValue::S(SNAPSHOT_KEY.to_owned()))])
}

impl StatsSnapshots for DynamoStore {
    async fn stats_snapshot(&self) -> Result<Option<Stats>, Error> {
        let table = self.admission_table();
        let output = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(snapshot_key()))
            .send()
            .await
            .map_err(|error| Error::dynamodb("GetItem", table, error))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let (Some(AttributeValue::S(text)), Some(_)) = (item.get("stats"), read_number(&item, "as_of")) else {
            return Ok(None);
        };
        match serde_json::from_str(text) {
            Ok(stats) => Ok(Some(stats)),
            Err(error) => {
                // Counted again on this request; nothing is lost.
                tracing::error!(key = SNAPSHOT_KEY, error = %error, "ignoring a stats snapshot that cannot be decoded");
                Ok(None)
            }
        }
    }

    async fn claim_stats_count(&self, now_epoch_seconds: i64, until: i64) -> Result<bool, Error> {
        let table = self.admission_table();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(snapshot_key()))
            .update_expression("SET counting_until = :until")
            .condition_expression("attribute_not_exists(counting_until) OR counting_until <= :now")
            .expression_attribute_values(":until", number(until))
            .expression_attribute_values(":now", number(now_epoch_seconds))
            .send()
            .await;
        condition_held(result, table)
    }

    async fn save_stats_snapshot(&self, stats: &Stats) -> Result<(), Error> {
        let table = self.admission_table();
        let text = serde_json::to_string(stats)?;
        self.client
            .update_item()
            .table_name(table)
            .set_key(Some(snapshot_key()))
            .update_expression("SET stats = :stats, as_of = :as_of REMOVE counting_until")
            .expression_attribute_values(":stats", AttributeValue::S(text))
            .expression_attribute_values(":as_of", number(stats.as_of))
            .send()
            .await
            .map_err(|error| Error::dynamodb("UpdateItem", table, error))?;
        Ok(())
    }
}
