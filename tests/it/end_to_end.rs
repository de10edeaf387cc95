//! The whole stack over real sockets: the local gateway built from
//! `template.yaml`, the real handlers (called in-process), tables created from
//! the template on the local DynamoDB, and its stream driving the
//! stream-processor. Given 50 subscribed clients, when a producer writes a
//! message, then exactly its channel's subscribers receive it, a client that
//! vanished without a `$disconnect` is pruned, and the door refuses what API
//! Gateway and the connect function would refuse.

use std::time::Duration;

use airwave_client::{Client, ClientConfig, Event};
use airwave_gateway::GatewayOptions;
use airwave_shared::config::JwtSecret;
use airwave_shared::message::MessageRecord;
use airwave_shared::MessageStore;
use airwave_tests::stack::LocalStack;
use airwave_tests::TestTables;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as Frame};

const SECRET: &str = "end-to-end-secret-end-to-end-secret";
const CLIENTS: usize = 50;
/// Attempts one IP may make in the window; everything here comes from 127.0.0.1.
const ATTEMPTS_PER_IP: u64 = 60;
const GUARD: Duration = Duration::from_secs(20);

fn token_for(user: &str) -> String {
    airwave_tests::token_for(SECRET, user)
}

async fn next_message(events: &mut airwave_client::Events) -> Option<airwave_client::Message> {
    loop {
        match events.recv().await? {
            Event::Message(message) => return Some(message),
            _ => continue,
        }
    }
}

/// The HTTP status a handshake was refused with, if it was.
async fn handshake_status(url: &str) -> Option<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(error) => panic!("handshake failed without an HTTP answer: {error}"),
    }
}

#[tokio::test]
async fn fifty_clients_over_real_sockets_get_exactly_their_channels_messages() {
    // The throttle counts per fixed window: stay clear of a window's end.
    let now_ms = airwave_shared::time::epoch_millis_now();
    if now_ms % 3_600_000 > 3_540_000 {
        tokio::time::sleep(Duration::from_millis((3_600_000 - now_ms % 3_600_000) as u64 + 100)).await;
    }
    let tables = TestTables::create_with(|config| {
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.admission.attempts_per_ip = ATTEMPTS_PER_IP;
        config.admission.window_seconds = 3_600;
    })
    .await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let (tables, functions) = (&stack.tables, &stack.functions);
    let url = stack.ws_url();

    // Given 50 clients, even ones on "red" and odd ones on "blue".
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let config = ClientConfig::new(&url)
            .unwrap()
            .with_token(token_for(&format!("user-{i}")));
        let (client, events) = Client::new(config);
        let channel = if i % 2 == 0 { "red" } else { "blue" };
        tokio::time::timeout(GUARD, client.subscribe(channel))
            .await
            .unwrap()
            .unwrap();
        clients.push((channel, client, events));
    }
    // And one red subscriber whose socket dies without a $disconnect.
    let vanishing_url = format!("{url}?token={}&vanish=1", token_for("vanishing"));
    let (mut vanishing, _) = tokio_tungstenite::connect_async(&vanishing_url).await.unwrap();
    vanishing
        .send(Frame::text(r#"{"action":"subscribe","channel":"red"}"#))
        .await
        .unwrap();
    let reply = vanishing.next().await.unwrap().unwrap();
    assert!(reply.to_text().unwrap().contains("subscribed"), "{reply:?}");
    let vanished_id = functions.vanished_connection().unwrap();
    drop(vanishing);
    assert_eq!(tables.stored_connection_ids().await.len(), CLIENTS + 1);

    // When a producer writes a message for "red" to the messages table.
    let message = MessageRecord {
        message_id: "e2e-red-1".to_owned(),
        channel: Some("red".to_owned()),
        payload: json!({"price": 12.5}),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
        written_at_ms: None,
    };
    tables.store.put_message(&message).await.unwrap();

    // Then every red client receives it once, through the stream, the
    // stream-processor, the Management API and its own socket.
    for (channel, _, events) in clients.iter_mut().filter(|(channel, _, _)| *channel == "red") {
        let received = tokio::time::timeout(GUARD, next_message(events))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received.id, "e2e-red-1", "{channel}");
        assert_eq!(received.data, json!({"price": 12.5}));
    }
    // The vanished connection answered 410 and its record is gone.
    tokio::time::timeout(GUARD, async {
        while tables.stored_connection_ids().await.contains(&vanished_id) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the vanished connection is pruned");
    // A second message to everyone reaches blue clients first-hand and shows
    // that red clients got nothing twice.
    let everyone = MessageRecord {
        message_id: "e2e-all-2".to_owned(),
        channel: None,
        ..message.clone()
    };
    tables.store.put_message(&everyone).await.unwrap();
    for (channel, _, events) in clients.iter_mut() {
        let received = tokio::time::timeout(GUARD, next_message(events))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received.id, "e2e-all-2", "a {channel} client got something else first");
    }

    // A frame over API Gateway's 32 KB is refused by closing with 1009.
    let (mut oversized, _) = tokio_tungstenite::connect_async(format!("{url}?token={}", token_for("big")))
        .await
        .unwrap();
    oversized
        .send(Frame::text(format!(
            r#"{{"action":"ping","pad":"{}"}}"#,
            "x".repeat(40 * 1024)
        )))
        .await
        .unwrap();
    let close = tokio::time::timeout(GUARD, async {
        loop {
            match oversized.next().await {
                Some(Ok(Frame::Close(frame))) => return frame.map(|frame| frame.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(CloseCode::Size));

    // Without a token the connect function answers 401, and so does the handshake.
    assert_eq!(handshake_status(&url).await, Some(401));
    // 52 attempts were counted so far (50 clients, the vanished one, the oversized
    // one, none for the 401): the next 8 are admitted, then the throttle answers 429.
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(handshake_status(&format!("{url}?token={}", token_for(&format!("late-{i}")))).await);
    }
    assert_eq!(statuses, [vec![None; 8], vec![Some(429); 2]].concat());

    stack.shutdown().await;
}
