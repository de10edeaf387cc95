//! Reading a batch back from its DynamoDB stream: one shard, from the
//! batch's first sequence number to its last, and the checks that the batch
//! is still whole.

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

/// The records of one shard from `start` to `end` (sequence numbers), in order.
pub(crate) async fn read_stream(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard_id: &str,
    start: &str,
    end: &str,
) -> Result<Vec<Record>, String> {
    const GONE: &str = "the stream no longer holds these records (DynamoDB Streams keeps them 24 hours)";
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(start)
        .send()
        .await
        .map_err(|error| {
            let gone = error.as_service_error().is_some_and(|service_error| {
                service_error.is_trimmed_data_access_exception() || service_error.is_resource_not_found_exception()
            });
            let detail = aws_sdk_dynamodbstreams::error::DisplayErrorContext(error);
            if gone {
                format!("{GONE}: {detail}")
            } else {
                format!("GetShardIterator failed: {detail}")
            }
        })?;
    let mut iterator = iterator.shard_iterator().map(str::to_owned);
    let mut records = Vec::new();
    let mut empty_pages = 0;
    while let Some(current) = iterator.take() {
        let page = streams
            .get_records()
            .shard_iterator(current)
            .limit(1_000)
            .send()
            .await
            .map_err(|error| {
                let trimmed = error
                    .as_service_error()
                    .is_some_and(|service_error| service_error.is_trimmed_data_access_exception());
                let detail = aws_sdk_dynamodbstreams::error::DisplayErrorContext(error);
                if trimmed {
                    format!("{GONE}: {detail}")
                } else {
                    format!("GetRecords failed: {detail}")
                }
            })?;
        // An open shard answers empty pages once it is read to its end.
        empty_pages = if page.records().is_empty() { empty_pages + 1 } else { 0 };
        for record in page.records() {
            let sequence = record
                .dynamodb()
                .and_then(|change| change.sequence_number())
                .unwrap_or_default();
            if sequence_order(sequence, end) == std::cmp::Ordering::Greater {
                return check_range(records, start, end);
            }
            records.push(record.clone());
        }
        if empty_pages >= 3 {
            break;
        }
        iterator = page.next_shard_iterator().map(str::to_owned);
    }
    check_range(records, start, end)
}

/// The batch is whole: its first and last records are among those read.
fn check_range(records: Vec<Record>, start: &str, end: &str) -> Result<Vec<Record>, String> {
    let sequence = |record: Option<&Record>| {
        record
            .and_then(|record| record.dynamodb())
            .and_then(|change| change.sequence_number())
            .map(str::to_owned)
    };
    if sequence(records.first()).as_deref() != Some(start) {
        return Err(format!("the stream no longer holds record {start}, the batch's first"));
    }
    if sequence(records.last()).as_deref() != Some(end) {
        return Err(format!(
            "the stream holds the batch's records only up to {}, not to {end}",
            sequence(records.last()).unwrap_or_default()
        ));
    }
    Ok(records)
}

/// Sequence numbers are decimal numbers of up to 40 digits.
fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The table a stream ARN belongs to: `arn:aws:dynamodb:{region}:{account}:table/{name}/stream/{label}`.
pub fn table_of_stream(stream_arn: &str) -> Option<&str> {
    let (_, rest) = stream_arn.split_once(":table/")?;
    let (table, _) = rest.split_once("/stream/")?;
    (!table.is_empty()).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arns_name_their_table() {
        assert_eq!(
            table_of_stream(
                "arn:aws:dynamodb:us-east-1:123456789012:table/airwave-messages/stream/2026-11-22T20:15:44.317"
            ),
            Some("airwave-messages")
        );
        assert_eq!(table_of_stream("arn:aws:sqs:us-east-1:123456789012:queue"), None);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering;
        assert_eq!(sequence_order("900", "1000"), Ordering::Less);
        assert_eq!(sequence_order("1000", "1000"), Ordering::Equal);
        assert_eq!(
            sequence_order("49000000000000000000000000001", "4900000000000000000000000000"),
            Ordering::Greater
        );
    }
}
