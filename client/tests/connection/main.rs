//! The client against a real WebSocket server on 127.0.0.1. Timeouts are failure guards only:
//! every assertion is about what happened, never about how fast. One binary, one module per
//! area; run one with `cargo test -p airwave-client --test connection MODULE::`.

#[path = "../support/mod.rs"]
mod support;

mod keep_alive;
mod reconnect;
mod retries;
mod server_replies;
mod tokens;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use airwave_client::{ClientConfig, Event, Events};
use support::within;

/// The next event that is not a message, skipping messages.
pub async fn next_connection_event(events: &mut Events) -> Event {
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

pub async fn wait_reconnected(events: &mut Events) {
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
pub fn with_fresh_tokens(config: ClientConfig) -> (ClientConfig, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let config = config.with_token_provider(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, std::io::Error>(format!("h.t{n}.s")) }
    });
    (config, calls)
}

pub fn offer(token: &str) -> Option<String> {
    Some(format!("airwave.v1, {token}"))
}

pub async fn next_message_id(events: &mut Events) -> String {
    loop {
        if let Event::Message(message) = within("a message", events.recv()).await.expect("events closed") {
            return message.id;
        }
    }
}
