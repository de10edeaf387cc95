//! Where the token goes, a fresh one per attempt from a provider, and what an expired one does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airwave_client::{Backoff, Client, Error, Event};
use serde_json::json;

use crate::support::{within, Handshake, TestServer};
use crate::{next_connection_event, offer, wait_reconnected, with_fresh_tokens};

#[tokio::test]
async fn a_token_that_is_no_jwt_goes_in_the_query_string() {
    let server = TestServer::start().await;
    let (client, _events) = Client::new(server.config().with_token("s3cr3t &x"));
    within("connect", client.connect()).await.unwrap();
    assert_eq!(server.uris(), ["/test?token=s3cr3t+%26x"]);
    assert_eq!(server.offers(), [Some("airwave.v1".to_owned())]);
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
