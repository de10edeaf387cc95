//! How much of each channel recovery can replay, and for how long.

use super::{DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TABLE, DEFAULT_HISTORY_TTL_SECONDS};

/// Channel positions and the history that recovery replays from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    pub table: String,
    /// Messages per channel kept for recovery; 0 turns positions, history and
    /// recovery off (messages are delivered as before, without a position).
    pub size: u64,
    /// How long a message stays recoverable.
    pub ttl_seconds: u64,
}

impl HistorySettings {
    pub fn enabled(&self) -> bool {
        self.size > 0
    }
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            table: DEFAULT_HISTORY_TABLE.to_owned(),
            size: DEFAULT_HISTORY_SIZE,
            ttl_seconds: DEFAULT_HISTORY_TTL_SECONDS,
        }
    }
}
