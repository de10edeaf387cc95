//! The background task (the "actor") that owns the socket: it sends the queued requests one at a
//! time, reads what the server sends, pings a quiet connection, asks for what a gap misses, and
//! when the socket drops decides whether and how soon to reconnect.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::{debug, info, warn};

use super::event::Event;
use super::incoming::{handle_text, Handled};
use super::queue::{fail_all, note_subscription, requeue_after_drop, resubscribe, Command, Pending};
use super::socket::{abandon, connect_with_retry, Socket};
use super::state::{lock, Shared};
use crate::error::Error;
use crate::protocol::{ClientFrame, Request, RequestId};

/// How one socket's run ended.
enum Outcome {
    Shutdown,
    /// `healthy`: the socket carried at least one protocol frame from the server before it
    /// dropped, which is what resets the reconnect schedule.
    Dropped {
        reason: String,
        healthy: bool,
    },
    /// The server refused the token as expired (a `closing` frame or a refused request);
    /// `healthy` as for `Dropped`, counting the frames before that one.
    TokenExpired {
        message: String,
        healthy: bool,
    },
    /// The server closed the connection for good.
    Evicted {
        message: String,
    },
}

/// The actor: owns the socket until shutdown or until reconnecting fails for good.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut socket: Socket,
    mut retry: u32,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut queue = VecDeque::new();
    // Channels kept from an earlier actor that gave up are subscribed again on a fresh start.
    resubscribe(&shared, &mut queue);
    // Whether the last reconnect went at once for an expired token, with no working socket
    // since: then the next expiry waits its backoff, or a provider that hands out stale tokens
    // would have the client reconnect in a tight loop.
    let mut prompt_spent = false;
    loop {
        let (reason, healthy, expired) = match drive(&shared, &mut socket, &mut commands, &mut shutdown, &mut queue)
            .await
        {
            Outcome::Shutdown => {
                abandon(socket).await;
                fail_all(&mut queue, &mut commands, &Error::Closed);
                return;
            }
            Outcome::Evicted { message } => {
                warn!(%message, "evicted by the server, not reconnecting");
                // Before the queue fails, so a request racing in fails the same way.
                *lock(&shared.evicted) = Some(message.clone());
                abandon(socket).await;
                fail_all(
                    &mut queue,
                    &mut commands,
                    &Error::Evicted {
                        message: message.clone(),
                    },
                );
                let _ = shared.events.send(Event::Evicted { message });
                return;
            }
            Outcome::Dropped { reason, healthy } => (reason, healthy, None),
            Outcome::TokenExpired { message, healthy } => (format!("token expired: {message}"), healthy, Some(message)),
        };
        // The old socket may still be open (a missed pong, a failed send): close it before the
        // next one opens, so the client never holds two.
        abandon(socket).await;
        if healthy {
            retry = 0;
            prompt_spent = false;
        }
        requeue_after_drop(&mut queue);
        if let (Some(message), false) = (&expired, shared.config.renews_tokens()) {
            // The same token would only be refused again.
            let error = Error::TokenExpired {
                message: message.clone(),
            };
            warn!(error = %error, "giving up on the connection");
            fail_all(&mut queue, &mut commands, &error);
            let _ = shared.events.send(Event::Failed(error));
            return;
        }
        let immediate = expired.is_some() && !prompt_spent;
        prompt_spent |= immediate;
        warn!(%reason, healthy, immediate, "connection lost, reconnecting");
        let _ = shared.events.send(Event::Disconnected { reason: reason.clone() });
        let last = Some(Error::Connect(Arc::new(tungstenite::Error::Io(std::io::Error::other(
            reason,
        )))));
        let reconnected = tokio::select! {
            _ = &mut shutdown => {
                fail_all(&mut queue, &mut commands, &Error::Closed);
                return;
            }
            result = connect_with_retry(&shared, immediate, last, &mut retry) => result,
        };
        match reconnected {
            Ok(next) => {
                info!(url = %shared.config.display_url(), "reconnected");
                socket = next;
                resubscribe(&shared, &mut queue);
                let _ = shared.events.send(Event::Reconnected);
            }
            Err(e) => {
                warn!(error = %e, "giving up on the connection");
                fail_all(&mut queue, &mut commands, &e);
                let _ = shared.events.send(Event::Failed(e));
                return;
            }
        }
    }
}

/// Runs one socket until it drops or the client shuts down.
async fn drive(
    shared: &Shared,
    socket: &mut Socket,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    shutdown: &mut oneshot::Receiver<()>,
    queue: &mut VecDeque<Pending>,
) -> Outcome {
    // Any frame resets API Gateway's idle timer, so a ping goes out only after the client has
    // sent nothing for `keep_alive_after`. Only frames the client sends count: whether frames
    // API Gateway sends to the client also reset its idle timer is not documented. The socket
    // was opened just now, which starts the first quiet period.
    let quiet = shared.config.keep_alive_after();
    let mut last_sent = Instant::now();
    let mut healthy = false;
    loop {
        if let Some(head) = queue.front_mut() {
            if head.sent_at.is_none() {
                // A gap-fill queued before an unsubscribe went out must not subscribe again.
                let stale = head.reply.is_none()
                    && matches!(&head.request, Request::Subscribe { channel, .. }
                        if !lock(&shared.subscriptions).contains(channel));
                if stale {
                    queue.pop_front();
                    continue;
                }
                let id = RequestId::Number(shared.next_request_id.fetch_add(1, Ordering::Relaxed));
                head.id = Some(id.clone());
                let text = ClientFrame::new(Some(id), head.request.clone()).to_text();
                note_subscription(shared, &head.request);
                if let Err(e) = socket.send(WsMessage::text(text)).await {
                    return Outcome::Dropped {
                        reason: format!("send failed: {e}"),
                        healthy,
                    };
                }
                let now = Instant::now();
                head.sent_at = Some(now);
                last_sent = now;
            }
        }
        let gap_deadline = lock(&shared.order).next_gap_deadline();
        let deadline = queue
            .front()
            .and_then(|p| p.sent_at)
            // A timeout too large for an `Instant` means no timeout.
            .and_then(|sent| sent.checked_add(shared.config.request_timeout()));
        // Only with nothing queued: a queued request goes out (and restarts the quiet period)
        // once the one ahead of it is answered, or times out and replaces the socket. A quiet
        // period too long for an `Instant` means no keep-alive.
        let keep_alive_at = if queue.is_empty() {
            last_sent.checked_add(quiet)
        } else {
            None
        };
        // Unbiased on purpose: a flood of pushed messages must not starve requests and pings.
        tokio::select! {
            _ = &mut *shutdown => return Outcome::Shutdown,
            frame = socket.next() => match frame {
                None => return Outcome::Dropped { reason: "closed".to_owned(), healthy },
                Some(Err(e)) => return Outcome::Dropped { reason: e.to_string(), healthy },
                Some(Ok(WsMessage::Text(text))) => match handle_text(shared, queue, text.as_str()) {
                    Handled::Protocol => healthy = true,
                    Handled::Ignored => {}
                    Handled::Replace(reason) => return Outcome::Dropped { reason, healthy },
                    Handled::TokenExpired(message) => return Outcome::TokenExpired { message, healthy },
                    Handled::Evicted(message) => return Outcome::Evicted { message },
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    let why = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                    let reason = format!("closed by the server {why}").trim_end().to_owned();
                    return Outcome::Dropped { reason, healthy };
                }
                // tungstenite answers WebSocket pings itself; binary frames are not protocol.
                Some(Ok(_)) => {}
            },
            command = commands.recv() => match command {
                Some(Command { request, reply }) => {
                    queue.push_back(Pending { request, reply: Some(reply), sent_at: None, id: None });
                }
                None => return Outcome::Shutdown,
            },
            _ = tokio::time::sleep_until(gap_deadline.unwrap_or_else(Instant::now)), if gap_deadline.is_some() => {
                // A gap that did not fill by itself: the server's recovery fills it.
                let due = lock(&shared.order).gaps_due(Instant::now());
                for (channel, since) in due {
                    // One internal subscribe per channel in the queue at a time.
                    let queued = queue.iter().any(|p| {
                        p.reply.is_none() && matches!(&p.request, Request::Subscribe { channel: c, .. } if *c == channel)
                    });
                    if !queued {
                        debug!(%channel, since = ?since, "asking the server for what a channel is missing");
                        queue.push_back(Pending::internal(Request::Subscribe { channel, since }));
                    }
                }
            }
            _ = tokio::time::sleep_until(keep_alive_at.unwrap_or_else(Instant::now)), if keep_alive_at.is_some() => {
                debug!(?quiet, "nothing sent for the keep-alive period: pinging");
                queue.push_back(Pending::internal(Request::Ping));
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(head) = queue.pop_front() {
                    let keepalive_lost = head.reply.is_none() && head.request == Request::Ping;
                    head.answer(Err(Error::Timeout("waiting for a reply")));
                    // A ping with no pong means a half-open socket that TCP may never notice;
                    // a request with no reply, a server that may have lost the socket. Either
                    // way the socket is replaced.
                    let reason = if keepalive_lost {
                        "no pong before the request timeout"
                    } else {
                        "no reply before the request timeout"
                    };
                    return Outcome::Dropped { reason: reason.to_owned(), healthy };
                }
            }
        }
    }
}
