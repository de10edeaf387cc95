//! The `$disconnect` route: removes the connection and its subscriptions.

use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::handlers::handle_disconnect;
use airwave_shared::{clients, telemetry, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("disconnect");
    let config = Config::from_env()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        metrics.flushed(handle_disconnect(&store, event))
    }))
    .await
}
