//! The admission table in memory: the connect throttle's attempts, the caps'
//! counters (taken and given back with the records that hold them, as the
//! DynamoDB adapter's transactions do), the eviction of a user's oldest
//! connection, the publish allowances and the stats snapshot.

use std::collections::HashSet;

use airwave_protocol::Stats;

use super::MemoryStore;
use crate::admission::{attempts_key, AdmissionCounts, AdmitOutcome, Slot};
use crate::connection::ConnectionRecord;
use crate::eviction::{EvictOutcome, Eviction};
use crate::liveness::{Holder, SlotHolders};
use crate::rate::PublishAllowance;
use crate::stats::StatsSnapshots;
use crate::store::AdmissionStore;
use crate::store::{RECLAIM_BATCH, RELEASE_MARKER_TTL_SECONDS};
use crate::Error;

impl AdmissionStore for MemoryStore {
    async fn count_connect_attempt(&self, source_ip: &str, window: i64, expires_at: i64) -> Result<u64, Error> {
        let mut tables = self.tables();
        let counter = tables.counter(&attempts_key(source_ip, window));
        counter.attempts += 1;
        counter.window_index = Some(window);
        counter.expires_at = Some(expires_at);
        Ok(counter.attempts)
    }

    async fn admit_connection(&self, record: &ConnectionRecord, slots: &[Slot]) -> Result<AdmitOutcome, Error> {
        let mut tables = self.tables();
        if slots.is_empty() {
            tables.connections.insert(record.connection_id.clone(), record.clone());
            return Ok(AdmitOutcome::Admitted);
        }
        // A repeated $connect of an admitted connection.
        if tables.connections.contains_key(&record.connection_id) {
            return Ok(AdmitOutcome::Admitted);
        }
        for slot in slots {
            let open = tables.open_count(&slot.counter_key);
            if open >= i64::try_from(slot.cap).unwrap_or(i64::MAX) {
                return Ok(AdmitOutcome::CapReached {
                    slot: slot.clone(),
                    open: u64::try_from(open).unwrap_or(0),
                });
            }
        }
        for slot in slots {
            tables.counter(&slot.counter_key).open_count += 1;
        }
        tables.connections.insert(record.connection_id.clone(), record.clone());
        Ok(AdmitOutcome::Admitted)
    }

    async fn reclaim_expired_slots(&self, slot: &Slot, now_epoch_seconds: i64) -> Result<usize, Error> {
        let mut tables = self.tables();
        let expired: Vec<String> = tables
            .holders(slot.scope, &slot.counter_key)
            .into_iter()
            .filter(|record| record.is_expired(now_epoch_seconds))
            .take(RECLAIM_BATCH as usize)
            .map(|record| record.connection_id.clone())
            .collect();
        Ok(expired
            .iter()
            .filter(|connection_id| tables.release(connection_id).is_some())
            .count())
    }

    async fn release_slots_of_deleted(&self, record: &ConnectionRecord, now_epoch_seconds: i64) -> Result<bool, Error> {
        if record.held_slots().next().is_none() {
            return Ok(false);
        }
        let mut tables = self.tables();
        // The marker makes a redelivered stream record a no-op.
        if tables.release_markers.contains_key(&record.connection_id) {
            return Ok(false);
        }
        tables.release_markers.insert(
            record.connection_id.clone(),
            now_epoch_seconds + RELEASE_MARKER_TTL_SECONDS,
        );
        for counter_key in record.held_slots() {
            tables.counter(counter_key).open_count -= 1;
        }
        tables.drop_subscriptions_of(record);
        Ok(true)
    }

    async fn admission_counts(&self, window: i64, now_epoch_seconds: i64) -> Result<AdmissionCounts, Error> {
        let tables = self.tables();
        let live: Vec<&ConnectionRecord> = tables
            .connections
            .values()
            .filter(|record| !record.is_expired(now_epoch_seconds))
            .collect();
        let users: HashSet<&str> = live.iter().filter_map(|record| record.user_id.as_deref()).collect();
        Ok(AdmissionCounts {
            open_connections: live.len() as u64,
            distinct_users: users.len() as u64,
            total_slots_taken: u64::try_from(tables.open_count(&Slot::total(0).counter_key)).unwrap_or(0),
            attempts_in_window: tables
                .counters
                .values()
                .filter(|counter| counter.window_index == Some(window))
                .map(|counter| counter.attempts)
                .collect(),
        })
    }
}

impl Eviction for MemoryStore {
    async fn admit_by_evicting(
        &self,
        record: &ConnectionRecord,
        slots: &[Slot],
        user_slot: &Slot,
        now_epoch_seconds: i64,
    ) -> Result<EvictOutcome, Error> {
        let mut tables = self.tables();
        let oldest = tables
            .connections
            .values()
            .filter(|held| held.slot_user.as_deref() == Some(user_slot.counter_key.as_str()))
            .filter(|held| !held.is_expired(now_epoch_seconds))
            .min_by(|a, b| (a.connected_at_ms, &a.connection_id).cmp(&(b.connected_at_ms, &b.connection_id)))
            .cloned();
        let Some(old) = oldest else {
            return Ok(EvictOutcome::NoCandidate);
        };
        if tables.connections.contains_key(&record.connection_id) {
            return Ok(EvictOutcome::AlreadyAdmitted);
        }
        // One slot changes hands; only the caps the old record did not
        // count in are checked and taken.
        let taken: Vec<&Slot> = slots
            .iter()
            .filter(|slot| !old.held_slots().any(|held| held == slot.counter_key))
            .collect();
        for slot in &taken {
            if tables.open_count(&slot.counter_key) >= i64::try_from(slot.cap).unwrap_or(i64::MAX) {
                return Ok(EvictOutcome::CapReached { slot: (*slot).clone() });
            }
        }
        for slot in taken {
            tables.counter(&slot.counter_key).open_count += 1;
        }
        for held in old.held_slots() {
            if !slots.iter().any(|slot| slot.counter_key == held) {
                tables.counter(held).open_count -= 1;
            }
        }
        tables.connections.remove(&old.connection_id);
        tables.drop_subscriptions_of(&old);
        tables.connections.insert(record.connection_id.clone(), record.clone());
        Ok(EvictOutcome::Evicted(Box::new(old)))
    }
}

impl SlotHolders for MemoryStore {
    async fn oldest_holders(&self, slot: &Slot, now_epoch_seconds: i64, limit: i32) -> Result<Vec<Holder>, Error> {
        let tables = self.tables();
        Ok(tables
            .holders(slot.scope, &slot.counter_key)
            .into_iter()
            .filter(|record| !record.is_expired(now_epoch_seconds))
            .take(usize::try_from(limit.max(1)).unwrap_or(1))
            .map(|record| Holder {
                connection_id: record.connection_id.clone(),
                connected_at_ms: record.connected_at_ms,
            })
            .collect())
    }
}

impl PublishAllowance for MemoryStore {
    async fn take_publish(&self, counter_key: &str, limit: u64, expires_at: i64) -> Result<bool, Error> {
        let mut tables = self.tables();
        let used = tables.counters.get(counter_key).map_or(0, |counter| counter.publishes);
        if used >= limit {
            return Ok(false);
        }
        let counter = tables.counter(counter_key);
        counter.publishes += 1;
        counter.expires_at = Some(expires_at);
        Ok(true)
    }

    async fn give_back_publish(&self, counter_key: &str) -> Result<(), Error> {
        if let Some(counter) = self.tables().counters.get_mut(counter_key) {
            counter.publishes = counter.publishes.saturating_sub(1);
        }
        Ok(())
    }
}

impl StatsSnapshots for MemoryStore {
    async fn stats_snapshot(&self) -> Result<Option<Stats>, Error> {
        Ok(self.tables().stats.clone())
    }

    async fn claim_stats_count(&self, now_epoch_seconds: i64, until: i64) -> Result<bool, Error> {
        let mut tables = self.tables();
        if tables
            .stats_counting_until
            .is_some_and(|counting_until| counting_until > now_epoch_seconds)
        {
            return Ok(false);
        }
        tables.stats_counting_until = Some(until);
        Ok(true)
    }

    async fn save_stats_snapshot(&self, stats: &Stats) -> Result<(), Error> {
        let mut tables = self.tables();
        tables.stats = Some(stats.clone());
        tables.stats_counting_until = None;
        Ok(())
    }
}
