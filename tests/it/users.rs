//! What a user's token and identity mean for live connections, over real
//! sockets through the local gateway and the real functions: a connection
//! past its token's expiry stops receiving and is closed, a message addressed
//! to a user reaches all of that user's sockets and no other, and a full
//! per-user cap in eviction mode closes the user's oldest connection.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_protocol::{parse_server_frame, ErrorCode, Incoming, MessageFrame, Reply};
use airwave_shared::config::{JwtSecret, UserCapMode};
use airwave_shared::message::MessageRecord;
use airwave_shared::time::epoch_seconds_now;
use airwave_shared::{ConnectionStore, MessageStore};
use airwave_tests::stack::LocalStack;
use airwave_tests::{signed_token, TestTables};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "users-secret-users-secret-users-secret";
/// Generous, for a slow shared local DynamoDB; a passing test never waits it out.
const GUARD: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn stack_with(configure: impl FnOnce(&mut airwave_shared::Config)) -> LocalStack {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        configure(config);
    })
    .await;
    LocalStack::start(tables, GatewayOptions::default()).await
}

fn token(user: &str, exp: i64) -> String {
    signed_token(SECRET, &json!({"sub": user, "exp": exp}))
}

async fn open_socket(stack: &LocalStack, token: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", stack.ws_url()))
        .await
        .expect("the handshake is accepted");
    socket
}

/// Opens a socket with `token` and answers it with its connection id.
async fn open(stack: &LocalStack, token: &str) -> (Socket, String) {
    let before = stack.connection_ids();
    let socket = open_socket(stack, token).await;
    let id = stack
        .connection_ids()
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the gateway lists the new connection");
    (socket, id)
}

/// The next protocol frame, or `None` once the socket is closed.
async fn next(socket: &mut Socket) -> Option<Incoming> {
    tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => return Some(parse_server_frame(&text).expect("a protocol frame")),
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("a frame or the close arrives")
}

async fn request(socket: &mut Socket, frame: Value) -> Reply {
    socket.send(Frame::text(frame.to_string())).await.expect("send");
    match next(socket).await {
        Some(Incoming::Reply { reply, .. }) => reply,
        other => panic!("expected a reply to {frame}, got {other:?}"),
    }
}

async fn subscribe(socket: &mut Socket, channel: &str) {
    let reply = request(socket, json!({"action": "subscribe", "channel": channel})).await;
    assert!(matches!(reply, Reply::Subscribed { .. }), "{reply:?}");
}

async fn next_message(socket: &mut Socket) -> MessageFrame {
    match next(socket).await {
        Some(Incoming::Messages(mut messages)) if messages.len() == 1 => messages.remove(0),
        other => panic!("expected one message, got {other:?}"),
    }
}

fn message(id: &str, channel: Option<&str>, to_user: Option<&str>) -> MessageRecord {
    MessageRecord {
        message_id: id.to_owned(),
        channel: channel.map(str::to_owned),
        payload: json!({ "id": id }),
        expires_at: None,
        published_by: None,
        published_by_user: None,
        to_user: to_user.map(str::to_owned),
        written_at_ms: None,
    }
}

fn closing_code(frame: Option<Incoming>) -> ErrorCode {
    match frame {
        Some(Incoming::Closing { code, .. }) => code,
        other => panic!("expected a closing frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_past_its_tokens_expiry_stops_receiving_and_is_closed() {
    let stack = stack_with(|_| {}).await;
    // Accepted within the 30 s leeway, so each expires about 12 s from now.
    let expiring = token("eve", epoch_seconds_now() - 18);
    let (mut listener, listener_id) = open(&stack, &expiring).await;
    let (mut requester, requester_id) = open(&stack, &expiring).await;
    let (mut fresh, _) = open(&stack, &token("fay", epoch_seconds_now() + 600)).await;
    for socket in [&mut listener, &mut requester, &mut fresh] {
        subscribe(socket, "prices").await;
    }
    let record = stack.tables.store.get_connection(&listener_id).await.unwrap().unwrap();
    let token_expires_at = record.token_expires_at.expect("the record keeps the token's expiry");
    assert_eq!(
        record.expires_at, token_expires_at,
        "the record never outlives its token"
    );

    stack
        .tables
        .store
        .put_message(&message("before", Some("prices"), None))
        .await
        .unwrap();
    for socket in [&mut listener, &mut requester, &mut fresh] {
        assert_eq!(next_message(socket).await.id, "before");
    }

    let wait = (token_expires_at + 1 - epoch_seconds_now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;

    // A request past expiry is refused with its own code, then the server
    // closes. (A ping would not do: API Gateway answers it without a function.)
    requester
        .send(Frame::text(
            json!({"action": "subscribe", "channel": "news", "id": "p-1"}).to_string(),
        ))
        .await
        .unwrap();
    match next(&mut requester).await {
        Some(Incoming::Reply {
            id,
            reply: Reply::Error { code, .. },
        }) => {
            assert_eq!(code, ErrorCode::TokenExpired);
            assert_eq!(id, Some(airwave_protocol::RequestId::Text("p-1".into())));
        }
        other => panic!("expected token_expired, got {other:?}"),
    }
    assert_eq!(closing_code(next(&mut requester).await), ErrorCode::TokenExpired);
    assert!(next(&mut requester).await.is_none(), "the socket is closed");

    // The next message reaches only the live connection; the expired one is
    // told why and closed instead of receiving it.
    stack
        .tables
        .store
        .put_message(&message("after", Some("prices"), None))
        .await
        .unwrap();
    assert_eq!(next_message(&mut fresh).await.id, "after");
    assert_eq!(closing_code(next(&mut listener).await), ErrorCode::TokenExpired);
    assert!(next(&mut listener).await.is_none(), "the socket is closed");

    let stored = stack.tables.stored_connection_ids().await;
    assert!(
        !stored.contains(&listener_id) && !stored.contains(&requester_id),
        "{stored:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_user_reaches_every_socket_of_that_user_and_no_other() {
    let stack = stack_with(|_| {}).await;
    let exp = epoch_seconds_now() + 600;
    let (mut tab_one, _) = open(&stack, &token("alice", exp)).await;
    let (mut tab_two, _) = open(&stack, &token("alice", exp)).await;
    let (mut bob, _) = open(&stack, &token("bob", exp)).await;

    stack
        .tables
        .store
        .put_message(&message("for-alice", None, Some("alice")))
        .await
        .unwrap();
    // Then one for everyone: bob's first frame must be this one.
    stack
        .tables
        .store
        .put_message(&message("for-all", None, None))
        .await
        .unwrap();

    for tab in [&mut tab_one, &mut tab_two] {
        let addressed = next_message(tab).await;
        assert_eq!(addressed.id, "for-alice");
        assert_eq!(addressed.to_user.as_deref(), Some("alice"));
        assert_eq!((addressed.channel, addressed.position), (None, None));
        assert_eq!(next_message(tab).await.id, "for-all");
    }
    assert_eq!(next_message(&mut bob).await.id, "for-all");
    stack.shutdown().await;
}

#[tokio::test]
async fn with_eviction_the_newest_connection_is_admitted_and_the_oldest_closed() {
    let stack = stack_with(|config| {
        config.admission.max_connections_per_user = 2;
        config.user_cap_mode = UserCapMode::EvictOldest;
    })
    .await;
    let alice = token("alice", epoch_seconds_now() + 600);
    let (mut oldest, oldest_id) = open(&stack, &alice).await;
    let (_second, second_id) = open(&stack, &alice).await;
    let (_newest, newest_id) = open(&stack, &alice).await;

    assert_eq!(closing_code(next(&mut oldest).await), ErrorCode::Evicted);
    assert!(next(&mut oldest).await.is_none(), "the oldest socket is closed");
    let mut expected = vec![second_id, newest_id];
    expected.sort();
    assert_eq!(stack.tables.stored_connection_ids().await, expected);
    // The gateway forgets the socket once its `$disconnect` has run.
    wait_until(|| !stack.connection_ids().contains(&oldest_id)).await;
    assert_eq!(user_counter(&stack, "alice").await, 2);

    // A storm of new tabs: the cap holds throughout and at the end.
    let storm: Vec<_> = (0..6).map(|_| open_socket(&stack, &alice)).collect();
    let watch = async {
        let mut most = 0;
        for _ in 0..20 {
            most = most.max(stack.tables.stored_connection_ids().await.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    };
    let (opened, most) = tokio::join!(futures::future::join_all(storm), watch);
    assert!(most <= 2, "{most} records at once under a cap of 2");

    let mut sockets = opened;
    let stored = stack.tables.stored_connection_ids().await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(user_counter(&stack, "alice").await, 2);
    // Every socket whose record is gone was told it was evicted and closed.
    wait_until(|| stack.connection_ids().len() == 2).await;
    let mut evicted = 0;
    for socket in &mut sockets {
        match tokio::time::timeout(Duration::from_millis(500), next(socket)).await {
            Ok(Some(Incoming::Closing {
                code: ErrorCode::Evicted,
                ..
            })) => evicted += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    // Six new tabs, two survive; the two from before are among the evicted too.
    assert_eq!(evicted, 4);
    stack.shutdown().await;
}

async fn wait_until(condition: impl Fn() -> bool) {
    tokio::time::timeout(GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the condition holds in time");
}

async fn user_counter(stack: &LocalStack, user: &str) -> i64 {
    let output = stack
        .tables
        .dynamodb
        .get_item()
        .table_name(&stack.tables.config.admission_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("open#user#{user}")),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output
        .item
        .and_then(|item| item.get("open_count")?.as_n().ok()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connection_whose_handshake_is_in_progress_is_not_pruned_by_a_concurrent_broadcast() {
    use airwave_shared::fanout::CONNECTING_WINDOW;
    use airwave_shared::message::Audience;

    let stack = stack_with(|_| {}).await;
    let hold = stack.functions.connect_gate.write().await;
    let url = format!("{}?token={}", stack.ws_url(), token("olga", epoch_seconds_now() + 600));
    let opening = tokio::spawn(tokio_tungstenite::connect_async(url));
    // `$connect` has written the record and waits: the handshake is not complete.
    let id = tokio::time::timeout(GUARD, async {
        loop {
            if let Some(id) = stack.tables.stored_connection_ids().await.pop() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the record is written");

    // The gateway, like API Gateway, answers 410 to a connection still opening.
    let fanout = stack
        .tables
        .fanout_with_connecting_window(&stack.gateway.management_endpoint(), 4, CONNECTING_WINDOW);
    let report = fanout
        .broadcast(
            &stack.tables.store,
            Audience::Everyone,
            br#"{"type":"message","id":"early","data":1}"#,
        )
        .await
        .unwrap();
    assert_eq!((report.targets, report.gone), (1, 1), "{report:?}");
    assert_eq!(
        stack.tables.stored_connection_ids().await,
        vec![id.clone()],
        "not pruned"
    );

    drop(hold);
    let (mut socket, _) = opening.await.unwrap().expect("the handshake completes");
    stack
        .tables
        .store
        .put_message(&message("after", None, None))
        .await
        .unwrap();
    assert_eq!(next_message(&mut socket).await.id, "after");
    assert!(stack.tables.store.get_connection(&id).await.unwrap().is_some());
    stack.shutdown().await;
}
