//! The HTTP API over real HTTP and real sockets, through the local gateway
//! built from `template.yaml`: publishing (`publish`) and the fallback
//! transport's polling (`poll`).

mod poll;
mod publish;

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_protocol::http::PublishResponse;
use airwave_protocol::{parse_server_frame, Incoming, MessageFrame};
use airwave_shared::config::JwtSecret;
use airwave_shared::server_keys::ServerKeys;
use airwave_tests::http_api::post_json;
use airwave_tests::stack::LocalStack;
use airwave_tests::{signed_token, TestSocket, TestTables};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

pub(super) const SECRET: &str = "http-publish-secret-http-publish-secret";
pub(super) const SERVER_KEY: &str = "sk_test_0123456789abcdef0123456789abcdef";
pub(super) const GUARD: Duration = Duration::from_secs(30);

pub(super) async fn stack(configure: impl FnOnce(&mut airwave_shared::Config)) -> LocalStack {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.jwt_secret = Some(JwtSecret::new(SECRET));
        config.server_keys = Some(ServerKeys::parse(SERVER_KEY).expect("a valid key"));
        configure(config);
    })
    .await;
    LocalStack::start(tables, GatewayOptions::default()).await
}

pub(super) fn token(user: &str, publish: &[&str]) -> String {
    let exp = airwave_shared::time::epoch_seconds_now() + 600;
    signed_token(SECRET, &json!({"sub": user, "exp": exp, "publish": publish}))
}

/// POSTs `body` to the publish route with `authorization` and answers (status, JSON body).
pub(super) async fn post(stack: &LocalStack, authorization: Option<&str>, body: &str) -> (u16, Value) {
    post_to(stack, airwave_protocol::http::PUBLISH_PATH, authorization, body).await
}

/// POSTs `body` to `path` of the HTTP API and answers (status, JSON body).
pub(super) async fn post_to(stack: &LocalStack, path: &str, authorization: Option<&str>, body: &str) -> (u16, Value) {
    let url = format!("{}{path}", stack.gateway.http_url());
    post_json(&reqwest::Client::new(), &url, authorization, body).await
}

pub(super) fn server() -> String {
    format!("Key {SERVER_KEY}")
}

pub(super) fn ids(answer: &Value) -> Vec<String> {
    let answer: PublishResponse = serde_json::from_value(answer.clone()).expect("a publish answer");
    answer.messages.into_iter().map(|message| message.message_id).collect()
}

/// A socket of `user` subscribed to `channel`.
pub(super) async fn subscriber(stack: &LocalStack, user: &str, channel: &str) -> TestSocket {
    let url = format!("{}?token={}", stack.ws_url(), token(user, &[]));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let subscribe = json!({"action": "subscribe", "channel": channel, "id": 1});
    socket.send(Frame::text(subscribe.to_string())).await.expect("send");
    loop {
        let frame = tokio::time::timeout(GUARD, socket.next())
            .await
            .expect("a reply in time");
        if let Some(Ok(Frame::Text(text))) = frame {
            if matches!(parse_server_frame(&text), Ok(Incoming::Reply { .. })) {
                return socket;
            }
        }
    }
}

/// The next `count` messages `socket` receives, in arrival order.
pub(super) async fn messages(socket: &mut TestSocket, count: usize) -> Vec<MessageFrame> {
    let mut received = Vec::new();
    while received.len() < count {
        let frame = tokio::time::timeout(GUARD, socket.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived: {received:?}", received.len()));
        if let Some(Ok(Frame::Text(text))) = frame {
            if let Ok(Incoming::Messages(frames)) = parse_server_frame(&text) {
                received.extend(frames);
            }
        }
    }
    received
}
