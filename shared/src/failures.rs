//! Where a record that can never succeed goes: reported once, with its id and
//! the reason, to the queue the stream mappings' on-failure destination also
//! uses, so one alarm and one replay command cover both.

use std::future::Future;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A stream record a function gave up on at once because retrying it could
/// never succeed (it cannot be decoded, DynamoDB refuses its keys, its frame
/// is too large, ...). It is the body of one message of the failure queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoisonRecord {
    /// Tells a poison report from Lambda's own on-failure records in the queue.
    pub kind: String,
    /// The function that gave up on it (`stream-processor`).
    pub function: String,
    /// Why it can never succeed, for people.
    pub reason: String,
    /// The message id, when the record could be decoded far enough to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The stream record's sequence number, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    /// The whole stream record as Lambda delivered it (its `dynamodb.NewImage`
    /// is the item a replay writes back).
    pub record: serde_json::Value,
}

/// The value of [`PoisonRecord::kind`].
pub const POISON_RECORD_KIND: &str = "airwave.poison_record";

impl PoisonRecord {
    pub fn new(
        function: &str,
        reason: impl Into<String>,
        message_id: Option<String>,
        sequence_number: Option<String>,
        record: serde_json::Value,
    ) -> Self {
        PoisonRecord {
            kind: POISON_RECORD_KIND.to_owned(),
            function: function.to_owned(),
            reason: reason.into(),
            message_id,
            sequence_number,
            record,
        }
    }
}

/// Where poison records are reported.
pub trait FailureSink: Send + Sync {
    fn report_poison(&self, record: &PoisonRecord) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Keeps reports in memory: for tests and benchmarks that look at them.
#[derive(Debug, Default)]
pub struct RecordedFailures {
    records: Mutex<Vec<PoisonRecord>>,
}

impl RecordedFailures {
    pub fn records(&self) -> Vec<PoisonRecord> {
        self.records.lock().map(|records| records.clone()).unwrap_or_default()
    }
}

impl FailureSink for RecordedFailures {
    async fn report_poison(&self, record: &PoisonRecord) -> Result<(), Error> {
        if let Ok(mut records) = self.records.lock() {
            records.push(record.clone());
        }
        Ok(())
    }
}

/// The largest message body the failure queue takes: SQS's classic limit, and
/// the `MaximumMessageSize` a queue gets when its template says nothing.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = 256 * 1024;

/// Reports poison records to an SQS queue (the stream mappings' on-failure
/// destination, `AIRWAVE_FAILURE_QUEUE_URL`), one message per record whose
/// body is the record's JSON. Throttling and transient errors are retried by
/// the SDK (its standard retry mode, [`crate::clients::MAX_ATTEMPTS`]); a
/// record that still could not be sent is an error, so the caller keeps it
/// rather than losing it.
#[derive(Debug, Clone)]
pub struct SqsFailureQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsFailureQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsFailureQueue {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

impl FailureSink for SqsFailureQueue {
    async fn report_poison(&self, record: &PoisonRecord) -> Result<(), Error> {
        let body = queue_message_body(record, &self.queue_url)?;
        let sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| Error::sqs("SendMessage", &self.queue_url, error))?;
        tracing::info!(
            queue = %self.queue_url,
            queue_message_id = sent.message_id().unwrap_or_default(),
            message_id = record.message_id.as_deref().unwrap_or_default(),
            sequence_number = record.sequence_number.as_deref().unwrap_or_default(),
            reason = %record.reason,
            "poison record reported to the failure queue"
        );
        Ok(())
    }
}

/// The record's JSON, within [`MAX_QUEUE_MESSAGE_BYTES`]. An item can be up to
/// 400 KB, so the report of one (a message whose frame is too large, say)
/// may not fit: then the stream record's `NewImage` (and `OldImage`) are left
/// out, its `Keys` and sequence number kept, and the reason says so; a replay
/// reads such an item from the table by its keys.
pub fn queue_message_body(record: &PoisonRecord, queue_url: &str) -> Result<String, Error> {
    let body = serde_json::to_string(record)?;
    if body.len() <= MAX_QUEUE_MESSAGE_BYTES {
        return Ok(body);
    }
    let mut reduced = record.clone();
    if let Some(change) = reduced
        .record
        .get_mut("dynamodb")
        .and_then(serde_json::Value::as_object_mut)
    {
        change.remove("NewImage");
        change.remove("OldImage");
    }
    reduced.reason = format!(
        "{} (the stream record's images were left out: {} bytes of JSON exceed the queue's {} byte limit; \
         the keys name the item)",
        record.reason,
        body.len(),
        MAX_QUEUE_MESSAGE_BYTES
    );
    let body = serde_json::to_string(&reduced)?;
    if body.len() <= MAX_QUEUE_MESSAGE_BYTES {
        Ok(body)
    } else {
        // Only keys over DynamoDB's own limits could get here.
        Err(Error::Sqs {
            operation: "SendMessage",
            queue: queue_url.to_owned(),
            message: format!(
                "the report has {} bytes even without the record's images; the queue takes at most {MAX_QUEUE_MESSAGE_BYTES}",
                body.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/failures";

    fn record(payload: &str) -> PoisonRecord {
        PoisonRecord::new(
            "stream-processor",
            "its frame is too large",
            Some("m-1".into()),
            Some("100".into()),
            json!({
                "eventName": "INSERT",
                "dynamodb": {
                    "Keys": {"message_id": {"S": "m-1"}},
                    "NewImage": {"message_id": {"S": "m-1"}, "payload": {"S": payload}},
                    "SequenceNumber": "100"
                }
            }),
        )
    }

    #[test]
    fn a_report_that_fits_is_the_record_as_it_is() {
        let record = record("hello");
        let body = queue_message_body(&record, QUEUE).unwrap();
        assert_eq!(serde_json::from_str::<PoisonRecord>(&body).unwrap(), record);
        assert!(body.contains(r#""kind":"airwave.poison_record""#), "{body}");
    }

    #[test]
    fn a_report_too_large_for_the_queue_keeps_the_keys_and_says_why() {
        let record = record(&"x".repeat(300 * 1024));
        let body = queue_message_body(&record, QUEUE).unwrap();
        assert!(body.len() <= MAX_QUEUE_MESSAGE_BYTES);
        let sent: PoisonRecord = serde_json::from_str(&body).unwrap();
        assert_eq!(sent.record["dynamodb"]["Keys"], json!({"message_id": {"S": "m-1"}}));
        assert_eq!(sent.record["dynamodb"].get("NewImage"), None);
        assert_eq!(sent.message_id.as_deref(), Some("m-1"));
        assert!(sent
            .reason
            .starts_with("its frame is too large (the stream record's images were left out"));
    }
}
