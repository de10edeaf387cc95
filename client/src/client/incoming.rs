//! What the server sends on the socket: messages go through the channel order and the dedup
//! window to the owner, replies to the request waiting for them, and closing frames, lost
//! records and expired tokens say whether the socket must be replaced.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::event::Event;
use super::queue::Pending;
use super::state::{lock, Shared};
use crate::error::Error;
use crate::order::Notice;
use crate::protocol::{answers, parse_frame, ErrorCode, Incoming, Reply, Request};

/// What one text frame from the server meant for the connection.
pub(super) enum Handled {
    /// A message or a reply: the socket works end to end.
    Protocol,
    /// Not a protocol frame (API Gateway's own error frames, unknown types).
    Ignored,
    /// The connection must be replaced, for this reason.
    Replace(String),
    /// The token expired: replace the connection with one that has a fresh token.
    TokenExpired(String),
    /// The server is closing the connection and it must not come back.
    Evicted(String),
}

pub(super) fn handle_text(shared: &Shared, queue: &mut VecDeque<Pending>, text: &str) -> Handled {
    let incoming = match parse_frame(text) {
        Ok(incoming) => incoming,
        Err(e) => {
            debug!(error = %e, "ignoring a frame that is not protocol JSON");
            return Handled::Ignored;
        }
    };
    match incoming {
        Incoming::Messages(messages) => {
            for message in messages {
                let delivery = lock(&shared.order).message(message, Instant::now());
                deliver(shared, delivery);
            }
            Handled::Protocol
        }
        Incoming::Closing { code, message } => match code {
            ErrorCode::TokenExpired => Handled::TokenExpired(message),
            ErrorCode::Evicted => Handled::Evicted(message),
            code => {
                // A reason this client does not act on: come back as after any close.
                warn!(code = code.as_str(), %message, "the server is closing the connection");
                Handled::Replace(format!("closed by the server ({}): {message}", code.as_str()))
            }
        },
        Incoming::Reply { id, reply } => {
            let gone = reply.error_code() == Some(&ErrorCode::UnknownConnection);
            // The request fails with the code; a new socket with a new token replaces this one.
            let expired = match &reply {
                Reply::Error {
                    code: ErrorCode::TokenExpired,
                    message,
                } => Some(message.clone()),
                _ => None,
            };
            let matched = queue.front().is_some_and(|p| {
                p.sent_at.is_some()
                    && match &id {
                        Some(id) => p.id.as_ref() == Some(id),
                        // No id: a pong (API Gateway answers pings itself and cannot
                        // echo one), or a server older than request ids. Pair by kind.
                        None => answers(&reply, &p.request),
                    }
            });
            if !matched {
                debug!(?reply, "reply matches no pending request (late after a timeout?)");
            } else if let Some(pending) = queue.pop_front() {
                match (&reply, &pending.request) {
                    // A lost record or an expired token is no refusal of the channel:
                    // it is subscribed again (with its position) on the new socket.
                    (Reply::Error { .. }, Request::Subscribe { .. }) if gone || expired.is_some() => {}
                    (Reply::Error { .. }, Request::Subscribe { channel, .. }) => {
                        lock(&shared.subscriptions).remove(channel);
                        lock(&shared.order).unsubscribed(channel);
                    }
                    (
                        Reply::Subscribed {
                            channel,
                            position,
                            recovered,
                            publications,
                        },
                        _,
                    ) => {
                        let delivery = lock(&shared.order).subscribed(
                            channel,
                            position.clone(),
                            *recovered,
                            publications.clone(),
                            Instant::now(),
                        );
                        deliver(shared, delivery);
                    }
                    _ => {}
                }
                pending.answer(Ok(reply));
            }
            // The server lost this connection's record (TTL): only a new socket registers again.
            if gone {
                Handled::Replace("the server no longer knows this connection".to_owned())
            } else if let Some(message) = expired {
                Handled::TokenExpired(message)
            } else {
                Handled::Protocol
            }
        }
        Incoming::GatewayError { message } => {
            // API Gateway's own answer when a function failed: it belongs to the
            // request in flight, which fails now instead of at its timeout.
            if queue.front().is_some_and(|p| p.sent_at.is_some()) {
                if let Some(pending) = queue.pop_front() {
                    if let Request::Subscribe { channel, .. } = &pending.request {
                        lock(&shared.order).subscribe_failed(channel, Instant::now());
                    }
                    pending.answer(Err(Error::Server {
                        code: "internal_error".to_owned(),
                        message,
                    }));
                }
            }
            Handled::Protocol
        }
        Incoming::Other(value) => {
            debug!(frame = %value, "ignoring a frame of unknown type");
            Handled::Ignored
        }
    }
}

/// Hands ordered messages and notices to the owner, dropping ids already delivered.
fn deliver(shared: &Shared, delivery: crate::order::Delivery) {
    for notice in delivery.notices {
        match notice {
            Notice::RecoveryFailed { channel } => {
                warn!(%channel, "missed messages could not be recovered");
                let _ = shared.events.send(Event::RecoveryFailed { channel });
            }
        }
    }
    for message in delivery.messages {
        if lock(&shared.recent).insert(&message.id) {
            // No receiver means the owner does not want messages; not an error.
            let _ = shared.events.send(Event::Message(message));
        } else {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            debug!(id = %message.id, "dropped a duplicate message");
        }
    }
}
