//! The DynamoDB streams mapped to functions, from an
//! `AWS::Lambda::EventSourceMapping` or a SAM function's `DynamoDB` event:
//! batch size, retries, record age, filters and the on-failure queue.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::functions::{binary_of, Function};
use super::intrinsics::references;
use super::parser::Parser;
use super::{Table, FUNCTION_TYPES};
use crate::GatewayError;

/// One DynamoDB stream mapped to a function, from an `AWS::Lambda::EventSourceMapping`
/// or a SAM function's `Events` entry of type `DynamoDB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMapping {
    pub logical_id: String,
    /// Logical id of the table whose stream is read.
    pub table_logical_id: String,
    pub function_logical_id: String,
    /// The function's binary name.
    pub function: String,
    /// At most this many records per invocation (Lambda's default for DynamoDB: 100).
    pub batch_size: usize,
    /// `LATEST` or `TRIM_HORIZON`, as declared.
    pub starting_position: Option<String>,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// Retries of a failing batch before it is dropped; `None` retries until the
    /// records are too old (`-1` in the template).
    pub maximum_retry_attempts: Option<u32>,
    /// Records older than this are dropped instead of retried; `None` for no limit.
    pub maximum_record_age: Option<Duration>,
    /// `Enabled: false` mappings are parsed but not polled.
    pub enabled: bool,
    /// Logical id of the SQS queue `DestinationConfig.OnFailure.Destination`
    /// names: where the description of a batch given up on is sent.
    pub on_failure_queue: Option<String>,
    /// `FilterCriteria.Filters[].Pattern`, parsed: a record is delivered when
    /// any matches (all are delivered when there are none).
    pub filter_patterns: Vec<Value>,
}

impl Parser<'_> {
    pub(super) fn stream_mappings(
        &self,
        functions: &BTreeMap<String, Function>,
        tables: &[Table],
    ) -> Result<Vec<StreamMapping>, GatewayError> {
        let is_table = |id: &String| tables.iter().any(|table| &table.logical_id == id);
        let mut mappings = Vec::new();
        for (logical_id, resource) in self.of_type("AWS::Lambda::EventSourceMapping") {
            let properties = resource.get("Properties").cloned().unwrap_or_default();
            let source = properties.get("EventSourceArn").map(references).unwrap_or_default();
            // Mappings of queues or Kinesis streams are not DynamoDB streams.
            let Some(table) = source.iter().find(|id| is_table(id)).cloned() else {
                continue;
            };
            let function_logical_id = self.single_reference(
                logical_id,
                "FunctionName",
                properties.get("FunctionName").unwrap_or(&Value::Null),
                &FUNCTION_TYPES,
            )?;
            mappings.push(self.stream_mapping(logical_id, &properties, table, function_logical_id, functions)?);
        }
        // SAM's shorthand: `Events: {Name: {Type: DynamoDB, Properties: {Stream: !GetAtt T.StreamArn}}}`.
        for (function_logical_id, resource) in self.of_type(FUNCTION_TYPES[0]) {
            let Some(events) = resource.pointer("/Properties/Events").and_then(Value::as_object) else {
                continue;
            };
            for (event_name, event) in events {
                if event.get("Type").and_then(Value::as_str) != Some("DynamoDB") {
                    continue;
                }
                let properties = event.get("Properties").cloned().unwrap_or_default();
                let source = properties.get("Stream").map(references).unwrap_or_default();
                let Some(table) = source.iter().find(|id| is_table(id)).cloned() else {
                    return Err(GatewayError::Template(format!(
                        "event {event_name} of {function_logical_id} does not name a table's stream"
                    )));
                };
                mappings.push(self.stream_mapping(
                    &format!("{function_logical_id}{event_name}"),
                    &properties,
                    table,
                    function_logical_id.clone(),
                    functions,
                )?);
            }
        }
        Ok(mappings)
    }

    fn stream_mapping(
        &self,
        logical_id: &str,
        properties: &Value,
        table_logical_id: String,
        function_logical_id: String,
        functions: &BTreeMap<String, Function>,
    ) -> Result<StreamMapping, GatewayError> {
        let integer = |name: &str| properties.get(name).and_then(|value| self.resolve_integer(value));
        let batch_size = match integer("BatchSize") {
            None => 100,
            Some(size) if size >= 1 => size as usize,
            Some(size) => {
                return Err(GatewayError::Template(format!(
                    "BatchSize of {logical_id} must be positive, not {size}"
                )))
            }
        };
        let filter_patterns = properties
            .pointer("/FilterCriteria/Filters")
            .and_then(Value::as_array)
            .map(|filters| {
                filters
                    .iter()
                    .map(|filter| {
                        let text = filter.get("Pattern").and_then(Value::as_str).ok_or_else(|| {
                            GatewayError::Template(format!("a filter of {logical_id} has no literal Pattern"))
                        })?;
                        let pattern: Value = serde_json::from_str(text).map_err(|error| {
                            GatewayError::Template(format!("a filter Pattern of {logical_id} is not JSON: {error}"))
                        })?;
                        crate::filter::validate(&pattern)
                            .map_err(|error| GatewayError::Template(format!("filter of {logical_id}: {error}")))?;
                        Ok(pattern)
                    })
                    .collect::<Result<Vec<_>, GatewayError>>()
            })
            .transpose()?
            .unwrap_or_default();
        // An SNS topic (the other destination streams allow) is not emulated.
        let on_failure_queue = properties
            .pointer("/DestinationConfig/OnFailure/Destination")
            .map(references)
            .unwrap_or_default()
            .into_iter()
            .find(|id| self.type_of(id) == Some("AWS::SQS::Queue"));
        let report_batch_item_failures = properties
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
        Ok(StreamMapping {
            logical_id: logical_id.to_owned(),
            table_logical_id,
            function: binary_of(functions, &function_logical_id)?,
            function_logical_id,
            batch_size,
            starting_position: properties
                .get("StartingPosition")
                .and_then(|value| self.resolve_text(value)),
            report_batch_item_failures,
            maximum_retry_attempts: integer("MaximumRetryAttempts")
                .filter(|attempts| *attempts >= 0)
                .map(|attempts| attempts as u32),
            maximum_record_age: integer("MaximumRecordAgeInSeconds")
                .filter(|seconds| *seconds >= 0)
                .map(|seconds| Duration::from_secs(seconds as u64)),
            enabled: properties
                .get("Enabled")
                .and_then(|value| self.resolve_bool(value))
                .unwrap_or(true),
            filter_patterns,
            on_failure_queue,
        })
    }
}
