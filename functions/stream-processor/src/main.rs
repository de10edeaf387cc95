//! Broadcasts every message inserted into the messages table (DynamoDB stream).

// The handler's future nests the SDK's transaction futures deeper than the
// compiler's default layout query depth.
#![recursion_limit = "256"]

use airwave_shared::failures::SqsFailureQueue;
use airwave_shared::fanout::FanOutSettings;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::{clients, telemetry, Config, DynamoStore, FanOut};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("stream-processor");
    let config = Config::from_env()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    let fanout = FanOut::new(
        &sdk_config,
        config.require_management_endpoint()?,
        FanOutSettings::from(&config),
    );
    let failures = SqsFailureQueue::new(clients::sqs_client(&sdk_config), config.require_failure_queue_url()?);
    tracing::info!(queue = failures.queue_url(), "poison records go to the failure queue");
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        metrics.flushed(handle_stream_batch(&store, &config.history, &fanout, &failures, event))
    }))
    .await
}
