//! One socket at a time, and a new one whenever the old one can no longer serve: after a drop,
//! a lost record, a request timeout or a close; subscriptions and dedup carry over.

use std::time::Duration;

use airwave_client::{Client, Error, Request};
use serde_json::json;

use crate::support::{within, Handshake, TestServer};
use crate::{next_message_id, wait_reconnected};

#[tokio::test]
async fn concurrent_connects_open_exactly_one_socket() {
    // A slow handshake keeps the first connect in flight while the others arrive.
    let server = TestServer::start_with(Handshake::Accept, Duration::from_millis(300)).await;
    let (client, _events) = Client::new(server.config());
    let other = client.clone();
    let (a, b, c) = within("connects", async {
        tokio::join!(client.connect(), other.connect(), client.connect())
    })
    .await;
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(server.accepted(), 1);

    // The socket is shared and usable, and connecting again reuses it.
    let stats = within("stats", client.stats()).await.unwrap();
    assert_eq!(stats.open_connections, 1);
    within("connect", other.connect()).await.unwrap();
    within("ping", other.ping()).await.unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn reconnects_after_a_drop_and_subscribes_again() {
    let mut server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    within("subscribe", client.subscribe("alpha")).await.unwrap();
    within("subscribe", client.subscribe("beta")).await.unwrap();
    assert_eq!(client.subscriptions(), ["alpha", "beta"]);
    let first: Vec<_> = server
        .drain_frames()
        .iter()
        .map(|f| (f.connection, f.channel().to_owned()))
        .collect();
    assert_eq!(first, [(1, "alpha".to_owned()), (1, "beta".to_owned())]);

    server.drop_all();
    wait_reconnected(&mut events).await;
    assert_eq!(server.accepted(), 2);
    let mut resent = Vec::new();
    while resent.len() < 2 {
        let frame = server.next_frame().await;
        assert_eq!((frame.connection, frame.action()), (2, "subscribe"), "{frame:?}");
        resent.push(frame.channel().to_owned());
    }
    assert_eq!(resent, ["alpha", "beta"]);

    // Unsubscribed channels are not brought back by the next reconnect.
    within("unsubscribe", client.unsubscribe("beta")).await.unwrap();
    server.drop_all();
    wait_reconnected(&mut events).await;
    within("stats", client.stats()).await.unwrap();
    let third: Vec<_> = server
        .drain_frames()
        .into_iter()
        .filter(|f| f.connection == 3)
        .map(|f| format!("{} {}", f.action(), f.channel()))
        .collect();
    assert_eq!(third, ["subscribe alpha", "stats "]);

    // Pushed messages flow on the new socket.
    server.push_message("after-reconnect", json!(1));
    assert_eq!(next_message_id(&mut events).await, "after-reconnect");
}

#[tokio::test]
async fn duplicate_message_ids_are_delivered_once() {
    let server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    for id in ["m1", "m1", "m2", "m1", "m3"] {
        server.push_message(id, json!({"id": id}));
    }
    // Frames arrive in order, so m3 right after m2 proves the repeats in between were dropped.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(next_message_id(&mut events).await);
    }
    assert_eq!(ids, ["m1", "m2", "m3"]);
    assert_eq!(client.duplicates_dropped(), 2);

    // The memory of ids survives a reconnect.
    server.drop_all();
    wait_reconnected(&mut events).await;
    server.push_message("m2", json!(null));
    server.push_message("m4", json!(null));
    assert_eq!(next_message_id(&mut events).await, "m4");
    assert_eq!(client.duplicates_dropped(), 3);
}

#[tokio::test]
async fn unknown_connection_makes_the_client_reconnect() {
    let server = TestServer::start().await;
    server.script(
        "stats",
        Some(json!({"type": "error", "code": "unknown_connection", "message": "gone"})),
    );
    let (client, mut events) = Client::new(server.config());
    let reply = within("stats", client.request(Request::Stats)).await.unwrap();
    assert_eq!(reply.error_code(), Some(&airwave_client::ErrorCode::UnknownConnection));
    wait_reconnected(&mut events).await;
    assert_eq!(server.accepted(), 2);
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 2);
}

#[tokio::test]
async fn a_request_after_close_opens_a_new_socket() {
    let server = TestServer::start().await;
    let (client, _events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    within("close", client.close()).await;
    within("ping", client.ping()).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn a_socket_given_up_on_gets_a_close_frame() {
    let server = TestServer::start().await;
    server.script("ping", None);
    let config = server
        .config()
        .with_keep_alive_after(Duration::from_millis(50))
        .with_request_timeout(Duration::from_millis(500));
    let (client, mut events) = Client::new(config);
    within("connect", client.connect()).await.unwrap();
    wait_reconnected(&mut events).await;
    // The half-open socket got a close frame; it was not left open beside the new one.
    within("the close frame", async {
        while !server.closed_by_client().contains(&1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_timeout_replaces_the_socket() {
    let mut server = TestServer::start().await;
    // The first stats goes unanswered. Its reply could still come late, and with no request
    // ids it would answer the next request, so the next request goes out on a new socket.
    server.script("stats", None);
    let config = server.config().with_request_timeout(Duration::from_millis(300));
    let (client, mut events) = Client::new(config);
    within("subscribe", client.subscribe("alpha")).await.unwrap();
    let timed_out = within("stats", client.stats()).await;
    assert!(matches!(timed_out, Err(Error::Timeout(_))), "{timed_out:?}");
    wait_reconnected(&mut events).await;
    let stats = within("stats", client.stats()).await.unwrap();
    assert_eq!(stats.open_connections, 2, "answered on the new socket");
    let frame = server.wait_frame(|f| f.connection == 2).await;
    assert_eq!((frame.action(), frame.channel()), ("subscribe", "alpha"));
}
