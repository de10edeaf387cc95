//! The publish limits a second socket cannot multiply, over real sockets
//! through the local gateway and the real functions: the sockets of one user
//! share the user's allowance, the sockets from one address (each bound to
//! its own loopback address, 127.0.0.x, which the gateway reports as the
//! source IP) share the address's, and a connection without a token may not
//! publish unless anonymous publishing is turned on.

use std::time::Duration;

use airwave_gateway::GatewayOptions;
use airwave_protocol::{parse_server_frame, ErrorCode, Incoming, Reply};
use airwave_shared::config::{JwtSecret, PublishRate};
use airwave_shared::time::epoch_seconds_now;
use airwave_tests::stack::LocalStack;
use airwave_tests::{signed_token, TestTables};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

const SECRET: &str = "publish-limits-secret-publish-limits";
/// Generous, for a slow shared local DynamoDB; a passing test never waits it out.
const GUARD: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<TcpStream>;

/// A stack where clients may publish, with `rate` (in a window longer than
/// any test) and, unless `secret` is false, token authentication.
async fn stack(rate: PublishRate, secret: bool, configure: impl FnOnce(&mut airwave_shared::Config)) -> LocalStack {
    let tables = TestTables::create_with(|config| {
        config.admission.attempts_per_ip = 0;
        config.allow_client_publish = true;
        config.publish_rate = PublishRate {
            window_seconds: 3_600,
            ..rate
        };
        if secret {
            config.jwt_secret = Some(JwtSecret::new(SECRET));
        }
        configure(config);
    })
    .await;
    // Every count of a test falls in one window: not within a minute of its end.
    let into_window = epoch_seconds_now().rem_euclid(3_600);
    if into_window > 3_600 - 60 {
        tokio::time::sleep(Duration::from_secs((3_600 - into_window + 1) as u64)).await;
    }
    LocalStack::start(tables, GatewayOptions::default()).await
}

fn token(user: &str) -> String {
    signed_token(
        SECRET,
        &json!({"sub": user, "exp": epoch_seconds_now() + 600, "publish": ["chat:*"]}),
    )
}

/// A socket from `source` (a loopback address), with `token` if any.
async fn open(stack: &LocalStack, source: [u8; 4], token: Option<&str>) -> Socket {
    let gateway = stack.gateway.local_addr();
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind a loopback address");
    let stream = socket.connect(gateway).await.expect("reach the gateway");
    let url = match token {
        Some(token) => format!("{}?token={token}", stack.ws_url()),
        None => stack.ws_url(),
    };
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("the handshake is accepted");
    socket
}

/// Publishes one message on `socket` and answers the reply.
async fn publish(socket: &mut Socket, n: usize) -> Reply {
    let frame = json!({"action": "publish", "channel": "chat:1", "data": {"n": n}, "id": n});
    socket.send(Frame::text(frame.to_string())).await.expect("send");
    tokio::time::timeout(GUARD, async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => {
                    if let Ok(Incoming::Reply { reply, .. }) = parse_server_frame(&text) {
                        return reply;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the socket ended before the reply: {other:?}"),
            }
        }
    })
    .await
    .expect("a reply arrives")
}

/// What `publishes` publishes on each of `sockets` came to: published, and
/// refused with `rate_limited`.
async fn publish_on(sockets: &mut [&mut Socket], publishes: usize) -> (usize, usize) {
    let (mut published, mut limited) = (0, 0);
    let mut n = 0;
    for socket in sockets.iter_mut() {
        for _ in 0..publishes {
            n += 1;
            match publish(socket, n).await {
                Reply::Published { .. } => published += 1,
                Reply::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => limited += 1,
                other => panic!("expected published or rate_limited, got {other:?}"),
            }
        }
    }
    (published, limited)
}

#[tokio::test]
async fn two_sockets_of_one_user_share_the_users_allowance() {
    let rate = PublishRate {
        limit: 100,
        per_user: 4,
        per_ip: 0,
        ..PublishRate::default()
    };
    let stack = stack(rate, true, |_| {}).await;
    let mut first_tab = open(&stack, [127, 0, 0, 1], Some(&token("alice"))).await;
    // The second socket from another address: only the user is shared.
    let mut second_tab = open(&stack, [127, 0, 0, 2], Some(&token("alice"))).await;
    let mut bob = open(&stack, [127, 0, 0, 1], Some(&token("bob"))).await;

    let outcome = publish_on(&mut [&mut first_tab, &mut second_tab], 3).await;
    assert_eq!(outcome, (4, 2), "alice's six publishes over two sockets against her 4");
    // Another user's allowance is their own.
    assert!(matches!(publish(&mut bob, 99).await, Reply::Published { .. }));
    assert_eq!(
        stack.tables.stored_messages().await.len(),
        5,
        "refused publishes store nothing"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn two_sockets_from_one_address_share_the_addresss_allowance() {
    let rate = PublishRate {
        limit: 100,
        per_user: 0,
        per_ip: 4,
        ..PublishRate::default()
    };
    let stack = stack(rate, true, |_| {}).await;
    // Two users behind one address, as behind a NAT.
    let mut alice = open(&stack, [127, 0, 0, 2], Some(&token("alice"))).await;
    let mut bob = open(&stack, [127, 0, 0, 2], Some(&token("bob"))).await;
    let mut elsewhere = open(&stack, [127, 0, 0, 3], Some(&token("carol"))).await;

    let outcome = publish_on(&mut [&mut alice, &mut bob], 3).await;
    assert_eq!(outcome, (4, 2), "six publishes from 127.0.0.2 against its 4");
    let Reply::Error { code, message } = publish(&mut alice, 98).await else {
        panic!("expected a refusal");
    };
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.contains("address"), "{message}");
    // Another address's allowance is its own.
    assert!(matches!(publish(&mut elsewhere, 99).await, Reply::Published { .. }));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_user_refused_by_the_address_limit_keeps_the_units_it_did_not_use() {
    // alice is refused by her address's limit; the units her user counter
    // took for those refusals are given back, so from another address she
    // still has her whole user allowance.
    let rate = PublishRate {
        limit: 100,
        per_user: 3,
        per_ip: 2,
        ..PublishRate::default()
    };
    let stack = stack(rate, true, |_| {}).await;
    let mut at_home = open(&stack, [127, 0, 0, 4], Some(&token("alice"))).await;
    assert_eq!(publish_on(&mut [&mut at_home], 4).await, (2, 2));
    let mut at_work = open(&stack, [127, 0, 0, 5], Some(&token("alice"))).await;
    assert_eq!(
        publish_on(&mut [&mut at_work], 2).await,
        (1, 1),
        "3 for alice: 2 at home, 1 at work"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_a_token_may_not_publish_unless_anonymous_publishing_is_on() {
    let stack_default = stack(PublishRate::default(), false, |_| {}).await;
    let mut anonymous = open(&stack_default, [127, 0, 0, 6], None).await;
    let Reply::Error { code, message } = publish(&mut anonymous, 1).await else {
        panic!("expected a refusal");
    };
    assert_eq!(code, ErrorCode::PublishForbidden);
    assert!(message.contains("AIRWAVE_ALLOW_ANONYMOUS_PUBLISH"), "{message}");
    assert!(stack_default.tables.stored_messages().await.is_empty());
    stack_default.shutdown().await;

    let rate = PublishRate {
        limit: 2,
        per_ip: 3,
        ..PublishRate::default()
    };
    let stack_open = stack(rate, false, |config| config.allow_anonymous_publish = true).await;
    let mut first = open(&stack_open, [127, 0, 0, 7], None).await;
    let mut second = open(&stack_open, [127, 0, 0, 7], None).await;
    // Each anonymous socket has its own 2, and their address 3 between them.
    assert_eq!(publish_on(&mut [&mut first], 3).await, (2, 1));
    assert_eq!(publish_on(&mut [&mut second], 3).await, (1, 2));
    assert_eq!(stack_open.tables.stored_messages().await.len(), 3);
    stack_open.shutdown().await;
}
