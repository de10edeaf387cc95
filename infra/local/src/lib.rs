//! Local stand-ins for the parts of AWS that Airwave talks to: table creation
//! against a DynamoDB-compatible server, and an API Gateway Management API.

pub mod management;
pub mod tables;

pub use management::{Faults, LocalManagementApi, Options, PostCounts};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start the local Management API: {0}")]
    Bind(#[from] std::io::Error),
    #[error("DynamoDB {operation} for table {table} failed: {message}")]
    DynamoDb {
        operation: &'static str,
        table: String,
        message: String,
    },
}
