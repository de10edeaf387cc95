//! The background task's requests: what the handles send it, what waits for a socket or a
//! reply, and what happens to them when a socket drops or the client stops.

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use super::state::{lock, Shared};
use crate::error::Error;
use crate::protocol::{Reply, Request, RequestId};

/// One request from a handle, with where its reply goes.
pub(super) struct Command {
    pub(super) request: Request,
    pub(super) reply: oneshot::Sender<Result<Reply, Error>>,
}

/// A request in the actor's queue. `reply` is `None` for the client's own requests (keep-alive
/// pings, resubscribes).
pub(super) struct Pending {
    pub(super) request: Request,
    pub(super) reply: Option<oneshot::Sender<Result<Reply, Error>>>,
    pub(super) sent_at: Option<Instant>,
    /// The id it went out with (a new one per send).
    pub(super) id: Option<RequestId>,
}

impl Pending {
    pub(super) fn internal(request: Request) -> Self {
        Pending {
            request,
            reply: None,
            sent_at: None,
            id: None,
        }
    }

    pub(super) fn answer(self, result: Result<Reply, Error>) {
        match (self.reply, result) {
            (Some(reply), result) => {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            (None, Ok(Reply::Error { code, message })) => {
                warn!(request = ?self.request, code = code.as_str(), %message, "server refused a keep-alive or resubscribe");
            }
            (None, Err(e)) => warn!(request = ?self.request, error = %e, "keep-alive or resubscribe failed"),
            (None, Ok(_)) => {}
        }
    }
}

/// Records a subscription change when the request goes out, so a drop before the reply still
/// resubscribes (subscribe is idempotent on the server).
pub(super) fn note_subscription(shared: &Shared, request: &Request) {
    match request {
        Request::Subscribe { channel, .. } => {
            lock(&shared.subscriptions).insert(channel.clone());
            lock(&shared.order).subscribing(channel);
        }
        Request::Unsubscribe { channel } => {
            lock(&shared.subscriptions).remove(channel);
            lock(&shared.order).unsubscribed(channel);
        }
        _ => {}
    }
}

/// Puts a subscribe for every known channel at the front of the queue, each
/// from the last position delivered, so the server recovers the gap.
pub(super) fn resubscribe(shared: &Shared, queue: &mut VecDeque<Pending>) {
    let channels = lock(&shared.subscriptions).clone();
    let order = lock(&shared.order);
    for channel in channels.into_iter().rev() {
        let since = order.since(&channel);
        queue.push_front(Pending::internal(Request::Subscribe { channel, since }));
    }
}

/// After a drop: the client's own requests go (pings are per socket, resubscribes are queued
/// again); a sent publish fails because it may have gone through; other sent requests are
/// idempotent and go out again on the next socket.
pub(super) fn requeue_after_drop(queue: &mut VecDeque<Pending>) {
    let mut kept = VecDeque::with_capacity(queue.len());
    for mut pending in queue.drain(..) {
        if pending.reply.is_none() {
            continue;
        }
        if pending.sent_at.is_some() && matches!(pending.request, Request::Publish { .. }) {
            pending.answer(Err(Error::Disconnected));
            continue;
        }
        pending.sent_at = None;
        kept.push_back(pending);
    }
    *queue = kept;
}

/// Fails everything queued or still in the command channel.
pub(super) fn fail_all(queue: &mut VecDeque<Pending>, commands: &mut mpsc::UnboundedReceiver<Command>, error: &Error) {
    commands.close();
    while let Ok(Command { request, reply }) = commands.try_recv() {
        queue.push_back(Pending {
            request,
            reply: Some(reply),
            sent_at: None,
            id: None,
        });
    }
    for pending in queue.drain(..) {
        pending.answer(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_drop_fails_a_sent_publish_and_keeps_other_caller_requests() {
        let (publish_tx, mut publish_rx) = oneshot::channel();
        let (stats_tx, _stats_rx) = oneshot::channel();
        let sent = Some(Instant::now());
        let mut queue = VecDeque::from([
            Pending {
                request: Request::Publish {
                    channel: None,
                    data: Value::Null,
                },
                reply: Some(publish_tx),
                sent_at: sent,
                id: Some(RequestId::Number(1)),
            },
            Pending::internal(Request::Ping),
            Pending {
                request: Request::Stats,
                reply: Some(stats_tx),
                sent_at: None,
                id: None,
            },
        ]);
        requeue_after_drop(&mut queue);
        assert!(matches!(publish_rx.try_recv(), Ok(Err(Error::Disconnected))));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].request, Request::Stats);
        assert!(queue[0].sent_at.is_none());
    }
}
