//! AWS clients, built once per cold start and shared by every invocation.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

/// Attempts per AWS call, first one included. The SDK's standard mode backs off
/// exponentially with jitter between attempts and only retries throttling,
/// transient and 5xx errors.
pub const MAX_ATTEMPTS: u32 = 3;

/// Loads region, credentials and endpoints the way every AWS SDK does (so
/// `AWS_ENDPOINT_URL_DYNAMODB` points the DynamoDB client at a local server).
pub async fn load_sdk_config() -> SdkConfig {
    sdk_config_loader().load().await
}

/// The loader behind [`load_sdk_config`], for callers that override a setting
/// (the tests give it static credentials and a local endpoint).
pub fn sdk_config_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
}

pub fn dynamodb_client(sdk_config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config)
}
