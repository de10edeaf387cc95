//! One stream mapping at work: its shards, found and followed as they split
//! and close, and each shard's batches, delivered in order and retried with
//! backoff until they succeed or are given up on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::batch_item_failures::failed_index;
use super::on_failure::OnFailure;
use super::records::{record_to_json, sequence_number};
use super::StreamOptions;
use crate::events::epoch_millis_now;
use crate::filter;
use crate::template::StreamMapping;
use crate::{GatewayError, Invoker};

#[derive(Debug)]
pub(super) struct ShardState {
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

pub(super) struct MappingPoller {
    pub(super) on_failure: Option<OnFailure>,
    pub(super) client: aws_sdk_dynamodbstreams::Client,
    pub(super) invoker: Arc<dyn Invoker>,
    pub(super) mapping: StreamMapping,
    pub(super) stream_arn: String,
    pub(super) region: String,
    pub(super) options: StreamOptions,
    pub(super) shards: BTreeMap<String, ShardState>,
    /// Closed shards read to their end: discovery still lists them, and reading
    /// one again would deliver its records twice.
    pub(super) finished: BTreeSet<String>,
}

impl MappingPoller {
    /// Adds shards not seen before, reading them from `iterator_type`.
    pub(super) async fn discover_shards(&mut self, iterator_type: ShardIteratorType) -> Result<(), GatewayError> {
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

    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
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
}
