//! No gaps across reconnects, over real sockets through the local gateway and
//! the real functions: positions assigned once, history, recovery on
//! subscribe, and one order for every subscriber of a channel.

use std::sync::atomic::Ordering;
use std::time::Duration;

use airwave_client::{Backoff, Client, ClientConfig, Event, Events, Message};
use airwave_gateway::GatewayOptions;
use airwave_protocol::{parse_server_frame, ClientFrame, Incoming, Position, Reply, Request};
use airwave_shared::failures::RecordedFailures;
use airwave_shared::handlers::handle_stream_batch;
use airwave_shared::history::ChannelHistory;
use airwave_shared::message::MessageRecord;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{DynamoStore, MessageStore};
use airwave_tests::stack::LocalStack;
use airwave_tests::{insert_record, stream_event, TestTables};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Generous: the tests of this file share one local DynamoDB that applies one
/// request at a time, and CI machines are slow. A passing test never waits it out.
const GUARD: Duration = Duration::from_secs(120);

async fn stack_with(configure: impl FnOnce(&mut airwave_shared::Config)) -> LocalStack {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        configure(config);
    })
    .await;
    LocalStack::start(tables, GatewayOptions::default()).await
}

fn message(id: &str, channel: &str, n: u64) -> MessageRecord {
    MessageRecord::to_channel(id, channel, json!({ "n": n }))
}

/// A client that reconnects quickly, so the tests do not wait on backoff.
fn quick_client(url: &str) -> (Client, Events) {
    let config = ClientConfig::new(url)
        .unwrap()
        // Enough attempts to outlast a slow machine while `$connect` refuses.
        .with_backoff(Backoff::new(
            Duration::from_millis(200),
            2.0,
            Duration::from_secs(1),
            200,
        ))
        // A slow local DynamoDB must not look like a dead socket.
        .with_request_timeout(Duration::from_secs(60))
        .with_rng_seed(7);
    Client::new(config)
}

/// The next `count` messages, noting any failed recovery.
async fn collect(events: &mut Events, count: usize) -> (Vec<Message>, Vec<String>) {
    let mut messages = Vec::new();
    let mut failed = Vec::new();
    tokio::time::timeout(GUARD, async {
        while messages.len() < count {
            match events.recv().await {
                Some(Event::Message(message)) => messages.push(message),
                Some(Event::RecoveryFailed { channel }) => failed.push(channel),
                Some(Event::Failed(error)) => panic!("the client gave up: {error}"),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", messages.len()));
    (messages, failed)
}

fn offsets(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|message| {
            message
                .position
                .as_ref()
                .expect("a channel message has a position")
                .offset
        })
        .collect()
}

/// Sends one request on a raw socket and reads frames until its reply.
async fn request(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    request: Request,
) -> Reply {
    let id = airwave_protocol::RequestId::Text("r".into());
    socket
        .send(Frame::text(ClientFrame::new(Some(id.clone()), request).to_text()))
        .await
        .unwrap();
    tokio::time::timeout(GUARD, async {
        loop {
            let frame = socket.next().await.unwrap().unwrap();
            if let Ok(Incoming::Reply { id: Some(got), reply }) = parse_server_frame(frame.to_text().unwrap()) {
                if got == id {
                    return reply;
                }
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_subscriber_cut_off_by_the_server_ends_with_all_fifty_messages_in_order_once() {
    let stack = stack_with(|_| {}).await;
    let (client, mut events) = quick_client(&stack.ws_url());
    tokio::time::timeout(GUARD, client.subscribe("feed"))
        .await
        .unwrap()
        .unwrap();
    let ids = stack.connection_ids();
    assert_eq!(ids.len(), 1);
    // Subscribing to a channel nobody has published to wrote no channel
    // state: the client holds the not-started position and recovers from it.
    assert!(
        stack
            .tables
            .scan_all(&stack.tables.config.history.table)
            .await
            .is_empty(),
        "a subscribe wrote to the history table"
    );

    // When the server closes the socket and 50 messages are published and
    // broadcast while the client cannot get back in.
    stack.functions.refuse_connects.store(true, Ordering::SeqCst);
    stack.close_connection(&ids[0]).await;
    for n in 1..=50 {
        stack
            .tables
            .store
            .put_message(&message(&format!("feed-{n}"), "feed", n))
            .await
            .unwrap();
    }
    tokio::time::timeout(GUARD, async {
        while stack
            .tables
            .store
            .channel_head("feed", epoch_seconds_now())
            .await
            .unwrap()
            .map_or(0, |head| head.offset)
            < 50
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stream-processor handles all 50");
    assert!(stack.connection_ids().is_empty(), "the client is still away");
    stack.functions.refuse_connects.store(false, Ordering::SeqCst);

    // Then it reconnects and has every one, in position order, each once.
    let (messages, failed) = collect(&mut events, 50).await;
    assert!(failed.is_empty(), "recovery failed for {failed:?}");
    assert_eq!(offsets(&messages), (1..=50).collect::<Vec<_>>());
    assert_eq!(client.duplicates_dropped(), 0);
    let names: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    assert_eq!(names, (1..=50).map(|n| format!("feed-{n}")).collect::<Vec<_>>());
    assert!(
        stack.connection_ids().iter().all(|id| *id != ids[0]),
        "a new socket carried them"
    );
    // Nothing more is coming: a further message is the 51st.
    stack
        .tables
        .store
        .put_message(&message("feed-51", "feed", 51))
        .await
        .unwrap();
    let (next, _) = collect(&mut events, 1).await;
    assert_eq!(offsets(&next), vec![51]);
    client.close().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_client_back_after_the_retention_window_or_an_epoch_change_is_told_recovery_failed() {
    let stack = stack_with(|config| config.history.size = 5).await;
    let store = &stack.tables.store;
    let ttl = stack.tables.config.history.ttl_seconds;
    let now = epoch_seconds_now();
    let mut head = Position::new("", 0);
    for n in 1..=10 {
        head = store
            .assign_position("desk", &message(&format!("new-{n}"), "desk", n), ttl, now)
            .await
            .unwrap();
    }
    assert_eq!(head.offset, 10);
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    let subscribe = |since: Position| Request::Subscribe {
        channel: "desk".into(),
        since: Some(since),
    };
    let recovered = |reply: &Reply| match reply {
        Reply::Subscribed {
            recovered,
            publications,
            ..
        } => (*recovered, publications.len()),
        other => panic!("expected subscribed, got {other:?}"),
    };

    // Within the window: recovered, exactly what was missed.
    let reply = request(&mut socket, subscribe(Position::new(&head.epoch, 6))).await;
    assert_eq!(recovered(&reply), (Some(true), 4));
    // More missed than the history keeps (5).
    let reply = request(&mut socket, subscribe(Position::new(&head.epoch, 4))).await;
    assert_eq!(recovered(&reply), (Some(false), 0));
    // Exactly as many as the history keeps.
    let reply = request(&mut socket, subscribe(Position::new(&head.epoch, 5))).await;
    assert_eq!(recovered(&reply), (Some(true), 5));
    // Another epoch: the channel's history was reset since.
    let reply = request(&mut socket, subscribe(Position::new("gone-epoch", 9))).await;
    assert_eq!(recovered(&reply), (Some(false), 0));
    // Either way the reply says where to go on from.
    let Reply::Subscribed {
        position: Some(position),
        ..
    } = reply
    else {
        panic!("subscribed carries the head");
    };
    assert_eq!(position, head);
    stack.shutdown().await;
}

#[tokio::test]
async fn messages_past_the_history_time_are_not_recovered() {
    let stack = stack_with(|_| {}).await;
    let store = &stack.tables.store;
    let ttl = stack.tables.config.history.ttl_seconds;
    let now = epoch_seconds_now();
    let first = store
        .assign_position("desk", &message("m-1", "desk", 1), ttl, now - ttl as i64 - 60)
        .await
        .unwrap();
    store
        .assign_position("desk", &message("m-2", "desk", 2), ttl, now - ttl as i64 - 60)
        .await
        .unwrap();
    let third = store
        .assign_position("desk", &message("m-3", "desk", 3), ttl, now)
        .await
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    let reply = request(
        &mut socket,
        Request::Subscribe {
            channel: "desk".into(),
            since: Some(first),
        },
    )
    .await;
    assert!(
        matches!(reply, Reply::Subscribed { recovered: Some(false), ref publications, .. } if publications.is_empty()),
        "{reply:?}"
    );
    let reply = request(
        &mut socket,
        Request::Subscribe {
            channel: "desk".into(),
            since: Some(Position::new(&third.epoch, 2)),
        },
    )
    .await;
    match reply {
        Reply::Subscribed {
            recovered: Some(true),
            publications,
            ..
        } => assert_eq!(publications.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["m-3"]),
        other => panic!("the unexpired message is recovered: {other:?}"),
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_record_retried_after_its_position_was_assigned_keeps_that_position() {
    let stack = stack_with(|_| {}).await;
    let (client, mut events) = quick_client(&stack.ws_url());
    tokio::time::timeout(GUARD, client.subscribe("orders"))
        .await
        .unwrap()
        .unwrap();
    let fanout = stack.tables.fanout(&stack.gateway.management_endpoint(), 4);
    // The claim lives on the message's item, so the item is written first, to
    // a messages table the stack does not stream from: these calls stand in
    // for the stream-processor.
    let unstreamed = TestTables::create().await;
    let mut config = stack.tables.config.clone();
    config.messages_table = unstreamed.config.messages_table.clone();
    let store = DynamoStore::new(stack.tables.dynamodb.clone(), &config);
    store.put_message(&message("order-1", "orders", 1)).await.unwrap();
    // A store whose subscriptions table is missing: the position is assigned,
    // then listing the subscribers fails, so the record is reported for retry.
    let mut broken = config.clone();
    broken.subscriptions_table = "missing-subscriptions-table".into();
    let broken_store = DynamoStore::new(stack.tables.dynamodb.clone(), &broken);
    let record = insert_record(
        "700",
        json!({
            "message_id": {"S": "order-1"},
            "channel": {"S": "orders"},
            "payload": {"M": {"n": {"N": "1"}}},
        }),
    );
    let history = &stack.tables.config.history;
    let failed = handle_stream_batch(
        &broken_store,
        history,
        &fanout,
        &RecordedFailures::default(),
        stream_event(vec![record.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(failed.batch_item_failures.len(), 1, "the record is retried");

    // Lambda retries it (twice, as a retry after a timeout can): one delivery, one position.
    for _ in 0..2 {
        let retried = handle_stream_batch(
            &store,
            history,
            &fanout,
            &RecordedFailures::default(),
            stream_event(vec![record.clone()]),
        )
        .await
        .unwrap();
        assert!(retried.batch_item_failures.is_empty());
    }
    stack
        .tables
        .store
        .put_message(&message("order-2", "orders", 2))
        .await
        .unwrap();
    let (messages, _) = collect(&mut events, 2).await;
    assert_eq!(
        messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["order-1", "order-2"]
    );
    assert_eq!(
        offsets(&messages),
        vec![1, 2],
        "the retry kept offset 1; no offset was spent twice"
    );
    client.close().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn two_producers_writing_200_messages_at_once_give_every_subscriber_one_sequence() {
    let stack = stack_with(|_| {}).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let (client, events) = quick_client(&stack.ws_url());
        tokio::time::timeout(GUARD, client.subscribe("race"))
            .await
            .unwrap()
            .unwrap();
        subscribers.push((client, events));
    }
    let produce = |producer: &'static str| {
        let store = stack.tables.store.clone();
        async move {
            for n in 0..100 {
                store
                    .put_message(&message(&format!("{producer}-{n}"), "race", n))
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(produce("a"), produce("b"));

    let mut sequences = Vec::new();
    for (client, events) in &mut subscribers {
        let (messages, failed) = collect(events, 200).await;
        assert!(failed.is_empty());
        assert_eq!(
            offsets(&messages),
            (1..=200).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        sequences.push(messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
        client.close().await;
    }
    assert_eq!(sequences[0], sequences[1]);
    assert_eq!(sequences[1], sequences[2]);
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_assignments_in_one_channel_take_every_offset_exactly_once() {
    // Several stream shards assigning in one channel at once, and a record
    // delivered twice: offsets 1..=100 with no gap and no duplicate.
    let tables = TestTables::create().await;
    let ttl = tables.config.history.ttl_seconds;
    let assign = |shard: usize| {
        let store = tables.store.clone();
        async move {
            let mut positions = Vec::new();
            for n in 0..25 {
                let message = message(&format!("s{shard}-{n}"), "hot", n);
                // A stream record's item is there: the claim is written on it.
                store.put_message(&message).await.unwrap();
                let position = store
                    .assign_position("hot", &message, ttl, epoch_seconds_now())
                    .await
                    .unwrap();
                let again = store
                    .assign_position("hot", &message, ttl, epoch_seconds_now())
                    .await
                    .unwrap();
                assert_eq!(position, again, "a second delivery keeps the position");
                positions.push(position);
            }
            positions
        }
    };
    let (a, b, c, d) = tokio::join!(assign(0), assign(1), assign(2), assign(3));
    let mut all: Vec<Position> = [a, b, c, d].concat();
    assert!(all.iter().all(|p| p.epoch == all[0].epoch));
    all.sort_by_key(|p| p.offset);
    assert_eq!(
        all.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    let head = tables.store.channel_head("hot", epoch_seconds_now()).await.unwrap();
    assert_eq!(head.map(|head| head.offset), Some(100));
}
