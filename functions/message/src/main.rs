//! The `$default` route: ping, subscribe, unsubscribe, publish, stats.

// The handler's future nests the SDK's transaction futures deeper than the
// compiler's default layout query depth.
#![recursion_limit = "256"]

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::handlers::handle_message;
use airwave_shared::{clients, telemetry, Closer, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("message");
    let config = Config::from_env()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    // Closes connections whose token expired; without an endpoint they are
    // refused and stop receiving, and API Gateway closes them later.
    let closer = config
        .management_endpoint
        .as_deref()
        .map(|endpoint| Closer::new(&sdk_config, endpoint));
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        metrics.flushed(handle_message(&store, closer.as_ref(), &config, event))
    }))
    .await
}
