//! Local stand-ins that can misbehave on purpose, for tests and benchmarks:
//! a Management API without sockets that answers like API Gateway (410 for a
//! gone id, 413 over 128 KB) and can add latency and inject faults, and an
//! HTTP proxy that injects faults in front of a real part: throttling and
//! transaction conflicts before the local DynamoDB, 500s and 429s before the
//! local gateway's Management API; and a TCP relay that resets its links
//! like a network that drops. The whole local stack, with sockets, is
//! `airwave-gateway`.

pub mod dynamodb_faults;
pub mod dynamodb_meter;
pub mod fault_proxy;
pub mod item_size;
pub mod management;
pub mod management_faults;
pub mod quota;
pub mod round_trips;
pub mod tcp_resets;

pub use dynamodb_faults::{DynamoDbFaults, FaultyDynamoDb};
pub use dynamodb_meter::{DynamoDbUsage, MeterOptions, MeteredDynamoDb, PartitionLimits, TableUsage};
pub use fault_proxy::{FaultCounts, FaultPlan, FaultProxy};
pub use item_size::item_size;
pub use management::{Faults, LocalManagementApi, Options, PostCounts};
pub use management_faults::{FaultyManagementApi, ManagementFaults};
pub use quota::{Quota, QuotaBucket};
pub use round_trips::{round_trips_before, RequestSpan};
pub use tcp_resets::ResettingRelay;

/// Serves `router` on a free loopback port; `name` says which stand-in in
/// the log if the server stops. Dropping the handle leaves it running.
pub(crate) async fn serve_on_loopback(
    router: axum::Router,
    name: &'static str,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), LocalError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(error = %error, stand_in = name, "a local stand-in stopped serving");
        }
    });
    Ok((address, server))
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start a local stand-in: {0}")]
    Bind(#[from] std::io::Error),
}
