//! Pings only after a quiet period, and a ping without a pong replaces the socket.

use std::time::Duration;

use airwave_client::{Client, Event, Reply, Request};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{within, TestServer};
use crate::{next_connection_event, next_message_id};

#[tokio::test]
async fn no_ping_goes_out_while_the_client_keeps_sending_and_one_does_once_it_is_quiet() {
    let mut server = TestServer::start().await;
    let quiet = Duration::from_millis(600);
    let (client, _events) = Client::new(server.config().with_keep_alive_after(quiet));
    // The longest the client can have gone without sending: from before one frame went out
    // (the socket opening, or a request being made) to the reply of the next request.
    let mut longest_quiet = Duration::ZERO;
    let mut previous = Instant::now();
    within("connect", client.connect()).await.unwrap();
    // Every kind of request, for several quiet periods, each well within one of the last.
    let busy_until = Instant::now() + quiet * 3;
    let mut n = 0;
    while Instant::now() < busy_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = match n % 4 {
            0 => Request::Subscribe {
                channel: "alpha".into(),
                since: None,
            },
            1 => Request::Publish {
                channel: Some("alpha".into()),
                data: json!(n),
            },
            2 => Request::Unsubscribe {
                channel: "alpha".into(),
            },
            _ => Request::Stats,
        };
        let made = Instant::now();
        let reply = within("a request", client.request(request)).await.unwrap();
        assert!(!matches!(reply, Reply::Error { .. }), "{reply:?}");
        longest_quiet = longest_quiet.max(previous.elapsed());
        previous = made;
        n += 1;
    }
    let frames = server.drain_frames();
    // The server recorded the last request before answering it; a ping after it can only be
    // the one for the quiet period that follows.
    let last_request = frames.iter().rposition(|f| f.action() != "ping").unwrap();
    let requests = frames.iter().filter(|f| f.action() != "ping").count();
    assert_eq!(requests, n, "one frame per request: {frames:?}");
    if longest_quiet < quiet {
        assert!(
            frames[..last_request].iter().all(|f| f.action() != "ping"),
            "a ping while the client kept sending: {frames:?}"
        );
    } else {
        // Only a machine stalled for most of a quiet period gets here.
        eprintln!("the client went quiet for {longest_quiet:?}: not checking for pings while busy");
    }
    // Quiet now: the next frame is a keep-alive ping, on the same socket.
    let ping = match frames.get(last_request + 1) {
        Some(frame) => frame.clone(),
        None => server.next_frame().await,
    };
    assert_eq!((ping.connection, ping.action()), (1, "ping"), "{ping:?}");
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 1);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_quiet_client_pings_after_keep_alive_after_and_an_id_less_pong_answers_it() {
    let mut server = TestServer::start().await;
    // Exactly what API Gateway's mock integration answers: no id.
    for _ in 0..3 {
        server.script("ping", Some(json!({"type": "pong"})));
    }
    let quiet = Duration::from_millis(200);
    let config = server
        .config()
        .with_keep_alive_after(quiet)
        .with_request_timeout(Duration::from_secs(1));
    assert_eq!(config.keep_alive_after(), quiet);
    let (client, mut events) = Client::new(config);
    let start = Instant::now();
    within("connect", client.connect()).await.unwrap();
    // The caller sends nothing, so every frame is a keep-alive ping. An unpaired pong would
    // leave its ping to time out, and the next one would come on another socket.
    for _ in 0..3 {
        let frame = server.next_frame().await;
        assert_eq!((frame.connection, frame.action()), (1, "ping"), "{frame:?}");
    }
    // Each ping waited a quiet period after the frame before it.
    assert!(start.elapsed() >= quiet * 3, "{:?}", start.elapsed());
    assert_eq!(server.accepted(), 1, "pongs keep the socket");
    assert!(events.try_recv().is_err(), "no connection event");
    // A ping of the caller's is answered by an id-less pong too.
    within("ping", client.ping()).await.unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn no_ping_is_sent_before_keep_alive_after_elapses() {
    let mut server = TestServer::start().await;
    let config = server.config().with_keep_alive_after(Duration::from_secs(3600));
    let (client, mut events) = Client::new(config);
    within("stats", client.stats()).await.unwrap();
    server.push_message("m", json!(null));
    assert_eq!(next_message_id(&mut events).await, "m");
    let actions: Vec<String> = server.drain_frames().iter().map(|f| f.action().to_owned()).collect();
    assert_eq!(actions, ["stats"]);
}

#[tokio::test]
async fn a_ping_without_pong_replaces_the_socket() {
    let mut server = TestServer::start().await;
    server.script("ping", None);
    let quiet = Duration::from_millis(200);
    let timeout = Duration::from_millis(500);
    let config = server
        .config()
        .with_keep_alive_after(quiet)
        .with_request_timeout(timeout);
    let (client, mut events) = Client::new(config);
    let start = Instant::now();
    within("subscribe", client.subscribe("alpha")).await.unwrap();
    match next_connection_event(&mut events).await {
        Event::Disconnected { reason } => assert!(reason.contains("no pong"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // Not before the quiet period and the pong timeout; a generous bound after.
    let elapsed = start.elapsed();
    assert!(elapsed >= quiet + timeout, "{elapsed:?}");
    assert!(elapsed < quiet + timeout + Duration::from_secs(10), "{elapsed:?}");
    match next_connection_event(&mut events).await {
        Event::Reconnected => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    assert_eq!(server.accepted(), 2);
    // The first socket carried the subscribe and then, after the quiet period, the ping.
    let mut first = Vec::new();
    let resent = loop {
        let frame = server.next_frame().await;
        if frame.connection == 2 {
            break frame;
        }
        first.push(frame.action().to_owned());
    };
    assert_eq!(first, ["subscribe", "ping"]);
    assert_eq!((resent.action(), resent.channel()), ("subscribe", "alpha"));
}
