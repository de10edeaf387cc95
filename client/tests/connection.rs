//! The client against a real WebSocket server on 127.0.0.1. Timeouts are failure guards only:
//! every assertion is about what happened, never about how fast.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airwave_client::{Backoff, Client, ClientConfig, Error, Event, Events, Reply, Request};
use serde_json::json;
use support::{within, Handshake, TestServer};
use tokio::time::Instant;

/// The next event that is not a message, skipping messages.
async fn next_connection_event(events: &mut Events) -> Event {
    loop {
        match within("a connection event", events.recv())
            .await
            .expect("events closed")
        {
            Event::Message(_) => continue,
            event => return event,
        }
    }
}

async fn wait_reconnected(events: &mut Events) {
    match next_connection_event(events).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    match next_connection_event(events).await {
        Event::Reconnected => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
}

/// `config` with a token provider that hands out `h.t1.s`, `h.t2.s`, ... (shaped like JWTs),
/// and the count of its calls.
fn with_fresh_tokens(config: ClientConfig) -> (ClientConfig, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let config = config.with_token_provider(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, std::io::Error>(format!("h.t{n}.s")) }
    });
    (config, calls)
}

fn offer(token: &str) -> Option<String> {
    Some(format!("airwave, {token}"))
}

async fn next_message_id(events: &mut Events) -> String {
    loop {
        if let Event::Message(message) = within("a message", events.recv()).await.expect("events closed") {
            return message.id;
        }
    }
}

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
async fn a_token_that_is_no_jwt_goes_in_the_query_string() {
    let server = TestServer::start().await;
    let (client, _events) = Client::new(server.config().with_token("s3cr3t &x"));
    within("connect", client.connect()).await.unwrap();
    assert_eq!(server.uris(), ["/test?token=s3cr3t+%26x"]);
    assert_eq!(server.offers(), [None]);
}

#[tokio::test]
async fn a_jwt_is_offered_as_a_subprotocol_and_kept_out_of_the_url() {
    let server = TestServer::start().await;
    let (client, _events) = Client::new(server.config().with_token("h.p.s"));
    // The handshake completes with the server selecting `airwave`, and the socket works.
    within("stats", client.stats()).await.unwrap();
    assert_eq!(server.uris(), ["/test"]);
    assert_eq!(server.offers(), [offer("h.p.s")]);
}

#[tokio::test]
async fn the_token_provider_is_asked_before_every_attempt() {
    let server = TestServer::start_with(Handshake::RefuseFirst(2, 503), Duration::ZERO).await;
    let (config, calls) = with_fresh_tokens(server.config());
    let (client, _events) = Client::new(config);
    within("connect", client.connect()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(server.offers(), [offer("h.t1.s"), offer("h.t2.s"), offer("h.t3.s")]);
}

#[tokio::test]
async fn a_failing_token_provider_is_retried_like_a_failed_attempt() {
    let server = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let config = server.config().with_token_provider(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err("identity provider unavailable"),
                _ => Ok("h.p.s".to_owned()),
            }
        }
    });
    let (client, _events) = Client::new(config);
    within("connect", client.connect()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.accepted(), 1, "no socket without a token");
}

#[tokio::test]
async fn an_expired_token_is_replaced_at_once_with_a_fresh_one() {
    let mut server = TestServer::start().await;
    server.refuse_reused_tokens();
    // An hour of backoff: only an attempt that skips it can reconnect before the test's guard.
    let hour = Duration::from_secs(3600);
    let (config, calls) = with_fresh_tokens(server.config().with_backoff(Backoff::new(hour, 2.0, hour, 4)));
    let (client, mut events) = Client::new(config);
    within("subscribe", client.subscribe("alpha")).await.unwrap();

    server.close_all_with("token_expired", "the token expired");
    match next_connection_event(&mut events).await {
        Event::Disconnected { reason } => assert!(reason.contains("token expired"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(matches!(next_connection_event(&mut events).await, Event::Reconnected));
    let frame = server.wait_frame(|f| f.connection == 2).await;
    assert_eq!((frame.action(), frame.channel()), ("subscribe", "alpha"));
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 2);
    // The second handshake carried a new token (the server refuses a reused one).
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.offers(), [offer("h.t1.s"), offer("h.t2.s")]);
    assert_eq!(server.accepted(), 2, "one reconnect");
}

#[tokio::test]
async fn a_request_refused_for_an_expired_token_fails_with_the_code_and_the_client_comes_back() {
    let server = TestServer::start().await;
    server.refuse_reused_tokens();
    server.script(
        "stats",
        Some(json!({"type": "error", "code": "token_expired", "message": "expired"})),
    );
    let (config, calls) = with_fresh_tokens(server.config());
    let (client, mut events) = Client::new(config);
    within("subscribe", client.subscribe("alpha")).await.unwrap();

    let error = within("stats", client.stats()).await.unwrap_err();
    assert_eq!(error.code(), Some("token_expired"), "{error:?}");
    wait_reconnected(&mut events).await;
    assert_eq!(client.subscriptions(), ["alpha"]);
    assert_eq!(within("stats", client.stats()).await.unwrap().open_connections, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn fresh_tokens_refused_from_the_start_are_not_retried_at_once_forever() {
    let server = TestServer::start().await;
    let (config, calls) = with_fresh_tokens(server.config());
    let (client, mut events) = Client::new(config);
    within("subscribe", client.subscribe("alpha")).await.unwrap();
    // Every later socket has its first request refused, as with a provider handing out
    // tokens that are already past their expiry.
    for _ in 0..10 {
        server.script(
            "subscribe",
            Some(json!({"type": "error", "code": "token_expired", "message": "expired"})),
        );
    }
    server.close_all_with("token_expired", "the token expired");
    loop {
        match next_connection_event(&mut events).await {
            Event::Disconnected { .. } | Event::Reconnected => continue,
            Event::Failed(Error::GaveUp { .. }) => break,
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    // The prompt reconnect, then the 4 retries of the policy.
    assert_eq!(server.accepted(), 1 + 1 + 4);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_fixed_token_that_expired_stops_the_client_instead_of_reconnecting_with_it() {
    let server = TestServer::start().await;
    let (client, mut events) = Client::new(server.config().with_token("h.p.s"));
    within("subscribe", client.subscribe("alpha")).await.unwrap();
    server.close_all_with("token_expired", "the token expired");
    match next_connection_event(&mut events).await {
        Event::Failed(Error::TokenExpired { message }) => assert_eq!(message, "the token expired"),
        other => panic!("expected Failed(TokenExpired), got {other:?}"),
    }
    assert_eq!(server.accepted(), 1);
}

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
