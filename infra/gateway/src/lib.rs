//! A local API Gateway WebSocket API, driven by `template.yaml`.
//!
//! `sam local` cannot run WebSocket APIs, so this crate plays API Gateway's part
//! locally from the same template that is deployed, which keeps the two from
//! drifting apart:
//!
//! - [`template`] reads the template into a [`StackModel`]: the route selection
//!   expression, every route and the function binary it invokes, the tables, the
//!   DynamoDB stream mappings and each function's environment.
//! - [`tables`] creates the template's tables in a DynamoDB-compatible server,
//!   and [`queues`] its SQS queues (moto's server serves both on one port).
//! - [`Gateway`] serves WebSocket clients and the Management API
//!   (`/@connections/{id}`) on one port, invoking the routes' functions through an
//!   [`Invoker`] with events in API Gateway's exact shape.
//! - The template's HTTP API is served on the same port: each route invokes
//!   its function with API Gateway's payload format 2.0 event.
//! - [`streams`] polls the tables' DynamoDB streams and invokes the mapped
//!   functions with Lambda's DynamoDB event, honouring `ReportBatchItemFailures`,
//!   and sends what a mapping gives up on to its on-failure queue.
//!
//! Functions are reached through the [`Invoker`] trait: [`HttpInvoker`] talks to
//! `cargo lambda watch`; tests can plug in an in-process implementation.

mod connections;
mod events;
mod filter;
mod gateway;
mod http_api;
mod invoke;
mod local_resources;
mod management;
pub mod mock;
mod options;
pub mod queues;
mod responses;
pub mod schedules;
mod server;
pub mod streams;
pub mod tables;
pub mod template;

pub use invoke::{HttpInvoker, InvokeFuture, Invoker};
pub use options::GatewayOptions;
pub use schedules::{ScheduleOptions, ScheduleRunner};
pub use server::{Gateway, RunningGateway};
pub use streams::{RunningPoller, StartingPosition, StreamOptions, StreamPoller};
pub use template::{LocalNames, StackModel};

/// Everything that can go wrong in the gateway, its template reading, table
/// creation and stream polling.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The template cannot be read or lacks something the gateway needs.
    #[error("template: {0}")]
    Template(String),
    /// A socket could not be bound or served.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The function could not be reached (connection refused, timeout).
    #[error("invoking {function} failed: {message}")]
    Invoke { function: String, message: String },
    /// The function ran and failed (an error payload or a non-2xx answer); API
    /// Gateway answers such failures with "Internal server error".
    #[error("function {function} failed (status {status}): {message}")]
    FunctionFailed {
        function: String,
        status: u16,
        message: String,
    },
    /// A DynamoDB or DynamoDB Streams call failed.
    #[error("DynamoDB {operation} on {resource} failed: {message}")]
    DynamoDb {
        operation: &'static str,
        resource: String,
        message: String,
    },
    /// An SQS call failed.
    #[error("SQS {operation} on {resource} failed: {message}")]
    Sqs {
        operation: &'static str,
        resource: String,
        message: String,
    },
    /// An option or flag is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

impl GatewayError {
    /// A failed DynamoDB or DynamoDB Streams SDK call, with the SDK's whole
    /// error chain in the message (its `Display` alone says only "service error").
    pub(crate) fn dynamodb<E>(operation: &'static str, resource: &str, error: E) -> GatewayError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        GatewayError::DynamoDb {
            operation,
            resource: resource.to_owned(),
            message: aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string(),
        }
    }

    /// A failed SQS SDK call, with the SDK's whole error chain.
    pub(crate) fn sqs<E>(operation: &'static str, resource: &str, error: E) -> GatewayError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        GatewayError::Sqs {
            operation,
            resource: resource.to_owned(),
            message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
        }
    }
}
