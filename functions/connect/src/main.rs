//! The `$connect` route: authenticates, admits and stores the connection record.

// The handler's future nests the SDK's transaction futures deeper than the
// compiler's default layout query depth.
#![recursion_limit = "256"]

use airwave_shared::auth::Authenticator;
use airwave_shared::aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use airwave_shared::handlers::handle_connect;
use airwave_shared::{clients, telemetry, Closer, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("connect");
    let config = Config::from_env()?;
    config.require_admission_settings()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let authenticator = Authenticator::from_config_and_aws(&config, &sdk_config)?;
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    // Only evictions close connections; `require_admission_settings` made sure
    // the endpoint is there when they are on.
    let closer = config
        .management_endpoint
        .as_deref()
        .map(|endpoint| Closer::new(&sdk_config, endpoint));
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        metrics.flushed(handle_connect(
            &store,
            authenticator.as_ref(),
            closer.as_ref(),
            &config,
            event,
        ))
    }))
    .await
}
