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
pub mod tcp_resets;

pub use dynamodb_faults::{DynamoDbFaults, FaultyDynamoDb};
pub use dynamodb_meter::{DynamoDbUsage, MeteredDynamoDb, TableUsage};
pub use fault_proxy::{FaultCounts, FaultPlan, FaultProxy};
pub use item_size::item_size;
pub use management::{Faults, LocalManagementApi, Options, PostCounts};
pub use management_faults::{FaultyManagementApi, ManagementFaults};
pub use tcp_resets::ResettingRelay;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start a local stand-in: {0}")]
    Bind(#[from] std::io::Error),
}
