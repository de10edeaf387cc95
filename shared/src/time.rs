use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit API Gateway uses for `connectedAt`.
pub fn epoch_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        // A clock before 1970 is a broken host; treating it as the epoch only makes
        // every record look expired, which errs on the side of pruning.
        .unwrap_or(0)
}

/// Seconds since the Unix epoch: the unit of DynamoDB's TTL attribute.
pub fn epoch_seconds_now() -> i64 {
    epoch_millis_now() / 1000
}
