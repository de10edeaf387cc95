//! What a client tells its owner: pushed messages and changes of the connection.

use tokio::sync::mpsc;

use crate::error::Error;
use crate::protocol::Message;

/// Receiver of a client's [`Event`]s. Unbounded so a slow reader never stalls the socket (and
/// with it the keep-alive pings); drop it if the events are not wanted.
pub type Events = mpsc::UnboundedReceiver<Event>;

/// What the client tells its owner, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A pushed message, at most once per id (within the dedup window).
    Message(Message),
    /// The socket dropped; the client is reconnecting.
    Disconnected { reason: String },
    /// A new socket is open and the subscriptions were sent again, each with
    /// the last position seen so the server recovers what was missed.
    Reconnected,
    /// What a channel published while the client was away could not be
    /// recovered (outside the history the server keeps, over its replay bound,
    /// or the channel's history was reset). Messages go on arriving in order
    /// from the channel's current position; the application should reload the
    /// channel's state.
    RecoveryFailed { channel: String },
    /// The server closed the connection because the user opened more than their cap allows and
    /// this was their oldest. The client stays disconnected: requests fail with
    /// [`Error::Evicted`] until [`Client::connect`](super::Client::connect) is called on purpose.
    Evicted { message: String },
    /// Reconnecting failed for good (permanent refusal, retries exhausted, or a fixed token that
    /// expired). A later request or [`Client::connect`](super::Client::connect) starts over with a fresh retry budget.
    Failed(Error),
}
