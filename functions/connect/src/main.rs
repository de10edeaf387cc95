//! The `$connect` route: stores the connection record with its TTL.

use airwave_shared::auth::Authenticator;
use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::handlers::handle_connect;
use airwave_shared::{clients, telemetry, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("connect");
    let config = Config::from_env()?;
    config.require_admission_settings()?;
    let authenticator = Authenticator::from_config(&config)?;
    let sdk_config = clients::load_sdk_config().await;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        metrics.flushed(handle_connect(&store, authenticator.as_ref(), &config, event))
    }))
    .await
}
