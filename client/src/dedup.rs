//! Bounded memory of recently seen message ids.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Remembers the last `capacity` message ids so a message delivered twice (the fan-out retried,
/// or it arrived on both sides of a reconnect) reaches the caller once. Oldest ids are forgotten
/// first, so memory stays bounded however long the client runs.
#[derive(Debug, Clone)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl RecentIds {
    /// Default number of ids remembered by a [`crate::Client`].
    pub const DEFAULT_CAPACITY: usize = 10_000;

    pub fn new(capacity: usize) -> Self {
        RecentIds {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `id`; `true` if it was not among the remembered ids (deliver it), `false` for a
    /// duplicate (drop it).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.capacity == 0 {
            return true;
        }
        if self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(Arc::clone(&id));
        self.seen.insert(id);
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_reported_once() {
        let mut ids = RecentIds::new(10);
        assert!(ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(!ids.insert("a"));
        assert!(!ids.insert("b"));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_id_is_forgotten_first() {
        let mut ids = RecentIds::new(3);
        for id in ["1", "2", "3", "4"] {
            assert!(ids.insert(id));
        }
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains("1"));
        assert!(ids.contains("2") && ids.contains("4"));
        // Forgotten, so it counts as new again; "2" is now the oldest and goes.
        assert!(ids.insert("1"));
        assert!(!ids.contains("2"));
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut ids = RecentIds::new(0);
        assert!(ids.insert("a"));
        assert!(ids.insert("a"));
        assert!(ids.is_empty());
    }
}
