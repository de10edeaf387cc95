//! AWS clients, built once per cold start and shared by every invocation.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

use crate::config::AwsTimeouts;

/// Attempts per AWS call, first one included. The SDK's standard mode backs off
/// exponentially with jitter between attempts and only retries throttling,
/// transient and 5xx errors.
pub const MAX_ATTEMPTS: u32 = 3;

/// Loads region, credentials and endpoints the way every AWS SDK does (so
/// `AWS_ENDPOINT_URL_DYNAMODB` points the DynamoDB client at a local server).
pub async fn load_sdk_config(timeouts: &AwsTimeouts) -> SdkConfig {
    sdk_config_loader(timeouts).load().await
}

/// The loader behind [`load_sdk_config`], for callers that override a setting
/// (the tests give it static credentials and a local endpoint).
///
/// Every call is bounded: an attempt that hangs is abandoned (and retried)
/// after the attempt timeout, and the call with its retries gives up after the
/// operation timeout, so a stalled endpoint cannot hold an invocation until
/// Lambda's own timeout.
pub fn sdk_config_loader(timeouts: &AwsTimeouts) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(timeout_config(timeouts))
}

pub fn timeout_config(timeouts: &AwsTimeouts) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(timeouts.attempt)
        .operation_timeout(timeouts.operation)
        .build()
}

pub fn dynamodb_client(sdk_config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config)
}

/// The SQS client poison records are reported with (`AWS_ENDPOINT_URL_SQS`
/// points it at a local server, as for DynamoDB).
pub fn sqs_client(sdk_config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk_config)
}
