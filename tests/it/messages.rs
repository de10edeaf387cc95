//! The `$default` route through the real handler and the local DynamoDB: what a
//! client sends, what it gets back, and what changes in the tables.

use airwave_shared::handlers::{handle_message, ErrorCode, Reply};
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::ConnectionStore;
use airwave_tests::{message_event, TestTables};
use serde_json::json;

async fn send(tables: &TestTables, connection_id: &str, body: &str) -> Reply {
    let response = handle_message(&tables.store, None, &tables.config, message_event(connection_id, body))
        .await
        .unwrap();
    assert_eq!(response.status_code, 200);
    let Some(airwave_shared::aws_lambda_events::encodings::Body::Text(text)) = response.body else {
        panic!("a text reply, got {:?}", response.body);
    };
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("reply {text} is a Reply: {error}"))
}

/// The channel a `subscribed` reply is for, and the offset it starts after.
fn subscribed(reply: &Reply) -> (String, u64) {
    match reply {
        Reply::Subscribed {
            channel,
            position: Some(position),
            ..
        } => (channel.clone(), position.offset),
        other => panic!("expected subscribed with a position, got {other:?}"),
    }
}

fn error_code(reply: &Reply) -> ErrorCode {
    match reply {
        Reply::Error { code, .. } => code.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// A ping normally never reaches this function (the `ping` route's mock
/// answers it); one that does, on a stack deployed without that route, gets
/// the same pong and moves nothing: a record's expiry is set once, at `$connect`.
#[tokio::test]
async fn a_ping_that_reaches_default_is_answered_and_writes_nothing() {
    let tables = TestTables::create().await;
    tables.admit("alice=").await;
    send(&tables, "alice=", r#"{"action":"subscribe","channel":"prices"}"#).await;
    let before = tables.stored_connections().await;
    let subscriptions = tables.stored_subscriptions().await;

    assert_eq!(send(&tables, "alice=", r#"{"action":"ping"}"#).await, Reply::Pong);
    assert_eq!(
        send(&tables, "never-connected=", r#"{"action":"ping"}"#).await,
        Reply::Pong
    );

    assert_eq!(tables.stored_connections().await, before);
    assert_eq!(tables.stored_subscriptions().await, subscriptions);
    assert!(tables.store.get_connection("never-connected=").await.unwrap().is_none());
}

#[tokio::test]
async fn subscribe_and_unsubscribe_keep_the_connection_and_the_channel_index_in_step() {
    let tables = TestTables::create().await;
    tables.admit("alice=").await;
    tables.admit("bob=").await;

    assert_eq!(
        subscribed(&send(&tables, "alice=", r#"{"action":"subscribe","channel":"prices"}"#).await),
        ("prices".into(), 0)
    );
    send(&tables, "alice=", r#"{"action":"subscribe","channel":"news"}"#).await;
    send(&tables, "alice=", r#"{"action":"subscribe","channel":"news"}"#).await;
    send(&tables, "bob=", r#"{"action":"subscribe","channel":"news"}"#).await;
    assert_eq!(
        send(&tables, "alice=", r#"{"action":"unsubscribe","channel":"prices"}"#).await,
        Reply::Unsubscribed {
            channel: "prices".into()
        }
    );

    assert_eq!(
        tables.stored_subscriptions().await,
        vec![("news".into(), "alice=".into()), ("news".into(), "bob=".into())]
    );
    let alice = tables.store.get_connection("alice=").await.unwrap().unwrap();
    assert_eq!(alice.channels, vec!["news".to_owned()]);
}

#[tokio::test]
async fn disconnect_removes_the_connections_subscriptions_too() {
    let tables = TestTables::create().await;
    tables.admit("alice=").await;
    tables.admit("bob=").await;
    send(&tables, "alice=", r#"{"action":"subscribe","channel":"a"}"#).await;
    send(&tables, "alice=", r#"{"action":"subscribe","channel":"b"}"#).await;
    send(&tables, "bob=", r#"{"action":"subscribe","channel":"a"}"#).await;

    airwave_shared::handlers::handle_disconnect(&tables.store, airwave_tests::disconnect_event("alice="))
        .await
        .unwrap();

    assert_eq!(tables.stored_subscriptions().await, vec![("a".into(), "bob=".into())]);
}

#[tokio::test]
async fn a_connection_cannot_subscribe_past_its_channel_cap() {
    let mut tables = TestTables::create().await;
    tables.config.max_channels_per_connection = 3;
    tables.admit("alice=").await;
    for channel in ["one", "two", "three"] {
        let reply = send(
            &tables,
            "alice=",
            &json!({"action": "subscribe", "channel": channel}).to_string(),
        )
        .await;
        assert_eq!(subscribed(&reply).0, channel);
    }

    let fourth = send(&tables, "alice=", r#"{"action":"subscribe","channel":"four"}"#).await;
    let again = send(&tables, "alice=", r#"{"action":"subscribe","channel":"two"}"#).await;

    assert_eq!(error_code(&fourth), ErrorCode::ChannelLimit);
    assert_eq!(subscribed(&again).0, "two", "re-subscribing is not a new channel");
    assert_eq!(tables.stored_subscriptions().await.len(), 3);
}

#[tokio::test]
async fn bad_frames_get_a_clear_error_and_change_nothing() {
    let mut tables = TestTables::create().await;
    tables.config.allow_client_publish = true;
    // `alice=` connects without a token.
    tables.config.allow_anonymous_publish = true;
    tables.admit("alice=").await;
    let before = tables.store.get_connection("alice=").await.unwrap();
    let long_channel = "c".repeat(65);
    let huge = "x".repeat(130 * 1024);

    let cases = [
        ("{not json".to_owned(), ErrorCode::InvalidJson, "not JSON"),
        ("".to_owned(), ErrorCode::InvalidJson, "not JSON"),
        (r#"{"channel":"prices"}"#.to_owned(), ErrorCode::UnknownAction, "action"),
        (r#"{"action":"dance"}"#.to_owned(), ErrorCode::UnknownAction, "dance"),
        (
            r#"{"action":"subscribe"}"#.to_owned(),
            ErrorCode::InvalidRequest,
            "channel",
        ),
        (
            json!({"action": "subscribe", "channel": long_channel}).to_string(),
            ErrorCode::InvalidChannel,
            "65 bytes",
        ),
        (
            json!({"action": "subscribe", "channel": "has space"}).to_string(),
            ErrorCode::InvalidChannel,
            "invalid",
        ),
        (
            json!({"action": "publish", "channel": long_channel, "data": 1}).to_string(),
            ErrorCode::InvalidChannel,
            "65 bytes",
        ),
        (
            json!({"action": "publish", "channel": "prices", "data": huge}).to_string(),
            ErrorCode::MessageTooLarge,
            "131072",
        ),
    ];
    for (body, expected_code, hint) in cases {
        let reply = send(&tables, "alice=", &body).await;
        let Reply::Error { code, message } = &reply else {
            panic!("{body:.60}: expected an error, got {reply:?}");
        };
        assert_eq!(*code, expected_code, "{body:.60}");
        assert!(message.contains(hint), "{body:.60}: {message}");
    }

    assert_eq!(tables.store.get_connection("alice=").await.unwrap(), before);
    assert!(tables.stored_subscriptions().await.is_empty());
    assert!(tables.stored_messages().await.is_empty());
}

#[tokio::test]
async fn clients_may_not_publish_by_default() {
    let tables = TestTables::create().await;
    assert!(!tables.config.allow_client_publish);
    tables.admit("alice=").await;

    let reply = send(
        &tables,
        "alice=",
        r#"{"action":"publish","channel":"prices","data":{"p":1}}"#,
    )
    .await;

    assert_eq!(error_code(&reply), ErrorCode::PublishForbidden);
    assert!(tables.stored_messages().await.is_empty());
}

#[tokio::test]
async fn an_allowed_publish_writes_the_message_for_the_stream_to_deliver() {
    let mut tables = TestTables::create().await;
    tables.config.allow_client_publish = true;
    // `alice=` connects without a token.
    tables.config.allow_anonymous_publish = true;
    tables.admit("alice=").await;

    let reply = send(
        &tables,
        "alice=",
        r#"{"action":"publish","channel":"prices","data":{"symbol":"ABC","price":12.5}}"#,
    )
    .await;

    let Reply::Published { message_id: id } = reply else {
        panic!("expected published, got {reply:?}");
    };
    let messages = tables.stored_messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message_id"], json!(id));
    assert_eq!(messages[0]["channel"], json!("prices"));
    assert_eq!(messages[0]["payload"], json!({"symbol": "ABC", "price": 12.5}));
    assert_eq!(messages[0]["published_by"], json!("alice="));
    assert!(messages[0]["expires_at"].as_i64().unwrap() > epoch_seconds_now());
}
