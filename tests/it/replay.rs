//! The failure queue and its replay, against moto's SQS, DynamoDB and
//! DynamoDB Streams: a poison record reported to the queue reads back whole;
//! replaying it writes the message back so a subscribed socket receives it; a
//! batch Lambda gave up on is read back from the stream and written again; a
//! dry run changes nothing; and whatever cannot be replayed stays in the queue
//! with the reason.

use std::collections::HashMap;
use std::time::Duration;

use airwave_gateway::streams::{attribute_to_json, on_failure_record, record_to_json};
use airwave_gateway::GatewayOptions;
use airwave_replay::{replay, Clients, Kind, Outcome, ReplayOptions, Report};
use airwave_shared::failures::{FailureSink, PoisonRecord, SqsFailureQueue};
use airwave_shared::history::ChannelHistory;
use airwave_shared::message::MessageRecord;
use airwave_shared::{Error, MessageStore};
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use aws_sdk_sqs::types::QueueAttributeName;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

const GUARD: Duration = Duration::from_secs(20);

fn message(id: &str, channel: &str, payload: Value) -> MessageRecord {
    MessageRecord {
        message_id: id.to_owned(),
        channel: Some(channel.to_owned()),
        payload,
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
    }
}

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

#[tokio::test]
async fn a_poison_record_reported_to_the_failure_queue_reads_back_whole() {
    let tables = TestTables::create().await;
    let record = poison_record_for(&tables, &message("poison-1", "news", json!({"n": 1})), "100").await;

    SqsFailureQueue::new(tables.sqs(), tables.failure_queue_url())
        .report_poison(&record)
        .await
        .unwrap();

    let bodies = queued(&tables).await;
    assert_eq!(bodies.len(), 1);
    let sent: PoisonRecord = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(sent, record);
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["kind"], "airwave.poison_record");
    assert_eq!(
        body["record"]["dynamodb"]["NewImage"]["message_id"],
        json!({"S": "poison-1"})
    );

    // A queue that does not exist: the report fails, so the record is kept, not lost.
    let missing = tables.failure_queue_url().replace("failures-", "missing-");
    let failed = SqsFailureQueue::new(tables.sqs(), missing).report_poison(&record).await;
    assert!(
        matches!(
            failed,
            Err(Error::Sqs {
                operation: "SendMessage",
                ..
            })
        ),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_replayed_poison_record_is_broadcast_again_to_a_subscribed_socket() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let tables = &stack.tables;

    // Given a message the stream-processor went through (it sets the expiry
    // once it has sent it) before anyone subscribed to its channel,
    let original = message("replayed-1", "news", json!({"headline": "again"}));
    tables.store.put_message(&original).await.unwrap();
    tokio::time::timeout(GUARD, async {
        loop {
            let stored = tables.stored_messages().await;
            if stored
                .iter()
                .any(|item| item["message_id"] == "replayed-1" && item.get("expires_at").is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stream-processor handles the message");
    // and a socket subscribed to that channel now,
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    socket
        .send(Frame::text(r#"{"action":"subscribe","channel":"news"}"#))
        .await
        .unwrap();
    let reply = tokio::time::timeout(GUARD, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reply.to_text().unwrap().contains("subscribed"), "{reply:?}");
    // when its poison report is replayed,
    let record = poison_record_for(tables, &original, "100").await;
    send(tables, &serde_json::to_string(&record).unwrap()).await;
    let report = run_replay(tables, &options(tables)).await;

    // then it is written back, leaves the queue, and the socket receives it.
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].kind, Kind::PoisonRecord);
    assert_eq!(report.entries[0].outcome, Outcome::Replayed);
    assert_eq!(report.entries[0].message_ids, ["replayed-1"]);
    assert_eq!(queue_depth(tables).await, 0);
    let frame = tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) if text.contains("replayed-1") => return text.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the replayed message reaches the subscribed socket");
    assert!(frame.contains("again"), "{frame}");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_batch_lambda_gave_up_on_is_read_back_from_the_stream_and_written_again() {
    let tables = TestTables::create().await;
    // Given two messages Lambda gave up on, and a later one it delivered.
    for id in ["batch-1", "batch-2", "later-3"] {
        tables
            .store
            .put_message(&message(id, "news", json!({"id": id})))
            .await
            .unwrap();
    }
    let records = stream_records(&tables).await;
    assert_eq!(changes(&records).len(), 3);
    let arn = stream_arn(&tables).await;
    let (shard_id, _) = &records[0];
    let given_up: Vec<Value> = records[..2]
        .iter()
        .map(|(_, record)| record_to_json(record, &arn, "us-east-1"))
        .collect();
    // Its on-failure record, as the local gateway (and Lambda) sends it.
    let description = on_failure_record(
        &given_up,
        shard_id,
        &arn,
        "arn:aws:lambda:us-east-1:000000000000:function:stream-processor",
        "RetryAttemptsExhausted",
        3,
        Some(true),
        airwave_shared::time::epoch_millis_now(),
    );
    send(&tables, &description.to_string()).await;

    let report = run_replay(&tables, &options(&tables)).await;

    // Then both are written back, in stream order, and the later one is left alone.
    assert_eq!(report.entries.len(), 1, "{report:?}");
    assert_eq!(report.entries[0].kind, Kind::LambdaBatch);
    assert_eq!(report.entries[0].outcome, Outcome::Replayed, "{report:?}");
    assert_eq!(report.entries[0].message_ids, ["batch-1", "batch-2"]);
    assert_eq!(queue_depth(&tables).await, 0);
    let after = changes(&stream_records(&tables).await);
    let new_inserts: Vec<&str> = after[3..]
        .iter()
        .filter(|(event, _)| event == "INSERT")
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(new_inserts, ["batch-1", "batch-2"], "{after:?}");
    let stored = tables.stored_messages().await;
    assert_eq!(stored.len(), 3);
    assert!(stored
        .iter()
        .any(|item| item["message_id"] == "batch-2" && item["payload"] == json!({"id": "batch-2"})));
}

#[tokio::test]
async fn a_replayed_channel_message_keeps_the_position_it_was_given() {
    let tables = TestTables::create().await;
    let ttl = tables.config.history.ttl_seconds;
    let now = airwave_shared::time::epoch_seconds_now();
    let first = message("kept-0", "news", json!(0));
    let replayed = message("kept-1", "news", json!(1));
    tables.store.put_message(&first).await.unwrap();
    tables.store.put_message(&replayed).await.unwrap();
    // The stream-processor gave both their positions, then gave up on the second.
    let given = tables
        .store
        .assign_positions("news", &[&first, &replayed], ttl, now)
        .await
        .unwrap();
    let record = poison_record_for(&tables, &replayed, "100").await;
    send(&tables, &serde_json::to_string(&record).unwrap()).await;

    let report = run_replay(&tables, &options(&tables)).await;
    assert_eq!(report.entries[0].outcome, Outcome::Replayed, "{report:?}");

    let stored = tables.stored_messages().await;
    let item = stored.iter().find(|item| item["message_id"] == "kept-1").unwrap();
    assert_eq!(item["position_offset"], json!(given[1].offset), "{item}");
    assert!(item["expires_at"].is_number(), "it keeps its retention: {item}");
    // Its new INSERT keeps that position; the next message takes the next one.
    let next = message("kept-2", "news", json!(2));
    tables.store.put_message(&next).await.unwrap();
    let again = tables
        .store
        .assign_positions("news", &[&replayed, &next], ttl, now)
        .await
        .unwrap();
    assert_eq!(again[0], given[1]);
    assert_eq!(again[1].offset, given[1].offset + 1);
}

#[tokio::test]
async fn a_dry_run_lists_what_it_would_replay_and_changes_nothing() {
    let tables = TestTables::create().await;
    let record = poison_record_for(&tables, &message("dry-1", "news", json!(1)), "100").await;
    send(&tables, &serde_json::to_string(&record).unwrap()).await;
    let before = stream_records(&tables).await.len();

    let report = run_replay(
        &tables,
        &ReplayOptions {
            dry_run: true,
            ..options(&tables)
        },
    )
    .await;

    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].outcome, Outcome::WouldReplay);
    assert_eq!(report.entries[0].message_ids, ["dry-1"]);
    assert_eq!(queue_depth(&tables).await, 1, "a dry run deletes nothing");
    assert!(tables.stored_messages().await.is_empty(), "a dry run writes nothing");
    assert_eq!(stream_records(&tables).await.len(), before);
    // And the message is still there for the real run.
    let report = run_replay(&tables, &options(&tables)).await;
    assert_eq!(report.entries[0].outcome, Outcome::Replayed);
    assert_eq!(queue_depth(&tables).await, 0);
}

#[tokio::test]
async fn what_cannot_be_replayed_stays_in_the_queue_with_the_reason() {
    let tables = TestTables::create().await;
    let arn = stream_arn(&tables).await;
    let connections_arn = arn.replace(&tables.config.messages_table, &tables.config.connections_table);
    // A producer reused an id the queue still holds a report of.
    tables
        .store
        .put_message(&message("reused-1", "news", json!("the new one")))
        .await
        .unwrap();
    let reused = poison_record_for(&tables, &message("reused-1", "news", json!("the old one")), "100").await;
    let (shard_id, _) = stream_records(&tables).await.remove(0);
    let batch = |arn: &str, shard: &str, start: &str| {
        json!({
            "requestContext": {"condition": "RecordAgeExceeded", "approximateInvokeCount": 1},
            "version": "1.0",
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": start,
                "endSequenceNumber": format!("{start}9"),
                "batchSize": 2,
                "streamArn": arn,
            },
        })
        .to_string()
    };
    let bodies = [
        "not json at all".to_owned(),
        json!({"kind": "something.else", "id": 1}).to_string(),
        json!({"kind": "airwave.poison_record", "reason": "no record"}).to_string(),
        batch(&connections_arn, &shard_id, "100"),
        // Sequence numbers the shard no longer (here: never) holds, as after
        // the stream's 24 hours.
        batch(&arn, &shard_id, "9100000000017454423009"),
        serde_json::to_string(&reused).unwrap(),
    ];
    for body in &bodies {
        send(&tables, body).await;
    }

    let report = run_replay(&tables, &options(&tables)).await;

    assert_eq!(report.entries.len(), bodies.len(), "{report:?}");
    assert_eq!(report.kept().count(), bodies.len(), "{report:?}");
    let reason_for = |needle: &str| {
        report
            .entries
            .iter()
            .find(|entry| kept_reason(&entry.outcome).contains(needle))
            .unwrap_or_else(|| panic!("no message stays because of {needle:?}: {report:#?}"))
    };
    assert_eq!(reason_for("not JSON").kind, Kind::Unknown);
    assert_eq!(reason_for("nor Lambda's on-failure record").kind, Kind::Unknown);
    assert_eq!(reason_for("does not decode").kind, Kind::PoisonRecord);
    assert_eq!(reason_for(&tables.config.connections_table).kind, Kind::LambdaBatch);
    assert_eq!(reason_for("no longer holds").kind, Kind::LambdaBatch);
    assert_eq!(reason_for("another message under id reused-1").kind, Kind::PoisonRecord);
    // Every one of them is still in the queue, and the producer's message is untouched.
    let mut left = queued(&tables).await;
    left.sort();
    let mut expected = bodies.to_vec();
    expected.sort();
    assert_eq!(left, expected);
    let stored = tables.stored_messages().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["payload"], "the new one");
}

#[tokio::test]
async fn max_bounds_the_messages_one_run_handles() {
    let tables = TestTables::create().await;
    for id in ["max-1", "max-2", "max-3"] {
        let record = poison_record_for(&tables, &message(id, "news", json!(id)), "100").await;
        send(&tables, &serde_json::to_string(&record).unwrap()).await;
    }

    let report = run_replay(
        &tables,
        &ReplayOptions {
            max: Some(2),
            ..options(&tables)
        },
    )
    .await;

    assert_eq!(report.entries.len(), 2);
    assert!(report.entries.iter().all(|entry| entry.outcome == Outcome::Replayed));
    assert_eq!(queue_depth(&tables).await, 1);
    assert_eq!(tables.stored_messages().await.len(), 2);
}

/// The ids of the messages `socket` receives until `count` have arrived, in
/// arrival order (a batch frame gives its messages in order).
async fn receive_ids(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    count: usize,
) -> Vec<(String, Option<u64>)> {
    let mut ids = Vec::new();
    tokio::time::timeout(GUARD, async {
        while ids.len() < count {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => {
                    if let Ok(airwave_protocol::Incoming::Messages(messages)) =
                        airwave_protocol::parse_server_frame(&text)
                    {
                        ids.extend(
                            messages
                                .into_iter()
                                .map(|message| (message.id, message.position.map(|position| position.offset))),
                        );
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {ids:?} arrived"));
    ids
}

#[tokio::test]
async fn a_long_message_id_and_a_poison_record_stall_nothing_behind_them() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let tables = &stack.tables;
    // Given a socket subscribed to two channels,
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    for channel in ["news", "sports"] {
        socket
            .send(Frame::text(format!(
                r#"{{"action":"subscribe","channel":"{channel}"}}"#
            )))
            .await
            .unwrap();
        let reply = tokio::time::timeout(GUARD, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(reply.to_text().unwrap().contains("subscribed"), "{reply:?}");
    }
    // when a producer writes a message with a 1,500-character id (longer than
    // a DynamoDB sort key may be), a message no one can ever receive (its
    // channel name is invalid), and ordinary messages behind them on the same
    // channel and on another,
    let long_id = "x".repeat(1_500);
    let writes = [
        message(&long_id, "news", json!(1)),
        message("bad-channel-1", "not a channel", json!(0)),
        message("news-2", "news", json!(2)),
        message("sports-1", "sports", json!(1)),
        message("news-3", "news", json!(3)),
    ];
    for write in &writes {
        tables.store.put_message(write).await.unwrap();
    }

    // then every deliverable message arrives, each channel's in order,
    let received = receive_ids(&mut socket, 4).await;
    let news: Vec<_> = received.iter().filter(|(id, _)| id != "sports-1").cloned().collect();
    assert_eq!(
        news,
        [
            (long_id.clone(), Some(1)),
            ("news-2".to_owned(), Some(2)),
            ("news-3".to_owned(), Some(3))
        ],
        "news in position order, the long id included"
    );
    assert!(received.iter().any(|(id, _)| id == "sports-1"), "{received:?}");
    // and the poison record is in the failure queue once, with its id and why.
    let bodies = queued(tables).await;
    let reports: Vec<PoisonRecord> = bodies
        .iter()
        .filter_map(|body| serde_json::from_str(body).ok())
        .collect();
    assert_eq!(reports.len(), 1, "{bodies:?}");
    assert_eq!(reports[0].message_id.as_deref(), Some("bad-channel-1"));
    assert!(reports[0].reason.contains("channel"), "{}", reports[0].reason);
    stack.shutdown().await;
}
