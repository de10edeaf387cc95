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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::events::{epoch_millis_now, iso_8601};
use crate::filter;
use crate::template::{LocalNames, StackModel, StreamMapping, LOCAL_ACCOUNT_ID};
use crate::{GatewayError, Invoker};

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

/// Where the mapping sends what it gives up on.
struct OnFailure {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

async fn on_failure_destination(
    model: &StackModel,
    names: &LocalNames,
    mapping: &StreamMapping,
    sqs: Option<&aws_sdk_sqs::Client>,
) -> Result<Option<OnFailure>, GatewayError> {
    let Some(logical_id) = &mapping.on_failure_queue else {
        return Ok(None);
    };
    let Some(client) = sqs else {
        tracing::warn!(
            mapping = %mapping.logical_id,
            queue = %logical_id,
            "no SQS client: batches this mapping gives up on are only logged"
        );
        return Ok(None);
    };
    let queue = model.queue(logical_id).ok_or_else(|| {
        GatewayError::Template(format!(
            "the on-failure destination of {} is unknown queue {logical_id}",
            mapping.logical_id
        ))
    })?;
    let name = model.queue_name(queue, names)?;
    let queue_url = crate::queues::queue_url(client, &name).await?.ok_or_else(|| {
        GatewayError::Config(format!(
            "queue {name} ({logical_id}), the on-failure destination of {}, does not exist; create it from the \
             template",
            mapping.logical_id
        ))
    })?;
    Ok(Some(OnFailure {
        client: client.clone(),
        queue_url,
    }))
}

#[derive(Debug)]
struct ShardState {
    /// `None` once the shard is closed and read to its end.
    iterator: Option<String>,
    /// The last sequence number fetched, to take a fresh iterator after it.
    last_fetched: Option<String>,
    /// Where reading began, for a fresh iterator before anything was fetched.
    started_at: ShardIteratorType,
    /// The batch being delivered (event records), empty when none.
    pending: Vec<Value>,
    retries: u32,
    retry_at: Option<Instant>,
    /// How the pending batch's last invocation failed: `Some(true)` with an
    /// error, `Some(false)` by reporting `batchItemFailures`; `None` before
    /// its first invocation.
    function_error: Option<bool>,
}

struct MappingPoller {
    on_failure: Option<OnFailure>,
    client: aws_sdk_dynamodbstreams::Client,
    invoker: Arc<dyn Invoker>,
    mapping: StreamMapping,
    stream_arn: String,
    region: String,
    options: StreamOptions,
    shards: BTreeMap<String, ShardState>,
    /// Closed shards read to their end: discovery still lists them, and reading
    /// one again would deliver its records twice.
    finished: BTreeSet<String>,
}

impl MappingPoller {
    /// Adds shards not seen before, reading them from `iterator_type`.
    async fn discover_shards(&mut self, iterator_type: ShardIteratorType) -> Result<(), GatewayError> {
        let mut start_after: Option<String> = None;
        loop {
            let described = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start_after.clone())
                .send()
                .await
                .map_err(|error| GatewayError::dynamodb("DescribeStream", &self.stream_arn, error))?;
            let Some(description) = described.stream_description() else {
                return Ok(());
            };
            for shard in description.shards() {
                let Some(shard_id) = shard.shard_id() else { continue };
                if self.shards.contains_key(shard_id) || self.finished.contains(shard_id) {
                    continue;
                }
                let iterator = self.iterator(shard_id, iterator_type.clone(), None).await?;
                tracing::debug!(shard_id, "reading shard");
                self.shards.insert(
                    shard_id.to_owned(),
                    ShardState {
                        iterator: Some(iterator),
                        last_fetched: None,
                        started_at: iterator_type.clone(),
                        pending: Vec::new(),
                        retries: 0,
                        retry_at: None,
                        function_error: None,
                    },
                );
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start_after = Some(last.to_owned()),
                None => return Ok(()),
            }
        }
    }

    async fn iterator(
        &self,
        shard_id: &str,
        iterator_type: ShardIteratorType,
        sequence_number: Option<String>,
    ) -> Result<String, GatewayError> {
        self.client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(iterator_type)
            .set_sequence_number(sequence_number)
            .send()
            .await
            .map_err(|error| GatewayError::dynamodb("GetShardIterator", shard_id, error))?
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| GatewayError::DynamoDb {
                operation: "GetShardIterator",
                resource: shard_id.to_owned(),
                message: "no iterator in the answer".into(),
            })
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut next_discovery = Instant::now() + self.options.shard_discovery_interval;
        loop {
            // A dropped RunningPoller stops the polling too.
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                return;
            }
            if Instant::now() >= next_discovery {
                // Shards split over time on DynamoDB; new ones hold only new records.
                if let Err(error) = self.discover_shards(ShardIteratorType::TrimHorizon).await {
                    tracing::warn!(error = %error, "looking for new shards failed");
                }
                next_discovery = Instant::now() + self.options.shard_discovery_interval;
            }
            let mut worked = false;
            let shard_ids: Vec<String> = self.shards.keys().cloned().collect();
            for shard_id in shard_ids {
                worked |= self.step(&shard_id).await;
            }
            let finished = &mut self.finished;
            self.shards.retain(|shard_id, shard| {
                let done = shard.iterator.is_none() && shard.pending.is_empty();
                if done {
                    tracing::debug!(shard_id, "shard read to its end");
                    finished.insert(shard_id.clone());
                }
                !done
            });
            if !worked {
                tokio::select! {
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Delivers the shard's pending batch or fetches the next one; `true` when
    /// it did something, so the loop only sleeps when every shard was idle.
    async fn step(&mut self, shard_id: &str) -> bool {
        let Some(shard) = self.shards.get(shard_id) else {
            return false;
        };
        if !shard.pending.is_empty() {
            if shard.retry_at.is_some_and(|at| Instant::now() < at) {
                return false;
            }
            self.deliver(shard_id).await;
            return true;
        }
        let Some(iterator) = shard.iterator.clone() else {
            return false;
        };
        let fetched = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(self.mapping.batch_size).unwrap_or(i32::MAX))
            .send()
            .await;
        let output = match fetched {
            Ok(output) => output,
            Err(error) => {
                tracing::warn!(
                    shard_id,
                    error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&error),
                    "reading the stream failed; taking a fresh iterator"
                );
                self.refresh_iterator(shard_id).await;
                return false;
            }
        };
        let records: Vec<Value> = output
            .records()
            .iter()
            .map(|record| record_to_json(record, &self.stream_arn, &self.region))
            .collect();
        let Some(shard) = self.shards.get_mut(shard_id) else {
            return false;
        };
        shard.iterator = output.next_shard_iterator().map(str::to_owned);
        if records.is_empty() {
            return false;
        }
        shard.last_fetched = records.last().and_then(sequence_number).map(str::to_owned);
        let fetched = records.len();
        let patterns = &self.mapping.filter_patterns;
        let records: Vec<Value> = records
            .into_iter()
            .filter(|record| patterns.is_empty() || patterns.iter().any(|pattern| filter::matches(pattern, record)))
            .collect();
        if records.len() < fetched {
            tracing::debug!(
                shard_id,
                filtered_out = fetched - records.len(),
                "records left out by FilterCriteria"
            );
        }
        if records.is_empty() {
            // Fetched records were all filtered out: that still counts as progress.
            return true;
        }
        shard.pending = records;
        shard.retries = 0;
        shard.function_error = None;
        self.deliver(shard_id).await;
        true
    }

    /// Replaces an iterator that failed (expired, or the server restarted).
    async fn refresh_iterator(&mut self, shard_id: &str) {
        let Some(shard) = self.shards.get(shard_id) else {
            return;
        };
        let (iterator_type, after) = match &shard.last_fetched {
            Some(sequence) => (ShardIteratorType::AfterSequenceNumber, Some(sequence.clone())),
            // Nothing fetched yet: start where the shard started, not at LATEST,
            // which would skip what was written since.
            None => (shard.started_at.clone(), None),
        };
        let fresh = self.iterator(shard_id, iterator_type, after).await;
        match fresh {
            Ok(iterator) => {
                if let Some(shard) = self.shards.get_mut(shard_id) {
                    shard.iterator = Some(iterator);
                }
            }
            Err(error) => tracing::warn!(shard_id, error = %error, "taking a fresh iterator failed"),
        }
    }

    async fn deliver(&mut self, shard_id: &str) {
        let Some(shard) = self.shards.get_mut(shard_id) else {
            return;
        };
        if let Some(max_age) = self.mapping.maximum_record_age {
            let now = epoch_millis_now() / 1_000;
            let (kept, expired): (Vec<Value>, Vec<Value>) =
                std::mem::take(&mut shard.pending).into_iter().partition(|record| {
                    record
                        .pointer("/dynamodb/ApproximateCreationDateTime")
                        .and_then(Value::as_i64)
                        .is_none_or(|created| now - created <= max_age.as_secs() as i64)
                });
            shard.pending = kept;
            let (invocations, function_error) = (shard.retries, shard.function_error);
            let nothing_left = shard.pending.is_empty();
            if !expired.is_empty() {
                tracing::error!(
                    shard_id,
                    dropped = expired.len(),
                    "records past MaximumRecordAgeInSeconds given up on"
                );
                self.give_up(shard_id, &expired, "RecordAgeExceeded", invocations, function_error)
                    .await;
            }
            if nothing_left {
                return;
            }
        }
        let Some(shard) = self.shards.get_mut(shard_id) else {
            return;
        };
        let batch = shard.pending.clone();
        let first = batch.first().and_then(sequence_number).unwrap_or_default().to_owned();
        let event = json!({ "Records": batch });
        let span = tracing::info_span!(
            "stream_batch",
            mapping = %self.mapping.logical_id,
            function = %self.mapping.function,
            shard_id,
            records = batch.len(),
            first_sequence_number = %first,
        );
        let outcome = self.invoker.invoke(&self.mapping.function, event).await;
        let entered = span.enter();
        let retry_from = match outcome {
            Ok(answer) if self.mapping.report_batch_item_failures => match failed_index(&answer, &batch) {
                Ok(None) => None,
                Ok(Some(index)) => {
                    tracing::info!(
                        retried = batch.len() - index,
                        "batchItemFailures reported; retrying from the first failure"
                    );
                    Some((index, false))
                }
                Err(problem) => {
                    tracing::warn!(problem, "invalid batchItemFailures; retrying the whole batch");
                    Some((0, false))
                }
            },
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(error = %error, "invocation failed; retrying the whole batch");
                Some((0, true))
            }
        };
        let Some((index, function_error)) = retry_from else {
            tracing::debug!("batch delivered");
            shard.pending.clear();
            shard.retries = 0;
            shard.retry_at = None;
            shard.function_error = None;
            return;
        };
        shard.pending.drain(..index);
        shard.retries += 1;
        shard.function_error = Some(function_error);
        if self
            .mapping
            .maximum_retry_attempts
            .is_some_and(|attempts| shard.retries > attempts)
        {
            tracing::error!(
                dropped = shard.pending.len(),
                "MaximumRetryAttempts reached; batch given up on"
            );
            let given_up = std::mem::take(&mut shard.pending);
            let invocations = shard.retries;
            shard.retries = 0;
            shard.retry_at = None;
            shard.function_error = None;
            drop(entered);
            self.give_up(
                shard_id,
                &given_up,
                "RetryAttemptsExhausted",
                invocations,
                Some(function_error),
            )
            .await;
            return;
        }
        let backoff = self
            .options
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(shard.retries.saturating_sub(1).min(16)))
            .min(self.options.max_retry_backoff);
        shard.retry_at = Some(Instant::now() + backoff);
    }

    /// Sends the description of `records`, given up on, to the mapping's
    /// on-failure queue, as Lambda does; logs it when there is none.
    async fn give_up(
        &self,
        shard_id: &str,
        records: &[Value],
        condition: &str,
        invocations: u32,
        function_error: Option<bool>,
    ) {
        let function_arn = format!(
            "arn:aws:lambda:{}:{LOCAL_ACCOUNT_ID}:function:{}",
            self.region, self.mapping.function
        );
        let record = on_failure_record(
            records,
            shard_id,
            &self.stream_arn,
            &function_arn,
            condition,
            invocations,
            function_error,
            epoch_millis_now(),
        );
        let Some(destination) = &self.on_failure else {
            tracing::error!(
                mapping = %self.mapping.logical_id,
                record = %record,
                "records given up on; the mapping has no on-failure queue here"
            );
            return;
        };
        let sent = destination
            .client
            .send_message()
            .queue_url(&destination.queue_url)
            .message_body(record.to_string())
            .send()
            .await;
        match sent {
            Ok(_) => tracing::warn!(
                mapping = %self.mapping.logical_id,
                queue = %destination.queue_url,
                shard_id,
                records = records.len(),
                condition,
                "records given up on; their description went to the on-failure queue"
            ),
            Err(error) => tracing::error!(
                mapping = %self.mapping.logical_id,
                queue = %destination.queue_url,
                error = %aws_sdk_sqs::error::DisplayErrorContext(error),
                record = %record,
                "records given up on, and their description could not be sent to the on-failure queue"
            ),
        }
    }
}

/// What Lambda sends a stream mapping's on-failure destination about records
/// it gave up on: why (`requestContext.condition`: `RetryAttemptsExhausted`
/// or `RecordAgeExceeded`), after how many invocations, how the last one
/// ended (`responseContext`, absent when the records were never invoked;
/// `functionError` only when the function failed rather than reporting
/// `batchItemFailures`), and which records (`DDBStreamBatchInfo`: the shard and
/// the first and last sequence numbers, to read them back from the stream).
#[allow(clippy::too_many_arguments)]
pub fn on_failure_record(
    records: &[Value],
    shard_id: &str,
    stream_arn: &str,
    function_arn: &str,
    condition: &str,
    invocations: u32,
    function_error: Option<bool>,
    now_ms: i64,
) -> Value {
    let arrival = |record: Option<&Value>| {
        record
            .and_then(|record| record.pointer("/dynamodb/ApproximateCreationDateTime"))
            .and_then(Value::as_i64)
            .map(|seconds| iso_8601(seconds.saturating_mul(1_000)))
    };
    let sequence = |record: Option<&Value>| record.and_then(sequence_number).unwrap_or_default().to_owned();
    let mut description = json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invocations,
        },
        "version": "1.0",
        "timestamp": iso_8601(now_ms),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": sequence(records.first()),
            "endSequenceNumber": sequence(records.last()),
            "approximateArrivalOfFirstRecord": arrival(records.first()),
            "approximateArrivalOfLastRecord": arrival(records.last()),
            "batchSize": records.len(),
            "streamArn": stream_arn,
        },
    });
    if let Some(function_error) = function_error {
        let mut response = json!({"statusCode": 200, "executedVersion": "$LATEST"});
        if function_error {
            response["functionError"] = "Unhandled".into();
        }
        description["responseContext"] = response;
    }
    description
}

fn sequence_number(record: &Value) -> Option<&str> {
    record.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str)
}

/// Index of the first record to retry from the function's answer:
/// `Ok(None)` when everything succeeded, `Err` when the answer is malformed
/// (Lambda then retries the whole batch).
fn failed_index(answer: &Value, batch: &[Value]) -> Result<Option<usize>, &'static str> {
    let failures = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(failures)) => failures,
        Some(_) => return Err("batchItemFailures is not a list"),
    };
    let mut first: Option<usize> = None;
    for failure in failures {
        let identifier = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or("a failure without itemIdentifier")?;
        let index = batch
            .iter()
            .position(|record| sequence_number(record) == Some(identifier))
            .ok_or("an itemIdentifier that is not in the batch")?;
        first = Some(first.map_or(index, |current| current.min(index)));
    }
    Ok(first)
}

/// One stream record in Lambda's DynamoDB event shape.
pub fn record_to_json(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut change = Map::new();
    if let Some(stream_record) = &record.dynamodb {
        if let Some(created) = stream_record.approximate_creation_date_time {
            change.insert("ApproximateCreationDateTime".into(), created.secs().into());
        }
        for (name, image) in [
            ("Keys", &stream_record.keys),
            ("NewImage", &stream_record.new_image),
            ("OldImage", &stream_record.old_image),
        ] {
            if let Some(image) = image {
                change.insert(name.into(), item_to_json(image));
            }
        }
        if let Some(sequence) = &stream_record.sequence_number {
            change.insert("SequenceNumber".into(), sequence.clone().into());
        }
        if let Some(size) = stream_record.size_bytes {
            change.insert("SizeBytes".into(), size.into());
        }
        if let Some(view_type) = &stream_record.stream_view_type {
            change.insert("StreamViewType".into(), view_type.as_str().into());
        }
    }
    let mut event = json!({
        "eventID": record.event_id.clone().unwrap_or_default(),
        "eventName": record.event_name.as_ref().map(|name| name.as_str()).unwrap_or_default(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region.clone().unwrap_or_else(|| region.to_owned()),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    });
    // TTL deletions carry the service's identity, which handlers may check.
    if let Some(identity) = &record.user_identity {
        event["userIdentity"] = json!({
            "type": identity.r#type.clone().unwrap_or_default(),
            "principalId": identity.principal_id.clone().unwrap_or_default(),
        });
    }
    event
}

fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(name, value)| (name.clone(), attribute_to_json(value)))
            .collect(),
    )
}

/// An attribute value in DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, binary as base64).
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match value {
        AttributeValue::S(text) => json!({ "S": text }),
        AttributeValue::N(number) => json!({ "N": number }),
        AttributeValue::B(blob) => json!({ "B": base64(blob.as_ref()) }),
        AttributeValue::Ss(texts) => json!({ "SS": texts }),
        AttributeValue::Ns(numbers) => json!({ "NS": numbers }),
        AttributeValue::Bs(blobs) => {
            json!({ "BS": blobs.iter().map(|blob| base64(blob.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(map) => json!({ "M": item_to_json(map) }),
        AttributeValue::L(list) => json!({ "L": list.iter().map(attribute_to_json).collect::<Vec<_>>() }),
        AttributeValue::Null(is_null) => json!({ "NULL": is_null }),
        AttributeValue::Bool(value) => json!({ "BOOL": value }),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequences: &[&str]) -> Vec<Value> {
        sequences
            .iter()
            .map(|sequence| json!({"dynamodb": {"SequenceNumber": sequence}}))
            .collect()
    }

    #[test]
    fn retries_start_at_the_lowest_reported_failure() {
        let records = batch(&["1", "2", "3"]);
        let answer = json!({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]});
        assert_eq!(failed_index(&answer, &records), Ok(Some(1)));
        assert_eq!(failed_index(&json!({"batchItemFailures": []}), &records), Ok(None));
        assert_eq!(failed_index(&json!({}), &records), Ok(None));
        assert!(failed_index(&json!({"batchItemFailures": [{"itemIdentifier": "9"}]}), &records).is_err());
        assert!(failed_index(&json!({"batchItemFailures": [{}]}), &records).is_err());
    }

    #[test]
    fn a_batch_given_up_on_is_described_as_lambda_describes_it() {
        let records = vec![
            json!({"dynamodb": {"SequenceNumber": "100", "ApproximateCreationDateTime": 1_795_378_544}}),
            json!({"dynamodb": {"SequenceNumber": "200", "ApproximateCreationDateTime": 1_795_378_545}}),
        ];
        let stream_arn = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-11-22T20:15:44.317";
        let function_arn = "arn:aws:lambda:us-east-1:000000000000:function:f";
        let record = on_failure_record(
            &records,
            "shard-1",
            stream_arn,
            function_arn,
            "RetryAttemptsExhausted",
            3,
            Some(true),
            1_795_378_600_000,
        );
        assert_eq!(
            record["DDBStreamBatchInfo"],
            json!({
                "shardId": "shard-1",
                "startSequenceNumber": "100",
                "endSequenceNumber": "200",
                "approximateArrivalOfFirstRecord": "2026-11-22T20:15:44.000Z",
                "approximateArrivalOfLastRecord": "2026-11-22T20:15:45.000Z",
                "batchSize": 2,
                "streamArn": stream_arn,
            })
        );
        assert_eq!(record["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(record["requestContext"]["functionArn"], function_arn);
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
        assert_eq!(record["version"], "1.0");
        assert_eq!(record["timestamp"], "2026-11-22T20:16:40.000Z");
        // Reported failures are no function error; records never invoked have no response.
        let partial = on_failure_record(
            &records,
            "s",
            stream_arn,
            function_arn,
            "RecordAgeExceeded",
            1,
            Some(false),
            0,
        );
        assert_eq!(
            partial["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST"})
        );
        let never = on_failure_record(&records, "s", stream_arn, function_arn, "RecordAgeExceeded", 0, None, 0);
        assert_eq!(never.get("responseContext"), None);
    }

    #[test]
    fn attribute_values_are_dynamodb_json() {
        let value = AttributeValue::M(HashMap::from([(
            "price".to_owned(),
            AttributeValue::N("12.5".to_owned()),
        )]));
        assert_eq!(attribute_to_json(&value), json!({"M": {"price": {"N": "12.5"}}}));
    }
}
