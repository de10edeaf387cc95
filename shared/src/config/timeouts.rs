//! The bounds on every AWS call.

use super::{DEFAULT_AWS_ATTEMPT_TIMEOUT_MS, DEFAULT_AWS_OPERATION_TIMEOUT_MS};

/// How long one attempt of an AWS call, and the call with its retries, may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub attempt: std::time::Duration,
    pub operation: std::time::Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            attempt: std::time::Duration::from_millis(DEFAULT_AWS_ATTEMPT_TIMEOUT_MS),
            operation: std::time::Duration::from_millis(DEFAULT_AWS_OPERATION_TIMEOUT_MS),
        }
    }
}
