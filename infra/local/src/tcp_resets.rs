//! A TCP relay that can cut its links the way a network does: a reset on
//! both sides, with no WebSocket close frame. Clients connect to the relay
//! instead of the gateway; the gateway sees its socket die and sends
//! `$disconnect`, as API Gateway does, and the client sees a reset and
//! reconnects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::LocalError;

#[derive(Default)]
struct Links {
    /// Open links by number, each with the signal that resets it.
    open: HashMap<u64, oneshot::Sender<()>>,
}

struct Shared {
    upstream: SocketAddr,
    links: Mutex<Links>,
    next_link: AtomicU64,
    resets: AtomicUsize,
    accepted: AtomicUsize,
}

impl Shared {
    fn links(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running relay; it stops accepting when dropped (open links live on until they end).
pub struct ResettingRelay {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ResettingRelay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ResettingRelay {
    /// A relay on a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self, LocalError> {
        let shared = Arc::new(Shared {
            upstream,
            links: Mutex::new(Links::default()),
            next_link: AtomicU64::new(0),
            resets: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(accept(listener, shared.clone()));
        Ok(ResettingRelay {
            shared,
            address,
            server,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Links open now.
    pub fn open_links(&self) -> Vec<u64> {
        self.shared.links().open.keys().copied().collect()
    }

    /// Resets a link on both sides; false if it had already ended.
    pub fn reset(&self, link: u64) -> bool {
        let Some(signal) = self.shared.links().open.remove(&link) else {
            return false;
        };
        let sent = signal.send(()).is_ok();
        if sent {
            self.shared.resets.fetch_add(1, Ordering::SeqCst);
        }
        sent
    }

    /// Links reset so far.
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

/// Makes dropping `socket` reset the connection (RST, nothing flushed)
/// rather than close it; false if the socket refused.
pub fn reset_on_drop(socket: &TcpStream) -> bool {
    match socket.set_zero_linger() {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = %error, "could not set a zero linger");
            false
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %error, "the relay could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let link = shared.next_link.fetch_add(1, Ordering::SeqCst);
        let (reset, on_reset) = oneshot::channel();
        shared.links().open.insert(link, reset);
        let shared = shared.clone();
        tokio::spawn(async move {
            relay(client, shared.upstream, on_reset).await;
            shared.links().open.remove(&link);
        });
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, on_reset: oneshot::Receiver<()>) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(error = %error, "the relay could not reach its upstream");
            return;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        Ok(()) = on_reset => {
            reset_on_drop(&client);
            reset_on_drop(&server);
        }
    }
}
