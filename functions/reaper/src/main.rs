//! The connections table's stream: gives back the cap slots of records that
//! DynamoDB's TTL deleted, and closes the sockets of records removed behind
//! Airwave's back. On its schedule: closes the connections past their expiry.

// The handler's future nests the SDK's transaction futures deeper than the
// compiler's default layout query depth.
#![recursion_limit = "256"]

use airwave_shared::handlers::handle_reaper_event;
use airwave_shared::{clients, telemetry, Closer, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("reaper");
    let config = Config::from_env()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    let closer = Closer::new(&sdk_config, config.require_management_endpoint()?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        metrics.flushed(handle_reaper_event(&store, Some(&closer), event))
    }))
    .await
}
