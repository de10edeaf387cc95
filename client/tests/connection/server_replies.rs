//! What the server says back: eviction, closing frames, error replies, and messages to the user.

use std::time::Duration;

use airwave_client::{Client, Error, Event, Reply, Request};
use serde_json::json;

use crate::next_connection_event;
use crate::support::{within, TestServer};

#[tokio::test]
async fn an_evicted_client_stays_disconnected_until_connect_is_called() {
    let mut server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    within("subscribe", client.subscribe("alpha")).await.unwrap();

    server.close_all_with("evicted", "over the per-user cap");
    match next_connection_event(&mut events).await {
        Event::Evicted { message } => assert_eq!(message, "over the per-user cap"),
        other => panic!("expected Evicted, got {other:?}"),
    }
    // Generous: the test backoff (at most 40 ms a retry) would have reconnected long before.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.accepted(), 1);
    assert!(events.try_recv().is_err(), "no reconnect was attempted");
    let error = within("stats", client.stats()).await.unwrap_err();
    assert!(matches!(&error, Error::Evicted { .. }), "{error:?}");
    assert!(error.to_string().contains("evicted"), "{error}");
    assert_eq!(server.accepted(), 1, "a request does not reconnect either");

    // Connecting on purpose does, and brings the channel back.
    within("connect", client.connect()).await.unwrap();
    let frame = server.wait_frame(|f| f.connection == 2).await;
    assert_eq!((frame.action(), frame.channel()), ("subscribe", "alpha"));
    within("stats", client.stats()).await.unwrap();
}

#[tokio::test]
async fn a_closing_frame_for_another_reason_reconnects_as_after_any_close() {
    let server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    server.close_all_with("maintenance", "deploying");
    match next_connection_event(&mut events).await {
        Event::Disconnected { reason } => assert!(reason.contains("maintenance"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(matches!(next_connection_event(&mut events).await, Event::Reconnected));
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 2);
}

#[tokio::test]
async fn a_publish_over_the_rate_limit_fails_with_rate_limited() {
    let server = TestServer::start().await;
    server.script(
        "publish",
        Some(json!({"type": "error", "code": "rate_limited", "message": "over 10 a second"})),
    );
    let (client, _events) = Client::new(server.config());
    let error = within("publish", client.publish(Some("c"), json!(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Server { code, message } if code == "rate_limited" && message == "over 10 a second"),
        "{error:?}"
    );
    assert_eq!(error.code(), Some("rate_limited"));
    assert!(!error.is_permanent());
    // Not a reason to drop the connection: the next publish goes through on it.
    within("publish", client.publish(Some("c"), json!(2))).await.unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_message_addressed_to_the_user_is_delivered_without_waiting_for_a_channel() {
    let server = TestServer::start().await;
    server.script(
        "subscribe",
        Some(json!({"type": "subscribed", "channel": "c", "position": {"epoch": "e", "offset": 4}})),
    );
    let (client, mut events) = Client::new(server.config());
    within("subscribe", client.subscribe("c")).await.unwrap();
    // Offset 6 waits for 5; the message to the user does not wait with it.
    server.push(
        json!({"type": "message", "id": "m6", "channel": "c", "data": 6, "position": {"epoch": "e", "offset": 6}}),
    );
    server.push(json!({"type": "message", "id": "u1", "data": {"hello": "alice"}, "to_user": "alice"}));
    server.push(
        json!({"type": "message", "id": "m5", "channel": "c", "data": 5, "position": {"epoch": "e", "offset": 5}}),
    );
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        if let Event::Message(message) = within("a message", events.recv()).await.expect("events closed") {
            delivered.push(message);
        }
    }
    let ids: Vec<&str> = delivered.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["u1", "m5", "m6"]);
    assert_eq!(delivered[0].to_user.as_deref(), Some("alice"));
    assert_eq!(delivered[0].data, json!({"hello": "alice"}));
}

#[tokio::test]
async fn error_replies_become_server_errors() {
    let server = TestServer::start().await;
    server.script(
        "publish",
        Some(json!({"type": "error", "code": "publish_forbidden", "message": "no"})),
    );
    server.script(
        "subscribe",
        Some(json!({"type": "error", "code": "invalid_channel", "message": "bad name"})),
    );
    let (client, _events) = Client::new(server.config());

    let error = within("publish", client.publish(Some("c"), json!(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Server { code, .. } if code == "publish_forbidden"),
        "{error:?}"
    );
    let error = within("subscribe", client.subscribe("bad name")).await.unwrap_err();
    assert!(
        matches!(&error, Error::Server { code, .. } if code == "invalid_channel"),
        "{error:?}"
    );
    // A refused channel is not subscribed again on reconnect.
    assert!(client.subscriptions().is_empty());
    // The raw request API hands an error reply over as it came, and the connection stays usable.
    server.script(
        "publish",
        Some(json!({"type": "error", "code": "message_too_large", "message": "big"})),
    );
    let reply = within(
        "publish",
        client.request(Request::Publish {
            channel: None,
            data: json!(2),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        Reply::Error {
            code: airwave_client::ErrorCode::MessageTooLarge,
            message: "big".into()
        }
    );
    let id = within("publish", client.publish(None, json!(3))).await.unwrap();
    assert!(id.starts_with('p'), "{id}");
    assert_eq!(server.accepted(), 1);
}
