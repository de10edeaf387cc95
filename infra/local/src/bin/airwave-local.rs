//! `airwave-local create-tables`: creates the Airwave tables on the DynamoDB
//! endpoint the SDK is configured for (`AWS_ENDPOINT_URL_DYNAMODB` locally).

use std::process::ExitCode;

use airwave_local::tables::create_tables;
use airwave_shared::{clients, telemetry, Config};

const USAGE: &str = "usage: airwave-local create-tables";

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_tracing();
    let command = std::env::args().nth(1);
    match command.as_deref() {
        Some("create-tables") => {}
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let sdk_config = clients::load_sdk_config().await;
    match create_tables(&clients::dynamodb_client(&sdk_config), &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
