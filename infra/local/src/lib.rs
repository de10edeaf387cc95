//! Local stand-ins that can misbehave on purpose, for tests and benchmarks:
//! a Management API without sockets that answers like API Gateway (410 for a
//! gone id, 413 over 128 KB) and can add latency and inject faults, and a
//! proxy in front of the local DynamoDB that injects throttling and
//! transaction conflicts. The whole local stack, with sockets, is
//! `airwave-gateway`.

pub mod dynamodb_faults;
pub mod management;

pub use dynamodb_faults::{DynamoDbFaultCounts, DynamoDbFaults, FaultyDynamoDb};
pub use management::{Faults, LocalManagementApi, Options, PostCounts};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start a local stand-in: {0}")]
    Bind(#[from] std::io::Error),
}
