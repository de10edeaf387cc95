//! A connection whose record is removed behind Airwave's back (an operator's
//! delete, a removal cut short), over a real socket through the local gateway,
//! the connections table's stream and the real reaper: its leftover
//! subscriptions go, its socket gets a `closing` frame and is closed, and
//! nothing more is posted to it. A client that closes its own socket leaves
//! nothing for the reaper to do.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_protocol::{parse_server_frame, ClientFrame, ErrorCode, Incoming, Reply, Request, RequestId};
use airwave_shared::handlers::RECORD_REMOVED_MESSAGE;
use airwave_shared::message::MessageRecord;
use airwave_shared::MessageStore;
use airwave_tests::stack::LocalStack;
use airwave_tests::{read_until_closed, TestTables};
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Generous for a slow machine; the stream and the reaper's batching are far quicker.
const GUARD: Duration = Duration::from_secs(60);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribed_socket(stack: &LocalStack, channel: &str) -> (Socket, String) {
    let before = stack.connection_ids();
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    let id = RequestId::Text("s".into());
    let subscribe = Request::Subscribe {
        channel: channel.to_owned(),
        since: None,
    };
    socket
        .send(Frame::text(ClientFrame::new(Some(id.clone()), subscribe).to_text()))
        .await
        .unwrap();
    tokio::time::timeout(GUARD, async {
        loop {
            let frame = socket.next().await.unwrap().unwrap();
            if let Ok(Incoming::Reply { id: Some(got), reply }) = parse_server_frame(frame.to_text().unwrap_or("")) {
                assert_eq!(got, id);
                assert!(matches!(reply, Reply::Subscribed { .. }), "{reply:?}");
                return;
            }
        }
    })
    .await
    .expect("the subscribe is answered");
    let connection_id = stack
        .connection_ids()
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the new socket's id");
    (socket, connection_id)
}

async fn subscription_items(stack: &LocalStack, connection_id: &str) -> usize {
    stack
        .tables
        .stored_subscriptions()
        .await
        .iter()
        .filter(|(_, id)| id == connection_id)
        .count()
}

#[tokio::test]
async fn a_record_deleted_by_hand_closes_its_socket_with_a_reason_and_takes_its_subscriptions() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let (mut socket, connection_id) = subscribed_socket(&stack, "news").await;
    let (mut bystander, bystander_id) = subscribed_socket(&stack, "news").await;
    assert_eq!(subscription_items(&stack, &connection_id).await, 1);

    // When an operator deletes the record (not the subscription) by hand.
    stack
        .tables
        .dynamodb
        .delete_item()
        .table_name(&stack.tables.config.connections_table)
        .key("connection_id", AttributeValue::S(connection_id.clone()))
        .send()
        .await
        .unwrap();

    // Then the socket is told why and closed, and its subscription is gone.
    let closing = tokio::time::timeout(GUARD, read_until_closed(&mut socket))
        .await
        .expect("the socket is closed");
    assert_eq!(
        closing,
        Some((ErrorCode::UnknownConnection, RECORD_REMOVED_MESSAGE.to_owned()))
    );
    assert_eq!(subscription_items(&stack, &connection_id).await, 0);
    tokio::time::timeout(GUARD, async {
        while stack.connection_ids().contains(&connection_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway lets go of the socket");
    assert_eq!(stack.gateway.management_closes(), 1);

    // And the channel's other subscriber is untouched: it gets the next message.
    let message = MessageRecord {
        message_id: "after-the-delete".into(),
        channel: Some("news".into()),
        payload: json!({"n": 1}),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: None,
        written_at_ms: None,
    };
    stack.tables.store.put_message(&message).await.unwrap();
    let delivered = tokio::time::timeout(GUARD, async {
        loop {
            let frame = bystander.next().await.unwrap().unwrap();
            if let Ok(Incoming::Messages(messages)) = parse_server_frame(frame.to_text().unwrap_or("")) {
                return messages.into_iter().map(|message| message.id).collect::<Vec<_>>();
            }
        }
    })
    .await
    .expect("the bystander gets the message");
    assert_eq!(delivered, ["after-the-delete"]);
    assert_eq!(subscription_items(&stack, &bystander_id).await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_socket_closed_by_its_client_leaves_nothing_for_the_reaper_to_close() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;
    let (mut socket, connection_id) = subscribed_socket(&stack, "news").await;
    socket.close(None).await.unwrap();

    // `$disconnect` removes the record and then its subscription; the
    // reaper sees the record's delete, finds nothing left, and closes nothing.
    tokio::time::timeout(GUARD, async {
        while subscription_items(&stack, &connection_id).await > 0 || stack.functions.invocations("reaper") == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the disconnect is cleaned up and the reaper sees its delete");
    assert_eq!(stack.functions.failures_of("reaper"), 0);
    assert_eq!(stack.gateway.management_closes(), 0, "nothing was closed by the server");
    stack.shutdown().await;
}
