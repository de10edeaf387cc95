use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Characters in an epoch the server chooses: the longest a position's
/// epoch can be, which bounds the size of a frame that carries one.
pub const EPOCH_CHARS: usize = 12;

/// Where a message stands in its channel: `offset` counts the channel's
/// messages from 1 within `epoch`. A new epoch means the channel's history was
/// lost or reset, so offsets of different epochs cannot be compared.
///
/// A channel nobody has published to yet has no epoch: a subscribe to it is
/// answered with the empty epoch at offset 0 ([`Position::not_started`]).
/// Recovering from that position returns the channel's messages from its
/// first one, whatever epoch it starts with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    pub fn new(epoch: impl Into<String>, offset: u64) -> Self {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    /// The position of a channel with no messages yet: subscribing writes no
    /// channel state, so the epoch is chosen by the first publish.
    pub fn not_started() -> Position {
        Position::new("", 0)
    }

    /// Whether this is [`Position::not_started`]: before any epoch.
    pub fn is_not_started(&self) -> bool {
        self.epoch.is_empty()
    }

    /// The position right after this one in the same epoch.
    pub fn next(&self) -> Position {
        Position::new(self.epoch.clone(), self.offset.saturating_add(1))
    }
}
