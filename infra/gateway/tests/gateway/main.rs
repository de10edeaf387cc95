//! The gateway over real sockets: handshakes, events, routing, the Management
//! API, limits and every way a connection can end. One test binary, one
//! module per area; run one with `cargo test -p airwave-gateway --test gateway
//! MODULE::`.

#[path = "../common/mod.rs"]
mod common;

mod closing;
mod handshake;
mod inbound_queue;
mod management;
mod messages;

use std::time::Duration;

fn management_client(endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
    use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "test"))
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// Lets stray invocations arrive before asserting that none did.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
