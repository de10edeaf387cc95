//! The connection: one socket at a time, reconnects with backoff, resubscribes, keeps a quiet
//! connection alive with pings and drops duplicate messages.
//!
//! A background task (the "actor") owns the socket. [`Client`] handles send it commands and get
//! replies back on oneshot channels; pushed messages and connection events go to the
//! [`Events`] receiver returned by [`Client::new`]. This file holds the handle; the task and
//! what it works with are in the submodules.

mod actor;
mod config;
mod event;
mod incoming;
mod queue;
mod socket;
mod state;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

pub use config::ClientConfig;
pub use event::{Event, Events};
pub(crate) use socket::tls_config;
pub use state::GAP_WAIT;

use crate::error::Error;
use crate::protocol::{Reply, Request, Stats};
use queue::Command;
use socket::connect_with_retry;
use state::{lock, Shared};

/// A handle on one logical Airwave connection. Cheap to clone; every clone shares the socket.
/// The socket closes when the last clone is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Held across the whole connect, so a second `connect()` waits for the first instead of
    /// opening a second socket.
    slot: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    commands: mpsc::UnboundedSender<Command>,
    /// Dropping it (with the last handle) tells the actor to close the socket and stop.
    _shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Client {
    /// A client that is not connected yet; the first request (or [`Client::connect`]) connects.
    pub fn new(config: ClientConfig) -> (Client, Events) {
        let (events, receiver) = mpsc::unbounded_channel();
        let inner = Inner {
            shared: Arc::new(Shared::new(config, events)),
            slot: tokio::sync::Mutex::new(None),
        };
        (Client { inner: Arc::new(inner) }, receiver)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.shared.config
    }

    /// Opens the socket unless one is open or being opened (then it waits for that one). The
    /// first attempt is immediate; failures are retried per the [`Backoff`](crate::Backoff),
    /// except permanent ones (401, 403, bad URL) which return at once.
    ///
    /// After an [`Event::Evicted`] this is the only way back: the new connection may evict the
    /// user's oldest one in turn.
    pub async fn connect(&self) -> Result<(), Error> {
        lock(&self.inner.shared.evicted).take();
        self.commands().await.map(drop)
    }

    /// Sends one request and waits for its reply. An error reply from the server is
    /// `Ok(Reply::Error {..})` here; the typed helpers turn it into [`Error::Server`].
    ///
    /// Requests go out one at a time per connection, each with an id its reply repeats.
    pub async fn request(&self, request: Request) -> Result<Reply, Error> {
        let commands = self.commands().await?;
        let (reply, receiver) = oneshot::channel();
        commands.send(Command { request, reply }).map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }

    /// Pings and waits for the pong. API Gateway answers it by itself (the `ping` route's mock
    /// integration), without an id, so it proves the socket works, not that the backend does.
    pub async fn ping(&self) -> Result<(), Error> {
        match self.request(Request::Ping).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes; the channel is subscribed again on every reconnect until unsubscribed.
    pub async fn subscribe(&self, channel: &str) -> Result<(), Error> {
        let since = lock(&self.inner.shared.order).since(channel);
        match self
            .request(Request::Subscribe {
                channel: channel.to_owned(),
                since,
            })
            .await?
        {
            Reply::Subscribed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        match self
            .request(Request::Unsubscribe {
                channel: channel.to_owned(),
            })
            .await?
        {
            Reply::Unsubscribed { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes `data` to `channel` (every connection when `None`); returns the message id.
    /// Not retried if the socket drops before the reply ([`Error::Disconnected`]).
    pub async fn publish(&self, channel: Option<&str>, data: Value) -> Result<String, Error> {
        match self
            .request(Request::Publish {
                channel: channel.map(str::to_owned),
                data,
            })
            .await?
        {
            Reply::Published { message_id } => Ok(message_id),
            other => Err(unexpected(other)),
        }
    }

    /// The server's counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        match self.request(Request::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// The channels that will be subscribed again after a reconnect.
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.inner.shared.subscriptions).iter().cloned().collect()
    }

    /// How many pushed messages were dropped as duplicates so far (by id, or
    /// by a channel position already delivered).
    pub fn duplicates_dropped(&self) -> u64 {
        self.inner.shared.duplicates.load(Ordering::Relaxed) + lock(&self.inner.shared.order).duplicates()
    }

    /// The last position delivered on `channel`: where recovery starts after a reconnect.
    pub fn position(&self, channel: &str) -> Option<crate::protocol::Position> {
        lock(&self.inner.shared.order).since(channel)
    }

    /// Closes the socket (sending a close frame) and waits for the background task to end.
    /// Pending requests fail with [`Error::Closed`]. A later request connects again.
    pub async fn close(&self) {
        let running = self.inner.slot.lock().await.take();
        if let Some(Running {
            commands,
            _shutdown,
            task,
        }) = running
        {
            drop(commands);
            drop(_shutdown);
            if let Err(e) = task.await {
                warn!(error = %e, "connection task ended abnormally");
            }
        }
    }

    /// The command queue of the running actor, connecting first if there is none.
    async fn commands(&self) -> Result<mpsc::UnboundedSender<Command>, Error> {
        let mut slot = self.inner.slot.lock().await;
        if let Some(running) = slot.as_ref() {
            // Closed means the actor ended (it gave up); start over below.
            if !running.commands.is_closed() {
                return Ok(running.commands.clone());
            }
        }
        if let Some(message) = lock(&self.inner.shared.evicted).clone() {
            return Err(Error::Evicted { message });
        }
        let shared = Arc::clone(&self.inner.shared);
        // Retries spent getting this socket count against the reconnects that may follow it.
        let mut retry = 0;
        let socket = connect_with_retry(&shared, true, None, &mut retry).await?;
        debug!(url = %shared.config.display_url(), "connected");
        let (commands, receiver) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(actor::run(shared, socket, retry, receiver, shutdown_rx));
        *slot = Some(Running {
            commands: commands.clone(),
            _shutdown: shutdown,
            task,
        });
        Ok(commands)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Error { code, message } => Error::Server {
            code: code.as_str().to_owned(),
            message,
        },
        other => Error::UnexpectedReply(format!("{other:?}")),
    }
}
