//! The HTTP API: `POST /v1/publish`, for servers with a key and clients with their token.

// The handler's future nests the SDK's futures deeper than the compiler's
// default layout query depth.
#![recursion_limit = "256"]

use airwave_shared::auth::Authenticator;
use airwave_shared::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use airwave_shared::handlers::http::handle_http;
use airwave_shared::server_keys::ServerKeySource;
use airwave_shared::{clients, telemetry, Config, DynamoStore};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_tracing();
    let metrics = telemetry::init_metrics("http-api");
    let config = Config::from_env()?;
    let sdk_config = clients::load_sdk_config(&config.aws_timeouts).await;
    let authenticator = Authenticator::from_config_and_aws(&config, &sdk_config)?;
    let server_keys = ServerKeySource::from_config_and_aws(&config, &sdk_config);
    let store = DynamoStore::new(clients::dynamodb_client(&sdk_config), &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayV2httpRequest>| {
        metrics.flushed(handle_http(
            &store,
            authenticator.as_ref(),
            &server_keys,
            &config,
            event,
        ))
    }))
    .await
}
