//! The socket task: the one owner of an open connection's socket. It reads
//! messages into the routing queue, writes what the Management API and the
//! routes send, enforces the idle and duration limits, closes the socket
//! exactly once and then invokes `$disconnect` exactly once.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::connect::invoke_disconnect;
use super::routing::route_messages;
use crate::connections::{Command, Shared};
use crate::events::{epoch_millis_now, ConnectionContext};

/// How long a write to a client may block before the connection counts as broken.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Messages waiting for their route's invocation; past this the socket stops
/// being read, which pushes back on the client through TCP.
const MESSAGE_QUEUE: usize = 256;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a socket closed: `disconnectStatusCode` and `disconnectReason`.
struct Closed {
    code: u16,
    reason: String,
}

impl Closed {
    fn new(code: u16, reason: &str) -> Self {
        Closed {
            code,
            reason: reason.to_owned(),
        }
    }
}

/// An admitted connection whose socket is open.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) context: Arc<ConnectionContext>,
    pub(super) last_active_ms: Arc<AtomicI64>,
    pub(super) commands_tx: mpsc::UnboundedSender<Command>,
    pub(super) commands_rx: mpsc::UnboundedReceiver<Command>,
}

impl Connection {
    pub(super) async fn run(self, mut socket: Socket) {
        let Connection {
            shared,
            context,
            last_active_ms,
            commands_tx,
            mut commands_rx,
        } = self;
        tracing::info!("connection open");
        let (messages_tx, messages_rx) = mpsc::channel(MESSAGE_QUEUE);
        let router =
            tokio::spawn(route_messages(shared.clone(), context.clone(), messages_rx, commands_tx).in_current_span());

        let closed = serve_socket(&shared, &mut socket, &last_active_ms, &mut commands_rx, &messages_tx).await;
        // Gone for the Management API from here on; queued commands are answered 410.
        shared.connections().remove(&context.connection_id);
        drop(commands_rx);
        drop(socket);
        tracing::info!(code = closed.code, reason = %closed.reason, "connection closed");

        // Messages already received are still routed, then $disconnect comes last.
        drop(messages_tx);
        if let Err(error) = router.await {
            tracing::error!(error = %error, "message routing task failed");
        }
        invoke_disconnect(&shared, &context, closed.code, &closed.reason).await;
    }
}

/// Reads and writes the socket until it closes, for whichever reason comes first.
async fn serve_socket(
    shared: &Shared,
    socket: &mut Socket,
    last_active_ms: &AtomicI64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    messages: &mpsc::Sender<String>,
) -> Closed {
    let options = &shared.options;
    let mut shutdown = shared.shutdown.clone();
    let closes_at = deadline(Instant::now(), options.max_connection_duration);
    let mut idle_since = Instant::now();
    // A place in the inbound queue, taken before the socket is read: while the
    // queue is full the socket is not read (TCP pushes back on the client), but
    // commands, timeouts and shutdown are still served.
    let mut slot: Option<mpsc::Permit<'_, String>> = None;
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|stopped| *stopped).await; } => {
                return close(socket, 1001, "Going away").await;
            }
            _ = sleep_until_deadline(closes_at) => {
                tracing::info!("maximum connection duration reached");
                return close(socket, 1001, "Going away").await;
            }
            // Not idle while the client waits for room in the queue: it has sent
            // more than the routes have taken.
            _ = sleep_until_deadline(deadline(idle_since, options.idle_timeout)), if slot.is_some() => {
                tracing::info!("idle timeout");
                return close(socket, 1001, "Going away").await;
            }
            command = commands.recv() => match command {
                Some(Command::Send { payload, done }) => {
                    let bytes = payload.len();
                    // Checked in place, not copied: every post and reply passes here.
                    let message = match Utf8Bytes::try_from(payload.clone()) {
                        Ok(text) => Message::Text(text),
                        Err(_) => Message::Binary(payload),
                    };
                    let sent = matches!(timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())));
                    if sent {
                        shared.billed.count_sent(bytes);
                    }
                    if let Some(done) = done {
                        let _ = done.send(sent);
                    }
                    if !sent {
                        tracing::info!("writing to the socket failed");
                        return Closed::new(1006, "Connection closed abnormally");
                    }
                }
                Some(Command::Close { done }) => {
                    send_close(socket, 1000, "Connection deleted").await;
                    // The deletion is answered once the close frame is out, not
                    // after the client's reply, which may never come.
                    let _ = done.send(());
                    drain(socket).await;
                    return Closed::new(1000, "Connection deleted");
                }
                // The routing task holds a sender for as long as the socket task lives.
                None => return close(socket, 1011, "Internal error").await,
            },
            reserved = messages.reserve(), if slot.is_none() => match reserved {
                Ok(permit) => {
                    idle_since = Instant::now();
                    slot = Some(permit);
                }
                // The routing task is gone.
                Err(_) => return close(socket, 1011, "Internal error").await,
            },
            incoming = socket.next(), if slot.is_some() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    shared.billed.count_received(text.len());
                    idle_since = Instant::now();
                    last_active_ms.store(epoch_millis_now(), Ordering::SeqCst);
                    if let Some(permit) = slot.take() {
                        permit.send(text.as_str().to_owned());
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    // API Gateway does not accept binary frames from clients.
                    return close(socket, 1003, "Binary frames are not supported").await;
                }
                Some(Ok(Message::Close(frame))) => {
                    let closed = match frame {
                        Some(frame) => {
                            let code = u16::from(frame.code);
                            let reason = if frame.reason.is_empty() { standard_reason(code) } else { frame.reason.as_str() };
                            Closed::new(code, reason)
                        }
                        None => Closed::new(1005, standard_reason(1005)),
                    };
                    // The library answers the close frame; reading on sends it.
                    drain(socket).await;
                    return closed;
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(error))) => {
                    tracing::info!(error = %error, "message over the size limit");
                    return close(socket, 1009, "Message too big").await;
                }
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "socket dropped");
                    return Closed::new(1006, standard_reason(1006));
                }
                None => return Closed::new(1006, standard_reason(1006)),
            },
        }
    }
}

/// `from + after`; `None` when that is past what an `Instant` can hold, which
/// means never (a configured duration can be as large as `Duration::MAX`).
fn deadline(from: Instant, after: Duration) -> Option<Instant> {
    from.checked_add(after)
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until_deadline(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn standard_reason(code: u16) -> &'static str {
    match code {
        1000 => "Normal closure",
        1001 => "Going away",
        1005 => "No status code",
        1006 => "Connection closed abnormally",
        1009 => "Message too big",
        _ => "",
    }
}

/// Sends a close frame and waits briefly for the client's answer.
async fn close(socket: &mut Socket, code: u16, reason: &str) -> Closed {
    send_close(socket, code, reason).await;
    drain(socket).await;
    Closed::new(code, reason)
}

async fn send_close(socket: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    if let Ok(Err(error)) = timeout(CLOSE_GRACE, socket.close(Some(frame))).await {
        tracing::debug!(error = %error, "sending the close frame failed");
    }
}

/// Reads until the closing handshake ends, the socket errs or the grace period passes.
async fn drain(socket: &mut Socket) {
    let _ = timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = socket.next().await {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_never() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), None);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            Some(now + Duration::from_secs(1))
        );
    }
}
