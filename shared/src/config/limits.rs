//! The limits on connections and on client publishes.

use serde::Deserialize;

use super::{
    DEFAULT_CONNECT_ATTEMPTS_PER_IP, DEFAULT_CONNECT_WINDOW_SECONDS, DEFAULT_PUBLISH_RATE_LIMIT,
    DEFAULT_PUBLISH_RATE_LIMIT_PER_IP, DEFAULT_PUBLISH_RATE_LIMIT_PER_USER, DEFAULT_PUBLISH_RATE_WINDOW_SECONDS,
};

/// The publish allowances, each counted in the same fixed windows of
/// `window_seconds`; a limit of 0 is no limit. See [`crate::rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    /// Publishes per connection.
    pub limit: u64,
    /// Publishes per user (a token's `sub`), over all of its connections.
    pub per_user: u64,
    /// Publishes per source IP, over all of its connections.
    pub per_ip: u64,
    pub window_seconds: u64,
}

impl Default for PublishRate {
    fn default() -> Self {
        PublishRate {
            limit: DEFAULT_PUBLISH_RATE_LIMIT,
            per_user: DEFAULT_PUBLISH_RATE_LIMIT_PER_USER,
            per_ip: DEFAULT_PUBLISH_RATE_LIMIT_PER_IP,
            window_seconds: DEFAULT_PUBLISH_RATE_WINDOW_SECONDS,
        }
    }
}

/// What `$connect` does when a user already has as many connections as the
/// per-user cap allows. Read from the environment by its serde name: `refuse`
/// or `evict_oldest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserCapMode {
    /// Refuse the new connection (403).
    #[default]
    Refuse,
    /// Close the user's oldest connection and admit the new one: a user who
    /// opens a new tab expects it to work.
    EvictOldest,
}

/// Limits applied on `$connect`; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub attempts_per_ip: u64,
    pub window_seconds: u64,
    pub max_connections: u64,
    pub max_connections_per_user: u64,
    pub max_connections_per_ip: u64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            attempts_per_ip: DEFAULT_CONNECT_ATTEMPTS_PER_IP,
            window_seconds: DEFAULT_CONNECT_WINDOW_SECONDS,
            max_connections: 0,
            max_connections_per_user: 0,
            max_connections_per_ip: 0,
        }
    }
}
