use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a message stands in its channel: `offset` counts the channel's
/// messages from 1 within `epoch`. A new epoch means the channel's history was
/// lost or reset, so offsets of different epochs cannot be compared.
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

    /// The position right after this one in the same epoch.
    pub fn next(&self) -> Position {
        Position::new(self.epoch.clone(), self.offset.saturating_add(1))
    }
}
