//! Which failed connection attempts are retried, and the bound on them.

use std::time::Duration;

use airwave_client::{Backoff, Client, ClientConfig, Error, Event};

use crate::support::{within, Handshake, TestServer};
use crate::{next_connection_event, wait_reconnected};

#[tokio::test]
async fn gives_up_after_max_attempts_when_nothing_listens() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClientConfig::new(&format!("ws://127.0.0.1:{port}/"))
        .unwrap()
        .with_backoff(Backoff::new(Duration::from_millis(1), 2.0, Duration::from_millis(5), 3));
    let (client, _events) = Client::new(config);
    match within("connect", client.connect()).await {
        Err(Error::GaveUp { attempts, last }) => {
            assert_eq!(attempts, 4, "the first try and 3 retries");
            assert!(matches!(*last, Error::Connect(_)), "{last:?}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test]
async fn throttled_handshakes_are_retried_until_the_bound() {
    let server = TestServer::start_with(Handshake::Refuse(429), Duration::ZERO).await;
    let (client, _events) = Client::new(server.config());
    match within("connect", client.connect()).await {
        Err(Error::GaveUp { attempts, last }) => {
            assert_eq!(attempts, 5, "the first try and 4 retries");
            assert!(matches!(*last, Error::Handshake { status: 429 }), "{last:?}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(server.accepted(), 5);
}

#[tokio::test]
async fn throttled_then_accepted_connects() {
    let server = TestServer::start_with(Handshake::RefuseFirst(2, 429), Duration::ZERO).await;
    let (client, _events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    assert_eq!(server.accepted(), 3);
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 3);
}

#[tokio::test]
async fn server_errors_are_retried_too() {
    let server = TestServer::start_with(Handshake::RefuseFirst(1, 503), Duration::ZERO).await;
    let (client, _events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_not_retried() {
    for status in [401, 403] {
        let server = TestServer::start_with(Handshake::Refuse(status), Duration::ZERO).await;
        let (client, _events) = Client::new(server.config());
        let error = within("connect", client.connect()).await.unwrap_err();
        assert!(
            matches!(error, Error::Handshake { status: s } if s == status),
            "{error:?}"
        );
        assert!(error.is_permanent());
        assert!(error.to_string().contains(&status.to_string()));
        assert_eq!(server.accepted(), 1, "status {status} must not be retried");
    }
}

#[tokio::test]
async fn reconnecting_stops_after_the_bound_and_a_later_request_starts_over() {
    let mut server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    within("subscribe", client.subscribe("alpha")).await.unwrap();

    server.set_handshake(Handshake::Refuse(503));
    server.drop_all();
    assert!(matches!(
        next_connection_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    match next_connection_event(&mut events).await {
        Event::Failed(Error::GaveUp { attempts, last }) => {
            assert_eq!(attempts, 4, "a reconnect waits before every try: 4 retries");
            assert!(matches!(*last, Error::Handshake { status: 503 }), "{last:?}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(server.accepted(), 1 + 4);

    // A new request gets a fresh retry budget and brings the subscription back.
    server.set_handshake(Handshake::Accept);
    within("stats", client.stats()).await.unwrap();
    assert_eq!(server.accepted(), 6);
    let frame = server.wait_frame(|f| f.connection == 6).await;
    assert_eq!((frame.action(), frame.channel()), ("subscribe", "alpha"));
}

#[tokio::test]
async fn a_server_that_drops_every_socket_at_once_exhausts_the_bound() {
    // Each handshake succeeds, so only a socket that carried a frame may reset the schedule.
    let server = TestServer::start_with(Handshake::AcceptThenClose, Duration::ZERO).await;
    let (client, mut events) = Client::new(server.config());
    within("connect", client.connect()).await.unwrap();
    loop {
        match next_connection_event(&mut events).await {
            Event::Disconnected { .. } | Event::Reconnected => continue,
            Event::Failed(Error::GaveUp { attempts, .. }) => {
                assert_eq!(
                    attempts, 4,
                    "the 4 retries of the policy, not a fresh budget per socket"
                );
                break;
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    assert_eq!(server.accepted(), 1 + 4);
}

#[tokio::test]
async fn a_healthy_socket_resets_the_reconnect_schedule() {
    let server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config());
    // Five drops of working sockets: more than the policy's 4 retries, yet each reconnect
    // follows a socket that answered, so the client never gives up.
    for round in 1..=5 {
        within("stats", client.stats()).await.unwrap();
        server.drop_all();
        wait_reconnected(&mut events).await;
        assert_eq!(server.accepted(), round + 1);
    }
    within("stats", client.stats()).await.unwrap();
}
