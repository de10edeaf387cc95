//! The heartbeat and the expiry, over real sockets through the local stack
//! built from `template.yaml`: a ping is answered by the gateway's mock route
//! with no function and no table touched, and a connection whose token
//! expires is closed by the scheduled sweep while its client says nothing.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_protocol::{parse_server_frame, ErrorCode, Incoming, Reply};
use airwave_shared::auth::LEEWAY_SECONDS;
use airwave_shared::closer::TOKEN_EXPIRED_MESSAGE;
use airwave_shared::config::JwtSecret;
use airwave_shared::time::epoch_seconds_now;
use airwave_tests::stack::{LocalStack, StackOptions};
use airwave_tests::{read_until_closed, signed_token, TestTables};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

const GUARD: Duration = Duration::from_secs(60);
const SECRET: &str = "heartbeat-test-secret-heartbeat-test-secret";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(socket: &mut Socket) -> String {
    tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => return text.to_string(),
                Some(Ok(Frame::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame in time")
}

fn all_invocations(stack: &LocalStack) -> usize {
    ["connect", "disconnect", "message", "stream-processor", "reaper"]
        .iter()
        .map(|function| stack.functions.invocations(function))
        .sum()
}

#[tokio::test]
async fn a_ping_is_answered_by_the_gateway_with_no_function_and_no_write() {
    let tables = TestTables::create_with(|config| config.admission.attempts_per_ip = 0).await;
    let stack = LocalStack::start_with(
        tables,
        GatewayOptions::default(),
        StackOptions {
            metered: true,
            ..StackOptions::default()
        },
    )
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(stack.ws_url()).await.unwrap();
    socket
        .send(Frame::text(r#"{"action":"subscribe","channel":"news","id":"s"}"#))
        .await
        .unwrap();
    let subscribed = next_text(&mut socket).await;
    assert!(subscribed.contains(r#""type":"subscribed""#), "{subscribed}");
    let records_before = stack.tables.stored_connections().await;
    let invocations_before = all_invocations(&stack);
    let usage_before = stack.dynamodb_usage();

    for _ in 0..3 {
        socket.send(Frame::text(r#"{"action":"ping"}"#)).await.unwrap();
        let pong = next_text(&mut socket).await;
        assert_eq!(pong, r#"{"type":"pong"}"#);
        assert!(matches!(
            parse_server_frame(&pong),
            Ok(Incoming::Reply {
                id: None,
                reply: Reply::Pong
            })
        ));
    }

    assert_eq!(all_invocations(&stack), invocations_before, "no function ran");
    let usage = stack.dynamodb_usage();
    assert_eq!(
        usage.total_requests(),
        usage_before.total_requests(),
        "no DynamoDB request: {usage:?}"
    );
    assert_eq!(usage.total_write_units(), usage_before.total_write_units());
    assert_eq!(
        stack.tables.stored_connections().await,
        records_before,
        "the record is untouched"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_connection_whose_token_expires_is_closed_by_the_sweep_with_no_client_traffic() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
    })
    .await;
    let period = Duration::from_secs(1);
    let stack = LocalStack::start_with(
        tables,
        GatewayOptions::default(),
        StackOptions {
            schedule_period: Some(period),
            ..StackOptions::default()
        },
    )
    .await;
    // Accepted within the verifier's leeway, so it expires a few seconds from now.
    let token_expires_at = epoch_seconds_now() + 4;
    let exp = token_expires_at - LEEWAY_SECONDS as i64;
    let token = signed_token(SECRET, &json!({"sub": "ada", "exp": exp}));
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", stack.ws_url()))
        .await
        .unwrap();

    // The client sends nothing at all.
    let closing = tokio::time::timeout(GUARD, read_until_closed(&mut socket))
        .await
        .expect("the socket is closed");
    let closed_at = epoch_seconds_now();

    assert_eq!(
        closing,
        Some((ErrorCode::TokenExpired, TOKEN_EXPIRED_MESSAGE.to_owned()))
    );
    assert!(closed_at >= token_expires_at, "not before the token expired");
    // The README's bound is one sweep period after the expiry; here the period is 1 s.
    assert!(
        closed_at <= token_expires_at + 10,
        "closed {} s after the expiry",
        closed_at - token_expires_at
    );
    assert!(stack.tables.stored_connections().await.is_empty(), "the record is gone");
    assert_eq!(stack.gateway.management_closes(), 1);
    assert_eq!(stack.functions.invocations("message"), 0);
    stack.shutdown().await;
}

/// Connects `user` and answers its connection id; `vanish` drops its
/// `$disconnect` when it goes, as a lost one would be.
async fn connect_as(stack: &LocalStack, user: &str, vanish: bool) -> Result<(Socket, String), String> {
    let before = stack.connection_ids();
    let token = airwave_tests::token_for(SECRET, user);
    let url = format!(
        "{}?token={token}{}",
        stack.ws_url(),
        if vanish { "&vanish=1" } else { "" }
    );
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|error| error.to_string())?;
    let id = stack
        .connection_ids()
        .into_iter()
        .find(|id| !before.contains(id))
        .ok_or("no new connection id")?;
    Ok((socket, id))
}

#[tokio::test]
async fn a_full_cap_held_by_a_connection_without_a_disconnect_admits_at_once() {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.admission.max_connections_per_user = 1;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.connecting_window = Duration::ZERO;
    })
    .await;
    let stack = LocalStack::start(tables, GatewayOptions::default()).await;

    // Given ada's only slot held by a socket that died without a $disconnect.
    let (socket, stale_id) = connect_as(&stack, "ada", true).await.unwrap();
    drop(socket);
    tokio::time::timeout(GUARD, async {
        while stack.connection_ids().contains(&stale_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway lets go of the dead socket");
    let ids = |items: Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>| {
        items
            .iter()
            .filter_map(|item| item.get("connection_id")?.as_s().ok().cloned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(stack.tables.stored_connections().await),
        vec![stale_id],
        "its record stayed"
    );

    // When ada connects again, her new connection is admitted at once: the
    // stale slot is released because API Gateway answers 410 for it.
    let (mut fresh, fresh_id) = connect_as(&stack, "ada", false).await.expect("admitted");
    assert_eq!(ids(stack.tables.stored_connections().await), vec![fresh_id.clone()]);
    fresh.send(Frame::text(r#"{"action":"ping"}"#)).await.unwrap();
    assert_eq!(next_text(&mut fresh).await, r#"{"type":"pong"}"#);

    // And a live holder is never released: a third connect is refused.
    assert!(connect_as(&stack, "ada", false).await.is_err(), "the cap of 1 holds");
    assert_eq!(ids(stack.tables.stored_connections().await), [fresh_id]);
    stack.shutdown().await;
}
