//! The library every Airwave function is built from: configuration, connection
//! records, the DynamoDB store, the fan-out through the API Gateway Management
//! API, and the Lambda handlers themselves. Each function's `main.rs` only wires
//! one handler to `lambda_runtime`.

pub mod admission;
pub mod auth;
pub mod channel;
pub mod clients;
pub mod closer;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod error;
pub mod eviction;
pub mod failures;
pub mod fanout;
pub mod handlers;
pub mod history;
pub mod jwks;
pub mod liveness;
#[cfg(any(test, feature = "memory-store"))]
pub mod memory_store;
pub mod message;
pub mod pacing;
pub mod permissions;
pub mod rate;
pub mod secrets;
pub mod server_keys;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod time;

#[cfg(test)]
mod logic_tests;

pub use aws_lambda_events;
pub use closer::Closer;
pub use config::Config;
pub use error::Error;
pub use fanout::{FanOut, FanOutReport};
pub use history::ChannelHistory;
pub use store::{AdmissionStore, ConnectionStore, DynamoStore, MessageStore, SubscriptionStore};
