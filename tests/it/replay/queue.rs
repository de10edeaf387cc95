//! The failure queue: a poison record reads back whole, what cannot be
//! replayed stays with its reason, and nothing stalls what follows it.

use airwave_gateway::GatewayOptions;
use airwave_replay::{Kind, Outcome, ReplayOptions};
use airwave_shared::failures::FailureSink;
use airwave_shared::failures::{PoisonRecord, SqsFailureQueue};
use airwave_shared::message::MessageRecord;
use airwave_shared::Error;
use airwave_shared::MessageStore;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{
    kept_reason, options, poison_record_for, queue_depth, queued, run_replay, send, stream_arn, stream_records, GUARD,
};

#[tokio::test]
async fn a_poison_record_reported_to_the_failure_queue_reads_back_whole() {
    let tables = TestTables::create().await;
    let record = poison_record_for(
        &tables,
        &MessageRecord::to_channel("poison-1", "news", json!({"n": 1})),
        "100",
    )
    .await;

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
async fn what_cannot_be_replayed_stays_in_the_queue_with_the_reason() {
    let tables = TestTables::create().await;
    let arn = stream_arn(&tables).await;
    let connections_arn = arn.replace(&tables.config.messages_table, &tables.config.connections_table);
    // A producer reused an id the queue still holds a report of.
    tables
        .store
        .put_message(&MessageRecord::to_channel("reused-1", "news", json!("the new one")))
        .await
        .unwrap();
    let reused = poison_record_for(
        &tables,
        &MessageRecord::to_channel("reused-1", "news", json!("the old one")),
        "100",
    )
    .await;
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
        let record = poison_record_for(&tables, &MessageRecord::to_channel(id, "news", json!(id)), "100").await;
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
        MessageRecord::to_channel(&long_id, "news", json!(1)),
        MessageRecord::to_channel("bad-channel-1", "not a channel", json!(0)),
        MessageRecord::to_channel("news-2", "news", json!(2)),
        MessageRecord::to_channel("sports-1", "sports", json!(1)),
        MessageRecord::to_channel("news-3", "news", json!(3)),
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
