use serde::{Deserialize, Serialize};

/// One open WebSocket, as stored in the connections table.
///
/// `expires_at` is the table's TTL attribute. DynamoDB deletes expired items lazily
/// (up to about 48 hours late), so every read that matters checks it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub connection_id: String,
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When API Gateway accepted the connection, epoch milliseconds.
    pub connected_at_ms: i64,
    /// TTL attribute, epoch seconds.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Channels this connection is subscribed to (a DynamoDB string set).
    #[serde(with = "serde_dynamo::string_set", default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// The open-connection counters this connection holds a slot in (keys in
    /// the admission table), one attribute per cap so each can be a sparse
    /// index: the slots of expired records are found by one key query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_total: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_ip: Option<String>,
    /// The channel patterns the token's claim allows (see [`crate::permissions`]);
    /// `None` when the token had no such claim, or there was no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_channels: Option<Vec<String>>,
    /// The channel patterns the token's publish claim allows; `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_publish: Option<Vec<String>>,
    /// When the connection's token expires (epoch seconds). `expires_at` never
    /// goes past it, so the fan-out stops delivering to the connection then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<i64>,
    /// The token carries the operator right (the `stats` action).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

/// The part of a connection record the fan-out reads: the key and the expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTarget {
    pub connection_id: String,
    pub expires_at: i64,
}

impl ConnectionTarget {
    pub fn is_expired(&self, now_epoch_seconds: i64) -> bool {
        self.expires_at <= now_epoch_seconds
    }
}

impl ConnectionRecord {
    pub fn is_expired(&self, now_epoch_seconds: i64) -> bool {
        self.expires_at <= now_epoch_seconds
    }

    /// Whether the connection's token has expired by `now_epoch_seconds`.
    pub fn token_expired(&self, now_epoch_seconds: i64) -> bool {
        self.token_expires_at
            .is_some_and(|expires_at| expires_at <= now_epoch_seconds)
    }

    /// The counter keys this connection holds a slot in.
    pub fn held_slots(&self) -> impl Iterator<Item = &str> {
        [&self.slot_total, &self.slot_user, &self.slot_ip]
            .into_iter()
            .filter_map(|slot| slot.as_deref())
    }
}
