//! The failure queue and its replay, against moto's SQS, DynamoDB and
//! DynamoDB Streams: a poison record reported to the queue reads back whole;
//! replaying it writes the message back so a subscribed socket receives it; a
//! batch Lambda gave up on is read back from the stream and written again; a
//! dry run changes nothing; and whatever cannot be replayed stays in the queue
//! with the reason.
//! One file per idea: what the queue keeps, and what a replay writes back.

use std::collections::HashMap;
use std::time::Duration;

use airwave_gateway::streams::attribute_to_json;
use airwave_replay::{replay, Clients, Outcome, ReplayOptions, Report};
use airwave_shared::failures::PoisonRecord;
use airwave_shared::message::MessageRecord;
use airwave_tests::TestTables;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

mod queue;
mod rewrite;

const GUARD: Duration = Duration::from_secs(20);

/// The messages table's stream ARN.
async fn stream_arn(tables: &TestTables) -> String {
    tables
        .dynamodb
        .describe_table()
        .table_name(&tables.config.messages_table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|table| table.latest_stream_arn())
        .expect("the messages table has a stream")
        .to_owned()
}

/// Every record the messages table's stream holds, with its shard, in order.
async fn stream_records(tables: &TestTables) -> Vec<(String, Record)> {
    let streams = aws_sdk_dynamodbstreams::Client::new(&tables.sdk_config);
    let arn = stream_arn(tables).await;
    let described = streams.describe_stream().stream_arn(&arn).send().await.unwrap();
    let mut records = Vec::new();
    for shard in described.stream_description().unwrap().shards() {
        let shard_id = shard.shard_id().unwrap().to_owned();
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(&shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        while let Some(current) = iterator.take() {
            let page = streams.get_records().shard_iterator(current).send().await.unwrap();
            if page.records().is_empty() {
                break;
            }
            records.extend(page.records().iter().map(|record| (shard_id.clone(), record.clone())));
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    records
}

/// (event name, message id) of every stream record, in order.
fn changes(records: &[(String, Record)]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(_, record)| {
            let id = record
                .dynamodb()
                .and_then(|change| change.keys())
                .and_then(|keys| keys.get("message_id"))
                .and_then(|id| id.as_s().ok())
                .cloned()
                .unwrap_or_default();
            (record.event_name().unwrap().as_str().to_owned(), id)
        })
        .collect()
}

/// What the stream-processor reports for a record it gives up on: the whole
/// stream record, its `NewImage` the message item.
async fn poison_record_for(tables: &TestTables, message: &MessageRecord, sequence: &str) -> PoisonRecord {
    let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(message).unwrap();
    let image: serde_json::Map<String, Value> = item
        .iter()
        .map(|(name, value)| {
            let value = airwave_gateway_value(value);
            (name.clone(), value)
        })
        .collect();
    PoisonRecord::new(
        "stream-processor",
        "its frame is too large",
        Some(message.message_id.clone()),
        Some(sequence.to_owned()),
        json!({
            "eventID": "1",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": stream_arn(tables).await,
            "dynamodb": {
                "Keys": {"message_id": {"S": message.message_id}},
                "NewImage": image,
                "SequenceNumber": sequence,
                "StreamViewType": "NEW_IMAGE",
            },
        }),
    )
}

/// A DynamoDB attribute in Lambda's JSON shape (the gateway's conversion works
/// on the streams SDK's type, which has the same variants).
fn airwave_gateway_value(value: &AttributeValue) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as Stream;
    fn convert(value: &AttributeValue) -> Stream {
        match value {
            AttributeValue::S(text) => Stream::S(text.clone()),
            AttributeValue::N(number) => Stream::N(number.clone()),
            AttributeValue::Bool(value) => Stream::Bool(*value),
            AttributeValue::Null(value) => Stream::Null(*value),
            AttributeValue::M(map) => Stream::M(map.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
            AttributeValue::L(list) => Stream::L(list.iter().map(convert).collect()),
            other => panic!("no such attribute in a test message: {other:?}"),
        }
    }
    attribute_to_json(&convert(value))
}

async fn send(tables: &TestTables, body: &str) {
    tables
        .sqs()
        .send_message()
        .queue_url(tables.failure_queue_url())
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// The bodies of the messages the queue holds, left in the queue.
async fn queued(tables: &TestTables) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut receipts = Vec::new();
    loop {
        let received = tables
            .sqs()
            .receive_message()
            .queue_url(tables.failure_queue_url())
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .await
            .unwrap();
        if received.messages().is_empty() || bodies.len() > 100 {
            break;
        }
        for message in received.messages() {
            bodies.push(message.body().unwrap().to_owned());
            receipts.push(message.receipt_handle().unwrap().to_owned());
        }
    }
    for receipt in receipts {
        tables
            .sqs()
            .change_message_visibility()
            .queue_url(tables.failure_queue_url())
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    bodies
}

/// How many messages the queue holds (visible ones: a replay makes the ones
/// that stay visible again before it returns).
async fn queue_depth(tables: &TestTables) -> usize {
    let attributes = tables
        .sqs()
        .get_queue_attributes()
        .queue_url(tables.failure_queue_url())
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attributes
        .attributes()
        .and_then(|attributes| attributes.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .map(|count| count.parse().unwrap())
        .unwrap()
}

fn options(tables: &TestTables) -> ReplayOptions {
    ReplayOptions {
        wait: Duration::ZERO,
        ..ReplayOptions::new(tables.failure_queue_url(), &tables.config.messages_table)
    }
}

async fn run_replay(tables: &TestTables, options: &ReplayOptions) -> Report {
    replay(&Clients::new(&tables.sdk_config), options).await.unwrap()
}

fn kept_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Kept(reason) => reason,
        other => panic!("expected the message to stay, it was {other:?}"),
    }
}
