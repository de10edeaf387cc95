//! What a mapping gives up on: the description Lambda sends a stream
//! mapping's on-failure destination, and the SQS queue it goes to (looked up
//! when the poller starts).

use serde_json::{json, Value};

use super::mapping::MappingPoller;
use super::records::sequence_number;
use crate::events::{epoch_millis_now, iso_8601};
use crate::template::{LocalNames, StackModel, StreamMapping, LOCAL_ACCOUNT_ID};
use crate::GatewayError;

/// Where the mapping sends what it gives up on.
pub(super) struct OnFailure {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

pub(super) async fn on_failure_destination(
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

impl MappingPoller {
    /// Sends the description of `records`, given up on, to the mapping's
    /// on-failure queue, as Lambda does; logs it when there is none.
    pub(super) async fn give_up(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
