//! The state of a client that outlives each socket and each background task: its settings,
//! subscriptions, channel order, dedup memory and the sender of its events.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use super::config::ClientConfig;
use super::event::Event;
use crate::dedup::RecentIds;
use crate::order::ChannelOrder;

/// How long a channel's gap may stay open before the client asks the server to
/// fill it: long enough for messages of concurrent stream shards to arrive.
pub const GAP_WAIT: Duration = Duration::from_secs(2);

/// State that outlives one actor, so a client that gave up and is connected again keeps its
/// subscriptions and its dedup memory.
pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) subscriptions: Mutex<BTreeSet<String>>,
    pub(super) order: Mutex<ChannelOrder>,
    pub(super) next_request_id: AtomicU64,
    pub(super) recent: Mutex<RecentIds>,
    pub(super) duplicates: AtomicU64,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) rng: Mutex<StdRng>,
    /// Set when the server evicted the connection: requests fail instead of reconnecting.
    pub(super) evicted: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn new(config: ClientConfig, events: mpsc::UnboundedSender<Event>) -> Self {
        let rng = match config.rng_seed() {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Shared {
            recent: Mutex::new(RecentIds::new(config.dedup_capacity())),
            config,
            subscriptions: Mutex::new(BTreeSet::new()),
            order: Mutex::new(ChannelOrder::new(GAP_WAIT)),
            next_request_id: AtomicU64::new(1),
            duplicates: AtomicU64::new(0),
            events,
            rng: Mutex::new(rng),
            evicted: Mutex::new(None),
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
