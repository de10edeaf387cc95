//! The open connections, as every part of the gateway sees them: the
//! WebSocket side registers each one and its socket task takes commands, the
//! Management API looks them up and sends those commands, and shutdown waits
//! for the last `$disconnect`. Here rather than in either side, so that neither
//! depends on the other.

use airwave_local::QuotaBucket;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::events::ConnectionContext;
use crate::options::GatewayOptions;
use crate::template::StackModel;
use crate::Invoker;

/// What every request handler and connection task of one gateway shares.
pub(crate) struct Shared {
    pub options: GatewayOptions,
    pub model: StackModel,
    pub invoker: Arc<dyn Invoker>,
    pub address: SocketAddr,
    connections: Mutex<HashMap<String, ConnectionHandle>>,
    pub shutdown: watch::Receiver<bool>,
    /// Admitted connections whose `$disconnect` has not finished yet.
    active: AtomicUsize,
    idle: Notify,
    /// `DELETE @connections/{id}` requests that closed a live socket.
    pub management_closes: AtomicUsize,
    /// Messages as API Gateway bills them, both ways.
    pub billed: BilledMessages,
    /// HTTP API requests that reached a route.
    pub http_requests: AtomicU64,
    /// The HTTP API stage's throttle, as its `DefaultRouteSettings` set it.
    pub http_throttle: QuotaBucket,
    /// The account's request quota, which every Management API request takes from.
    pub quota: QuotaBucket,
}

/// API Gateway's metered messages: each frame a client sends and each one
/// delivered to a client (route replies and Management API posts alike),
/// counted in 32 KB units. A refused handshake and a close frame are not
/// messages.
#[derive(Debug, Default)]
pub struct BilledMessages {
    received: AtomicU64,
    sent: AtomicU64,
}

/// API Gateway meters messages in 32 KB units.
const MESSAGE_UNIT_BYTES: usize = 32 * 1024;

impl BilledMessages {
    pub fn count_received(&self, bytes: usize) {
        self.received.fetch_add(units(bytes), Ordering::Relaxed);
    }

    pub fn count_sent(&self, bytes: usize) {
        self.sent.fetch_add(units(bytes), Ordering::Relaxed);
    }

    /// (received, sent), in 32 KB units.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.received.load(Ordering::Relaxed), self.sent.load(Ordering::Relaxed))
    }
}

fn units(bytes: usize) -> u64 {
    bytes.div_ceil(MESSAGE_UNIT_BYTES).max(1) as u64
}

impl Shared {
    pub fn new(
        options: GatewayOptions,
        model: StackModel,
        invoker: Arc<dyn Invoker>,
        address: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let http_throttle = QuotaBucket::new(model.http_api.as_ref().and_then(|api| api.throttle));
        Shared {
            quota: QuotaBucket::new(options.management_quota),
            options,
            model,
            invoker,
            address,
            connections: Mutex::new(HashMap::new()),
            shutdown,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            management_closes: AtomicUsize::new(0),
            billed: BilledMessages::default(),
            http_requests: AtomicU64::new(0),
            http_throttle,
        }
    }

    pub fn connections(&self) -> MutexGuard<'_, HashMap<String, ConnectionHandle>> {
        // Nothing panics while holding the lock, and a map cannot be left half-updated.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn connection(&self, connection_id: &str) -> Option<ConnectionHandle> {
        self.connections().get(connection_id).cloned()
    }

    pub async fn wait_until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up in between is not lost.
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts an admitted connection until its `$disconnect` is done.
pub(crate) struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    pub fn new(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(shared.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What other tasks may ask of a connection's socket task.
pub(crate) enum Command {
    /// Sends a frame; `done` learns whether it was written.
    Send {
        payload: Bytes,
        done: Option<oneshot::Sender<bool>>,
    },
    /// Closes the socket (a Management API `DELETE`).
    Close { done: oneshot::Sender<()> },
}

/// A live connection, as the Management API sees it.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    pub context: Arc<ConnectionContext>,
    pub last_active_ms: Arc<AtomicI64>,
    pub commands: mpsc::UnboundedSender<Command>,
}
