//! Plays Lambda's DynamoDB event source mappings: reads each mapped table's
//! stream on the local server and invokes the function with Lambda's DynamoDB
//! event, batch by batch, in stream order.
//!
//! Like Lambda, a failed batch holds back its shard: an invocation error
//! retries the whole batch; with `ReportBatchItemFailures`, an answer listing
//! `batchItemFailures` retries from the lowest reported sequence number on
//! (the records before it are done). Retries back off exponentially; a batch
//! is given up on after `MaximumRetryAttempts` retries, and records once they
//! are older than `MaximumRecordAgeInSeconds`: like Lambda, the poller then
//! sends a description of them (`DDBStreamBatchInfo`, see [`on_failure_record`])
//! to the mapping's on-failure SQS queue, when it has one and
//! [`StreamOptions::sqs`] is set (else it only logs them). `FilterCriteria`
//! patterns drop the records they do not match before batching. Not emulated:
//! bisecting a failing batch, batching windows, SNS on-failure destinations,
//! parallelization factor.
//!
//! The parts: `mapping` polls one mapping's shards and delivers their
//! batches; `batch_item_failures` reads a function's partial-failure answer;
//! `on_failure` describes what a mapping gives up on and sends it to its
//! queue; `records` writes stream records in Lambda's event shape.

mod batch_item_failures;
mod mapping;
mod on_failure;
mod records;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::template::{LocalNames, StackModel};
use crate::{GatewayError, Invoker};
use mapping::MappingPoller;
use on_failure::on_failure_destination;

pub use on_failure::on_failure_record;
pub use records::{attribute_to_json, record_to_json};

/// Where a stream is first read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// Only records written after the poller started.
    Latest,
    /// Every record the stream still holds.
    TrimHorizon,
}

impl StartingPosition {
    fn iterator_type(self) -> ShardIteratorType {
        match self {
            StartingPosition::Latest => ShardIteratorType::Latest,
            StartingPosition::TrimHorizon => ShardIteratorType::TrimHorizon,
        }
    }
}

/// Settings of a [`StreamPoller`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// How long to wait when no shard had records (never a hot loop).
    pub poll_interval: Duration,
    /// Overrides every mapping's `StartingPosition`; `None` follows the
    /// template (`LATEST` when it says nothing).
    pub starting_position: Option<StartingPosition>,
    /// Wait before the first retry of a failed batch; doubles per retry.
    pub retry_backoff: Duration,
    /// The longest wait between retries.
    pub max_retry_backoff: Duration,
    /// How often to look for new shards.
    pub shard_discovery_interval: Duration,
    /// The client of the server the template's queues are on: a mapping's
    /// on-failure queue is looked up there by its local name (it must exist:
    /// see [`crate::queues::create_queues`]) and gets the description of each
    /// batch the mapping gives up on. `None`: such a batch is only logged.
    pub sqs: Option<aws_sdk_sqs::Client>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            poll_interval: Duration::from_millis(200),
            starting_position: None,
            retry_backoff: Duration::from_millis(200),
            max_retry_backoff: Duration::from_secs(5),
            shard_discovery_interval: Duration::from_secs(10),
            sqs: None,
        }
    }
}

/// Starts polling every enabled stream mapping of a [`StackModel`].
pub struct StreamPoller;

/// Pollers that are running; [`RunningPoller::shutdown`] stops them (dropping
/// it stops them too, without waiting for an invocation in progress).
pub struct RunningPoller {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningPoller {
    /// Stops polling and waits for the current invocations to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(error = %error, "stream poller task failed");
            }
        }
    }
}

impl StreamPoller {
    /// Finds each mapped table's stream and its shards and takes the starting
    /// iterators before returning, so a record written after `start` returns is
    /// delivered even from `LATEST`.
    pub async fn start(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: &aws_sdk_dynamodbstreams::Client,
        model: &StackModel,
        names: &LocalNames,
        invoker: Arc<dyn Invoker>,
        options: StreamOptions,
    ) -> Result<RunningPoller, GatewayError> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let region = dynamodb
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |region| region.to_string());
        let mut tasks = Vec::new();
        for mapping in model.stream_mappings.iter().filter(|mapping| mapping.enabled) {
            let table = model.table(&mapping.table_logical_id).ok_or_else(|| {
                GatewayError::Template(format!(
                    "mapping {} reads unknown table {}",
                    mapping.logical_id, mapping.table_logical_id
                ))
            })?;
            let table_name = model.table_name(table, names)?;
            let described = dynamodb
                .describe_table()
                .table_name(&table_name)
                .send()
                .await
                .map_err(|error| GatewayError::dynamodb("DescribeTable", &table_name, error))?;
            let stream_arn = described
                .table()
                .and_then(|table| table.latest_stream_arn())
                .ok_or_else(|| {
                    GatewayError::Config(format!("table {table_name} has no stream; create it from the template"))
                })?
                .to_owned();
            let position = options
                .starting_position
                .unwrap_or(match mapping.starting_position.as_deref() {
                    Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
                    _ => StartingPosition::Latest,
                });
            let on_failure = on_failure_destination(model, names, mapping, options.sqs.as_ref()).await?;
            let mut poller = MappingPoller {
                on_failure,
                client: streams.clone(),
                invoker: invoker.clone(),
                mapping: mapping.clone(),
                stream_arn,
                region: region.clone(),
                options: options.clone(),
                shards: BTreeMap::new(),
                finished: BTreeSet::new(),
            };
            poller.discover_shards(position.iterator_type()).await?;
            tracing::info!(
                mapping = %mapping.logical_id,
                table = %table_name,
                function = %mapping.function,
                shards = poller.shards.len(),
                ?position,
                "polling stream"
            );
            tasks.push(tokio::spawn(poller.run(shutdown_rx.clone())));
        }
        Ok(RunningPoller {
            shutdown: shutdown_tx,
            tasks,
        })
    }
}
