//! What a replay writes back: a poison record or a batch Lambda gave up on is
//! written again and broadcast, keeping its position; a dry run changes nothing.

use airwave_shared::message::MessageRecord;
use std::time::Duration;

use airwave_gateway::streams::{on_failure_record, record_to_json};
use airwave_gateway::GatewayOptions;
use airwave_replay::{Kind, Outcome, ReplayOptions};
use airwave_shared::history::ChannelHistory;
use airwave_shared::MessageStore;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{changes, options, poison_record_for, queue_depth, run_replay, send, stream_arn, stream_records, GUARD};

#[tokio::test]
async fn a_replayed_poison_record_is_broadcast_again_to_a_subscribed_socket() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let tables = &stack.tables;

    // Given a message the stream-processor went through (it sets the expiry
    // once it has sent it) before anyone subscribed to its channel,
    let original = MessageRecord::to_channel("replayed-1", "news", json!({"headline": "again"}));
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
            .put_message(&MessageRecord::to_channel(id, "news", json!({"id": id})))
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
    let first = MessageRecord::to_channel("kept-0", "news", json!(0));
    let replayed = MessageRecord::to_channel("kept-1", "news", json!(1));
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
    let next = MessageRecord::to_channel("kept-2", "news", json!(2));
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
    let record = poison_record_for(&tables, &MessageRecord::to_channel("dry-1", "news", json!(1)), "100").await;
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
