//! Admission control on `$connect`: the per-IP attempt throttle and the caps on
//! open connections, as values the store enforces atomically.
//!
//! Every cap is a counter item in the admission table. A connection is written
//! in one transaction with a conditional increment of each counter it counts
//! against, so concurrent connects can never overshoot a cap. The connection
//! record names the counters it holds (`slot_*`), and every path that removes
//! a record decrements exactly those, in the same transaction as the delete.
//! A `$disconnect` that never arrives cannot keep a slot: when a cap is full,
//! the records in that scope that are past their TTL are released first, and
//! if DynamoDB's TTL deletes one before that, the reaper releases it from the
//! table's stream.

use serde::Serialize;

use crate::config::AdmissionLimits;

/// Which cap a slot counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    Total,
    User,
    Ip,
}

impl CapScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CapScope::Total => "total",
            CapScope::User => "user",
            CapScope::Ip => "ip",
        }
    }

    /// The sparse index over the records that hold a slot of this scope.
    pub fn index_name(self) -> &'static str {
        match self {
            CapScope::Total => "by_slot_total",
            CapScope::User => "by_slot_user",
            CapScope::Ip => "by_slot_ip",
        }
    }

    /// The record attribute that names the counter, the index's partition key.
    pub fn record_attribute(self) -> &'static str {
        match self {
            CapScope::Total => "slot_total",
            CapScope::User => "slot_user",
            CapScope::Ip => "slot_ip",
        }
    }
}

/// One slot a connection must take: a counter key and its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub scope: CapScope,
    /// The counter's key in the admission table.
    pub counter_key: String,
    pub cap: u64,
}

impl Slot {
    pub fn total(cap: u64) -> Self {
        Slot {
            scope: CapScope::Total,
            counter_key: "open#total".to_owned(),
            cap,
        }
    }

    pub fn user(user_id: &str, cap: u64) -> Self {
        Slot {
            scope: CapScope::User,
            counter_key: format!("open#user#{user_id}"),
            cap,
        }
    }

    pub fn ip(source_ip: &str, cap: u64) -> Self {
        Slot {
            scope: CapScope::Ip,
            counter_key: format!("open#ip#{source_ip}"),
            cap,
        }
    }
}

/// The slots a new connection takes under `limits`; a cap of 0 takes none.
/// The per-user cap needs a user, so it applies only to authenticated connections.
pub fn slots_for(limits: &AdmissionLimits, source_ip: &str, user_id: Option<&str>) -> Vec<Slot> {
    let mut slots = Vec::new();
    if limits.max_connections > 0 {
        slots.push(Slot::total(limits.max_connections));
    }
    if let (Some(user_id), true) = (user_id, limits.max_connections_per_user > 0) {
        slots.push(Slot::user(user_id, limits.max_connections_per_user));
    }
    if limits.max_connections_per_ip > 0 {
        slots.push(Slot::ip(source_ip, limits.max_connections_per_ip));
    }
    slots
}

/// The key of the attempt counter of `source_ip` in fixed window `window`.
pub fn attempts_key(source_ip: &str, window: i64) -> String {
    format!("attempts#{source_ip}#{window}")
}

/// The fixed window an attempt at `epoch_millis` falls in.
pub fn window_of(epoch_millis: i64, window_seconds: u64) -> i64 {
    let window_millis = i64::try_from(window_seconds.max(1))
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000);
    epoch_millis.div_euclid(window_millis)
}

/// When the attempt counters of `window` may be deleted: one window after it ends.
pub fn attempts_expire_at(window: i64, window_seconds: u64) -> i64 {
    let window_seconds = i64::try_from(window_seconds).unwrap_or(i64::MAX);
    window.saturating_add(2).saturating_mul(window_seconds)
}

/// What the store answers when asked to admit a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitOutcome {
    Admitted,
    /// A counter is at its cap; `open` is its value when it was read.
    CapReached {
        slot: Slot,
        open: u64,
    },
}

/// The admission side of the stats read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionCounts {
    /// Live (unexpired) connection records.
    pub open_connections: u64,
    /// Distinct user ids among them.
    pub distinct_users: u64,
    /// The total counter (0 when the total cap was never on).
    pub total_slots_taken: u64,
    /// Attempt counts of every IP in the current window.
    pub attempts_in_window: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_of_zero_take_no_slot() {
        let limits = AdmissionLimits {
            attempts_per_ip: 0,
            window_seconds: 60,
            max_connections: 0,
            max_connections_per_user: 0,
            max_connections_per_ip: 0,
        };
        assert!(slots_for(&limits, "10.0.0.1", Some("u")).is_empty());
    }

    #[test]
    fn each_cap_takes_its_own_slot_and_the_user_cap_needs_a_user() {
        let limits = AdmissionLimits {
            attempts_per_ip: 0,
            window_seconds: 60,
            max_connections: 1000,
            max_connections_per_user: 5,
            max_connections_per_ip: 20,
        };
        let keys = |user| -> Vec<String> {
            slots_for(&limits, "10.0.0.1", user)
                .into_iter()
                .map(|slot| slot.counter_key)
                .collect()
        };
        assert_eq!(keys(Some("u1")), ["open#total", "open#user#u1", "open#ip#10.0.0.1"]);
        assert_eq!(keys(None), ["open#total", "open#ip#10.0.0.1"]);
    }

    #[test]
    fn windows_are_fixed_and_their_counters_outlive_them() {
        assert_eq!(window_of(59_999, 60), 0);
        assert_eq!(window_of(60_000, 60), 1);
        assert_eq!(attempts_expire_at(1, 60), 180);
    }
}
